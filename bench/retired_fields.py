"""What a plan's retired-field steps cost (:mod:`sync.planning.retired_fields`) at ``--rows`` staged contacts,
three fields each (one mapped, one unmapped, one retired and held by ``--held-pct`` of them): CPU seconds of one
read of the staged state's field names (:func:`field_names`), and of the warning plus the clear
(``left_fields`` + ``clear_retired``) as a plan makes them now (the names read once and handed to both) and as it
made them before (each read them: the same calls with a second :func:`field_names`, the read ``clear_retired``
made). Process CPU seconds (all of DuckDB's threads), the median of ``--repeat`` runs, before and after
interleaved in one process.

    python bench/retired_fields.py                 # 1 M rows, 1 % holding the retired field
    python bench/retired_fields.py --rows 250k --repeat 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] != str(ROOT):
    sys.path.insert(0, str(ROOT))

from bench.common import parse_size, size_label  # noqa: E402


def staged(n: int, held_pct: float):  # noqa: ANN201  (a DuckDB connection)
    """A connection holding ``n`` customer rows and their staged pushed state, as a plan stages them."""
    import duckdb
    import pyarrow as pa

    from sync.ledger.bulk import state_schema
    from sync.planning.columnar import stage_pushed
    from sync.planning.rows import stage_dicts

    every = max(1, round(100 / held_pct)) if held_pct > 0 else 0
    keys = [f"c{i}@x.io" for i in range(n)]
    fields = [json.dumps({"CHURN": "hi" if every and i % every == 0 else "", "OLD": str(i % 7), "SEG": "A"},
                         separators=(",", ":"), sort_keys=True) for i in range(n)]
    state = pa.table({"key": keys, "customer_id": [str(i) for i in range(n)], "tags": ["[]"] * n, "fields": fields,
                      "in_destination": [True] * n}, schema=state_schema())
    con = duckdb.connect()
    rows = stage_dicts(({"customer_id": str(i), "email": k, "segment": "A", "marketing_consent": "yes"}
                        for i, k in enumerate(keys)), con)
    stage_pushed(rows.con, state)
    return rows.con


def cpu(call: Callable[[], object]) -> float:
    start = time.process_time()
    call()
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=parse_size, default=1_000_000)
    parser.add_argument("--held-pct", type=float, default=1.0, help="share of contacts holding the retired field")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    from sync.config import DestinationConfig
    from sync.planning.plan import Plan
    from sync.planning.retired_fields import clear_retired, field_names, left_fields

    dest = DestinationConfig(name="mc", type="mailchimp", audience="a1", fields={"SEG": "segment"},
                             retire_fields=["CHURN"])
    plan = Plan("mc", "mailchimp", (), (), (), dict(dest.fields), 0)
    con = staged(args.rows, args.held_pct)

    def after() -> None:
        held = field_names(con)
        left_fields(con, dest, held)
        clear_retired(con, dest, plan, held)

    def before() -> None:
        left_fields(con, dest, field_names(con))
        clear_retired(con, dest, plan, field_names(con))

    runs: dict[str, list[float]] = {"one field-name read": [], "before (two reads)": [], "after (one read)": []}
    after()  # warm: DuckDB's first look at the staged data
    for _ in range(args.repeat):
        runs["one field-name read"].append(cpu(lambda: field_names(con)))
        runs["before (two reads)"].append(cpu(before))
        runs["after (one read)"].append(cpu(after))
    print(f"{size_label(args.rows)} staged rows, 3 fields each, {args.held_pct:g} % holding the retired one; "
          f"process CPU s, median of {args.repeat} (min–max)")
    for label, values in runs.items():
        print(f"  {label:<22} {statistics.median(values):.3f}  ({min(values):.3f}–{max(values):.3f})")


if __name__ == "__main__":
    main()
