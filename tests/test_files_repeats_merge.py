"""A flat export's sale and its return (``ID~return``, connectors.file_repeats) meet a webhook's version of the
same order id: the webhook's record is the whole order, the file's return goes with the file's row of it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

from connectors.records import Order
from connectors.source import PullResult
from connectors.tables import stage_records
from sync.config import load_config
from sync.pipeline import configured_source
from sync.store import connect_store, merge_staged
from sync.store.files import ingest_files
from tests.test_ingest_once import shop, write_export


def _net(con) -> tuple[list, Decimal]:
    rows = con.execute("SELECT order_id, amount, status FROM orders ORDER BY 1").fetchall()
    return rows, sum(a if s == "completed" else -a if s == "refunded" else 0 for _, a, s in rows)


def test_a_webhook_refund_of_a_files_sale_and_return_subtracts_the_refund_once(tmp_path):
    """Review of seg28: the file's sale 1 and its return 1~return, then a webhook saying order 1 is refunded: the
    store held 1 refunded and 1~return (net -20, the refund subtracted twice), and the next read of the files put
    the return back beside the webhook's order."""
    cfg = shop(tmp_path, contact_fields=False)
    source = configured_source(load_config(cfg))
    write_export(tmp_path, "day1.csv", [("1", "c1", "", "2025-06-01", "10.00", "completed"),
                                        ("1", "c1", "", "2025-06-03", "10.00", "refunded")])
    with connect_store(tmp_path / "rfmsync.duckdb") as con:
        ingest_files(con, source)
        assert [r[0] for r in _net(con)[0]] == ["1", "1~return"]
        at = datetime(2025, 6, 1, tzinfo=timezone.utc)
        stage_records(con, [Order(order_id="1", customer_id="c1", ordered_at=at, amount=Decimal("10.00"),
                                  status="refunded")])
        merge_staged(con, PullResult(orders=1, contacts=0), origin="webhook")
        assert _net(con) == ([("1", Decimal("10.00"), "refunded")], Decimal("-10.00"))
    write_export(tmp_path, "day2.csv", [("2", "c2", "", "2025-06-04", "5.00", "completed")])
    with connect_store(tmp_path / "rfmsync.duckdb") as con:  # a file read again: the webhook's order 1 stays whole
        ingest_files(con, source)
        assert _net(con) == ([("1", Decimal("10.00"), "refunded"), ("2", Decimal("5.00"), "completed")],
                             Decimal("-5.00"))


def test_every_return_of_a_sale_goes_with_a_webhook_version_of_it_whatever_their_count(tmp_path):
    """store29: the merge deleted a file's returns by the ids ~return … ~return99: a sale's 100th return (~return100)
    stayed beside the webhook's version of the order, subtracted from the customer after the refund that replaced it.
    An order merged with no return stored (an API store's: every pull) deletes nothing more."""
    cfg = shop(tmp_path, contact_fields=False)
    source = configured_source(load_config(cfg))
    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    write_export(tmp_path, "day1.csv", [("1", "c1", "", "2025-01-01 00:00", "500.00", "completed"),
                                        ("2", "c2", "", "2025-01-01 00:00", "9.00", "completed"),
                                        ("2", "c2", "", "2025-01-02 00:00", "9.00", "refunded")] + [
        ("1", "c1", "", f"{start + timedelta(hours=k):%Y-%m-%d %H:%M}", "1.00", "refunded") for k in range(1, 101)])
    with connect_store(tmp_path / "rfmsync.duckdb") as con:
        ingest_files(con, source)
        ids = {r[0] for r in _net(con)[0]}
        assert {"1~return", "1~return2", "1~return99", "1~return100", "2~return"} <= ids and len(ids) == 103
        stage_records(con, [Order(order_id="1", customer_id="c1", ordered_at=start, amount=Decimal("400.00"),
                                  status="completed")])
        merge_staged(con, PullResult(orders=1, contacts=0), origin="webhook")
        assert _net(con) == ([("1", Decimal("400.00"), "completed"), ("2", Decimal("9.00"), "completed"),
                              ("2~return", Decimal("9.00"), "refunded")], Decimal("400.00"))


def test_a_store_written_before_the_returns_were_noted_has_them_deleted_too(tmp_path):
    """A store an older rfmsync wrote holds the file's returns without their note: the first merge notes them."""
    cfg = shop(tmp_path, contact_fields=False)
    source = configured_source(load_config(cfg))
    write_export(tmp_path, "day1.csv", [("1", "c1", "", "2025-06-01", "10.00", "completed"),
                                        ("1", "c1", "", "2025-06-03", "4.00", "refunded"),
                                        ("1", "c1", "", "2025-06-04", "3.00", "refunded")])
    with connect_store(tmp_path / "rfmsync.duckdb") as con:
        ingest_files(con, source)
        con.execute("DROP TABLE file_returns")
        at = datetime(2025, 6, 1, tzinfo=timezone.utc)
        stage_records(con, [Order(order_id="1", customer_id="c1", ordered_at=at, amount=Decimal("10.00"),
                                  status="cancelled")])
        merge_staged(con, PullResult(orders=1, contacts=0), origin="pull")
        assert _net(con) == ([("1", Decimal("10.00"), "cancelled")], Decimal("0"))


def test_returns_an_older_rfmsync_stored_after_the_notes_were_made_are_deleted_too(tmp_path):
    """Review of store29: the notes were scanned for only when the table was first made, so a return an older
    rfmsync stored later (a downgrade, then an upgrade) stayed beside the webhook's version of its sale (net -10, not
    0). Every write of the orders moves the store's generation on, an older rfmsync's too: a merge that finds it
    moved past the notes' stamp notes them again."""
    cfg = shop(tmp_path, contact_fields=False)
    source = configured_source(load_config(cfg))
    write_export(tmp_path, "day1.csv", [("1", "c1", "", "2025-06-01", "10.00", "completed"),
                                        ("2", "c2", "", "2025-06-01", "7.00", "completed"),
                                        ("2", "c2", "", "2025-06-02", "7.00", "refunded")])
    with connect_store(tmp_path / "rfmsync.duckdb") as con:
        ingest_files(con, source)
        # an older rfmsync's read of a later file: order 1's return stored, the generation moved, no note of it
        con.execute("INSERT INTO orders SELECT * REPLACE (order_id || '~return' AS order_id, 'refunded' AS status) "
                    "FROM orders WHERE order_id = '1'")
        con.execute("UPDATE store_generation SET n = n + 1")
        at = datetime(2025, 6, 1, tzinfo=timezone.utc)
        stage_records(con, [Order(order_id="1", customer_id="c1", ordered_at=at, amount=Decimal("10.00"),
                                  status="cancelled")])
        merge_staged(con, PullResult(orders=1, contacts=0), origin="webhook")
        assert _net(con) == ([("1", Decimal("10.00"), "cancelled"), ("2", Decimal("7.00"), "completed"),
                              ("2~return", Decimal("7.00"), "refunded")], Decimal("0"))
        # the next merge, at the generation it stamped, reads no orders for the notes: they are true
        stage_records(con, [Order(order_id="2", customer_id="c2", ordered_at=at, amount=Decimal("7.00"),
                                  status="completed")])
        merge_staged(con, PullResult(orders=1, contacts=0), origin="webhook")
        assert _net(con) == ([("1", Decimal("10.00"), "cancelled"), ("2", Decimal("7.00"), "completed")],
                             Decimal("7.00"))


def test_a_file_store_read_before_the_returned_lines_were_negative_reads_its_files_again(tmp_path, monkeypatch):
    """Review of store29: the file reader now stores a receipt's returned line with a negative quantity (and splits a
    receipt number of two customers), but a store read by the release before kept its rows (the returned line
    positive: a purchase for the favourites) until a file changed. The store FORMAT bump reads every file again."""
    import sync.store.files as store_files
    from connectors.files import FileSource, FileSourceConfig

    (tmp_path / "orders.csv").write_text(
        "order_id,customer_id,ordered_at,amount,status,sku,quantity\n"
        "5,a,2026-01-10 10:00,100,completed,A,1\n6,a,2026-01-12 10:00,-100,refunded,A,1\n", encoding="utf-8")
    src = FileSource(FileSourceConfig(type="file", orders="orders.csv", timezone="UTC", columns={
        **{k: k for k in ("order_id", "customer_id", "ordered_at", "amount", "status")}, "sku": "sku",
        "quantity": "quantity"}), tmp_path)
    current = store_files.FORMAT
    with connect_store(tmp_path / "rfmsync.duckdb") as con:
        monkeypatch.setattr(store_files, "FORMAT", 9)  # the release before store29
        ingest_files(con, src)
        con.execute("UPDATE line_items SET quantity = abs(quantity)")  # what it stored
        monkeypatch.setattr(store_files, "FORMAT", current)  # upgraded
        ingest_files(con, src)
        assert con.execute("SELECT order_id, quantity FROM line_items ORDER BY 1").fetchall() == [
            ("5", Decimal("1.000")), ("6", Decimal("-1.000"))]


def test_a_file_store_read_before_store30_reads_its_files_again(tmp_path, monkeypatch):
    """store30 changed a file's stored rows (a receipt's total repeated on each line counted once, a line's price
    from its amount, an XLSX cell merged over rows filling them): a store read by the release before kept its rows
    (here the lines without a price: no favourite by spend) until a file changed. FORMAT 11 reads them again."""
    import sync.store.files as store_files
    from connectors.files import FileSource, FileSourceConfig

    (tmp_path / "orders.csv").write_text(
        "order_id,customer_id,ordered_at,amount,status,sku,quantity\n"
        "5,a,2026-01-10 10:00,90,completed,A,1\n5,a,2026-01-10 10:00,30,completed,B,3\n", encoding="utf-8")
    src = FileSource(FileSourceConfig(type="file", orders="orders.csv", timezone="UTC", columns={
        **{k: k for k in ("order_id", "customer_id", "ordered_at", "amount", "status")}, "sku": "sku",
        "quantity": "quantity"}), tmp_path)
    current = store_files.FORMAT
    with connect_store(tmp_path / "rfmsync.duckdb") as con:
        monkeypatch.setattr(store_files, "FORMAT", 10)  # the release before store30
        ingest_files(con, src)
        con.execute("UPDATE line_items SET price = NULL")  # what it stored
        monkeypatch.setattr(store_files, "FORMAT", current)  # upgraded
        ingest_files(con, src)
        assert con.execute("SELECT sku, price FROM line_items ORDER BY 1").fetchall() == [
            ("A", Decimal("90.00")), ("B", Decimal("10.00"))]
