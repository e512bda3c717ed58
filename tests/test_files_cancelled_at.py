"""A ``cancelled_at`` column in any orders file (guessed from its header): a date cancels the order, an empty cell,
NULL written out or a zero date does not, any other text is a bad row named by file and line."""

from __future__ import annotations

import duckdb

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
