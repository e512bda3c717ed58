"""What an incremental merge pays for a file's returns kept beside an order id (``ID~return`` …, branch store29).

A store of ``--stored`` orders and ``--returns`` returns of them (``ID~return``) written by a full refresh, as a
file source's (in a file under a temporary folder; ``--returns 0``: as a CRM's store holds its orders), then an
API pull of ``--pulled`` orders (half of them stored ids, half new) merged incrementally
(:func:`sync.store.merge_staged`, ``origin="pull"``), then a one-order webhook batch. Process CPU seconds (every
DuckDB thread, ``--threads`` of them) and wall seconds of each merge; run it with ``PYTHONPATH`` at the tree to
measure:

    PYTHONPATH=/work/main python bench/store_returns.py --stored 2m --pulled 1m
    PYTHONPATH=. python bench/store_returns.py --stored 2m --pulled 1m --returns 1000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

# the tree measured is PYTHONPATH's (main or a branch): not bench/, whose sync.py would hide the package
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import duckdb  # noqa: E402

from connectors.file_result import FilePullResult  # noqa: E402
from connectors.source import PullResult  # noqa: E402
from connectors.tables import create_staging, create_tables  # noqa: E402
from sync.store import merge_staged  # noqa: E402


def _size(text: str) -> int:
    text = text.lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1], 1)
    return int(float(text.rstrip("km")) * scale)


_ORDERS = """INSERT INTO {table} SELECT {oid}, 'c' || (i % 200000), TIMESTAMPTZ '2025-01-01' + to_seconds(i),
    (i % 1000 + 1)::DECIMAL(18,2), 'UZS', {status}, NULL FROM range({start}, {stop}) t(i)"""


def _merge(con: duckdb.DuckDBPyConnection, what: str, orders: int) -> None:
    cpu, wall = time.process_time(), time.perf_counter()
    merge_staged(con, PullResult(orders=orders, contacts=0), origin="pull")
    print(f"{what}: {time.process_time() - cpu:.2f} CPU s, {time.perf_counter() - wall:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stored", default="2m")
    parser.add_argument("--pulled", default="1m")
    parser.add_argument("--returns", default="0")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    stored, pulled, returns = _size(args.stored), _size(args.pulled), _size(args.returns)
    with tempfile.TemporaryDirectory() as folder:
        con = duckdb.connect(str(Path(folder) / "store.duckdb"))
        con.execute(f"SET threads = {args.threads}")
        create_tables(con)
        create_staging(con)  # stored as a file source's full refresh stores them (its returns noted in it)
        con.execute(_ORDERS.format(table="staged_orders", oid="i::VARCHAR", status="'completed'", start=0,
                                   stop=stored))
        con.execute(_ORDERS.format(table="staged_orders", oid="i::VARCHAR || '~return'", status="'refunded'",
                                   start=0, stop=returns))
        cpu, wall = time.process_time(), time.perf_counter()
        merge_staged(con, FilePullResult(orders=stored + returns, contacts=0, full_refresh=True,
                                          duplicate_orders=returns))  # (each return repeats its sale's id)
        print(f"the full refresh of {stored} orders and {returns} returns: {time.process_time() - cpu:.2f} CPU s, "
              f"{time.perf_counter() - wall:.2f} s")
        con.execute("CHECKPOINT")
        create_staging(con)
        half = stored - pulled // 2
        con.execute(_ORDERS.format(table="staged_orders", oid="i::VARCHAR", status="'completed'", start=half,
                                   stop=half + pulled))
        _merge(con, f"a pull of {pulled} orders into {stored} ({returns} returns)", pulled)
        create_staging(con)
        con.execute(_ORDERS.format(table="staged_orders", oid="i::VARCHAR", status="'refunded'", start=7, stop=8))
        _merge(con, "a one-order batch", 1)
        con.close()


if __name__ == "__main__":
    main()
