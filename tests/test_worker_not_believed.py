"""The webhook worker's wait on an ESP's 2xx answer not believed (a proxy's maintenance page): the WARNING naming
it comes once per wait, also when another outage came first; ``GET /healthz``'s wait ends when the give-up leaves
the worker nothing to resync, a config wait does not (docs/serve.md)."""

from __future__ import annotations

import logging
import random
from datetime import timedelta

from connectors.errors import TransientError
from sync.config import Config
from sync.destinations.answers import BadAnswer
from sync.errors import ConfigError
from sync.ledger import Ledger
from sync.serve.metrics import Metrics
from sync.serve.worker import Worker
from sync.settings import Settings

from tests.test_worker_outage import AS_OF_DT, Ticks, _enqueue_orders, _statuses

PAGE = BadAnswer("mailchimp: GET /lists/aud1", "not JSON", b"<html>Down for maintenance</html>")


def _run(tmp_path, failures, claims: int, **worker_args):
    """A worker whose resyncs raise ``failures`` in turn (the last one again and again), through ``claims``
    claims, each after the back-off (a claim in :data:`AS_OF_DT`'s day). Returns the worker and the ledger's
    events' statuses."""
    calls = [0]

    def process(batch):
        calls[0] += 1
        raise failures[min(calls[0], len(failures)) - 1]

    ticks, wall = Ticks(), [AS_OF_DT]
    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}", clock=lambda: wall[0]) as ledger:
        _enqueue_orders(ledger, ["A"])
        worker = Worker(Config(), ledger, Settings(_env_file=None), metrics=Metrics(), process=process,
                        clock=ticks, now=lambda: wall[0], rng=random.Random(1), **worker_args)
        for _ in range(claims):
            worker.process_batch()
            ticks.now += worker.backing_off()
            wall[0] += timedelta(seconds=max(worker.backing_off(), 60))
        return worker, _statuses(ledger)


def _told(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.WARNING and "answer not believed" in r.getMessage()]


def test_the_answer_not_believed_is_told_once_also_after_another_outage(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    worker, _ = _run(tmp_path, [TransientError("connection refused"), PAGE], claims=4)
    assert worker.metrics.waiting_for_config("not_believed")["workers"] == 1
    assert len(_told(caplog)) == 1


def test_the_wait_shown_ends_when_the_give_up_leaves_nothing_queued(tmp_path):
    worker, statuses = _run(tmp_path, [PAGE], claims=3, give_up_waiting_after=90)
    assert statuses["A"][0] == "failed" and "gave up waiting" in statuses["A"][1]
    assert worker.metrics.waiting_for_config("not_believed") is None


def test_a_config_wait_outlives_its_given_up_events(tmp_path):
    """The config is still wrong: the wait (and an alert on it) stays until a resync goes through."""
    worker, statuses = _run(tmp_path, [ConfigError("[destinations] audience: no such audience")], claims=3,
                            give_up_waiting_after=90)
    assert statuses["A"][0] == "failed" and "gave up waiting" in statuses["A"][1]
    assert worker.metrics.waiting_for_config("config_waits")["workers"] == 1


def test_a_wait_shown_stays_while_events_are_queued(tmp_path):
    worker, statuses = _run(tmp_path, [PAGE], claims=1, give_up_waiting_after=90)
    assert statuses["A"][0] == "queued"
    assert worker.metrics.waiting_for_config("not_believed")["workers"] == 1
