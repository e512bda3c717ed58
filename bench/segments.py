"""Segments benchmark: rfmsync (DuckDB) against a plain pandas implementation of the same work.

For each size a synthetic shop (``sync.demodata.generate_orders_csv``: 10 orders per customer on average, about
half one-time buyers, two years of history) is written as CSV into ``--workdir`` once and reused. Then, each in a
fresh interpreter so that time and peak RSS belong to that run alone:

* **rfmsync** (cold): what ``rfmsync segments --customers --no-predict -o FILE`` runs on a new order store (the
  predictive fields are issue 7's addition, timed by ``bench/predict.py``): ``load_config`` →
  ``compute_segments(boundary=False)`` (read the CSV into the order store, check it, metrics, tie-aware quantile
  scores, preset rules, summary) → ``write_customers`` (one Parquet row per customer). ``--breakdown`` also times
  the falling-asleep boundary that the summary command adds;
* **rfmsync-warm**: the same command again on the unchanged export (the store is up to date: nothing is read);
* **rfmsync-new-file**: the same command after one new daily file of 10 k orders was added next to the export
  (only that file is read, checked and added: the lean path of :mod:`sync.store.file_lean`). Its customers include
  the new file's, so its segments are not compared;
* **pandas-checked** (the reference of the ratio target, :mod:`bench.pandas_checked`): the same work in idiomatic
  vectorised pandas, with rfmsync's checks (trimmed ids, status mapping, bad rows with their row numbers,
  repeated order ids), metrics, scores, rules, summary and the Parquet file; its bad-row count must match;
* **pandas** (lean): ``read_csv`` → parse → filter → ``groupby`` per customer → the same tie-aware quantile
  scores (``rank(method="min")``, rfm-models.md §4.3/§6) → the same preset rules → ``to_parquet``. It trusts the
  file (no checks, no order ids, no summary), so it is the easier side of the comparison; its ratio is shown;
* **duckdb-sql** (the floor, skip with ``--no-floor``): the same metrics, scores and rules in plain DuckDB SQL
  over a typed read of this clean file, without anything a real export needs (mapping, checks, contacts,
  summary, boundary): how close rfmsync runs to the engine it is built on;
* **duckdb-persist** (also skipped by ``--no-floor``): the same, but the typed rows are first written once to a
  database file and checkpointed: the least a cold run that keeps the export in a store can cost.

Seconds are measured inside the child from before the engine's imports to the written file; "process s" adds the
interpreter start-up. Every output is compared per customer with rfmsync's and the segment counts must match.

    python bench/segments.py                       # 1m and 10m orders, once each
    python bench/segments.py --sizes 100k,1m --repeat 3
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]  # bench/sync.py is not `sync`
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import (ChildFailed, emit_result, format_table, human_bytes, parse_size,  # noqa: E402
                          run_child, size_label)
from bench.duckdb_floor import duckdb_floor  # noqa: E402
from bench.pandas_lean import pandas_segments  # noqa: E402

AS_OF = date(2026, 1, 1)
ENGINES = ("rfmsync", "pandas-checked", "pandas", "duckdb-sql", "duckdb-persist", "rfmsync-warm", "rfmsync-new-file")
FLOORS = ("duckdb-sql", "duckdb-persist")
RFMSYNC = ("rfmsync", "rfmsync-warm", "rfmsync-new-file")  # the same child; the parent sets up the store
DAILY_ORDERS = 10_000
SAME_WORK = "pandas-checked"  # the reference the ratio target is judged against
ORDERS_PER_CUSTOMER = 10
TARGET_SECONDS_10M = 8.0
TARGET_RATIO = 3.0
TARGET_RSS = 3 * 1024 ** 3
TARGET_WARM_VS_LEAN = 5.0  # warm ≥ 5× faster than lean pandas reading the CSV
TARGET_NEW_FILE_VS_WARM = 1.5  # one new daily file ≤ 1.5× the warm time
TARGET_COLD_VS_FLOOR = 1.3  # cold ≤ 1.3× the plain DuckDB floor


# --------------------------------------------------------------------------- data set
def dataset(workdir: Path, orders: int, seed: int = 42, regenerate: bool = False) -> tuple[Path, float | None]:
    """The CSV for ``orders`` rows (generated once, then reused); returns (path, seconds spent generating)."""
    from sync.demodata import generate_orders_csv

    customers = max(1, orders // ORDERS_PER_CUSTOMER)
    path = workdir / f"orders-{size_label(orders)}-s{seed}.csv"
    if path.exists() and path.stat().st_size and not regenerate:
        return path, None
    workdir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.csv")
    t0 = time.perf_counter()
    generate_orders_csv(tmp, orders=orders, customers=customers, seed=seed, as_of=AS_OF)
    tmp.replace(path)
    return path, time.perf_counter() - t0


def write_config(csv_path: Path, preset: str) -> Path:
    """An rfmsync.toml next to the CSV reading it (and any ``<name>.daily-*.csv`` added next to it) as a plain
    file source, with its own order store ``<name>.duckdb``."""
    cfg = csv_path.with_name(csv_path.stem + f"-{preset}.toml")
    cfg.write_text(f"""[store]
orders = "{store_of(csv_path).name}"

[source]
type = "file"
orders = "{csv_path.stem}*.csv"
timezone = "UTC"
currency = "UZS"

[source.columns]
order_id = "order_id"
customer_id = "customer_id"
ordered_at = "ordered_at"
amount = "amount"
status = "status"

[segmentation]
preset = "{preset}"
""", encoding="utf-8")
    return cfg


def store_of(csv_path: Path) -> Path:
    return csv_path.with_suffix(".duckdb")


def daily_of(csv_path: Path) -> Path:
    """The day after the export: named to sort after it, as dated daily files do."""
    return csv_path.with_name(f"{csv_path.stem}.daily-1.csv")


def write_daily_file(csv_path: Path, orders: int) -> Path:
    """One more day of ``DAILY_ORDERS`` orders (new order ids, customers old and new) next to the export."""
    import duckdb

    path = daily_of(csv_path)
    customers = max(1, orders // ORDERS_PER_CUSTOMER)
    with duckdb.connect() as con:
        con.execute(f"""COPY (SELECT {orders} + i + 1 AS order_id, 'C' || (hash(i) % {customers + 1000}) AS customer_id,
                                     strftime(TIMESTAMP '{AS_OF}' - INTERVAL 1 DAY + INTERVAL (i * 8) SECOND,
                                              '%Y-%m-%d %H:%M:%S') AS ordered_at,
                                     (100 + i % 9000)::DECIMAL(18,2) AS amount, 'completed' AS status
                              FROM range({DAILY_ORDERS}) t(i)) TO '{path}' (HEADER, DELIMITER ',')""")
    return path


def clear_store(csv_path: Path) -> None:
    """No order store and no daily file: the next rfmsync run is cold."""
    daily_of(csv_path).unlink(missing_ok=True)
    for p in (store_of(csv_path), store_of(csv_path).with_suffix(".duckdb.wal")):
        p.unlink(missing_ok=True)


# --------------------------------------------------------------------------- children
def _child(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    as_of = date.fromisoformat(args.as_of)
    out = Path(args.out)
    if args.breakdown:
        return _breakdown(args)
    if args.child in RFMSYNC:
        from sync.config import load_config
        from sync.pipeline import compute_segments, write_customers

        run = compute_segments(load_config(args.config), as_of=as_of, boundary=False)
        write_customers(run, out)
        counts = {r["segment"]: int(r["customers"]) for r in run.result.summary
                  if r["segment"] != "Total" and r["customers"]}
        bad = run.bad_row_count
        run.close()  # the store's checkpoint belongs to the run
    elif args.child in FLOORS:
        persist = out.with_suffix(".duckdb") if args.child == "duckdb-persist" else None
        counts = duckdb_floor(Path(args.csv), out, as_of, args.preset, persist)
        bad = 0
        if persist is not None:
            persist.unlink(missing_ok=True)
    elif args.child == "pandas-checked":
        from bench.pandas_checked import pandas_checked_segments

        counts, bad = pandas_checked_segments(Path(args.csv), out, as_of, args.preset)
    else:
        counts = pandas_segments(Path(args.csv), out, as_of, args.preset, engine=args.pandas_engine)
        bad = 0
    emit_result({"engine": args.child, "seconds": time.perf_counter() - t0, "counts": counts,
                 "customers": sum(counts.values()), "bad_rows": bad})
    return 0


def _breakdown(args: argparse.Namespace) -> int:
    """Child: the rfmsync path stage by stage (diagnostic; the headline figure is the plain run)."""
    marks: dict[str, float] = {}
    t = time.perf_counter()

    def mark(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        marks[name] = now - t
        t = now

    from segmentation import run_segmentation
    from segmentation.boundary import falling_asleep_boundary
    from sync.config import load_config
    from sync.pipeline import SegmentsRun, configured_source, pull_into, store_path, write_customers
    from sync.store import connect_store
    from sync.store.rfm_totals import rfm_totals
    mark("imports")
    as_of = date.fromisoformat(args.as_of)
    cfg = load_config(args.config)
    con = connect_store(store_path(cfg))
    # the same steps as sync.pipeline.compute_segments for a file source, timed one by one
    pull = pull_into(con, configured_source(cfg))
    mark("read + check + stage + store (ingest_files)")
    totals = rfm_totals(con, as_of, cfg.timezone)
    mark("per-customer totals kept in the store (built: the pass over the orders)")
    result = run_segmentation(con, cfg.segmentation, as_of, cfg.timezone, with_boundary=False, totals=totals)
    mark("metrics + scores + segments")
    falling_asleep_boundary(con, as_of, cfg.timezone, cfg.segmentation.boundary,
                            cfg.segmentation.reminder_lead_days, "orders", customers=result.customers)
    mark("falling-asleep boundary (summary command only)")
    write_customers(SegmentsRun(con=con, result=result, pull=pull, config=cfg), Path(args.out))
    mark("write_customers")
    emit_result({"engine": "rfmsync-stages", "stages": marks, "seconds": sum(marks.values())})
    return 0


def _compare(a: Path, b: Path) -> int:
    """Customers whose segment differs between the two outputs (or who are missing from one)."""
    import duckdb

    con = duckdb.connect()
    try:
        return con.execute(f"""
            SELECT count(*) FROM read_parquet('{a}') x FULL OUTER JOIN read_parquet('{b}') y USING (customer_id)
            WHERE x.segment IS DISTINCT FROM y.segment""").fetchone()[0]
    finally:
        con.close()


def run_size(orders: int, args: argparse.Namespace) -> tuple[list[dict], list[str]]:
    """Generate (or reuse) the data set, time both engines ``repeat`` times; returns (table rows, problems)."""
    workdir = Path(args.workdir)
    csv_path, gen_s = dataset(workdir, orders, args.seed, args.regenerate)
    if gen_s is not None:
        print(f"  generated {csv_path} in {gen_s:.1f} s", flush=True)
    cfg = write_config(csv_path, args.preset)
    engines = [e for e in ENGINES if args.floor or e not in FLOORS]
    order = [e for e in engines if e not in RFMSYNC[1:]] + list(RFMSYNC[1:])  # warm after cold, the new file last
    outs = {e: workdir / f"customers-{size_label(orders)}-{e}.parquet" for e in engines}
    results: dict[str, list[dict]] = {e: [] for e in engines}
    for i in range(args.repeat):
        for engine in order:
            if engine == "rfmsync":
                clear_store(csv_path)
            elif engine == "rfmsync-new-file":
                write_daily_file(csv_path, orders)
            argv = [sys.executable, str(Path(__file__).resolve()), "--child", engine, "--config", str(cfg),
                    "--csv", str(csv_path), "--out", str(outs[engine]), "--as-of", AS_OF.isoformat(),
                    "--preset", args.preset, "--pandas-engine", args.pandas_engine]
            res = run_child(argv, cwd=str(ROOT))
            print(f"  {size_label(orders)} {engine} run {i + 1}: {res['seconds']:.2f} s, "
                  f"peak {human_bytes(res['peak_rss'])}", flush=True)
            results[engine].append(res)
    clear_store(csv_path)
    if args.breakdown:
        argv = [sys.executable, str(Path(__file__).resolve()), "--child", "rfmsync", "--breakdown",
                "--config", str(cfg), "--out", str(outs["rfmsync"]), "--as-of", AS_OF.isoformat()]
        stages = run_child(argv, cwd=str(ROOT))["stages"]
        clear_store(csv_path)
        print(f"  {size_label(orders)} rfmsync by stage: "
              + ", ".join(f"{k} {v:.2f} s" for k, v in stages.items()), flush=True)
    problems = []
    counts = {e: results[e][-1]["counts"] for e in results}
    if results[SAME_WORK][-1]["bad_rows"] != results["rfmsync"][-1]["bad_rows"]:
        problems.append(f"{size_label(orders)}: bad rows differ: rfmsync {results['rfmsync'][-1]['bad_rows']} "
                        f"vs {SAME_WORK} {results[SAME_WORK][-1]['bad_rows']}")
    for other in [e for e in engines[1:] if e != "rfmsync-new-file"]:
        if counts["rfmsync"] != counts[other]:
            problems.append(f"{size_label(orders)}: segment counts differ: rfmsync {counts['rfmsync']} "
                            f"vs {other} {counts[other]}")
        diff = _compare(outs["rfmsync"], outs[other])
        if diff:
            problems.append(f"{size_label(orders)}: {diff} customers in different segments (rfmsync vs {other})")
    best = {e: min(r["seconds"] for r in results[e]) for e in results}
    rows = []
    for engine in engines:
        rs = results[engine]
        spread = f"{min(r['seconds'] for r in rs):.2f}" + (
            f"–{max(r['seconds'] for r in rs):.2f}" if len(rs) > 1 else "")
        rows.append({
            "orders": f"{orders:,}", "customers": f"{rs[-1]['customers']:,}", "engine": engine,
            "seconds": spread, "process": f"{min(r['process_seconds'] for r in rs):.2f}",
            "rss": human_bytes(max(r["peak_rss"] for r in rs)),
            "ratio": f"{best[SAME_WORK] / best[engine]:.1f}×" if not engine.startswith("pandas") else "",
            "lean": f"{best['pandas'] / best[engine]:.1f}×" if not engine.startswith("pandas") else "",
            "same": "—" if engine == "rfmsync-new-file" else "yes" if not problems else "NO",
            "_best": best[engine], "_rss": max(r["peak_rss"] for r in rs), "_orders": orders,
        })
    if not args.keep:
        for p in outs.values():
            p.unlink(missing_ok=True)
    return rows, problems


COLUMNS = [("orders", "orders"), ("customers", "customers"), ("engine", "engine"), ("seconds", "seconds"),
           ("process", "process s"), ("rss", "peak RSS"), ("ratio", "checked/engine"), ("lean", "lean/engine"),
           ("same", "same segments")]


def targets(rows: list[dict]) -> list[str]:
    """PASS/FAIL lines for the published targets, on sizes of 10 M orders or more."""
    lines = []
    for r in rows:
        if r["engine"] == "rfmsync-warm":
            lines += _store_targets(rows, r["_orders"])
        floor = next((p for p in rows if p["engine"] == "duckdb-sql" and p["_orders"] == r["_orders"]), None)
        if r["engine"] == "rfmsync" and floor is not None:
            lines.append(f"INFO  {size_label(r['_orders'])} orders: rfmsync takes {r['_best'] / floor['_best']:.2f}× "
                         f"the plain DuckDB SQL floor ({floor['_best']:.2f} s)")
        if r["engine"] != "rfmsync" or r["_orders"] < 10_000_000:
            continue
        same = next(p for p in rows if p["engine"] == SAME_WORK and p["_orders"] == r["_orders"])
        lean = next(p for p in rows if p["engine"] == "pandas" and p["_orders"] == r["_orders"])
        ratio = same["_best"] / r["_best"]
        lines.append(f"INFO  {size_label(r['_orders'])} orders: {lean['_best'] / r['_best']:.1f}× faster than the lean "
                     f"pandas reference, which skips the checks ({lean['_best']:.2f} s)")
        for ok, text in ((r["_best"] <= TARGET_SECONDS_10M, f"≤ {TARGET_SECONDS_10M:.0f} s end to end "
                          f"({r['_best']:.2f} s)"),
                         (ratio >= TARGET_RATIO, f"≥ {TARGET_RATIO:.0f}× faster than pandas doing the same work "
                                                 f"({ratio:.1f}×, {SAME_WORK} {same['_best']:.2f} s)"),
                         (r["_rss"] <= TARGET_RSS, f"peak RSS ≤ 3 GB ({human_bytes(r['_rss'])})")):
            lines.append(f"{'PASS' if ok else 'FAIL'}  {size_label(r['_orders'])} orders: {text}")
    return lines


def _store_targets(rows: list[dict], orders: int) -> list[str]:
    """The order store's ratios (issue 17): warm against lean pandas, one new file against warm, cold against
    the floor; PASS/FAIL from 10 M orders, INFO below."""
    best = {r["engine"]: r["_best"] for r in rows if r["_orders"] == orders}
    checks = [(best["pandas"] / best["rfmsync-warm"], ">=", TARGET_WARM_VS_LEAN,
               f"warm run {best['rfmsync-warm']:.2f} s: {{x:.1f}}× faster than lean pandas ({best['pandas']:.2f} s; "
               f"target ≥ {TARGET_WARM_VS_LEAN:.0f}×)")]
    if "rfmsync-new-file" in best:
        checks.append((best["rfmsync-new-file"] / best["rfmsync-warm"], "<=", TARGET_NEW_FILE_VS_WARM,
                       f"one new daily file of {DAILY_ORDERS:,} orders {best['rfmsync-new-file']:.2f} s: {{x:.2f}}× "
                       f"the warm run (target ≤ {TARGET_NEW_FILE_VS_WARM}×)"))
    if "duckdb-sql" in best:
        checks.append((best["rfmsync"] / best["duckdb-sql"], "<=", TARGET_COLD_VS_FLOOR,
                       f"cold run {best['rfmsync']:.2f} s: {{x:.2f}}× the DuckDB floor ({best['duckdb-sql']:.2f} s; "
                       f"target ≤ {TARGET_COLD_VS_FLOOR}×)"))
    lines = []
    if "duckdb-persist" in best:
        lines.append(f"INFO  {size_label(orders)} orders: cold run {best['rfmsync'] / best['duckdb-persist']:.2f}× "
                     f"the floor that also writes the rows once (read + persist + checkpoint, "
                     f"{best['duckdb-persist']:.2f} s)")
    for x, op, target, text in checks:
        ok = x >= target if op == ">=" else x <= target
        verdict = ("PASS" if ok else "FAIL") if orders >= 10_000_000 else "INFO"
        lines.append(f"{verdict}  {size_label(orders)} orders: {text.format(x=x)}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1m,10m", help="comma-separated order counts, e.g. 100k,1m,10m")
    ap.add_argument("--repeat", type=int, default=1, help="runs per engine and size (best time is compared)")
    ap.add_argument("--workdir", default="/tmp/rfmsync-bench", help="where the CSVs and outputs go")
    ap.add_argument("--preset", default="tracks", help="segmentation preset (tracks, crm-4, classic-5)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--regenerate", action="store_true", help="rewrite the CSVs even if present")
    ap.add_argument("--keep", action="store_true", help="keep the per-customer output files")
    ap.add_argument("--pandas-engine", default="c", choices=("c", "pyarrow", "python"),
                    help="pandas.read_csv engine for the reference (default: c)")
    ap.add_argument("--breakdown", action="store_true",
                    help="also time the rfmsync path stage by stage (one extra run per size)")
    ap.add_argument("--no-floor", dest="floor", action="store_false",
                    help="skip the plain DuckDB SQL floors (duckdb-sql: typed read, metrics, scores, rules, COPY; "
                         "duckdb-persist: the same after writing the rows to a database file)")
    ap.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--csv", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--as-of", default=AS_OF.isoformat(), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _child(args)
    try:
        sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError as exc:
        ap.error(f"--sizes: {exc}")
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    rows, problems = [], []
    for n in sizes:
        print(f"{size_label(n)} orders …", flush=True)
        try:
            r, p = run_size(n, args)
        except ChildFailed as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        rows += r
        problems += p
    print()
    print(format_table(rows, COLUMNS))
    for line in targets(rows):
        print(line)
    for p in problems:
        print(f"MISMATCH {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
