"""Counts in messages take their noun's number: "1 delivery", "2 deliveries" (connectors.counts), and the messages
of connectors/ that said "1 rows", "1 customers merged", "1 records still missing", "1 minutes" say it right."""

from __future__ import annotations

import duckdb
import pytest

from connectors.counts import agrees, counted, plural
from connectors.identity import IdentityReport


@pytest.mark.parametrize("noun,many", [("row", "rows"), ("delivery", "deliveries"), ("day", "days"),
                                       ("match", "matches"), ("bad row", "bad rows"), ("box", "boxes")])
def test_plural(noun, many):
    assert plural(noun) == many


def test_counted_and_agrees():
    assert [counted(n, "delivery") for n in (0, 1, 2)] == ["0 deliveries", "1 delivery", "2 deliveries"]
    assert counted(1, "row has", "rows have") == "1 row has" and counted(3, "row has", "rows have") == "3 rows have"
    assert (agrees(1, "has", "have"), agrees(2, "has", "have")) == ("has", "have")


def test_the_identity_line_says_one_row_and_one_customer():
    report = IdentityReport(linked_rows=1, merged_customers=1, ignored_count=0)
    assert str(report) == "identity: 1 row linked, 1 customer merged, 0 shared identifiers ignored"


def test_the_stager_s_summary_says_one_order(caplog):
    import logging

    from connectors.incremental import Stager
    from connectors.records import Order
    from datetime import datetime, timezone
    from decimal import Decimal

    con = duckdb.connect()
    stager = Stager(con, "test")
    stager.stage([Order("1", "c1", datetime(2025, 1, 1, tzinfo=timezone.utc), Decimal(1))])
    with caplog.at_level(logging.INFO, logger="connectors.incremental"):
        stager.result("{}")
    assert "test: staged 1 order, 0 contacts, 0 bad records" in caplog.text
