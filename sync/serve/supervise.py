"""Process supervision of ``rfmsync serve``: the intake process, its worker process, signals.

By default the resync workers and the scheduler run in a **child process** at a lower CPU priority
(``nice`` +10) and the HTTP intake runs alone in the main process. A resync is CPU-bound Python; sharing a
GIL with it cost the intake a p99 of ~200 ms at 250 webhooks/s (bench/serve.py), in its own process the
intake stays within its target. The two processes talk over the child's stdin/stdout: one line per queued
delivery wakes the worker at once (no poll delay); the child sends its metrics back once a second, so
``GET /metrics`` still shows resync and ESP figures; EOF on its stdin (the parent was killed) makes the
child exit at once. ``--worker-thread`` keeps everything in one process as before.

The child is the same ``serve`` command run with ``--no-http --parent-pipe``: the CLI passes the argv that
starts it (``child_command``), so this module does not know where the command lives.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..config import Config
from ..settings import Settings
from .metrics import Metrics
from ..schedule_times import Schedule
from .service import Service, build_service

log = logging.getLogger(__name__)
INTAKE_SWITCH_INTERVAL = 0.0005  # seconds (Python's default is 0.005)
WORKER_NICE = 10
METRICS_EVERY_SECONDS = 1.0


@dataclass(frozen=True)
class ServeOptions:
    """The switches of ``rfmsync serve`` (see its --help)."""

    host: str = "127.0.0.1"
    port: int = 8080
    worker: bool = True
    schedule: bool = True
    http: bool = True
    worker_process: bool = True
    parent_pipe: bool = False


def run_serve(cfg: Config, settings: Settings, opts: ServeOptions, *, child_command: Sequence[str],
              announce: Callable[[str], None]) -> int | None:
    """Serve until SIGTERM / Ctrl-C. Returns the exit code of a worker process that died on its own (the server
    stopped because of it), else None. ``announce`` prints the start-up line (to stderr)."""
    import uvicorn

    timetable = Schedule.from_config(cfg.schedule, cfg.timezone) if opts.schedule else None  # the scheduler's too
    scheduled = timetable is not None and timetable.enabled
    split = opts.http and opts.worker_process and (opts.worker or scheduled) and not opts.parent_pipe
    service = build_service(cfg, settings, workers=0 if split or not opts.worker else None,
                            schedule=opts.schedule and not split, timetable=timetable)
    child = None
    try:
        service.start()
        if split:
            child = WorkerProcess([*child_command, *_child_switches(cfg.path, opts)], service)
        announce(_start_line(cfg, opts, service, child))
        exit_cleanly_on_sigterm()
        if opts.parent_pipe:
            serve_parent(service)
        if not opts.http:
            wait_for_signal()
            return None
        if not split:
            # The worker's resync is CPU-bound Python in this process: hand the GIL over more often so that
            # webhook intake keeps a lower latency while a resync runs (measured in bench/serve.py).
            sys.setswitchinterval(INTAKE_SWITCH_INTERVAL)
        # Everything built so far (modules, the app, pydantic models) lives as long as the process: move it out
        # of the cyclic GC's reach. Otherwise every full collection walks it all, a ~100 ms pause that held
        # ~1 % of webhook replies (intake p99 40–80 ms at 250/s; with the freeze 6–22 ms, bench/serve.py).
        gc.freeze()
        uvicorn.run(service.app, host=opts.host, port=opts.port, log_config=None, access_log=False,
                    timeout_graceful_shutdown=10)
    except KeyboardInterrupt:  # Ctrl-C: uvicorn already shut down gracefully
        pass
    finally:
        if child is not None:
            child.stop()  # the worker process finishes its batch first
        service.close()  # lets a batch in progress finish, then closes the ledger
    return child.died if child is not None else None


def _child_switches(config_path: Path | None, opts: ServeOptions) -> list[str]:
    args = ["--no-http", "--parent-pipe", "--worker" if opts.worker else "--no-worker",
            "--schedule" if opts.schedule else "--no-schedule"]
    return args + (["--config", str(config_path)] if config_path is not None else [])


def _start_line(cfg: Config, opts: ServeOptions, service: Service, child: WorkerProcess | None) -> str:
    nworkers = cfg.serve.workers if child and opts.worker else len(service.workers)
    sched = service.scheduler
    when = sched.next_fire.isoformat() if sched is not None and sched.next_fire else "none"
    where = f"listening on http://{opts.host}:{opts.port}" if opts.http else "no HTTP"
    mode = f", in worker process {child.pid}" if child else f", next scheduled sync: {when}"
    return f"rfmsync serve: {where} ({nworkers} workers{mode}, debounce {cfg.serve.debounce_seconds:g}s)"


class WorkerProcess:
    """The child ``serve --no-http --parent-pipe`` that runs the workers and the scheduler."""

    def __init__(self, args: Sequence[str], service: Service) -> None:
        self.metrics: Metrics = service.metrics
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(list(args), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     env=dict(os.environ), preexec_fn=_lower_priority, close_fds=True)
        self.pid = self.proc.pid
        os.set_blocking(self.proc.stdin.fileno(), False)  # type: ignore[union-attr]  (never stall the intake)
        service.intake.on_queued = self.wake
        self.died: int | None = None  # exit code when the child ended on its own
        self._stopping = False
        threading.Thread(target=self._read_metrics, name="rfmsync-worker-metrics", daemon=True).start()
        threading.Thread(target=self._watch, name="rfmsync-worker-watch", daemon=True).start()

    def _watch(self) -> None:
        """A worker process that dies on its own (bad config, crash) stops the whole server: better a
        visible failure (systemd restarts it) than an intake whose queue nobody drains."""
        code = self.proc.wait()
        if not self._stopping:
            self.died = code
            log.error("rfmsync serve: the worker process %d exited with code %s; stopping", self.pid, code)
            os.kill(os.getpid(), signal.SIGTERM)

    def wake(self) -> None:
        with self._lock:
            try:
                os.write(self.proc.stdin.fileno(), b"\n")  # type: ignore[union-attr]
            except (OSError, ValueError):  # pipe full (it is awake anyway) or closed: the worker also polls
                pass

    def _read_metrics(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            try:
                self.metrics.set_remote([json.loads(line)])
            except ValueError:
                continue

    def stop(self, timeout: float = 60.0) -> None:
        self._stopping = True
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("worker process %d did not stop within %.0fs; killing it", self.pid, timeout)
                self.proc.kill()
                self.proc.wait(10)
        with self._lock:
            try:
                self.proc.stdin.close()  # type: ignore[union-attr]
            except OSError:
                pass


def _lower_priority() -> None:
    try:
        os.nice(WORKER_NICE)
    except OSError:
        pass


def serve_parent(service: Service) -> None:
    """Child side: a line on stdin wakes the workers; EOF means the parent died (kill -9): exit at once,
    as if killed too (claimed events are taken over by the next worker). Metrics go to stdout."""
    out = sys.stdout.buffer

    def listen() -> None:
        fd = sys.stdin.fileno()
        while os.read(fd, 4096):  # raw reads: no buffered-reader lock for interpreter shutdown to trip on
            service.wake()
        log.warning("rfmsync serve: the intake process is gone; the worker process exits")
        os._exit(70)

    def report() -> None:
        stop = threading.Event()
        while not stop.wait(METRICS_EVERY_SECONDS):
            try:
                out.write(json.dumps(service.metrics.snapshot()).encode() + b"\n")
                out.flush()
            except (OSError, ValueError):
                return

    threading.Thread(target=listen, name="rfmsync-parent-pipe", daemon=True).start()
    threading.Thread(target=report, name="rfmsync-metrics-out", daemon=True).start()


def wait_for_signal() -> None:
    while True:  # until SIGTERM / Ctrl-C (KeyboardInterrupt)
        signal.pause()


def exit_cleanly_on_sigterm() -> None:
    """uvicorn re-raises the signal that stopped it; turn SIGTERM (systemd stop) into a clean exit 0."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)


def _raise_keyboard_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
