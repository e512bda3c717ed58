"""What identity linking of one phone-keyed webhook order costs on a large store (branch race28).

A store of ``--contacts`` contacts (each with an e-mail and an E.164 phone) and as many orders, with the webhook
lookup indexes built (:func:`sync.store.ensure_lookup_indexes`: none on the phones). One order keyed by a phone (no
customer id of its own) is staged and linked (:func:`connectors.identity.link_staged`, inside a transaction rolled
back), ``--rounds`` times, in two ways alternating: the stored contacts it may link to read as the whole
``contacts`` table (before race28: any phone to look up did so) and read by a filter on the looked-up phones (and
the e-mails through their index). Wall seconds of each link; the order must join the same customer both ways.

    PYTHONPATH=. python bench/phone_link.py --contacts 1000000 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
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


def build(path: Path, n: int) -> None:
    con = duckdb.connect(str(path))
    create_tables(con)
    con.execute(f"INSERT INTO contacts (customer_id, email, phone, marketing_consent) SELECT 'C' || i, 'u' || i || "
                f"'@example.com', '+99890' || lpad(i::VARCHAR, 7, '0'), 'yes' FROM range({n}) t(i)")
    con.execute(f"INSERT INTO orders (order_id, customer_id, ordered_at, amount, status) SELECT 'O' || i, 'C' || i, "
                f"TIMESTAMPTZ '2025-01-01' + INTERVAL (i % 300) DAY, 100, 'completed' FROM range({n}) t(i)")
    ensure_lookup_indexes(con)
    con.close()


def link(path: Path, phone: str, whole: bool) -> tuple[float, str]:
    con = duckdb.connect(str(path))
    lookup_by_key(con)
    create_tables(con, prefix="staged_", temp=True)
    con.execute("INSERT INTO staged_orders (order_id, customer_id, ordered_at, amount, status) VALUES "
                "('W1', ?, TIMESTAMPTZ '2025-06-01', 5, 'completed')", [phone])
    filtered = identity._stored_people
    identity._stored_people = (lambda _con: "contacts") if whole else filtered  # type: ignore[assignment]
    try:
        started = time.perf_counter()
        con.execute("BEGIN")
        identity.link_staged(con)
        took = time.perf_counter() - started
        owner = con.execute("SELECT customer_id FROM staged_orders").fetchall()[0][0]
        con.execute("ROLLBACK")
    finally:
        identity._stored_people = filtered
        con.close()
    return took, owner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store.duckdb"
        started = time.perf_counter()
        build(path, args.contacts)
        print(f"store of {args.contacts} contacts built in {time.perf_counter() - started:.1f} s")
        times: dict[str, list[float]] = {"whole contacts table": [], "filtered by phone": []}
        for i in range(args.rounds):
            phone = f"+99890{i * 7919 % args.contacts:07d}"
            owners = set()
            for name, whole in (("filtered by phone", False), ("whole contacts table", True)):
                took, owner = link(path, phone, whole)
                times[name].append(took)
                owners.add(owner)
            assert len(owners) == 1 and not owners.pop().startswith("+"), "not linked, or linked differently"
        for name, ts in times.items():
            print(f"{name}: " + " · ".join(f"{t:.2f}" for t in ts) + f" s (median {statistics.median(ts):.2f})")


if __name__ == "__main__":
    main()
