"""Whom the order store's big writes moved (:mod:`sync.store.resynced`): a webhook batch or a pull of more than
``NOTED_ROWS`` orders, a full refresh (a file export read again: a new daily file, a changed contacts file) and a
lean file swap note the customers they moved, as a small merge does, so a full sync that read the store before
leaves those out instead of holding its destination (exit 5); beyond ``NOTED_CUSTOMERS`` customers a write notes
nobody (the bound on what one write gathers), and the sync holds as before."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest

from connectors.records import Consent, Contact, LineItem, Order
from connectors.source import PullResult
from connectors.tables import create_staging, stage_records, unchanged_staged
from sync.store import connect_store, resynced
from sync.store.appends import NOTED_ROWS
from sync.store.generation import generation
from sync.store.merge import merge_staged
from sync.store.reads import take_read
from sync.store.resynced import moved_since

AT = datetime(2025, 6, 29, 8, tzinfo=timezone.utc)


def _order(oid: str, customer: str, amount: str = "5", items: tuple = ()) -> Order:
    return Order(order_id=oid, customer_id=customer, amount=Decimal(amount), ordered_at=AT, items=items)


def _big_batch(con, n: int) -> None:
    """``n`` staged orders B0… of customers K0…K999 (set-based: a big webhook batch as the server stages it)."""
    create_staging(con)
    con.execute("INSERT INTO staged_orders (order_id, customer_id, ordered_at, amount, status) SELECT 'B' || i, "
                "'K' || (i % 1000), ?, 1, 'completed' FROM range(?) r(i)", [AT, n])


@pytest.mark.parametrize("origin", ["webhook", "pull"])
def test_a_merge_of_more_than_noted_rows_orders_notes_whom_it_moved(tmp_path, origin):
    """A webhook batch of NOTED_ROWS + 1 orders (one of them an order stored as another customer's, moved to K7)
    and a withdrawn consent: it notes its orders' customers, the one the moved order was stored under and the
    contact's. Before: it noted nobody, and a full sync overlapping it held its destination (exit 5)."""
    con = connect_store(tmp_path / "s.duckdb")
    stage_records(con, [_order("B7", "OLD"), _order("X", "STAYS")], [])
    merge_staged(con, PullResult(), origin="pull")
    seen = generation(con)
    _big_batch(con, NOTED_ROWS + 1)
    con.execute("INSERT INTO staged_contacts (customer_id, email, marketing_consent) "
                "VALUES ('C1', 'c1@example.com', 'no')")
    merge_staged(con, PullResult(), origin=origin)
    now, moved = moved_since(con, seen)
    assert now == seen + 1 and moved == {f"K{i}" for i in range(1000)} | {"OLD", "C1"}
    assert con.execute("SELECT count(*) FROM orders").fetchall()[0][0] == NOTED_ROWS + 2


def test_a_large_merge_moving_more_customers_than_the_bound_notes_nobody(tmp_path, monkeypatch):
    """The bound: a write that moved more than NOTED_CUSTOMERS customers notes nobody (its customers gathered in the
    store, never in Python): a sync that read before it holds, as before."""
    monkeypatch.setattr(resynced, "NOTED_CUSTOMERS", 999)
    con = connect_store(tmp_path / "s.duckdb")
    _big_batch(con, NOTED_ROWS + 1)
    orders, contacts = unchanged_staged(con)  # as a pull's lookback counts its re-reads
    merge_staged(con, PullResult(unchanged_orders=orders, unchanged_contacts=contacts), origin="pull")
    assert moved_since(con, 0) == (1, None)


def test_a_full_refresh_notes_the_customers_whose_rows_differ(tmp_path):
    """A full refresh (a file export read again) notes the customers whose orders, contacts or receipt lines it
    changed, added or removed: not those it wrote back alike. Before: it noted nobody. The first read of an empty
    store notes nobody: no sync read anything before it (before fixr29: it noted every customer it wrote, a 1 M-row
    note on a big shop's first read, or None beyond NOTED_CUSTOMERS). A full sync's read is outstanding
    (sync.store.reads): without one a refresh compares nothing (tests/test_store_reads.py)."""
    con = connect_store(tmp_path / "s.duckdb")
    take_read(con)
    item = LineItem(sku="A", price=Decimal("5"))
    contacts = [Contact(customer_id=c, email=f"{c.lower()}@example.com", marketing_consent=Consent.YES)
                for c in ("SAME", "CONSENT")]
    stage_records(con, [_order("1", "SAME", items=(item,)), _order("2", "AMOUNT"), _order("3", "ITEM", items=(item,)),
                        _order("4", "GONE")], contacts)
    merge_staged(con, PullResult(full_refresh=True), origin="pull")
    seen = generation(con)
    assert moved_since(con, seen - 1) == (seen, set())  # the empty store's first read: nobody read it before
    stage_records(con, [_order("1", "SAME", items=(item,)), _order("2", "AMOUNT", "6"),
                        _order("3", "ITEM", items=(LineItem(sku="B", price=Decimal("5")),)), _order("5", "NEW")],
                  [contacts[0], Contact(customer_id="CONSENT", email="consent@example.com",
                                        marketing_consent=Consent.NO)])
    merge_staged(con, PullResult(full_refresh=True), origin="pull")
    assert moved_since(con, seen) == (seen + 1, {"AMOUNT", "ITEM", "GONE", "NEW", "CONSENT"})
    stage_records(con, [_order("1", "SAME", items=(item,))], [contacts[0]])
    merge_staged(con, PullResult(full_refresh=True), origin="pull")
    assert moved_since(con, seen + 1)[1] == {"AMOUNT", "ITEM", "NEW", "CONSENT"}


def test_a_full_refresh_after_another_write_compares_with_the_rows_as_they_are(tmp_path):
    """Each customer's rows as a full refresh left them are kept (for the next full refresh: the rows before it,
    one grouped scan less), stamped with its generation: a merge between the two refreshes moves the generation,
    and the next refresh compares with the rows as they are, not as the last refresh left them (else a customer
    the merge moved and the refresh moved back would go unnoted). A full sync's read is outstanding throughout."""
    con = connect_store(tmp_path / "s.duckdb")
    take_read(con)
    for _ in range(2):  # the first read of the empty store keeps nothing, the second does
        stage_records(con, [_order("1", "A"), _order("2", "B")], [])
        merge_staged(con, PullResult(full_refresh=True), origin="pull")
    seen = generation(con)
    stage_records(con, [_order("1", "A"), _order("2", "B")], [])
    merge_staged(con, PullResult(full_refresh=True), origin="pull")
    assert moved_since(con, seen) == (seen + 1, set())  # the kept rows: none differ
    stage_records(con, [_order("1", "A", "7")], [])
    merge_staged(con, PullResult(), origin="webhook")
    seen = generation(con)
    stage_records(con, [_order("1", "A"), _order("2", "B", "8")], [])
    merge_staged(con, PullResult(full_refresh=True), origin="pull")
    assert moved_since(con, seen) == (seen + 1, {"A", "B"})


def test_a_lean_file_swap_notes_the_customers_whose_orders_differ(tmp_path):
    """A daily export read the lean way (no contacts, one copy of the rows): a changed file, a removed one and the
    same files read again each note the customers whose orders they changed, not everyone in the files. Before:
    they noted nobody (a sync overlapping a daily file's read held its destination, exit 5)."""
    from sync.config import load_config
    from sync.pipeline import configured_source
    from sync.store.files import ingest_files
    from tests.builders import run_cli
    from tests.test_ingest_once import shop, write_export

    cfg = shop(tmp_path, contact_fields=False)
    source = configured_source(load_config(cfg))
    store = tmp_path / "rfmsync.duckdb"
    for i in (1, 2, 3):
        write_export(tmp_path, f"day{i}.csv", [(str(i), f"c{i}", "", "2025-06-01", "10.00", ""),
                                               (f"{i}0", "c1", "", "2025-06-01", "1", "")])
    run_cli("pull", "--config", str(cfg))

    def read(**kw) -> set[str] | None:
        with connect_store(store) as con:
            seen = generation(con)
            assert ingest_files(con, source, **kw).lean
            now, moved = moved_since(con, seen)
        assert now == seen + 1
        return moved

    write_export(tmp_path, "day2.csv", [("2", "c2", "", "2025-06-01", "25.00", ""),
                                        ("20", "c1", "", "2025-06-01", "1", ""),
                                        ("7", "c4", "", "2025-06-03", "5", "")])
    assert read() == {"c2", "c4"}
    (tmp_path / "exports" / "day3.csv").unlink()
    assert read() == {"c3", "c1"}
    assert read(reread=True) == set()


@pytest.mark.parametrize("then", ["changed", "renamed", "full refresh"])
def test_a_lean_appended_file_replaced_later_keeps_its_customers_noted(tmp_path, then):
    """A daily file appended the lean way after a sync's read notes its file id, by which the sync finds its
    customers. The file then changed (c3's row), was renamed, or changed and was read again by a full refresh (a
    new file holds a row without a customer id): its orders go under that id (a new one), and the sync still
    leaves c2 and c3 out (their rows are newer than its read). Before: the append's customers went with its file
    id (changed: c2 lost; renamed, full refresh: both lost), and the sync pushed its older read of them."""
    from sync.config import load_config
    from sync.pipeline import configured_source
    from sync.store.files import ingest_files
    from tests.builders import run_cli
    from tests.test_ingest_once import shop, write_export

    cfg = shop(tmp_path, contact_fields=False)
    store = tmp_path / "rfmsync.duckdb"
    write_export(tmp_path, "day1.csv", [("1", "c1", "", "2025-06-01", "10.00", "")])
    run_cli("pull", "--config", str(cfg))
    with connect_store(store) as con:
        seen = generation(con)  # a full sync reads here
        take_read(con)
    day2 = [("2", "c2", "", "2025-06-02", "10.00", ""), ("3", "c3", "", "2025-06-02", "20.00", "")]
    write_export(tmp_path, "day2.csv", day2)
    with connect_store(store) as con:
        assert ingest_files(con, configured_source(load_config(cfg))).lean
        assert moved_since(con, seen)[1] == {"c2", "c3"}
    if then == "changed":
        write_export(tmp_path, "day2.csv", [day2[0], ("3", "c3", "", "2025-06-02", "21.00", "")])
    elif then == "renamed":
        (tmp_path / "exports" / "day2.csv").rename(tmp_path / "exports" / "day2b.csv")
    else:  # changed, and a new file with a row without a customer id: every file is staged again
        write_export(tmp_path, "day2.csv", [day2[0], ("3", "c3", "", "2025-06-02", "21.00", "")])
        write_export(tmp_path, "day3.csv", [("4", "", "", "2025-06-03", "5.00", "")])
    with connect_store(store) as con:
        assert ingest_files(con, configured_source(load_config(cfg))).lean == (then != "full refresh")
        now, moved = moved_since(con, seen)
    assert now == seen + 2 and {"c2", "c3"} <= moved


def test_a_large_merge_with_nothing_new_leaves_no_table_behind(tmp_path):
    """The same NOTED_ROWS + 1 orders pulled again (a lookback's re-reads): nothing new (the generation stays, no
    note), and nothing of the large merge's gathering is left in the connection (its customers before the write: a
    temp table kept until the next merge). Before: the empty merge still gathered them, and left them."""
    con = connect_store(tmp_path / "s.duckdb")
    _big_batch(con, NOTED_ROWS + 1)
    merge_staged(con, PullResult(), origin="webhook")
    seen = generation(con)
    _big_batch(con, NOTED_ROWS + 1)
    orders, contacts = unchanged_staged(con)  # as a pull's lookback counts its re-reads
    merge_staged(con, PullResult(unchanged_orders=orders, unchanged_contacts=contacts), origin="pull")
    assert moved_since(con, seen) == (seen, set())
    assert not con.execute("SELECT table_name FROM duckdb_tables() WHERE temporary AND table_name LIKE '_moved%'"
                           ).fetchall()


@pytest.mark.parametrize("size", ["small", "big"])
def test_a_stale_versions_late_withdrawal_notes_its_customer(tmp_path, size):
    """A webhook gave C1's consent; a sync read the store; an older webhook version of C1 withdrawing consent
    arrives next: the merge leaves the stale row out but writes the withdrawal to the stored contact
    (webhooks.withdraw_late). C1 moved, so a full sync that read before must leave him out (its older "yes" plan
    pushed after the resync's withdrawal would undo it). Before: the merge noted only its staged contacts' customers,
    and the stale row was gone from them (found by the re-read of the merged code)."""
    con = connect_store(tmp_path / "s.duckdb")
    later = AT.replace(hour=9)
    stage_records(con, [], [Contact("C1", email="c1@example.com", marketing_consent=Consent.YES)])
    merge_staged(con, PullResult(), origin="webhook", received_at=later)
    seen = generation(con)
    if size == "big":
        _big_batch(con, NOTED_ROWS + 1)
    stage_records(con, [], [Contact("C1", email="c1@example.com", marketing_consent=Consent.NO)])
    merge_staged(con, PullResult(), origin="webhook", received_at=AT)
    assert con.execute("SELECT marketing_consent FROM contacts WHERE customer_id = 'C1'").fetchall() == [("no",)]
    now, moved = moved_since(con, seen)
    assert now == seen + 1 and moved is not None and "C1" in moved
