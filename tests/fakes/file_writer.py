"""Another process changing an export file while rfmsync reads it (a POS appending its receipts, a copy onto the
share, an archiver moving the file away): run as a subprocess, so it goes on while the test's process is busy
reading, with no patching of the reader.

``python -m tests.fakes.file_writer append PATH FIRST STOP``
    appends orders :func:`line` ``FIRST``, ``FIRST + 1``… to ``PATH``, each in two writes (the file often ends
    half-way through a line, as a copy's does), without pause but a yield every few rows, until the file ``STOP``
    exists; it stops after a whole line.
``python -m tests.fakes.file_writer rewrite PATH STOP``
    writes ``PATH`` anew again and again until ``STOP`` exists: each time under another name, renamed onto it
    (``os.replace``), the same size but its last amount ``.50`` and ``.51`` in turn, each with a new mtime (an
    export tool writing it again and again; two versions written once are linked in turn: no data written, so
    no disk throttles the writer).
``python -m tests.fakes.file_writer on-open PID PATH READY DONE ACTION [ARG]``
    writes ``READY``, waits until process ``PID`` has ``PATH`` open (``/proc/PID/fd``: a read begun), then does
    ``ACTION`` once and writes ``DONE``, process ``PID`` stopped meanwhile (``SIGSTOP``, then ``SIGCONT``: the change
    falls inside that read, not after it, however little CPU the watcher gets; a read that ended before the watcher
    acted leaves ``DONE`` unwritten and the watcher waiting for the next; SIGTERM, SIGINT and SIGHUP wait until
    process ``PID`` runs again, so ending the watcher never leaves it stopped): ``append`` (order ``ARG``'s line),
    ``replace`` (``os.replace`` the file ``ARG`` onto ``PATH``) or ``move`` (rename ``PATH`` to ``ARG``).

:func:`appending` and :func:`on_open` start them from a test and clean up. ``FILE_WRITER_NICE=19`` in the
environment runs the writers at that niceness: a loaded machine's share of the CPU for them, on demand (a read
during which the writer got no CPU sees no change: tests/test_files_being_written.py's :func:`refused`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def line(i: int) -> str:
    """Order ``i``'s CSV row (``order_id,customer,date,amount``)."""
    return f"{i},c{i % 97},2025-06-{1 + i % 28:02d},{100 + i}.50\n"


def _spawn(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "tests.fakes.file_writer", *args], cwd=ROOT, env=env)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the writer exited ({proc.returncode})"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.002)


def _stop(proc: subprocess.Popen) -> None:
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


@contextlib.contextmanager
def appending(path: Path, first: int):
    """A writer appending orders from ``first`` on to ``path`` until the block ends; yields once it has."""
    with _writing(path, "append", str(first)):
        yield


@contextlib.contextmanager
def rewriting(path: Path):
    """A writer writing ``path`` anew (see the module) until the block ends; yields once it has."""
    with _writing(path, "rewrite"):
        yield


@contextlib.contextmanager
def _writing(path: Path, mode: str, *args: str):
    stop = path.with_name(path.name + ".stop")
    state = path.stat()
    proc = _spawn(mode, str(path), *args, str(stop))
    try:
        deadline = time.monotonic() + 30
        while path.stat() == state:
            assert proc.poll() is None and time.monotonic() < deadline, "the writer never wrote"
            time.sleep(0.002)
        yield
    finally:
        stop.touch()
        _stop(proc)
        stop.unlink()


@contextlib.contextmanager
def on_open(path: Path, action: str, arg: str = ""):
    """A watcher doing ``action`` to ``path`` once this process opens it (see the module); yields a function
    telling whether it has been done."""
    ready, done = path.with_name(path.name + ".ready"), path.with_name(path.name + ".done")
    proc = _spawn("on-open", str(os.getpid()), str(path), str(ready), str(done), action, arg)
    try:
        _wait_for(ready, proc)
        yield done.exists
    finally:
        proc.terminate()  # not SIGKILL: one between its SIGSTOP of this process and its SIGCONT would leave it stopped
        _stop(proc)


def _append(path: Path, first: int, stop: Path) -> None:
    with open(path, "a", encoding="utf-8") as f:
        i = first
        while not stop.exists():
            for _ in range(20):
                text = line(i)
                for part in (text[:9], text[9:]):
                    f.write(part)
                    f.flush()
                i += 1
            time.sleep(0.0005)  # the reader's process gets the CPU, the file keeps growing all through its read


def _rewrite(path: Path, stop: Path) -> None:
    data, part = path.read_bytes(), path.with_name(path.name + ".part")
    assert data.endswith(b".50\n")
    versions = [path.with_name(f"{path.name}.v{k}") for k in (0, 1)]  # written once: no data written in the loop
    versions[0].write_bytes(data[:-3] + b"51\n")
    versions[1].write_bytes(data)
    i = mtime = 0
    while not stop.exists():  # each time another file (inode), its mtime new: a change every few µs
        os.link(versions[i % 2], part)
        mtime = max(mtime + 1, time.time_ns())
        os.utime(part, ns=(mtime, mtime))
        os.replace(part, path)
        i += 1


def _is_open(pid: str, target: str) -> bool:
    fds = f"/proc/{pid}/fd"
    for fd in os.listdir(fds):
        with contextlib.suppress(OSError):
            if os.readlink(f"{fds}/{fd}") == target:
                return True
    return False


#: the signals :func:`_on_open` holds back while the reader is stopped
_HELD = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


def _on_open(pid: str, path: Path, ready: Path, done: Path, action: str, arg: str) -> None:
    target = str(path.resolve())
    ready.touch()
    while True:
        while not _is_open(pid, target):
            pass
        # no SIGTERM, SIGINT or SIGHUP (a CI job's timeout, ^C, on_open's cleanup) ends this process while the reader
        # is stopped: they wait until it runs again (SIGKILL cannot be held: on_open sends SIGTERM, SIGKILL only to a
        # watcher that has not heeded it for 30 s)
        signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)
        os.kill(int(pid), signal.SIGSTOP)  # the reader waits while the file is changed: a change during its read
        try:
            if _is_open(pid, target):  # not a read that ended while this process had no CPU
                _act(path, action, arg)
                done.touch()
                return
        finally:
            os.kill(int(pid), signal.SIGCONT)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _HELD)


def _act(path: Path, action: str, arg: str) -> None:
    if action == "append":
        with open(path, "a", encoding="utf-8") as f:
            f.write(line(int(arg)))
    elif action == "replace":
        os.replace(arg, path)
    elif action == "move":
        os.rename(path, arg)
    else:
        raise SystemExit(f"unknown action {action!r}")


if __name__ == "__main__":
    os.nice(int(os.environ.get("FILE_WRITER_NICE", "0")))
    mode, *rest = sys.argv[1:]
    if mode == "append":
        _append(Path(rest[0]), int(rest[1]), Path(rest[2]))
    elif mode == "rewrite":
        _rewrite(Path(rest[0]), Path(rest[1]))
    else:
        _on_open(rest[0], Path(rest[1]), Path(rest[2]), Path(rest[3]), rest[4], rest[5] if len(rest) > 5 else "")
