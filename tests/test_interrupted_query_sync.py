"""A Ctrl-C (or the CLI's SIGTERM) that lands inside a DuckDB statement reaches the sync as DuckDB's own error,
``RuntimeError("Query interrupted")`` (the KeyboardInterrupt dropped: :func:`segmentation.errors.interrupted_query`).
A sync treats it as the interruption it is: in planning it records no ``failed`` run (it recorded
``failed … Query interrupted`` for every destination), under a destination's lock (the order store's check) no
further destination is applied (the others were applied in full, as after a vendor's failure)."""
from __future__ import annotations

import os
import signal
import threading
from datetime import date

import duckdb
import pytest

from sync import progress
from sync.config import load_config
from sync.ledger import open_ledger
from sync.run import full_sync
from sync.settings import load_settings
from tests.test_config_moved import AS_OF, SECOND, shop  # noqa: F401


def _interrupted_statement() -> None:
    """A real DuckDB statement interrupted by a real SIGINT: raises DuckDB's ``Query interrupted``."""
    con = duckdb.connect()
    try:
        con.execute("SET threads = 1")
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()  # the statement runs for many seconds
        con.execute("SELECT count(*) FROM (SELECT i % 1000003 AS g, count(*) FROM range(1000000000) t(i) "
                    "GROUP BY g)")
    finally:
        con.close()
    pytest.fail("the statement ended before the signal")


class _Interrupting:
    """A progress reporter that runs the interrupted statement when the step ``label`` starts (``"applying
    <destination>"``: in the destination's apply, where the order store's check under its lock runs the sync's
    DuckDB statements), or at the first retry wait (the ESP's check while planning)."""

    def __init__(self, label: str | None) -> None:
        self.label = label

    def start(self, label, total=None, unit=""):
        if label == self.label:
            self.label = None
            _interrupted_statement()
        return progress.SILENT.start(label, total, unit)

    def retry_wait(self, wait):
        if self.label is None:
            return
        self.label = None
        _interrupted_statement()


def _two_destinations(shop) -> list[str]:  # noqa: F811
    text = shop.read_text(encoding="utf-8")
    mapping = text[text.index("[destinations.segments]"):].split("[destinations.fields]")[0]
    shop.write_text(text + SECOND + mapping, encoding="utf-8")
    return [d.name for d in load_config(shop).destinations]


def _sync(shop, reporter):  # noqa: F811
    cfg, settings = load_config(shop), load_settings()
    with open_ledger(cfg, settings) as ledger:
        with progress.reporting(reporter), pytest.raises(RuntimeError, match="^Query interrupted$"):
            full_sync(cfg, ledger, settings, as_of=date.fromisoformat(AS_OF))
        return [(r["destination"], r["status"]) for r in ledger.recent_runs(20) if r["kind"] == "sync"]


def test_an_interrupted_query_under_a_destination_s_lock_applies_no_further_destination(shop,  # noqa: F811
                                                                                        mailchimp_fake):
    first, _ = _two_destinations(shop)
    runs = _sync(shop, _Interrupting(f"applying {first}"))
    assert runs == []  # (the second destination was applied in full: a run, its contacts in aud2)
    assert not mailchimp_fake.lists["aud2"].members and mailchimp_fake.write_calls == 0


def test_an_interrupted_query_while_planning_records_no_failed_run(shop, mailchimp_fake):  # noqa: F811
    _two_destinations(shop)
    mailchimp_fake.fail(429, times=1, retry_after="0", method="GET")  # the ESP's check waits once: interrupted
    assert _sync(shop, _Interrupting("")) == []  # (were: 'failed … (planning): Query interrupted', each)
