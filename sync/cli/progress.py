"""The CLI's progress display (a :class:`sync.progress.Reporter`): rich bars on stderr, the long retry waits.

* A bar per step (reading files, pulling pages, segmenting, predicting, planning, applying per destination:
  contacts done / total, API calls, the retry being waited for) while the step runs, **only when stderr is a
  terminal**; the bars are transient: they vanish when the steps are done, so what stays on the screen is the
  command's output. Pipes, files, cron and ``--format json`` get no control characters at all.
* A retry wait longer than :data:`WAIT_NOTICE_SECONDS` prints one line on stderr, terminal or not (a long
  silent wait looks like a hang): ``Mailchimp 429: waiting 12 s, attempt 3/6``: the vendor, the HTTP status
  or error kind, the seconds, the attempt to come / the most the retry policy makes; never a URL or a secret.
* ``--quiet`` turns all of it off, the retry-wait lines and the info lines (``wrote …``) included: what is left
  is the command's output on stdout, and the errors and warnings on stderr. A quiet cron job mails nothing on a
  night the ESP was slow; ``-v`` logs every retry anyway.

The display is given its console (tests inject ``Console(file=..., force_terminal=True)``); the CLI's is stderr.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from ..progress import RetryWait, Step
from .output import SafeConsole, visible

#: a retry wait longer than this (seconds) prints its line even without a terminal
WAIT_NOTICE_SECONDS = 2.0


class Display:
    """Bars on ``console`` when ``bars`` (default: when the console is a terminal) and not ``quiet``."""

    def __init__(self, console: Console, *, quiet: bool = False, bars: bool | None = None) -> None:
        self.console = console
        self.quiet = quiet
        self._bars = console.is_terminal if bars is None else bars
        self._lock = threading.RLock()
        self._live: Progress | None = None
        self._open: list[_Bar] = []

    @property
    def bars(self) -> bool:
        return self._bars and not self.quiet

    def start(self, label: str, total: int | None = None, unit: str = "") -> Step:
        if not self.bars:
            return _NO_BAR
        with self._lock:
            if self._live is None:
                self._live = Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False),
                                      BarColumn(), TextColumn("{task.fields[info]}", markup=False),
                                      TimeElapsedColumn(), console=self.console, transient=True,
                                      redirect_stdout=False, redirect_stderr=True)
                self._live.start()
            bar = _Bar(self, self._live.add_task(visible(label), total=total, info=""), total, unit)
            self._open.append(bar)
            return bar

    def retry_wait(self, wait: RetryWait) -> None:
        if self.quiet:
            return
        with self._lock:
            if self._open:
                self._open[-1].waiting(wait)
            if wait.seconds > WAIT_NOTICE_SECONDS:
                console = self._live.console if self._live is not None else self.console
                console.print(visible(wait.line()), markup=False, highlight=False, soft_wrap=True)

    def info(self, message: str) -> None:
        """An info line on stderr (``wrote 1200 customers to out.csv``), unless ``--quiet``."""
        if not self.quiet:
            self.console.print(visible(message), markup=False, highlight=False, soft_wrap=True)

    def _close(self, bar: _Bar) -> None:
        with self._lock:
            if bar in self._open:
                self._open.remove(bar)
            if self._live is not None:
                self._live.refresh()  # the step's last state is drawn once, however fast it was
                self._live.remove_task(bar.task)
                if not self._open:
                    self._live.stop()
                    self._live = None

    def close(self) -> None:
        """Stop the bars (an error left steps open): the terminal is clean before the error line."""
        with self._lock:
            self._open.clear()
            if self._live is not None:
                self._live.stop()
                self._live = None


class _Bar:
    def __init__(self, display: Display, task: TaskID, total: int | None, unit: str) -> None:
        self.display, self.task, self.unit = display, task, unit
        self.done, self.total, self.calls, self.wait = 0, total, 0, ""

    def update(self, done: int = 0, *, total: int | None = None, calls: int = 0) -> None:
        with self.display._lock:
            self.done += done
            self.total = total if total is not None else self.total
            self.calls += calls
            if calls:
                self.wait = ""  # the call waited for is being made
            self._show(advance=done)

    def waiting(self, wait: RetryWait) -> None:
        self.wait = wait.line()
        self._show()
        if self.display._live is not None:
            self.display._live.refresh()  # shown at once: the next call clears it

    def _show(self, advance: int = 0) -> None:
        count = f"{self.done}/{self.total}" if self.total is not None else (str(self.done) if self.done else "")
        calls = f"{self.calls} calls" if self.calls else ""
        parts = [f"{count} {self.unit}".strip() if count else "", calls, self.wait]
        live = self.display._live
        if live is not None:
            options: dict[str, Any] = {"total": self.total} if self.total is not None else {}
            live.update(self.task, advance=advance, info="  ".join(p for p in parts if p), **options)

    def close(self) -> None:
        self.display._close(self)


class _NoBar:
    def update(self, done: int = 0, *, total: int | None = None, calls: int = 0) -> None:
        pass

    def close(self) -> None:
        pass


_NO_BAR = _NoBar()


def stderr_is_terminal() -> bool:
    """Whether the real stderr is a terminal (not a pipe, a file, or click's test runner)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def cli_display(quiet: bool = False) -> Display:
    """The display of one CLI command: bars only when stderr is a terminal."""
    return Display(SafeConsole(stderr=True, soft_wrap=True), quiet=quiet, bars=stderr_is_terminal())
