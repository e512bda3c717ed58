"""tests.fakes.file_writer's on_open watcher stops the reading process (SIGSTOP) while it changes the file and lets
it go on (SIGCONT) after: a watcher ended in between (a CI job's timeout, ^C, on_open's own cleanup) must not leave
the reader stopped for good, where pytest-timeout cannot fire, nor may an action that blocks; and its wait for the
open takes no CPU. The reader here is a subprocess, not pytest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.fakes.file_writer import _spawn, line, on_open

#: a reader holding a FIFO open whose pipe it has filled: the watcher's append to it blocks, holding the watcher
#: between its SIGSTOP and its SIGCONT of the reader until the test drains the pipe
READER = """\
import os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_NONBLOCK)
try:
    while True:
        os.write(fd, b"x" * 4096)
except BlockingIOError:
    pass
open(sys.argv[2], "w").close()
while True:
    time.sleep(0.01)
"""


def _state(pid: int) -> str:
    """The process's state letter in /proc (``T``: stopped)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _until(check, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


def test_a_watcher_terminated_while_the_reader_is_stopped_lets_the_reader_go_on(tmp_path):
    fifo, filled = tmp_path / "day.csv", tmp_path / "filled"
    os.mkfifo(fifo)
    reader = subprocess.Popen([sys.executable, "-c", READER, str(fifo), str(filled)])
    watcher = None
    try:
        _until(filled.exists, "the reader never filled the pipe")
        watcher = _spawn("on-open", str(reader.pid), str(fifo), str(tmp_path / "ready"), str(tmp_path / "done"),
                         "append", "1")
        _until(lambda: _state(reader.pid) == "T", "the watcher never stopped the reader")
        watcher.terminate()  # in the window: the watcher is blocked appending to the full pipe
        drain = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        try:
            while os.read(drain, 1 << 16):  # the watcher's append completes
                pass
        except BlockingIOError:
            pass
        finally:
            os.close(drain)
        assert watcher.wait(10) == -signal.SIGTERM
        _until(lambda: _state(reader.pid) != "T", "the reader stayed stopped after the watcher's end", timeout=5)
        assert (tmp_path / "done").exists()
    finally:
        reader.send_signal(signal.SIGCONT)
        reader.kill()
        reader.wait()
        if watcher is not None and watcher.poll() is None:
            watcher.kill()
            watcher.wait()


def _filled_reader(tmp_path: Path) -> tuple[Path, subprocess.Popen]:
    """A reader holding the FIFO ``day.csv`` open, its pipe full (:data:`READER`)."""
    fifo, filled = tmp_path / "day.csv", tmp_path / "filled"
    os.mkfifo(fifo)
    reader = subprocess.Popen([sys.executable, "-c", READER, str(fifo), str(filled)])
    _until(filled.exists, "the reader never filled the pipe")
    return fifo, reader


def test_a_watcher_whose_action_blocks_lets_the_reader_go_on_after_its_hold_and_says_why(tmp_path):
    """The append to the full pipe blocks for good: before, the reader stayed stopped as long as the watcher lived
    (signals held); now the hold ends after ``FILE_WRITER_HOLD`` seconds, the reader goes on, and the watcher
    writes why (what :class:`~tests.fakes.file_writer.Watch` fails the test with) and exits 3."""
    fifo, reader = _filled_reader(tmp_path)
    watcher = None
    try:
        watcher = _spawn("on-open", str(reader.pid), str(fifo), str(tmp_path / "ready"), str(tmp_path / "done"),
                         "append", "1", FILE_WRITER_HOLD="1")
        _until(lambda: _state(reader.pid) == "T", "the watcher never stopped the reader")
        _until(lambda: _state(reader.pid) != "T", "the reader stayed stopped past the watcher's hold", timeout=8)
        assert watcher.wait(10) == 3
        assert (tmp_path / "done.failed").read_text(encoding="utf-8") == (
            f"append {fifo} was not done within 1 s while process {reader.pid} was stopped; it was let go on "
            f"(SIGCONT) undone")
        assert not (tmp_path / "done").exists()
    finally:
        reader.send_signal(signal.SIGCONT)
        reader.kill()
        reader.wait()
        if watcher is not None and watcher.poll() is None:
            watcher.kill()
            watcher.wait()


def _cpu_seconds(pid: int) -> float:
    """The user and system CPU time process ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_watcher_waiting_for_the_open_takes_no_cpu(tmp_path):
    """Before, the watcher polled /proc without a pause until the read began: a core while it waited."""
    day = tmp_path / "day.csv"
    day.write_text("order_id,customer,date,amount\n", encoding="utf-8")
    with on_open(day, "append", "1") as done:
        start = _cpu_seconds(done.pid)
        time.sleep(1.5)
        assert _cpu_seconds(done.pid) - start < 0.15
        assert not done()


def test_a_watcher_started_before_the_file_exists_polls_sparingly_and_watches_it_once_it_appears(tmp_path):
    """No inotify watch on a missing file (ENOENT): before, the watcher slept a millisecond between its scans of
    /proc/PID/fd for as long as the file did not exist, and never added the watch after. Now it polls every
    :data:`~tests.fakes.file_writer.POLL_SECONDS`, then waits on inotify once the file appears; the open it sees."""
    day = tmp_path / "day.csv"
    with on_open(day, "append", "1") as done:
        start = _cpu_seconds(done.pid)
        time.sleep(1.5)
        missing = _cpu_seconds(done.pid) - start
        day.write_text("order_id,customer,date,amount\n", encoding="utf-8")
        time.sleep(0.2)  # the watch added
        start = _cpu_seconds(done.pid)
        time.sleep(1.5)
        present = _cpu_seconds(done.pid) - start
        with open(day, encoding="utf-8"):
            _until(done, "the watcher never acted on the open")
    # the kernel counts a process's CPU in 10 ms ticks: 0.02 s is two ticks (a busy wait would take ~1.5 s)
    assert missing < 0.05 and present < 0.05, f"CPU over 1.5 s: {missing:.3f} s missing, {present:.3f} s after"
    assert day.read_text(encoding="utf-8").endswith(line(1))
