"""A generic orders file (no preset) read under the rules the shopify_orders_csv preset brought: a ``cancelled_at``
column (guessed from its header) holds a date (it cancels the order) or no value (an empty cell, NULL written out,
a zero date), any other text is a bad row named by file and line; rows without a date are counted as such."""

from __future__ import annotations

import duckdb
import pytest

from connectors.errors import BadFileError
from connectors.files import FileSource, FileSourceConfig
from connectors.guess import guess, read_sample


def test_cancelled_at_is_read_as_a_date_no_value_words_do_not_cancel(tmp_path):
    (tmp_path / "orders.csv").write_text(
        "order_id,email,order_date,total,cancelled_at\n"
        "1,a@x.com,2024-01-02,10.00,NULL\n"
        "2,b@x.com,2024-01-03,20.00,0000-00-00 00:00:00\n"
        "3,c@x.com,2024-01-04,30.00,false\n"
        "4,d@x.com,2024-01-05,40.00,\n"
        "5,e@x.com,2024-01-06,50.00,2024-01-07 10:00:00\n")
    columns = {k: v[0] for k, v in guess(read_sample(tmp_path / "orders.csv")).columns.items()}
    assert columns["cancelled_at"] == "cancelled_at"
    con = duckdb.connect()
    r = FileSource(FileSourceConfig(orders="orders.csv", columns=columns), tmp_path).pull(con)
    assert [(b.source.endswith("orders.csv"), b.row, b.field, b.value) for b in r.bad_rows] == [
        (True, 4, "cancelled_at", "false")]
    assert con.execute("SELECT order_id, status FROM staged_orders ORDER BY 1").fetchall() == [
        ("1", "completed"), ("2", "completed"), ("4", "completed"), ("5", "cancelled")]


def test_rows_with_an_order_id_and_no_date_nor_amount_still_count_as_undated_without_a_line_row_preset(tmp_path):
    """Only a preset that reads an order's further rows as its line items (Shopify's) leaves such rows out of the
    "most rows have no date" check: in a generic export they are rows without a date like any other."""
    (tmp_path / "orders.csv").write_text("order_id,email,order_date,total\n1,a@x.com,2024-01-02,10.00\n"
                                         "2,b@x.com,,\n3,c@x.com,,\n")
    cfg = FileSourceConfig(orders="orders.csv", columns={"order_id": "order_id", "email": "email",
                                                         "ordered_at": "order_date", "amount": "total"})
    with pytest.raises(BadFileError, match="2 of 3 rows have no date in column 'order_date'"):
        FileSource(cfg, tmp_path).pull(duckdb.connect())
