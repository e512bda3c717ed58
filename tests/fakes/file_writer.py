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
``python -m tests.fakes.file_writer inplace PATH STOP``
    writes the last amount's cents of ``PATH`` in place again and again until ``STOP`` exists (``.00`` to ``.99``
    in turn), setting its mtime back to what it was after each write (an export tool that keeps the file's
    times): its inode, size and mtime stay, only its ctime and bytes change.
``python -m tests.fakes.file_writer chmod PATH STOP``
    flips the group-write bit of ``PATH`` again and again until ``STOP`` exists (a backup setting attributes on
    the files it copied): its ctime changes, its bytes do not.
``python -m tests.fakes.file_writer on-open PID PATH READY DONE ACTION [ARG]``
    writes ``READY``, waits until process ``PID`` has ``PATH`` open (``/proc/PID/fd``: a read begun; woken by
    inotify when ``PATH`` is opened, so the wait takes no CPU), then does ``ACTION`` once and writes ``DONE``, process
    ``PID`` stopped meanwhile (``SIGSTOP``, then ``SIGCONT``: the change falls inside that read, not after it, however
    little CPU the watcher gets; a read that ended before the watcher acted leaves ``DONE`` unwritten and the watcher
    waiting for the next; SIGTERM, SIGINT and SIGHUP wait until process ``PID`` runs again, so ending the watcher
    never leaves it stopped): ``append`` (order ``ARG``'s line), ``replace`` (``os.replace`` the file ``ARG`` onto
    ``PATH``) or ``move`` (rename ``PATH`` to ``ARG``). The hold is bounded: an action not done
    within ``FILE_WRITER_HOLD`` seconds (:data:`HOLD_SECONDS`: a write that blocks, a share that hangs) resumes
    process ``PID``, writes why to ``DONE.failed`` and ends the watcher (exit 3); :func:`on_open`'s ``done()``
    then fails the test with that line.

:func:`appending` and :func:`on_open` start them from a test and clean up. ``FILE_WRITER_NICE=19`` in the
environment runs the writers at that niceness: a loaded machine's share of the CPU for them, on demand (a read
during which the writer got no CPU sees no change: tests/test_files_being_written.py's :func:`refused`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[2]


def line(i: int) -> str:
    """Order ``i``'s CSV row (``order_id,customer,date,amount``)."""
    return f"{i},c{i % 97},2025-06-{1 + i % 28:02d},{100 + i}.50\n"


def _spawn(*args: str, **env_vars: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **env_vars}
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
def rewriting_in_place(path: Path):
    """A writer writing ``path``'s last cents in place, its mtime set back (see the module); yields once it has."""
    with _writing(path, "inplace"):
        yield


@contextlib.contextmanager
def chmodding(path: Path):
    """A process changing ``path``'s mode bits (see the module) until the block ends; yields once it has."""
    with _writing(path, "chmod"):
        yield


def _state(path: Path) -> tuple[int, ...]:
    st = path.stat()
    return st.st_ino, st.st_size, st.st_mode, st.st_mtime_ns, st.st_ctime_ns


@contextlib.contextmanager
def _writing(path: Path, mode: str, *args: str):
    stop = path.with_name(path.name + ".stop")
    state = _state(path)
    proc = _spawn(mode, str(path), *args, str(stop))
    try:
        deadline = time.monotonic() + 30
        while _state(path) == state:
            assert proc.poll() is None and time.monotonic() < deadline, "the writer never wrote"
            time.sleep(0.002)
        yield
    finally:
        stop.touch()
        _stop(proc)
        stop.unlink()


class Watch:
    """What :func:`on_open` yields: called, whether the watcher has done its action; an AssertionError naming why
    when it gave up holding the reader (an action not done within its hold: ``DONE.failed``). ``pid``: the
    watcher's process."""

    def __init__(self, proc: subprocess.Popen, done: Path) -> None:
        self.pid, self.done, self.failed = proc.pid, done, _failed(done)

    def __call__(self) -> bool:
        if self.failed.exists():
            raise AssertionError(f"the file watcher gave up: {self.failed.read_text(encoding='utf-8')}")
        return self.done.exists()


@contextlib.contextmanager
def on_open(path: Path, action: str, arg: str = "", hold: float | None = None):
    """A watcher doing ``action`` to ``path`` once this process opens it (see the module); yields a :class:`Watch`
    telling whether it has been done (``hold``: the most seconds it may keep this process stopped)."""
    ready, done = path.with_name(path.name + ".ready"), path.with_name(path.name + ".done")
    env = {"FILE_WRITER_HOLD": str(hold)} if hold is not None else {}
    proc = _spawn("on-open", str(os.getpid()), str(path), str(ready), str(done), action, arg, **env)
    watch = Watch(proc, done)
    try:
        _wait_for(ready, proc)
        yield watch
    finally:
        proc.terminate()  # not SIGKILL: one between its SIGSTOP of this process and its SIGCONT would leave it stopped
        _stop(proc)
        if sys.exc_info()[0] is None:
            watch()  # a watcher that gave up fails the test, if nothing else has


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


def _in_place(path: Path, stop: Path) -> None:
    st = path.stat()
    with open(path, "r+b", buffering=0) as f:
        assert f.read()[-4:] == b".50\n"
        i = 0
        while not stop.exists():
            os.pwrite(f.fileno(), b"%02d" % (i % 100), st.st_size - 3)
            os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
            i += 1
            time.sleep(0.0005)


def _chmod(path: Path, stop: Path) -> None:
    mode = path.stat().st_mode
    while not stop.exists():
        mode ^= 0o020
        os.chmod(path, mode)
        time.sleep(0.0005)


def _is_open(pid: str, target: str) -> bool:
    fds = f"/proc/{pid}/fd"
    for fd in os.listdir(fds):
        with contextlib.suppress(OSError):
            if os.readlink(f"{fds}/{fd}") == target:
                return True
    return False


#: the signals :func:`_on_open` holds back while the reader is stopped
_HELD = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
#: the most seconds :func:`_on_open` keeps the reader stopped (``FILE_WRITER_HOLD`` overrides it): its actions
#: take microseconds, so one not done by then is stuck
HOLD_SECONDS = 10.0
_IN_OPEN = 0x20


def _failed(done: Path) -> Path:
    return done.with_name(done.name + ".failed")


#: the seconds :func:`_open_events` sleeps between two looks at ``/proc`` where it has no inotify watch
POLL_SECONDS = 0.015


def _open_events(path: Path) -> Callable[[float], None]:
    """A function waiting up to its argument's seconds for ``path`` to be opened (inotify's IN_OPEN), taking no
    CPU meanwhile. Where inotify is not to be had, or until ``path`` exists (no watch on a missing file: ENOENT),
    it sleeps :data:`POLL_SECONDS` (the caller then looks at ``/proc``), adding the watch once the file appears."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, AttributeError):
        fd = -1
    watched = False

    def wait(timeout: float) -> None:
        nonlocal watched
        if fd >= 0 and not watched:
            watched = libc.inotify_add_watch(fd, os.fsencode(path), _IN_OPEN) >= 0
        if not watched:
            time.sleep(min(timeout, POLL_SECONDS))
        elif select.select([fd], [], [], timeout)[0]:
            with contextlib.suppress(BlockingIOError):
                while os.read(fd, 4096):  # every event so far: the check after this sees each open
                    pass
    wait(0)  # the watch added now where the file exists: before READY, so no open after it is missed
    return wait


def _on_open(pid: str, path: Path, ready: Path, done: Path, action: str, arg: str) -> None:
    target = str(path.resolve())
    hold = float(os.environ.get("FILE_WRITER_HOLD") or HOLD_SECONDS)
    opened = _open_events(path)  # watched before READY: no open after it is missed
    ready.touch()
    while True:
        while not _is_open(pid, target):
            opened(0.05)  # an open seen at once; the time-out: an open by a file descriptor passed on, say
        # no SIGTERM, SIGINT or SIGHUP (a CI job's timeout, ^C, on_open's cleanup) ends this process while the reader
        # is stopped: they wait until it runs again (SIGKILL cannot be held: on_open sends SIGTERM, SIGKILL only to a
        # watcher that has not heeded it for 30 s)
        signal.pthread_sigmask(signal.SIG_BLOCK, _HELD)
        os.kill(int(pid), signal.SIGSTOP)  # the reader waits while the file is changed: a change during its read
        stuck = False
        try:
            if _is_open(pid, target):  # not a read that ended while this process had no CPU
                stuck = not _act_within(path, action, arg, hold)
                if stuck:
                    _failed(done).write_text(f"{action} {path} was not done within {hold:g} s while process {pid} "
                                             f"was stopped; it was let go on (SIGCONT) undone", encoding="utf-8")
                else:
                    done.touch()
                    return
        finally:
            os.kill(int(pid), signal.SIGCONT)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _HELD)
        if stuck:
            os._exit(3)  # the action's thread is blocked still: no clean exit waits for it


def _act_within(path: Path, action: str, arg: str, hold: float) -> bool:
    """Whether :func:`_act` was done within ``hold`` seconds (in a thread, which inherits the held signals); its
    error raised here."""
    errors: list[BaseException] = []

    def act() -> None:
        try:
            _act(path, action, arg)
        except BaseException as e:  # noqa: BLE001 (raised in the watcher's main thread)
            errors.append(e)

    thread = threading.Thread(target=act, daemon=True)
    thread.start()
    thread.join(hold)
    if errors:
        raise errors[0]
    return not thread.is_alive()


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
    elif mode == "inplace":
        _in_place(Path(rest[0]), Path(rest[1]))
    elif mode == "chmod":
        _chmod(Path(rest[0]), Path(rest[1]))
    else:
        _on_open(rest[0], Path(rest[1]), Path(rest[2]), Path(rest[3]), rest[4], rest[5] if len(rest) > 5 else "")
