"""Holding SIGTERM and Ctrl-C for the few milliseconds of one ledger write that must not be cut: an interrupted
run's own record (:func:`sync.ledger.runs.record_interrupted`). After the first signal the CLI lets a second one end
the process at once (:func:`sync.cli.main.terminated_on_sigterm`); one that came during that write would leave the
run ``running`` (marked ``abandoned`` by the next run), so it waits for the write, then does what it would have done.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from typing import Iterator

#: the signals held: the ones that interrupt a run
HELD = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def signals_held() -> Iterator[None]:
    """Inside the block, a SIGTERM or SIGINT is noted, not acted on; once it is left, each one noted is sent again
    to this process, under the handlers of before (ending it at once where that is the default). Only in the main
    thread (the only one Python lets set a handler: ``serve``'s workers hold nothing); an ignored signal stays
    ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []

    def note(signum: int, _frame: object) -> None:
        got.append(signum)

    before = {}
    for sig in HELD:
        handler = signal.getsignal(sig)
        if handler is not signal.SIG_IGN and handler is not None:
            before[sig] = signal.signal(sig, note)
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(got):
            os.kill(os.getpid(), sig)


__all__ = ["HELD", "signals_held"]
