"""What noting whom a full refresh moved costs (branch resync29): a file export read again, the order store's
customers whose rows differ noted for a full sync that read the store before (:mod:`sync.store.resynced`).

A store of ``--contacts`` contacts and ``--orders`` orders (each order's customer among the contacts); each round
stages them all again as a file export's full refresh does, with ``--changed`` orders' amounts changed and as many
new orders, and merges them (:func:`sync.store.merge.merge_staged`, committed), in two ways alternating: noting
nobody (before resync29: the merge of main) and noting the customers whose rows differ (each customer's rows as a
count and a sum of row hashes, before and after). Wall seconds of the merge; the customers noted are checked.
Since fixr29 each round runs three: main's, then the branch's twice: after main's merge (which moved the
generation) the rows before are read from the store, and right after the branch's own refresh they are the rows
it kept (``store_customer_rows``, one grouped scan less). The store's first read notes nobody (fixr29).
Since resync30 a refresh compares only while a full sync's read is outstanding (:mod:`sync.store.reads`): on a
tree that has it, each round runs with no read outstanding (what a shop's nightly export read pays when no sync
is running), then with a read taken before the refresh (rows before read, then kept), instead of main's merge.

    PYTHONPATH=. python bench/refresh_moved.py --contacts 1000000 --orders 2000000 --rounds 3
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
from sync.store import merge  # noqa: E402
from sync.store.generation import generation  # noqa: E402
from sync.store.resynced import moved_since  # noqa: E402


def stage(con: duckdb.DuckDBPyConnection, contacts: int, orders: int, changed: int, round_: int) -> None:
    create_staging(con)
    con.execute("INSERT INTO staged_contacts (customer_id, email, phone, marketing_consent) SELECT 'C' || i, 'u' || i "
                "|| '@example.com', '+99890' || lpad(i::VARCHAR, 7, '0'), 'yes' FROM range(?) t(i)", [contacts])
    con.execute("INSERT INTO staged_orders (order_id, customer_id, ordered_at, amount, status) SELECT 'O' || i, "
                "'C' || (i % ?), TIMESTAMPTZ '2025-01-01' + INTERVAL (i % 300) DAY, CASE WHEN i < ? THEN 100 + ? "
                "ELSE 100 END, 'completed' FROM range(?) t(i)", [contacts, changed, round_, orders])
    con.execute("INSERT INTO staged_orders (order_id, customer_id, ordered_at, amount, status) SELECT 'N' || ? || "
                "'-' || i, 'C' || (i * 7 % ?), TIMESTAMPTZ '2025-06-01', 5, 'completed' FROM range(?) t(i)",
                [round_, contacts, changed])


try:  # resync30: the full syncs' reads outstanding
    from sync.store.reads import TABLE as READS, take_read  # noqa: E402
except ImportError:  # an older tree: every refresh compares
    READS = take_read = None


def refresh(path: Path, args: argparse.Namespace, round_: int, note: bool) -> tuple[float, int | None]:
    con = duckdb.connect(str(path))
    try:
        stage(con, args.contacts, args.orders, args.changed, round_)
        seen = generation(con)
        kept = merge.before_write, merge.moved_by
        if take_read is not None:  # note: a sync's read outstanding; else none (the refresh compares nothing)
            con.execute(f"DROP TABLE IF EXISTS {READS}")
            if note:
                take_read(con)
        elif not note:
            merge.before_write, merge.moved_by = (lambda *a: None), (lambda *a: None)
        try:
            started = time.perf_counter()
            merge.merge_staged(con, PullResult(full_refresh=True), origin="pull")
            took = time.perf_counter() - started
        finally:
            merge.before_write, merge.moved_by = kept
        moved = moved_since(con, seen)[1]
        return took, None if moved is None else len(moved)
    finally:
        con.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--orders", type=int, default=2_000_000)
    parser.add_argument("--changed", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store.duckdb"
        con = duckdb.connect(str(path))
        create_tables(con)
        con.close()
        refresh(path, args, 0, False)  # the store as the export's first read wrote it
        for i in range(1, args.rounds + 1):
            first = "no read outstanding" if take_read is not None else "noting nobody (main)"
            for k, (note, label) in enumerate(((False, first), (True, "noting, rows before read"),
                                               (True, "noting, rows before kept"))):
                took, moved = refresh(path, args, 3 * i + k, note)  # each its own changes
                print(f"round {i} {label:>24}: {took:6.2f} s  noted: {moved if moved is not None else 'nobody'}",
                      flush=True)


if __name__ == "__main__":
    main()
