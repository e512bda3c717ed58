"""Rows that begin with ``#`` (Shopify's order names, ``#1001``) are rows, not comments: DuckDB's CSV sniffer took
``#`` for a comment mark when other rows begin with an empty cell, and every row beginning with it was dropped
without a word."""

from __future__ import annotations

import duckdb

from connectors.files import FileSource, FileSourceConfig

COLUMNS = {"order_id": "order", "email": "email", "ordered_at": "date", "amount": "total"}


def test_rows_beginning_with_a_hash_are_read_when_others_begin_with_an_empty_cell(tmp_path):
    for sep, date, total in ((",", "2024-01-{:02d}", "10.00"), (";", "{:02d}.01.2024", "10,00")):  # typed; text path
        rows = [sep.join((f"#{n}", f"c{n}@example.com", date.format(n), total)) for n in range(1, 15)]
        rows[3:3] = [sep.join(("", f"{who}@example.com", date.format(20), total)) for who in "xy"]  # no order number
        text = "\n".join([sep.join(("order", "email", "date", "total")), *rows]) + "\n"
        (tmp_path / "orders.csv").write_text(text, encoding="utf-8")
        con = duckdb.connect()
        result = FileSource(FileSourceConfig(orders="orders.csv", columns=COLUMNS), tmp_path).pull(con)
        assert (result.orders, result.bad_row_count) == (16, 0)
        assert con.execute("SELECT count(*) FROM staged_orders WHERE order_id LIKE '#%'").fetchone()[0] == 14
