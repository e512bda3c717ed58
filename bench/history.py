"""Segment history growth: how much one month of daily records adds to the order store (issue 16 §1).

A synthetic snapshot of ``--customers`` customers in five segments is recorded once, then every day for ``--days``
days after moving a share of them (``--move``, default 5 %; a move can land on the same segment, so about 4/5 of
it are real moves) to a random segment. Prints the time of a daily record and the store's size after the first
record and after the last (both checkpointed).

    python bench/history.py                        # 1 M customers, 30 days, 5 %
    python bench/history.py --customers 100000 --days 10
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]  # bench/sync.py is not `sync`
if sys.path[0] != str(ROOT):  # first, even when PYTHONPATH names it: bench/sync.py must not hide the package
    sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402

from sync.store import history  # noqa: E402

SEGMENTS = "['Best active', 'Falling asleep', 'Churn', 'Beginners', 'Other']"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--move", type=float, default=0.05, help="share of customers re-drawn each day")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "store.duckdb")
        con = duckdb.connect(path)
        con.execute(f"""CREATE TEMP TABLE s AS SELECT 'C' || lpad(i::VARCHAR, 8, '0') AS customer_id,
                        ({SEGMENTS})[1 + (hash(i) % 5)::INT] AS segment FROM range({args.customers}) t(i)""")
        d0 = date(2025, 1, 1)
        history.record(con, "s", as_of=d0, preset="tracks", rules_hash="bench", source="sync")
        con.execute("CHECKPOINT")
        first = os.path.getsize(path)
        seconds, moves = [], 0
        for day in range(1, args.days + 1):
            con.execute(f"""UPDATE s SET segment = ({SEGMENTS})[1 + (hash(customer_id, {day}) % 5)::INT]
                            WHERE hash(customer_id, {day} * 7919) % 10000 < {int(args.move * 10000)}""")
            started = time.perf_counter()
            done = history.record(con, "s", as_of=d0 + timedelta(days=day), preset="tracks", rules_hash="bench",
                                  source="sync")
            seconds.append(time.perf_counter() - started)
            moves += done.moves
        con.execute("CHECKPOINT")
        last = os.path.getsize(path)
        rows = con.execute("SELECT count(*) FROM segment_history").fetchall()[0][0]
        con.close()
    seconds.sort()
    print(f"{args.customers} customers, {args.days} days, {moves / args.days:.0f} moves a day")
    print(f"daily record: median {seconds[len(seconds) // 2]:.2f} s, max {seconds[-1]:.2f} s")
    print(f"store: {first / 1e6:.1f} MB after the first record, +{(last - first) / 1e6:.1f} MB after {args.days} "
          f"days ({rows} history rows, {(last - first) / max(moves, 1):.1f} bytes a move)")


if __name__ == "__main__":
    main()
