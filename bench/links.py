"""What a file source's full refresh pays for the identity links it keeps (branch links26).

A store of ``--orders`` orders of ``--customers`` guests keyed by their e-mail (an export without customer ids),
``--linked`` of whom webhooks linked to a CRM customer id earlier (their orders stored under ``c<n>``, their
contact a webhook record carrying the guest's e-mail, with one order by webhook). The export is staged again,
whole, and merged as a full refresh (:func:`sync.store.merge_staged`) twice: the first merge after an upgrade
(the links noted from the orders, then applied), the second a nightly run (applied). ``--linked 0`` is a
file-only store (no webhook record).

Process CPU seconds (every DuckDB thread) and wall seconds of each merge; run it with ``PYTHONPATH`` at the tree
to measure (main: the same merges without links, which split the linked guests back out):

    PYTHONPATH=/work/main python bench/links.py --orders 10m
    PYTHONPATH=. python bench/links.py --orders 10m
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

from connectors.source import PullResult  # noqa: E402
from connectors.tables import create_staging, create_tables  # noqa: E402
from sync.store import merge_staged  # noqa: E402


def _size(text: str) -> int:
    text = text.lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1], 1)
    return int(float(text.rstrip("km")) * scale)


def build(con: duckdb.DuckDBPyConnection, orders: int, customers: int, linked: int) -> None:
    """The store after the webhooks linked ``linked`` guests, and the export staged again."""
    create_tables(con)
    key = f"CASE WHEN c < {linked} THEN 'c' || c ELSE 'u' || c || '@x.com' END"
    rows = (f"SELECT 'o' || i AS order_id, i % {customers} AS c, TIMESTAMPTZ '2024-01-01' + to_days((i % 700)::INT) "
            f"AS t_at, (i % 997)::DECIMAL(18,2) AS amount FROM range({orders}) t(i)")
    con.execute(f"INSERT INTO orders (order_id, customer_id, ordered_at, amount, status) "
                f"SELECT order_id, {key}, t_at, amount, 'completed' FROM ({rows})")
    con.execute(f"INSERT INTO contacts (customer_id, email, marketing_consent) SELECT {key}, 'u' || c || '@x.com', "
                f"'unknown' FROM range({customers}) t(c)")
    con.execute("CREATE TABLE webhook_records (kind VARCHAR NOT NULL, id VARCHAR NOT NULL, received_at TIMESTAMPTZ "
                "DEFAULT now(), updated_at TIMESTAMPTZ, PRIMARY KEY (kind, id))")
    con.execute(f"INSERT INTO webhook_records (kind, id) SELECT 'contact', 'c' || c FROM range({linked}) t(c)")
    # and one order each, by webhook, not in the export yet
    con.execute(f"INSERT INTO orders (order_id, customer_id, ordered_at, amount, status) SELECT 'w' || c, 'c' || c, "
                f"TIMESTAMPTZ '2025-12-01', 10, 'completed' FROM range({linked}) t(c)")
    con.execute(f"INSERT INTO webhook_records (kind, id) SELECT 'order', 'w' || c FROM range({linked}) t(c)")
    con.execute("CHECKPOINT")


def stage(con: duckdb.DuckDBPyConnection, orders: int, customers: int) -> None:
    create_staging(con)
    con.execute(f"INSERT INTO staged_orders (order_id, customer_id, ordered_at, amount, status) SELECT 'o' || i, "
                f"'u' || (i % {customers}) || '@x.com', TIMESTAMPTZ '2024-01-01' + to_days((i % 700)::INT), "
                f"(i % 997)::DECIMAL(18,2), 'completed' FROM range({orders}) t(i)")
    con.execute(f"INSERT INTO staged_contacts (customer_id, email, marketing_consent) SELECT 'u' || c || '@x.com', "
                f"'u' || c || '@x.com', 'unknown' FROM range({customers}) t(c)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", default="10m")
    parser.add_argument("--customers", default="1m")
    parser.add_argument("--linked", default="10k")
    args = parser.parse_args()
    orders, customers, linked = _size(args.orders), _size(args.customers), _size(args.linked)
    with tempfile.TemporaryDirectory() as tmp:
        con = duckdb.connect(str(Path(tmp) / "store.duckdb"))
        build(con, orders, customers, linked)
        for run in ("first", "second"):
            stage(con, orders, customers)
            cpu, wall = time.process_time(), time.perf_counter()
            merge_staged(con, PullResult(full_refresh=True))
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            split = con.execute("SELECT count(DISTINCT customer_id) FROM orders").fetchall()[0][0] - customers
            print(f"{args.orders} orders, {args.linked} linked, {run} full refresh: {cpu:.2f} CPU s, {wall:.2f} s "
                  f"wall; customers split in two: {split}", flush=True)
        con.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
