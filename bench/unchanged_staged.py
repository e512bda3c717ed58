"""What an incremental pull's count of its unchanged re-reads costs (:func:`connectors.tables.unchanged_staged`):
``N`` orders stored with 2 line items each, the same ``N`` staged again (one item changed), in memory.

    PYTHONPATH=$PWD python bench/unchanged_staged.py 1000000   # then: /usr/bin/time -f "%M KB" for the peak RSS
"""

from __future__ import annotations

import sys
import time

import duckdb

from connectors.tables import create_staging, create_tables, unchanged_staged


def main(n: int) -> None:
    con = duckdb.connect()
    create_tables(con)
    create_staging(con)
    for pre in ("", "staged_"):
        con.execute(f"""INSERT INTO {pre}orders SELECT i::VARCHAR, (i % 100000)::VARCHAR,
            TIMESTAMPTZ '2025-01-01' + to_seconds(i), (i % 1000)::DECIMAL(18,2), 'UZS', 'completed', NULL
            FROM range({n}) t(i)""")
        con.execute(f"""INSERT INTO {pre}line_items SELECT (i // 2)::VARCHAR, (i % 2)::INT, 'sku' || i, 'n', NULL,
            NULL, 1, 5 FROM range({2 * n}) t(i)""")
    con.execute("UPDATE staged_line_items SET name = 'x' WHERE order_id = '7' AND line_no = 1")
    started = time.perf_counter()
    orders, contacts = unchanged_staged(con)
    print(f"{n} orders read again: {orders} unchanged, {contacts} contacts, {time.perf_counter() - started:.2f} s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
