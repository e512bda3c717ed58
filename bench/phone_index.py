"""Whether an index on the contacts' phones pays for its upkeep (branch resync29): what a phone-keyed webhook
order's link costs with and without one, and what it adds to every webhook merge of contacts.

A store of ``--contacts`` contacts (an e-mail and an E.164 phone each) and as many orders, the webhook lookup
indexes built (:func:`sync.store.ensure_lookup_indexes`). Alternating, ``--rounds`` times, without and with an ART
index on ``contacts(phone)``: (1) one order keyed by a phone staged and linked (:func:`connectors.identity.link_staged`,
in a transaction rolled back), and the phone filter alone; (2) a webhook batch's upsert of ``--batch`` contacts (their
stored rows deleted and inserted again, as :func:`sync.store.merge.merge_staged` does, rolled back). Wall seconds.

    PYTHONPATH=. python bench/phone_index.py --contacts 1000000 --batch 20000 --rounds 3
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

from connectors import identity  # noqa: E402
from connectors.tables import create_tables  # noqa: E402
from sync.store.lookup import ensure_lookup_indexes, lookup_by_key  # noqa: E402

INDEX = "bench_contacts_phone"


def build(path: Path, n: int) -> None:
    """As bench/phone_link.py's store, the phones in no order (a permutation: the column's zone maps prune nothing,
    as in a real shop's contacts)."""
    con = duckdb.connect(str(path))
    create_tables(con)
    con.execute(f"INSERT INTO contacts (customer_id, email, phone, marketing_consent) SELECT 'C' || i, 'u' || i || "
                f"'@example.com', '+99890' || lpad((i * 7919 % {n})::VARCHAR, 7, '0'), 'yes' FROM range({n}) t(i)")
    con.execute(f"INSERT INTO orders (order_id, customer_id, ordered_at, amount, status) SELECT 'O' || i, 'C' || i, "
                f"TIMESTAMPTZ '2025-01-01' + INTERVAL (i % 300) DAY, 100, 'completed' FROM range({n}) t(i)")
    ensure_lookup_indexes(con)
    con.close()


def timed(con: duckdb.DuckDBPyConnection, work) -> float:
    started = time.perf_counter()
    con.execute("BEGIN")
    try:
        work()
        return time.perf_counter() - started
    finally:
        con.execute("ROLLBACK")


def round_(path: Path, indexed: bool, phone: str, batch: int, n: int) -> tuple[float, float, float]:
    con = duckdb.connect(str(path))
    try:
        con.execute(f"CREATE INDEX IF NOT EXISTS {INDEX} ON contacts (phone)" if indexed
                    else f"DROP INDEX IF EXISTS {INDEX}")
        lookup_by_key(con)
        create_tables(con, prefix="staged_", temp=True)
        con.execute("DELETE FROM staged_orders")
        con.execute("INSERT INTO staged_orders (order_id, customer_id, ordered_at, amount, status) VALUES "
                    "('W1', ?, TIMESTAMPTZ '2025-06-01', 5, 'completed')", [phone])
        link = timed(con, lambda: identity.link_staged(con))
        started = time.perf_counter()
        con.execute("SELECT customer_id FROM contacts WHERE phone IN (SELECT unnest(?::VARCHAR[]))",
                    [[phone]]).fetchall()
        lookup = time.perf_counter() - started
        con.execute("DELETE FROM staged_contacts")
        con.execute(f"INSERT INTO staged_contacts SELECT * FROM contacts WHERE customer_id IN "
                    f"(SELECT 'C' || (i * 37 % {n}) FROM range({batch}) t(i))")
        upsert = timed(con, lambda: (con.execute("DELETE FROM contacts WHERE customer_id IN (SELECT customer_id FROM "
                                                 "staged_contacts)"),
                                     con.execute("INSERT INTO contacts SELECT * FROM staged_contacts")))
        return link, lookup, upsert
    finally:
        con.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store.duckdb"
        started = time.perf_counter()
        build(path, args.contacts)
        print(f"store of {args.contacts} contacts built in {time.perf_counter() - started:.1f} s", flush=True)
        con = duckdb.connect(str(path))
        started = time.perf_counter()
        con.execute(f"CREATE INDEX {INDEX} ON contacts (phone)")
        print(f"phone index built in {time.perf_counter() - started:.2f} s", flush=True)
        con.close()
        for i in range(args.rounds):
            phone = f"+99890{i * 7919 % args.contacts:07d}"
            for indexed in (False, True):
                link, lookup, upsert = round_(path, indexed, phone, args.batch, args.contacts)
                print(f"round {i + 1} {'with' if indexed else 'without'} a phone index: link {link:.2f} s, the "
                      f"phone filter alone {lookup * 1000:.0f} ms, an upsert of {args.batch} contacts {upsert:.2f} s",
                      flush=True)


if __name__ == "__main__":
    main()
