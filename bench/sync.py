"""Sync benchmark: plan times, write calls and apply throughput of a sync against each ESP fake.

For every destination type in ``tests.fakes.registry.DESTINATIONS`` (the contract battery's registry) the fake
runs on 127.0.0.1 in a process of its own, as a remote ESP would (``--latency-ms``: it answers every call after
that long),
and the engine is driven directly, the way ``rfmsync sync`` does it:

1. a synthetic segments table in DuckDB (``--contacts`` customers, all with marketing consent and a valid
   address, spread over five segments, each mapped to a tag/list; Unisender also gets two tags) joined to a
   ``contacts`` table;
2. **plan**: ``sync.planning.planner.plan_one`` (rows staged in DuckDB, the ledger's pushed state read in bulk, or
   only its rows written since the plan's cached copy, and joined there; the rows each plan read are printed;
   ``existing_members`` first when ``new_contacts = "skip"``); the full plan is also made once in a fresh
   process against the ledger alone, for its peak RSS;
3. **apply**: ``sync.engine.execute_plan`` with the client ``sync.destinations.registry.make_destination`` builds
   (default retry policy, API batch maxima, ``--connections`` parallel calls: default the vendor's limit),
   recording into the ledger (``--ledger-url``, default a SQLite file; PostgreSQL works too);
4. ``--change`` (default 1 %) of the customers move to the next segment (``UPDATE`` in DuckDB) and steps 2–3 run
   again; then a third plan must be empty (the no-change plan).

Printed per destination and run: write calls the fake counted, the theoretical minimum (Σ ceil(n / batch max) per
operation kind, from the plan and the vendor's documented maxima, plus creating missing fields and tags/lists),
their ratio, plan / apply wall seconds (the apply: ``execute_plan`` alone, the harness's counting outside it)
and the ledger's share of the apply. Then the targets (issue 17, at 1 M contacts): no-change plan ≤ 3 s,
1 %-moved plan ≤ 4 s, full plan ≤ 8 s, peak RSS of the plan ≤ 1.5 GB, ledger writes ≤ 10 % of the apply, and,
with a latency, apply contacts/s ≥ 80 % of the ideal (calls × latency / connections). Plan-time and RSS
targets are checked from 1 M contacts up; write-call targets always.

    python bench/sync.py                       # 100k contacts, every destination, 1 % change
    python bench/sync.py --contacts 1m --latency-ms 50 --destinations mailchimp
    python bench/sync.py --contacts 1m --latency-ms 50 --destinations mailchimp \
        --ledger-url postgresql+psycopg://user:pw@127.0.0.1/rfmsync_bench
    python bench/sync.py --contacts 1m --destinations mailchimp --segment-names ru
    python bench/sync.py --contacts 1m --latency-ms 50 --destinations mailchimp --key-order random

``--key-order``: ``ordered`` (default) gives customer *i* the id ``C000000i`` and the address
``customer000000i@example.com``, so the contacts' keys (and customer ids) arrive in the ledger's index order;
``random`` derives both from a hash of *i* (``md5``), as real addresses are: their order is unrelated to the
plan's and to each other's, and each group the ledger writes lands all over both of its indexes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# this file is named like the ``sync`` package: never let bench/ itself shadow it on sys.path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
if sys.path[0] != str(ROOT):  # first, even when PYTHONPATH names it: bench/sync.py must not hide the package
    sys.path.insert(0, str(ROOT))

from bench.common import format_table, parse_size, size_label  # noqa: E402
from bench.sync_targets import TARGET_SIZE, check, summary  # noqa: E402

#: the five segments' names: English, or (``--segment-names ru``, passed to the bench's child processes in
#: ``RFMSYNC_BENCH_SEGMENT_NAMES``) Russian, as a shop using the Russian presets names them: every contact's
#: Segment field is then non-ASCII text
NAMES = {"en": ("Champions", "Loyal", "Promising", "At risk", "Hibernating"),
         "ru": ("Чемпионы", "Лояльные", "Перспективные", "В зоне риска", "Спящие")}
_NAMES = NAMES[os.environ.get("RFMSYNC_BENCH_SEGMENT_NAMES", "en")]
SEGMENTS = {name: name for name in _NAMES}
FIELDS = {"Segment": "segment", "Rfm": "rfm", "Monetary": "monetary"}
TAGS = {_NAMES[0]: "rfm-champion", _NAMES[3]: "rfm-at-risk"}  # Unisender: tags besides the lists
SEGMENT_TABLE = "bench_segments"
#: the contacts' customer id and e-mail address, as DuckDB SQL of the row number ``i``, per ``--key-order``
#: (passed to the bench's child processes in ``RFMSYNC_BENCH_KEY_ORDER``)
KEY_ORDERS = {"ordered": ("printf('C%07d', i)", "printf('customer%07d@example.com', i)"),
              "random": ("'C' || md5('c' || i)[:14]", "md5('e' || i)[:16] || '@example.com'")}


# --------------------------------------------------------------------------- the synthetic customer base
def synthetic_store(contacts: int, seed: int = 7):
    """An in-memory DuckDB with ``contacts`` and a segments table shaped like the engine's, built in SQL."""
    import duckdb

    con = duckdb.connect()
    con.execute(f"SELECT setseed({(seed % 1000) / 1000})")
    segs = list(SEGMENTS)
    customer_id, email = KEY_ORDERS[os.environ.get("RFMSYNC_BENCH_KEY_ORDER", "ordered")]
    seg_case = "CASE i % 5 " + " ".join(f"WHEN {k} THEN '{s}'" for k, s in enumerate(segs)) + " END"
    con.execute(f"""
        CREATE TABLE contacts AS
        SELECT {customer_id} AS customer_id, {email} AS email,
               NULL::VARCHAR AS phone, 'yes' AS marketing_consent
        FROM range({contacts}) t(i)""")
    con.execute(f"""
        CREATE TABLE {SEGMENT_TABLE} AS
        SELECT {customer_id} AS customer_id, (i * 7919) % 700 AS recency_days, 1 + (i % 13) AS frequency,
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


# --------------------------------------------------------------------------- the fake, in its own process
class RemoteFake:
    """A destination's fake served by a child process (``--serve-fake``), as a remote ESP would be: its work
    does not share rfmsync's interpreter. Counting questions go over the child's stdin/stdout as JSON lines;
    the pure parts of the harness (config, minimum writes) run here."""

    def __init__(self, kind: str, latency_ms: float) -> None:
        import subprocess

        from tests.fakes.registry import DESTINATIONS

        self.local = DESTINATIONS[kind]()  # never started: config and the theoretical minimum only
        self._proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--serve-fake", kind,
                                       "--latency-ms", str(latency_ms)], cwd=str(ROOT), text=True,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._env = self._ask(None)["env"]

    def _ask(self, op: dict[str, Any] | None) -> Any:
        import json

        if op is not None:
            self._proc.stdin.write(json.dumps(op) + "\n")
            self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise SystemExit(f"the fake's process ended (exit {self._proc.wait()})")
        return json.loads(line)

    def env(self) -> dict[str, str]:
        return self._env

    def destination(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return self.local.destination(*args, **kwargs)

    @property
    def write_calls(self) -> int:
        return self._ask({"op": "write_calls"})

    @property
    def cpu_seconds(self) -> float:
        """CPU time the fake's process has used (user + system): is the fake what bounds the apply?"""
        return self._ask({"op": "cpu"})

    def setup_writes(self, managed, fields) -> int:
        return self._ask({"op": "setup_writes", "managed": list(managed), "fields": dict(fields)})

    def minimum_writes(self, changes, batch_size=None) -> dict[str, int]:
        return self.local.minimum_writes(changes, batch_size)

    def __enter__(self) -> "RemoteFake":
        return self

    def __exit__(self, *exc: object) -> None:
        self._proc.stdin.close()
        self._proc.wait(30)


def serve_fake(kind: str, latency_ms: float) -> None:
    """Child side of :class:`RemoteFake`."""
    import json

    from tests.fakes.registry import DESTINATIONS

    import gc
    import resource

    gc.disable()  # the fake keeps every member and request: the collector would rescan them at every call
    harness = DESTINATIONS[kind]()
    if latency_ms:
        if not hasattr(harness.fake, "latency"):
            raise SystemExit(f"--latency-ms: the {kind} fake cannot delay its answers")
        harness.fake.latency = latency_ms / 1000
    with harness:
        print(json.dumps({"env": harness.env()}), flush=True)
        for line in sys.stdin:
            op = json.loads(line)
            if op["op"] == "write_calls":
                answer: Any = harness.write_calls
            elif op["op"] == "cpu":
                usage = resource.getrusage(resource.RUSAGE_SELF)
                answer = usage.ru_utime + usage.ru_stime
            else:
                answer = harness.setup_writes(op["managed"], op["fields"])
            print(json.dumps(answer), flush=True)


# --------------------------------------------------------------------------- the ledger, timed
class TimedLedger:
    """The ledger, with the seconds the apply spends in it (state reads and writes, outcomes) added up."""

    TIMED = ("load_state", "load_states", "save_states", "save_rows", "record_results", "start_run", "finish_run")

    def __init__(self, ledger: Any) -> None:
        self._ledger = ledger
        self.seconds = 0.0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._ledger, name)
        if name not in self.TIMED:
            return attr

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - t0
        return timed


class ReadLedger:
    """The ledger, noting what the plan's read of the pushed state took from it (``state_parts``): the rows
    read and the revision of the cached copy they were laid over (None: the whole state was read)."""

    def __init__(self, ledger: Any) -> None:
        self._ledger = ledger
        self.read: tuple[int, int | None] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ledger, name)

    def state_parts(self, destination: str) -> Any:
        parts = self._ledger.state_parts(destination)
        self.read = (parts.read, parts.since)
        return parts


# --------------------------------------------------------------------------- one destination
def plan_once(cfg, dest, con, ledger, client, reads: list | None = None):
    from sync.planning.planner import field_columns, plan_one
    from sync.planning.rows import stage_segments

    rows = stage_segments(con, SEGMENT_TABLE, field_columns([dest]))  # as plan_all stages them
    noted = ReadLedger(ledger)
    plan = plan_one(cfg, dest, rows, noted, client, None, full_refresh=False, reconcile=False).plan
    if reads is not None:
        reads.append(noted.read)
    return plan


def sync_once(harness, cfg, dest, con, ledger, settings) -> dict[str, Any]:
    from sync.destinations.registry import make_destination
    from sync.engine import execute_plan

    started = time.perf_counter()
    client = make_destination(dest, settings)
    reads: list[Any] = []
    plan = plan_once(cfg, dest, con, ledger, client, reads)
    planned = time.perf_counter()
    # the harness's counting (the theoretical minimum: ~0.9 s at 1 M changes; questions to the fake's process)
    # is done outside the apply's timers
    setup = harness.setup_writes(plan.managed_tags, plan.fields)
    per_kind = harness.minimum_writes(plan.changes, dest.batch_size)
    minimum = setup + sum(per_kind.values())
    before = harness.write_calls
    timed = TimedLedger(ledger)
    fake_cpu = harness.cpu_seconds
    cpu = time.process_time()
    applying = time.perf_counter()
    report = execute_plan(plan, client, timed, kind="bench")
    done = time.perf_counter()
    cpu = time.process_time() - cpu
    fake_cpu = harness.cpu_seconds - fake_cpu
    calls = harness.write_calls - before
    return {"changes": len(plan.changes), "status": report.status, "failed": report.counts.get("failed", 0),
            "calls": calls, "minimum": minimum, "kinds": per_kind, "setup": setup,
            "ratio": calls / minimum if minimum else (1.0 if not calls else float("inf")),
            "plan_s": planned - started, "apply_s": done - applying, "ledger_s": timed.seconds, "apply_cpu_s": cpu,
            "fake_cpu_s": fake_cpu,
            "ledger_wait_s": report.ledger_wait_seconds, "ledger_cpu_s": report.ledger_cpu_seconds,
            "connections": getattr(client, "max_connections", None), "ledger_read": reads[0]}


def bench_config(harness, kind: str):
    from sync.config import Config, DestinationConfig

    dest = DestinationConfig(**harness.destination(f"bench-{kind}", SEGMENTS, FIELDS, tags=TAGS))
    # the bench writes its segments itself; the config names them as rules, as a shop mapping them would (a field
    # condition each: rules that all matched "R1" would leave all but the first unreachable, a config error)
    rules = [{"name": name, "match": ["frequency >= 1"]} for name in _NAMES]
    return Config(segmentation={"rules": rules}, destinations=[dest]), dest


def full_plan_child(kind: str, contacts: int, ledger_url: str) -> dict[str, Any]:
    """Child process: the full plan against the ledger alone (no ESP), its time and the process's peak RSS."""
    from bench.common import emit_result
    from sync.ledger import Ledger
    from tests.fakes.registry import DESTINATIONS

    con = synthetic_store(contacts)
    cfg, dest = bench_config(DESTINATIONS[kind](), kind)
    ledger = Ledger.connect(ledger_url)
    try:
        t0 = time.perf_counter()
        plan = plan_once(cfg, dest, con, ledger, None)
        result = {"plan_s": time.perf_counter() - t0, "changes": len(plan.changes)}
    finally:
        ledger.close()
    emit_result(result)
    return result


def bench_destination(kind: str, contacts: int, change: float, workdir: Path, *, latency_ms: float,
                      connections: int | None, ledger_url: str | None) -> list[dict[str, Any]]:
    from bench.common import run_child
    from sync.ledger import Ledger
    from sync.settings import load_settings

    url = ledger_url or f"sqlite:///{workdir / f'ledger-{kind}.db'}"
    _clear_ledger(url, f"bench-{kind}")
    child = run_child([sys.executable, str(Path(__file__).resolve()), "--child-full-plan", kind,
                       "--contacts", str(contacts), "--ledger-url", url], cwd=str(ROOT))
    con = synthetic_store(contacts)
    with RemoteFake(kind, latency_ms) as harness:
        env = {k.lower(): v for k, v in harness.env().items()}
        settings = load_settings(**env, rfmsync_http_concurrency=connections or 10)
        cfg, dest = bench_config(harness, kind)
        # as the commands open it: a PostgreSQL ledger's plans keep their copy of the pushed state on this host
        ledger = Ledger.connect(url, state_cache=workdir / "state-cache" if url.startswith("postgres") else None)
        try:
            first = sync_once(harness, cfg, dest, con, ledger, settings)
            moved = change_segments(con, change)
            second = sync_once(harness, cfg, dest, con, ledger, settings)
            third = sync_once(harness, cfg, dest, con, ledger, settings)
        finally:
            ledger.close()
            con.close()
    first["child"] = child
    rows = []
    for label, r in ((f"full ({size_label(contacts)})", first), (f"{change:.0%} moved ({moved})", second),
                     ("no change", third)):
        share = r["ledger_s"] / r["apply_s"] if r["apply_s"] else 0.0
        rows.append({"destination": kind, "run": label, "changes": r["changes"], "calls": r["calls"],
                     "minimum": r["minimum"], "ratio": f"{r['ratio']:.3f}", "plan s": f"{r['plan_s']:.2f}",
                     "apply s": f"{r['apply_s']:.1f}", "ledger": f"{share:.1%}", "status": r["status"], "_r": r,
                     "_latency": latency_ms / 1000, "_contacts": contacts})
    share = second["calls"] / first["calls"] if first["calls"] else 0.0
    rows[1]["of full"] = f"{share:.1%}"
    return rows


def _clear_ledger(url: str, destination: str) -> None:
    """Start from an empty pushed state for ``destination`` (a reused PostgreSQL ledger keeps it otherwise)."""
    from sync.ledger import Ledger

    ledger = Ledger.connect(url)
    try:
        keys = ledger.state_table(destination).column("key").to_pylist()
        if keys:
            ledger.forget(destination, keys)
    finally:
        ledger.close()


def main(argv: list[str] | None = None) -> int:
    from tests.fakes.registry import DESTINATIONS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", default="100k", help="customers to sync (default 100k)")
    parser.add_argument("--destinations", default=",".join(sorted(DESTINATIONS)),
                        help=f"comma list (default: all of {', '.join(sorted(DESTINATIONS))})")
    parser.add_argument("--change", type=float, default=0.01, help="fraction moved before the second run")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="the fake answers every call after this many milliseconds (default 0)")
    parser.add_argument("--connections", type=int, default=None,
                        help="parallel calls (default: the vendor's limit, capped by each client)")
    parser.add_argument("--ledger-url", default=None,
                        help="ledger database (default: a SQLite file in a temporary folder)")
    parser.add_argument("--segment-names", choices=sorted(NAMES), default=None,
                        help="the segments' names: en (default) or ru (every Segment field non-ASCII text)")
    parser.add_argument("--key-order", choices=sorted(KEY_ORDERS), default=None,
                        help="ordered (default: ids and addresses in the ledger's index order) or random "
                             "(both derived from a hash, as real addresses are)")
    parser.add_argument("--child-full-plan", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--serve-fake", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.segment_names and NAMES[args.segment_names] != _NAMES:  # this process and its children
        os.environ["RFMSYNC_BENCH_SEGMENT_NAMES"] = args.segment_names
        return os.execv(sys.executable, [sys.executable, str(Path(__file__).resolve()), *(argv or sys.argv[1:])])
    if args.key_order:  # this process and its children (the full plan's)
        os.environ["RFMSYNC_BENCH_KEY_ORDER"] = args.key_order
    if args.serve_fake:
        serve_fake(args.serve_fake, args.latency_ms)
        return 0
    contacts = parse_size(args.contacts)
    if args.child_full_plan:
        full_plan_child(args.child_full_plan, contacts, args.ledger_url)
        return 0
    kinds = [k.strip() for k in args.destinations.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in DESTINATIONS]
    if unknown:
        parser.error(f"unknown destination type(s): {', '.join(unknown)}")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rfmsync-bench-sync-") as tmp:
        for kind in kinds:
            print(f"{kind}: {size_label(contacts)} contacts ...", file=sys.stderr, flush=True)
            rows += bench_destination(kind, contacts, args.change, Path(tmp), latency_ms=args.latency_ms,
                                      connections=args.connections, ledger_url=args.ledger_url)
    print(format_table(rows, [("destination", "destination"), ("run", "run"), ("changes", "changes"),
                              ("calls", "write calls"), ("minimum", "minimum"), ("ratio", "ratio"),
                              ("of full", "of full run"), ("plan s", "plan s"), ("apply s", "apply s"),
                              ("ledger", "ledger share"), ("status", "status")]))
    print()
    for row in rows:
        if row["run"].startswith("full") or "moved" in row["run"]:
            r = row["_r"]
            kinds_txt = ", ".join(f"{k} {v}" for k, v in r["kinds"].items())
            print(f"{row['destination']} {row['run']}: minimum = {r['setup']} setup + {kinds_txt}")
    for row in rows:
        read, since = row["_r"]["ledger_read"] or (0, None)
        copy = f"written since its cached copy (revision {since})" if since is not None else "(no cached copy)"
        print(f"{row['destination']} {row['run']}: the plan read {read:,} pushed-state rows from the ledger {copy}")
    print("\n".join(summary(rows)))
    problems = check(rows)
    scope = "" if contacts >= TARGET_SIZE else f" (plan-time and RSS targets are checked from {size_label(TARGET_SIZE)})"
    print("\n" + ("targets met" + scope if not problems else "targets missed:\n  " + "\n  ".join(problems)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
