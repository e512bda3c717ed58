"""The webhook queue's retention in ``rfmsync serve``: done events a later state of their records superseded, and
the done pulls deliveries naming records without their state queued, are purged ``[serve] keep_done_events_days``
after they finished, hourly, by the process that runs the workers (:meth:`sync.ledger.queue.EventQueue.purge_events`:
in short batches, never an event the dedupe reads, a pending or a failed one)."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from ..ledger import Ledger

log = logging.getLogger(__name__)

#: seconds between two purges
PURGE_EVERY_SECONDS = 3600.0
#: seconds from the start to the first purge (the workers' first batch first)
FIRST_PURGE_AFTER_SECONDS = 60.0


class EventRetention:
    """Purges the queue's superseded and pull done events older than ``days``, every ``every`` seconds."""

    def __init__(self, ledger: Ledger, days: int, *, every: float = PURGE_EVERY_SECONDS,
                 first_after: float = FIRST_PURGE_AFTER_SECONDS) -> None:
        self.ledger, self.keep = ledger, timedelta(days=days)
        self.every, self.first_after = every, min(first_after, every)

    def purge_once(self, stop: threading.Event | None = None) -> int:
        purged = self.ledger.purge_events(self.keep, stop=stop)
        if purged:
            log.info("webhook queue: %d done %s older than %d days purged", purged,
                     "event" if purged == 1 else "events", self.keep.days)
        return purged

    def run_forever(self, stop: threading.Event) -> None:
        wait = self.first_after
        while not stop.wait(wait):
            wait = self.every
            try:
                self.purge_once(stop)
            except Exception as exc:  # the ledger unreachable for a moment: the next purge tries again
                log.warning("webhook queue: cannot purge done events: %s; trying again in %.0fs", exc, self.every)
