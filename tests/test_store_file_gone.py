"""A file that leaves the export folder and comes back (moved out and back, renamed, an export rolled back to an
earlier version) keeps the time of its first read: its rows must not now win over a refund or a withdrawn consent
received by webhook while it was away (:mod:`sync.store.file_gone`)."""

from __future__ import annotations

import datetime as dt
import shutil

from connectors.files import FileSource, FileSourceConfig
from connectors.records import Consent, Contact, Order, OrderStatus
from sync.pipeline import store_path
from sync.store import connect_store, open_store
from sync.store.file_gone import GONE_TABLE
from sync.store.files import ingest_files
from tests.test_store_webhook_age import _ingest, _ingested_shop, _state, _webhook


def _refund_and_withdraw(cfg, oid, cid, at, amount) -> str:
    """A refund of ``oid`` and a withdrawn consent of another consenting customer, both by webhook; that customer."""
    with open_store(store_path(cfg)) as con:
        (other,) = con.execute("SELECT customer_id FROM contacts WHERE marketing_consent = 'yes' "
                               "ORDER BY customer_id LIMIT 1").fetchone()
    _webhook(cfg, [Order(oid, cid, at, amount, status=OrderStatus.REFUNDED)],
             [Contact(other, marketing_consent=Consent.NO)])
    return other


def _second_day(exports) -> None:
    """Another daily export beside the first (so the folder is never empty)."""
    (exports / "2025-06-30.csv").write_text("\ufeffЧек №;Дата;Клиент;Телефон;E-mail;Сумма;Скидка;Статус\n"
                                            "900001;30.06.2025 10:00;C90001;;new.buyer@example.com;1\xa0000,00;;"
                                            "Продажа\n", encoding="utf-8")


def test_a_file_moved_out_and_back_does_not_undo_a_refund_received_while_it_was_away(tmp_path):
    cfg, (oid, cid, at, amount) = _ingested_shop(tmp_path)
    exports = tmp_path / "shop" / "exports"
    (export,) = exports.glob("*.csv")
    _second_day(exports)
    aside = tmp_path / "aside.csv"
    shutil.move(export, aside)  # out of the folder: its rows leave the store
    _ingest(cfg)
    other = _refund_and_withdraw(cfg, oid, cid, at, amount)
    shutil.move(aside, export)  # back, the same bytes (mv keeps the modification time)
    _ingest(cfg)
    assert _state(cfg, oid, other) == ([("refunded", 1)], [("no",)])


def test_a_renamed_file_keeps_its_first_read_and_a_changed_one_is_read_now(tmp_path):
    """A rename in one run (the old path gone, the new one new) is the same bytes: the refund received after the
    first read stays. The same file with an order changed in it is new information: read now, it wins."""
    cfg, (oid, cid, at, amount) = _ingested_shop(tmp_path)
    exports = tmp_path / "shop" / "exports"
    (export,) = exports.glob("*.csv")
    other = _refund_and_withdraw(cfg, oid, cid, at, amount)
    renamed = export.with_name("2025-06-29-archived.csv")
    shutil.move(export, renamed)
    _ingest(cfg)
    assert _state(cfg, oid, other) == ([("refunded", 1)], [("no",)])
    lines = renamed.read_text(encoding="utf-8").splitlines(keepends=True)
    i = next(k for k, line in enumerate(lines) if line.startswith(oid + ";"))
    parts = lines[i].split(";")
    parts[5] = ("9" if parts[5][0] != "9" else "8") + parts[5][1:]  # the amount corrected by the shop
    lines[i] = ";".join(parts)
    renamed.write_text("".join(lines), encoding="utf-8")
    _ingest(cfg)
    with open_store(store_path(cfg)) as con:
        assert con.execute("SELECT status FROM orders WHERE order_id = ?", [oid]).fetchall() == [("completed",)]


def test_the_remembered_files_are_bounded(tmp_path, monkeypatch):
    """One row per file whose rows left the store, the newest kept: a daily export folder does not grow it
    without end."""
    import sync.store.file_gone as gone

    monkeypatch.setattr(gone, "GONE_KEEP", 2)
    cfg, _ = _ingested_shop(tmp_path)
    exports = tmp_path / "shop" / "exports"
    (export,) = exports.glob("*.csv")
    for n in range(4):  # the export changed four times: four earlier versions leave the store
        with open(export, "a", encoding="utf-8") as f:
            f.write(f"90000{n};30.06.2025 10:00;C9000{n};;x{n}@example.com;{n + 1}0,00;;Продажа\n")
        _ingest(cfg)
    with open_store(store_path(cfg)) as con:
        sizes = con.execute(f"SELECT size FROM {gone.GONE_TABLE} ORDER BY size").fetchall()
    assert len(sizes) == 2 and sizes == sorted(sizes)
    assert export.stat().st_size > sizes[-1][0]  # the newest versions before the current one


def test_a_file_read_again_as_its_future_date_came_is_not_remembered_as_gone(tmp_path):
    """A future-dated row makes the unchanged file be read again once its date has come: still there, its bytes
    are not a gone file's (the gone table does not grow at each such read) and it keeps its first read time."""
    (tmp_path / "a.csv").write_text("order_id,customer,date,amount\n1,c1,2026-12-01,10\n2,c2,2026-12-09,20\n"
                                    "3,c3,2026-12-20,5\n", encoding="utf-8")
    cfg = FileSourceConfig(type="file", orders="*.csv", timezone="UTC", columns={
        "order_id": "order_id", "customer_id": "customer", "ordered_at": "date", "amount": "amount"})
    con = connect_store(tmp_path / "store.duckdb")
    seen = []
    for day in (5, 10, 25):
        clock = dt.datetime(2026, 12, day, tzinfo=dt.timezone.utc)
        ingest_files(con, FileSource(cfg, tmp_path, clock=lambda clock=clock: clock))
        seen.append((con.execute("SELECT read_at FROM ingest_files").fetchall(),
                     con.execute(f"SELECT count(*) FROM {GONE_TABLE}").fetchone()[0],
                     con.execute("SELECT count(*) FROM orders").fetchone()[0]))
    assert [(gone, n) for _, gone, n in seen] == [(0, 1), (0, 2), (0, 3)]
    assert len({tuple(read) for read, _, _ in seen}) == 1
    (tmp_path / "a.csv").unlink()
    (tmp_path / "b.csv").write_text("order_id,customer,date,amount\n4,c4,2026-12-01,10\n", encoding="utf-8")
    ingest_files(con, FileSource(cfg, tmp_path, clock=lambda: dt.datetime(2026, 12, 26, tzinfo=dt.timezone.utc)))
    assert con.execute(f"SELECT count(*) FROM {GONE_TABLE}").fetchone()[0] == 1  # a gone file still is remembered
