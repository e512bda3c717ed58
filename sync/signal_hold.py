"""Holding SIGTERM and Ctrl-C, for a bounded time, during one ledger write that should not be cut: an interrupted
run's own record (:func:`sync.ledger.runs.record_interrupted`). After the first signal the CLI lets a second one end
the process at once (:func:`sync.cli.main.terminated_on_sigterm`); one that came during that write would leave the
run ``running`` (marked ``abandoned`` by the next run), so it waits for the write, then does what it would have done.

The write usually takes milliseconds, but a ledger can block it far longer (SQLite's busy timeout, 30 s, while
another process holds its write lock; a PostgreSQL row lock or connect timeout): a second signal is held at most
:data:`BOUND` seconds, and a third one not at all. So the write goes on in a thread of its own while the main thread
waits for it, where a signal's handler runs at once (a handler cannot run while the main thread is inside a C call,
as a blocked SQLite write is).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any, Callable, TypeVar

T = TypeVar("T")

#: the signals held: the ones that interrupt a run
HELD = (signal.SIGTERM, signal.SIGINT)
#: seconds a signal that would end the process at once waits for the write before it does
BOUND = 1.5


def written_held(write: Callable[[], T], bound: float = BOUND) -> T:
    """``write()``'s result (or error), a SIGTERM or SIGINT meanwhile noted, not acted on, then sent again to this
    process once it is done, under the handlers of before. One whose handler of before ends the process (the
    default: the CLI's after a first signal) waits for the write at most ``bound`` seconds, then ends it, the write
    unfinished; a further one while it waits ends it at once. Only in the main thread (the only one Python lets set
    a handler: ``serve``'s workers hold nothing); an ignored signal stays ignored."""
    if threading.current_thread() is not threading.main_thread():
        return write()
    done = threading.Event()
    out: dict[str, Any] = {}
    got: list[int] = []
    before: dict[int, Any] = {}

    def run() -> None:
        try:
            out["value"] = write()
        except BaseException as exc:  # raised in the main thread
            out["error"] = exc
        finally:
            done.set()

    def note(signum: int, _frame: object) -> None:
        got.append(signum)
        if before.get(signum) is signal.SIG_DFL and (len(got) > 1 or not done.wait(bound)):
            _end(signum, before)

    for sig in HELD:
        handler = signal.getsignal(sig)
        if handler is not signal.SIG_IGN and handler is not None:
            before[sig] = signal.signal(sig, note)
    try:
        threading.Thread(target=run, name="rfmsync-held-write", daemon=True).start()
        done.wait()  # a signal's handler runs here, at once
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(got):
            os.kill(os.getpid(), sig)
    if "error" in out:
        raise out["error"]
    return out["value"]


def _end(signum: int, before: dict[int, Any]) -> None:
    """End the process by ``signum`` as its default does, the write left unfinished (stdio flushed first)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    for sig, handler in before.items():
        signal.signal(sig, handler)
    os.kill(os.getpid(), signum)


__all__ = ["BOUND", "HELD", "written_held"]
