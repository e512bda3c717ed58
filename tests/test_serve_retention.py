"""serve's webhook queue retention (sync/serve/retention.py): the process that runs the workers purges the done
events a later state of their records superseded and the done pulls deliveries queued, ``[serve]
keep_done_events_days`` after they finished, on its own schedule; on SQLite and (with RFMSYNC_TEST_PG_URL) on PostgreSQL."""

from __future__ import annotations

import time

import pytest

from sync.config import Config, ServeConfig
from sync.ledger import Ledger
from sync.ledger.codec import encode_records
from sync.serve.service import Service
from sync.settings import load_settings

try:
    from tests.ledger_fixtures import Clock, clock, ledger, ledger_url, open_ledger  # noqa: F401
except ImportError:  # tests/ itself on sys.path
    from ledger_fixtures import Clock, clock, ledger, ledger_url, open_ledger  # type: ignore # noqa: F401


#: the pull a Bitrix24 ONCRM* delivery queued (sync/serve/webhooks.py): a key of its own, never superseded
PULL = "pull:7:1765000000:42"


def _history(ledger: Ledger, clock: Clock) -> None:
    """order:1 went a → b (a superseded), a Bitrix24 delivery queued a pull, all done; then 31 days pass."""
    for source, key, state in (("generic", "order:1", "a"), ("generic", "order:1", "b"),
                               ("bitrix24", PULL, encode_records(pull=True))):
        ledger.enqueue_event(source, key, state)
        [e] = ledger.claim_events("w")
        ledger.complete_events([e.id], worker="w")
    clock.advance(days=31)


def _keys(ledger: Ledger) -> list[str]:
    with ledger._db.read() as conn:  # noqa: SLF001 - the rows themselves
        return sorted(k.split("@")[0] for k in conn.exec_driver_sql("SELECT dedupe_key FROM events").scalars())


def _served(ledger: Ledger, seconds: float, **kwargs) -> None:
    cfg = Config(serve=ServeConfig(**kwargs.pop("serve", {})))
    service = Service(cfg, load_settings(), ledger, schedule=False, purge_every=0.05, poll_seconds=0.05, **kwargs)
    service.start()
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and len(_keys(ledger)) > 1:
            time.sleep(0.05)
    finally:
        service.stop()


def test_serve_purges_superseded_and_pull_done_events_past_the_retention_by_itself(ledger, clock):
    _history(ledger, clock)
    _served(ledger, 20)
    assert _keys(ledger) == ["order:1"]  # the latest state is kept: a repeat of it is still dropped
    assert ledger.enqueue_event("generic", "order:1", "b") is False


@pytest.mark.parametrize("how", [{"serve": {"keep_done_events_days": 0}}, {"serve": {"keep_done_events_days": 32}},
                                 {"workers": 0}], ids=["keep-all", "not-yet", "intake-only"])
def test_serve_keeps_them_when_told_to_within_the_retention_and_without_workers(ledger, clock, how):
    _history(ledger, clock)
    _served(ledger, 1.0, **how)
    assert _keys(ledger) == ["order:1", PULL, "superseded:order:1"]
