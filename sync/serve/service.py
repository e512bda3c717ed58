"""One ``rfmsync serve`` process: the app plus its background threads (resync workers, the scheduler)."""

from __future__ import annotations

import logging
import threading
from typing import Any

from ..config import Config
from ..ledger import Ledger
from ..schedule_times import Schedule
from ..settings import Settings
from .app import create_app
from .metrics import Metrics
from .retention import PURGE_EVERY_SECONDS, EventRetention
from .webhooks import Intake
from .worker import Worker

log = logging.getLogger(__name__)


class Service:
    """The app plus its background threads: ``workers`` resync workers, the scheduler (on ``timetable``, the
    ``[schedule]`` its caller parsed; else parsed here), and (with workers) the queue's retention
    (:mod:`.retention`, every ``purge_every`` seconds)."""

    def __init__(self, cfg: Config, settings: Settings, ledger: Ledger, *, workers: int | None = None,
                 schedule: bool = True, timetable: Schedule | None = None, purge_every: float = PURGE_EVERY_SECONDS,
                 **worker_kwargs: Any) -> None:
        from .scheduler import Scheduler

        self.cfg, self.settings, self.ledger = cfg, settings, ledger
        self.metrics = Metrics()
        n = cfg.serve.workers if workers is None else workers
        self.workers = [Worker(cfg, ledger, settings, metrics=self.metrics, **worker_kwargs) for _ in range(n)]
        self.scheduler = (Scheduler(cfg, ledger, settings, schedule=timetable, metrics=self.metrics) if schedule
                          else None)
        keep = cfg.serve.keep_done_events_days
        self.retention = EventRetention(ledger, keep, every=purge_every) if self.workers and keep else None
        self.intake = Intake(cfg, ledger, settings, self.metrics, on_queued=self.wake)
        self.app = create_app(self.intake)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def wake(self) -> None:
        """New events were queued: workers of this process look now instead of at their next poll."""
        for w in self.workers:
            w.wake()

    def start(self) -> Service:
        try:  # runs a killed earlier process left "running" (kill -9, OOM) show as abandoned from now on
            self.ledger.abandon_dead_runs()
        except Exception as exc:  # never keep the server from starting
            log.warning("cannot check the ledger for abandoned runs: %s", exc)
        loops = [w.run_forever for w in self.workers]
        if self.scheduler is not None and self.scheduler.schedule.enabled:
            loops.append(self.scheduler.run_forever)
        if self.retention is not None:
            loops.append(self.retention.run_forever)
        for i, loop in enumerate(loops):
            t = threading.Thread(target=loop, args=(self._stop,), name=f"rfmsync-bg-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the background threads (a batch in progress finishes first)."""
        self._stop.set()
        self.wake()
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()

    def close(self) -> None:
        self.stop()
        if self.intake.writer is not None:
            self.intake.writer.close()
        self.ledger.close()


def build_service(cfg: Config, settings: Settings, **kwargs: Any) -> Service:
    """Open the ledger and build the service; warns when the generic webhook secret is missing."""
    from ..ledger import open_ledger

    if not settings.rfmsync_webhook_secret:
        log.warning("RFMSYNC_WEBHOOK_SECRET is not set: generic webhooks will be refused (401)")
    return Service(cfg, settings, open_ledger(cfg, settings), **kwargs)
