"""The test helpers that share state between tests keep them independent."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest

from tests.builders import _SCRATCH, scratch_con


def test_a_scratch_connection_sees_nothing_an_earlier_one_made():
    with scratch_con() as con:
        con.execute("CREATE TEMP TABLE t AS SELECT 1 AS a")
        con.execute("CREATE TEMP VIEW v AS SELECT 2 AS b")
        con.register("arrow", pa.table({"c": [3]}))
        con.execute("SET TimeZone = 'Asia/Tashkent'")
    with scratch_con() as con:
        assert con.execute("SELECT count(*) FROM duckdb_tables()").fetchall() == [(0,)]
        assert con.execute("SELECT count(*) FROM duckdb_views() WHERE NOT internal").fetchall() == [(0,)]
        fresh = duckdb.connect()
        assert con.execute("SELECT current_setting('TimeZone')").fetchall() == fresh.execute(
            "SELECT current_setting('TimeZone')").fetchall()


@pytest.mark.parametrize("change, undo", [("CREATE TABLE kept AS SELECT 1 AS a", "DROP TABLE kept"),
                                          ("CREATE VIEW kept AS SELECT 1 AS a", "DROP VIEW kept"),
                                          ("SET threads = 1", "RESET threads"),
                                          ("SET preserve_insertion_order = false", "RESET preserve_insertion_order")])
def test_a_block_that_changes_what_every_scratch_connection_shares_fails(change, undo):
    try:
        with pytest.raises(AssertionError, match="changed what every scratch_con shares"):
            with scratch_con() as con:
                con.execute(change)
    finally:
        _SCRATCH[0].execute(undo)  # the next tests in this process get the database as it was
    with scratch_con():
        pass
