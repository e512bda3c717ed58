"""A large export read in parallel keeps its rows' file lines when a consent column is mapped."""

from __future__ import annotations

from pathlib import Path

import duckdb

from connectors.files import FileSource, FileSourceConfig

ROWS = 500_000  # large enough for DuckDB to read it in several parallel batches


def test_a_large_export_with_consent_keeps_the_file_lines_of_its_rows(tmp_path: Path):
    """The consent words were an ``IN`` list, which DuckDB ran as a hash join: the rows came out of the parallel
    read in another order, and a bad row near the end was reported on line 205048 (and the latest consent of a
    customer was another row's)."""
    bad = ROWS - 5
    lines = ["id;date;sum;consent"]
    lines += [f"{i};2024-01-02;{'' if i == bad else '10.00'};{'yes' if i % 2 else 'no'}" for i in range(ROWS)]
    (tmp_path / "sales.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    cfg = FileSourceConfig(orders="sales.csv", columns={"order_id": "id", "customer_id": "id", "ordered_at": "date",
                                                        "amount": "sum", "marketing_consent": "consent"})
    # The test depends on DuckDB's parallel plan: with 8 threads (as on a many-core host) the read's batches finish
    # out of order, and a hash join over them (the IN list) emitted the rows in that order; with 1 or 2 threads (a
    # small CI box) the rows may come out in file order even with the IN list, and the test would pass without the
    # fix. text_sql's `ord(...) IN (spaces)` and email_fast_sql's `list_contains([tlds], ...)` plan with no join
    # (checked with EXPLAIN, DuckDB 2.0): they keep the rows' order (and the e-mails are checked on distinct values).
    con = duckdb.connect(config={"threads": 8})
    result = FileSource(cfg, tmp_path).pull(con)
    assert [(b.row, b.field) for b in result.bad_rows] == [(bad + 2, "amount")]  # header = line 1
    assert con.execute("SELECT marketing_consent FROM staged_contacts WHERE customer_id IN ('0', '499999')"
                       " ORDER BY customer_id").fetchall() == [("no",), ("yes",)]
