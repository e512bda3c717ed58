"""Sync benchmark: write calls and wall time of a full sync against each ESP fake, and of a 1 % change.

For every destination type in ``tests.fakes.registry.DESTINATIONS`` (the contract battery's registry) the fake
runs in this process on 127.0.0.1, and the engine is driven directly, the way ``rfmsync sync`` does it:

1. a synthetic segments table in DuckDB (``--contacts`` customers, all with marketing consent and a valid
   address, spread over five segments, each mapped to a tag/list; Unisender also gets two tags) joined to a
   ``contacts`` table, read with the engine's query;
2. **plan**: ``sync.planning.plan.desired_contacts`` → ``sync.planning.plan.plan_destination`` against the ledger's last pushed
   state (``existing_members`` first when ``new_contacts = "skip"``, as ``plan_all`` does);
3. **apply**: ``sync.engine.execute_plan`` with the client ``sync.destinations.registry.make_destination`` builds from the
   settings (default retry policy, API batch maxima), recording into a SQLite ledger file;
4. ``--change`` (default 1 %) of the customers move to the next segment (``UPDATE`` in DuckDB) and steps 2–3 run
   again; then a third plan must be empty.

Printed per destination and run: write calls the fake counted, the theoretical minimum (Σ ceil(n / batch max) per
operation kind, from the plan and the vendor's documented maxima, plus creating missing fields and tags/lists),
their ratio, and plan / apply wall seconds. Targets: calls ≤ 1.05 × minimum + a constant; a 1 % change costs
about 1 % of the first run's calls.

    python bench/sync.py                       # 100k contacts, every destination, 1 % change
    python bench/sync.py --contacts 20k --destinations mailchimp,sendgrid --change 0.05
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# this file is named like the ``sync`` package: never let bench/ itself shadow it on sys.path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import format_table, parse_size, size_label  # noqa: E402

SEGMENTS = {"Champions": "Champions", "Loyal": "Loyal", "Promising": "Promising", "At risk": "At risk",
            "Hibernating": "Hibernating"}
FIELDS = {"Segment": "segment", "Rfm": "rfm", "Monetary": "monetary"}
TAGS = {"Champions": "rfm-champion", "At risk": "rfm-at-risk"}  # Unisender: tags besides the lists
SEGMENT_TABLE = "bench_segments"
TARGET_RATIO, TARGET_CONSTANT = 1.05, 3


# --------------------------------------------------------------------------- the synthetic customer base
def synthetic_store(contacts: int, seed: int = 7):
    """An in-memory DuckDB with ``contacts`` and a segments table shaped like the engine's, built in SQL."""
    import duckdb

    con = duckdb.connect()
    con.execute(f"SELECT setseed({(seed % 1000) / 1000})")
    segs = list(SEGMENTS)
    seg_case = "CASE i % 5 " + " ".join(f"WHEN {k} THEN '{s}'" for k, s in enumerate(segs)) + " END"
    con.execute(f"""
        CREATE TABLE contacts AS
        SELECT printf('C%07d', i) AS customer_id, printf('customer%07d@example.com', i) AS email,
               NULL::VARCHAR AS phone, 'yes' AS marketing_consent
        FROM range({contacts}) t(i)""")
    con.execute(f"""
        CREATE TABLE {SEGMENT_TABLE} AS
        SELECT printf('C%07d', i) AS customer_id, (i * 7919) % 700 AS recency_days, 1 + (i % 13) AS frequency,
               CAST(round(10000 + random() * 2000000, -2) AS DECIMAL(18, 2)) AS monetary,
               1 + i % 5 AS r, 1 + (i // 5) % 5 AS f, 1 + (i // 25) % 5 AS m,
               printf('%d%d%d', 1 + i % 5, 1 + (i // 5) % 5, 1 + (i // 25) % 5) AS rfm, {seg_case} AS segment
        FROM range({contacts}) t(i)""")
    return con


def change_segments(con, fraction: float) -> int:
    """Move ``fraction`` of the customers to the next segment; returns how many moved."""
    if fraction <= 0:
        return 0
    step = max(1, round(1 / fraction))
    segs = list(SEGMENTS)
    nxt = "CASE segment " + " ".join(f"WHEN '{s}' THEN '{segs[(k + 1) % len(segs)]}'" for k, s in enumerate(segs)) \
        + " END"
    # every step-th customer by a hash of the id (spread over all segments), counted before the update
    picked = f"hash(customer_id || 'move') % {step} = 0"
    con.execute(f"CREATE OR REPLACE TEMP TABLE moved AS SELECT customer_id FROM {SEGMENT_TABLE} WHERE {picked}")
    con.execute(f"UPDATE {SEGMENT_TABLE} SET segment = {nxt} WHERE customer_id IN (SELECT customer_id FROM moved)")
    return con.execute("SELECT count(*) FROM moved").fetchall()[0][0]


def customer_rows(con) -> list[dict[str, Any]]:
    """The rows the engine plans from (same query as ``sync.planning.planner.customer_rows``)."""
    rel = con.sql(f"""
        SELECT s.*, c.email, c.phone, c.marketing_consent
        FROM {SEGMENT_TABLE} s JOIN contacts c USING (customer_id)
        WHERE c.email IS NOT NULL AND trim(c.email) <> ''
        ORDER BY s.monetary DESC, s.customer_id""")
    cols = rel.columns
    return [dict(zip(cols, row)) for row in rel.fetchall()]


# --------------------------------------------------------------------------- one destination
def sync_once(harness, dest, con, ledger, settings) -> dict[str, Any]:
    from sync.destinations.registry import make_destination
    from sync.engine import execute_plan
    from sync.planning.plan import desired_contacts, plan_destination

    started = time.perf_counter()
    client = make_destination(dest, settings)
    desired, invalid = desired_contacts(customer_rows(con), dest)
    existing = None
    if dest.new_contacts == "skip" and client.reads_existing_members:
        existing = client.existing_members([d.key for d in desired])
    plan = plan_destination(dest, desired, ledger.load_state(dest.name), revision=ledger.state_revision(dest.name),
                            existing=existing, skipped=invalid, remote_checked=True)
    planned = time.perf_counter()
    setup = harness.setup_writes(plan.managed_tags, plan.fields)
    per_kind = harness.minimum_writes(plan.changes, dest.batch_size)
    minimum = setup + sum(per_kind.values())
    before = harness.write_calls
    report = execute_plan(plan, client, ledger, kind="bench")
    done = time.perf_counter()
    calls = harness.write_calls - before
    return {"changes": len(plan.changes), "status": report.status, "failed": report.counts.get("failed", 0),
            "calls": calls, "minimum": minimum, "kinds": per_kind, "setup": setup,
            "ratio": calls / minimum if minimum else (1.0 if not calls else float("inf")),
            "plan_s": planned - started, "apply_s": done - planned}


def bench_destination(kind: str, contacts: int, change: float, workdir: Path) -> list[dict[str, Any]]:
    from sync.config import DestinationConfig
    from sync.ledger import Ledger
    from sync.settings import load_settings
    from tests.fakes.registry import DESTINATIONS

    con = synthetic_store(contacts)
    with DESTINATIONS[kind]() as harness:
        settings = load_settings(**{k.lower(): v for k, v in harness.env().items()})
        dest = DestinationConfig(**harness.destination(f"bench-{kind}", SEGMENTS, FIELDS, tags=TAGS))
        ledger = Ledger.connect(f"sqlite:///{workdir / f'ledger-{kind}.db'}")
        try:
            first = sync_once(harness, dest, con, ledger, settings)
            moved = change_segments(con, change)
            second = sync_once(harness, dest, con, ledger, settings)
            third = sync_once(harness, dest, con, ledger, settings)
        finally:
            ledger.close()
            con.close()
    rows = []
    for label, r in ((f"full ({size_label(contacts)})", first), (f"{change:.0%} moved ({moved})", second),
                     ("rerun", third)):
        rows.append({"destination": kind, "run": label, "changes": r["changes"], "calls": r["calls"],
                     "minimum": r["minimum"], "ratio": f"{r['ratio']:.3f}", "plan s": f"{r['plan_s']:.1f}",
                     "apply s": f"{r['apply_s']:.1f}", "status": r["status"], "_r": r})
    share = second["calls"] / first["calls"] if first["calls"] else 0.0
    rows[1]["of full"] = f"{share:.1%}"
    return rows


def check(rows: list[dict[str, Any]]) -> list[str]:
    """Targets missed, one line each (empty when all hold)."""
    problems = []
    for row in rows:
        r = row["_r"]
        where = f"{row['destination']} {row['run']}"
        if r["failed"]:
            problems.append(f"{where}: {r['failed']} failed operations")
        if r["calls"] > TARGET_RATIO * r["minimum"] + TARGET_CONSTANT:
            problems.append(f"{where}: {r['calls']} calls > {TARGET_RATIO} × {r['minimum']} + {TARGET_CONSTANT}")
        if row["run"] == "rerun" and (r["changes"] or r["calls"]):
            problems.append(f"{where}: a rerun planned {r['changes']} changes and made {r['calls']} calls")
    return problems


def main(argv: list[str] | None = None) -> int:
    from tests.fakes.registry import DESTINATIONS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", default="100k", help="customers to sync (default 100k)")
    parser.add_argument("--destinations", default=",".join(sorted(DESTINATIONS)),
                        help=f"comma list (default: all of {', '.join(sorted(DESTINATIONS))})")
    parser.add_argument("--change", type=float, default=0.01, help="fraction moved before the second run")
    args = parser.parse_args(argv)
    contacts = parse_size(args.contacts)
    kinds = [k.strip() for k in args.destinations.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in DESTINATIONS]
    if unknown:
        parser.error(f"unknown destination type(s): {', '.join(unknown)}")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rfmsync-bench-sync-") as tmp:
        for kind in kinds:
            print(f"{kind}: {size_label(contacts)} contacts ...", file=sys.stderr, flush=True)
            rows += bench_destination(kind, contacts, args.change, Path(tmp))
    print(format_table(rows, [("destination", "destination"), ("run", "run"), ("changes", "changes"),
                              ("calls", "write calls"), ("minimum", "minimum"), ("ratio", "ratio"),
                              ("of full", "of full run"), ("plan s", "plan s"), ("apply s", "apply s"),
                              ("status", "status")]))
    print()
    for row in rows:
        if row["run"].startswith("full") or "moved" in row["run"]:
            r = row["_r"]
            kinds_txt = ", ".join(f"{k} {v}" for k, v in r["kinds"].items())
            print(f"{row['destination']} {row['run']}: minimum = {r['setup']} setup + {kinds_txt}")
    problems = check(rows)
    print("\n" + ("targets met" if not problems else "targets missed:\n  " + "\n  ".join(problems)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
