"""BG/NBD fit + predict against lifetimes, and the predictive commands' cost next to the RFM step.

**The commands** (``--orders 10m``): on the synthetic shop of ``bench/segments.py`` (same generator, same CSV,
reused from ``--workdir``), each in a fresh interpreter so that time and peak RSS are that run's alone:
``rfmsync segments --customers --no-predict -o FILE``, ``rfmsync segments --customers -o FILE`` (with the
predictive fields) and ``rfmsync predict`` (the fit report, holdout refit included; it shows no falling-asleep
boundary and computes none). It prints each one's seconds and peak RSS and checks the targets of issue 17: with predictions ≤ 2× the
``--no-predict`` time and peak RSS ≤ 2 GB; ``rfmsync predict`` ≤ 1.5× the ``--no-predict`` time. The order store
keeps the purchase-day table and the model fits between runs (``sync.store.day_cache``, ``fit_cache``) and the
per-customer RFM totals (``sync.store.rfm_totals``), so each command is timed warm (everything current: a second
command on the same orders) and cold (the kept tables dropped first: the run builds and fits what it reads, as the
first run after the export changed does) and from the export (no order store at all: the shop's first run ingests
the export, then builds and fits), and the targets are judged on all three, each against the ``--no-predict`` run
in the same state ("× same state"; warm ``--no-predict`` runs twice and the faster counts). The "× no-predict"
column divides every run by the warm ``--no-predict`` run (until 2026-12-04 the only baseline: the cold runs then
dropped the day cache only and were judged against it). A last pair of runs adds one new daily file of orders
each (``--no-predict``, then with the predictive fields: the cache replaces only its customers' rows). CPU
seconds are printed next to the wall time (steadier on a busy machine).

**The fit** (default, without ``--orders``):

Customers are drawn from BG/NBD at the CDNOW parameters (r=.2426, α=4.4136, a=.7929, b=2.4259, weeks) with a
seeded numpy generator; every customer is observed for ``--T`` weeks (39, as in FHL 2005). "Predict" = P(alive)
plus expected purchases over the next 13 weeks for every customer. lifetimes is slow, so by default it runs on the
first ``--lifetimes-customers`` customers and its time is also shown scaled linearly to the full size.

    python bench/predict.py                               # 1M customers, lifetimes on 200k
    python bench/predict.py --lifetimes-customers 1000000 # lifetimes on all of them
    python bench/predict.py --orders 10m                  # the three commands on 10 M orders
    python bench/predict.py --orders 10m --webhooks 50x100 --workdir /tmp/wh  # the run after webhook merges
    python bench/predict.py --orders 1m --refunds 4         # the commands on a copy with 4 % of the sales returned

**After webhook merges** (``--webhooks BATCHESxORDERS``, with ``--orders``): the nightly run after a day of
webhooks. The store is made warm (both commands run once), then BATCHES webhook batches of ORDERS orders each are
merged into it (``sync.store.merge_staged``, origin webhook, untimed but their mean time printed: 80 % new orders
of existing customers, 10 % of new customers, 10 % existing orders edited), then ``segments --customers`` is
timed; then as many batches again and ``segments --customers --no-predict``. Before each timed run it prints the
customers the merges noted and their orders (what the kept tables' update reads, :mod:`sync.store.appends`; a
store whose merges note nothing reads every order). The merges leave webhook orders in the store: the store file
is removed at the end (the next bench run ingests the export again), so give it its own ``--workdir``.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import warnings
from datetime import date
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] != str(ROOT):  # first, even when PYTHONPATH names it: bench/sync.py must not hide the package
    sys.path.insert(0, str(ROOT))

from bench.common import emit_result, format_table, human_bytes, parse_size, run_child, size_label  # noqa: E402
from segmentation.btyd import simulate_bgnbd  # noqa: E402
from segmentation.btyd_models import expected_purchases, fit_bgnbd, p_alive  # noqa: E402

CDNOW = (0.2426, 4.4136, 0.7929, 2.4259)
AS_OF = date(2026, 1, 1)  # bench/segments.py's data set ends here


# --------------------------------------------------------------------------- the commands
COMMANDS = {
    "no-predict": ("segments --customers --no-predict", ["segments", "--customers", "--no-predict", "-o", "{out}"]),
    "predict-fields": ("segments --customers", ["segments", "--customers", "-o", "{out}"]),
    "predict": ("predict", ["predict"]),
}
TARGET_FIELDS_RATIO, TARGET_PREDICT_RATIO, TARGET_RSS = 2.0, 1.5, 2 * 1024 ** 3


def _command_child(args: argparse.Namespace) -> int:
    """Child: one CLI command in this interpreter (imports included in the time), then the RESULT line."""
    t0 = time.perf_counter()
    from sync.cli import main as cli

    argv = [a.format(out=args.out) for a in COMMANDS[args.child][1]]
    code = cli.main(argv + ["--config", args.config, "--as-of", AS_OF.isoformat()], standalone_mode=False)
    seconds = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)  # DuckDB's threads included: CPU s, steadier on a busy machine
    emit_result({"command": args.child, "seconds": seconds, "cpu": usage.ru_utime + usage.ru_stime,
                 "exit": code or 0})
    return 0


#: the timed runs, in this order: (command, kept tables' state before it, label). The order store keeps the
#: purchase-day table (sync.store.day_cache) and the RFM totals (sync.store.rfm_totals) between runs: "cold" runs
#: start without them (and build them), "warm" ones find them current, "new file" ones find one more daily file
#: of orders next to the export (ingested by the run; the cache replaces its customers' rows). The no-predict run
#: never reads the day cache. "export" runs find no order store at all (the first run on a shop: it ingests the
#: export, then builds and fits what it reads). Warm, it runs twice and the ratios are to the faster: the first
#: run after the untimed ingest was up to 2× slower than the same run later (the store's pages not yet read back),
#: which flattered every ratio to it.
RUNS = [("no-predict", "—", "no-predict"), ("no-predict", "—", "no-predict-again"),
        ("no-predict", "cold", "no-predict-cold"), ("predict-fields", "cold", "fields-cold"),
        ("predict-fields", "warm", "fields-warm"), ("predict", "cold", "predict-cold"),
        ("predict", "warm", "predict-warm"), ("no-predict", "export", "no-predict-export"),
        ("predict-fields", "export", "fields-export"), ("predict", "export", "predict-export"),
        ("no-predict", "new file", "no-predict-new-file"), ("predict-fields", "new file", "fields-new-file")]


def _drop_kept(store: Path) -> None:
    """What the first run after the export changed finds: neither the purchase-day cache (with the model fits)
    nor the per-customer RFM totals current (sync.store.rfm_totals; the orders themselves are in the store)."""
    import duckdb

    from sync.store import rfm_totals
    from sync.store.day_cache import drop_cache

    with duckdb.connect(str(store)) as con:
        drop_cache(con)
        for table in (rfm_totals.TABLE, rfm_totals.KEY_TABLE):
            con.execute(f"DROP TABLE IF EXISTS {table}")


def _daily_file(csv_path: Path, orders: int, k: int) -> Path:
    """The k-th new daily file of ``DAILY_ORDERS`` orders next to the export (new order ids; customers old and a
    few new), as ``bench/segments.py`` writes its one."""
    import duckdb

    from bench.segments import DAILY_ORDERS, ORDERS_PER_CUSTOMER

    path = csv_path.with_name(f"{csv_path.stem}.daily-{k}.csv")
    customers = max(1, orders // ORDERS_PER_CUSTOMER)
    with duckdb.connect() as con:
        con.execute(f"""COPY (SELECT {orders + k * DAILY_ORDERS} + i + 1 AS order_id,
                                     'C' || (hash(i + {k}) % {customers + 1000}) AS customer_id,
                                     strftime(TIMESTAMP '{AS_OF}' - INTERVAL {k} DAY + INTERVAL (i * 8) SECOND,
                                              '%Y-%m-%d %H:%M:%S') AS ordered_at,
                                     (100 + i % 9000)::DECIMAL(18,2) AS amount, 'completed' AS status
                              FROM range({DAILY_ORDERS}) t(i)) TO '{path}' (HEADER, DELIMITER ',')""")
    return path


def _with_refunds(csv_path: Path, percent: float) -> Path:
    """A copy of the export with returns added (made once): ``percent`` % of the sales returned a day later under
    their own id (the file source keeps them as ``ID~return``), half of those in part, and a quarter as many
    again on receipts of their own 3 days later (``R`` + the sale's id): the spend model nets them
    (segmentation.refunds). Its own order store and config, next to the export's."""
    import duckdb

    path = csv_path.with_name(f"returns{percent:g}-{csv_path.name}")  # (not matched by the export's own glob)
    if path.exists() and path.stat().st_size:
        return path
    share = int(percent * 100)  # of 10 000
    with duckdb.connect() as con:
        con.execute("SET enable_progress_bar = false")
        con.execute(f"""CREATE TABLE o AS SELECT * FROM read_csv('{csv_path}', all_varchar = true)""")
        con.execute(f"""COPY (SELECT * FROM o UNION ALL
                              SELECT order_id, customer_id, strftime(ordered_at::TIMESTAMP + INTERVAL 1 DAY,
                                                                     '%Y-%m-%d %H:%M:%S'),
                                     CAST(CAST(amount AS DECIMAL(18,2)) / (1 + hash(order_id) % 2) AS DECIMAL(18,2)),
                                     'refunded'
                              FROM o WHERE hash(order_id || 'r') % 10000 < {share} UNION ALL
                              SELECT 'R' || order_id, customer_id, strftime(ordered_at::TIMESTAMP + INTERVAL 3 DAY,
                                                                            '%Y-%m-%d %H:%M:%S'), amount, 'refunded'
                              FROM o WHERE hash(order_id || 'q') % 40000 < {share})
                     TO '{path}.tmp' (HEADER, DELIMITER ',', FORMAT csv)""")
    Path(f"{path}.tmp").replace(path)
    return path


def _shop(args: argparse.Namespace) -> tuple[int, Path, Path, Path]:
    """(orders, the export, its config, the customers file) of ``--orders`` in ``--workdir`` (generated once)."""
    from bench.segments import dataset, write_config

    orders = parse_size(args.orders)
    csv_path, gen_s = dataset(Path(args.workdir), orders)
    if gen_s is not None:
        print(f"generated {csv_path} in {gen_s:.1f} s", flush=True)
    if args.refunds:
        csv_path = _with_refunds(csv_path, args.refunds)
    return orders, csv_path, write_config(csv_path, "tracks"), \
        Path(args.workdir) / f"customers-{size_label(orders)}-predict.parquet"


def commands(args: argparse.Namespace) -> int:
    """Time the commands on ``--orders`` orders, with the store's purchase-day cache cold and warm; print
    seconds, peak RSS, ratios and the targets (judged on both)."""
    from bench.segments import clear_store, store_of

    orders, csv_path, cfg, out = _shop(args)
    res: dict[str, dict] = {}
    # The export is ingested into the order store once, untimed, so that every timed command reads the same
    # (warm) store: the first command would otherwise pay the cold ingest alone (bench/segments.py times that).
    warm = run_child([sys.executable, str(Path(__file__).resolve()), "--child", "no-predict", "--config", str(cfg),
                      "--out", str(out)], cwd=str(ROOT))
    print(f"  ingested the export into the order store (untimed warm-up): {warm['seconds']:.2f} s", flush=True)
    daily: list[Path] = []
    for name, cache, label in RUNS:
        if cache == "cold":
            _drop_kept(store_of(csv_path))
        if cache == "export":
            clear_store(csv_path)
        if cache == "new file":  # one more daily file: ingested by the run, the cache brought up to date
            daily.append(_daily_file(csv_path, orders, len(daily) + 1))
        argv = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--config", str(cfg),
                "--out", str(out)]
        res[label] = run_child(argv, cwd=str(ROOT)) | {"command": name, "cache": cache}
        print(f"  {COMMANDS[name][0]} (day cache {cache}): {res[label]['seconds']:.2f} s, "
              f"peak {human_bytes(res[label]['peak_rss'])}", flush=True)
    out.unlink(missing_ok=True)
    for path in daily:  # the next run's ingest removes their rows
        path.unlink()
    base = min(res["no-predict"]["seconds"], res["no-predict-again"]["seconds"])
    cpu_base = min(res["no-predict"]["cpu"], res["no-predict-again"]["cpu"])
    same = {"warm": base, "—": base, "cold": res["no-predict-cold"]["seconds"],
            "export": res["no-predict-export"]["seconds"],
            "new file": res["no-predict-new-file"]["seconds"]}
    rows = [{"command": f"rfmsync {COMMANDS[r['command']][0]}", "cache": r["cache"], "seconds": f"{r['seconds']:.2f}",
             "process": f"{r['process_seconds']:.2f}", "cpu": f"{r['cpu']:.2f}", "rss": human_bytes(r["peak_rss"]),
             "ratio": f"{r['seconds'] / base:.2f}×", "cpu_ratio": f"{r['cpu'] / cpu_base:.2f}×",
             "same": f"{r['seconds'] / same[r['cache']]:.2f}×"} for r in res.values()]
    print(f"\n{orders:,} orders ({size_label(orders)}), one run each, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(format_table(rows, [("command", "command"), ("cache", "kept"), ("seconds", "seconds"),
                              ("process", "process s"), ("cpu", "CPU s"), ("rss", "peak RSS"),
                              ("ratio", "× no-predict"), ("cpu_ratio", "CPU ×"), ("same", "× same state")]))
    print("× no-predict: to the faster of the two warm --no-predict runs; × same state: to the --no-predict run "
          "in the same state (warm, cold, export, new file), what the targets are judged on. "
          "kept: the order store's purchase days and model fits (sync.store.day_cache, fit_cache) and RFM totals "
          "(sync.store.rfm_totals); cold = dropped before the run, which builds what it reads and fits; warm = "
          "current (built by the run before, same orders and command); export = no order store (the shop's first "
          "run: the export ingested, then everything built and fitted). "
          "The targets are judged on seconds; CPU s (the process's own, DuckDB's threads included) is the figure to "
          "compare on a busy machine")
    new_base, new = res["no-predict-new-file"]["seconds"], res["fields-new-file"]["seconds"]
    print(f"INFO  one new daily file each: segments --customers {new:.2f} s (its customers' purchase days replaced "
          f"in the cache) = {new / new_base:.2f}× --no-predict {new_base:.2f} s (both ingest their file)")
    for state in ("warm", "cold", "export"):
        fields, pred, ref = res[f"fields-{state}"], res[f"predict-{state}"], same[state]
        for ok, text in ((fields["seconds"] <= TARGET_FIELDS_RATIO * ref,
                          f"segments --customers with predictions ≤ {TARGET_FIELDS_RATIO:.0f}× --no-predict, both "
                          f"{state} ({fields['seconds'] / ref:.2f}×; {fields['seconds'] / base:.2f}× the warm one)"),
                         (fields["peak_rss"] <= TARGET_RSS,
                          f"its peak RSS ≤ 2 GB, {state} ({human_bytes(fields['peak_rss'])})"),
                         (pred["seconds"] <= TARGET_PREDICT_RATIO * ref,
                          f"rfmsync predict ≤ {TARGET_PREDICT_RATIO}× --no-predict, both {state} "
                          f"({pred['seconds'] / ref:.2f}×; {pred['seconds'] / base:.2f}× the warm one)")):
            print(f"{'PASS' if ok else 'FAIL'}  {text}")
    return 0


def _webhook_batches(store: Path, batches: int, size: int, round_: int) -> tuple[float, float]:
    """Merge ``batches`` webhook batches of ``size`` orders into ``store``; returns the mean seconds and CPU
    seconds (DuckDB's threads included) a merge."""
    from datetime import datetime, timedelta, timezone
    from decimal import Decimal

    import duckdb

    from connectors.records import Order
    from connectors.source import PullResult
    from connectors.tables import stage_records
    from sync.store import merge_staged

    start = datetime(AS_OF.year, AS_OF.month, AS_OF.day, tzinfo=timezone.utc) - timedelta(days=1)
    spent = cpu = 0.0
    with duckdb.connect(str(store)) as con:
        customers = [c for (c,) in con.execute("SELECT DISTINCT customer_id FROM orders USING SAMPLE 20000 ROWS "
                                               "(reservoir, 7)").fetchall()]
        existing = con.execute("SELECT order_id, customer_id FROM orders USING SAMPLE 5000 ROWS (reservoir, 11)"
                               ).fetchall()
        for b in range(batches):
            orders = []
            for i in range(size):
                at = start + timedelta(seconds=(b * size + i) * 7)
                amount = Decimal(10 + (b * size + i) % 500)
                if i % 10 == 8:  # a new customer
                    oid, cust = f"wh{round_}-{b}-{i}", f"WH{round_}-{b}-{i}"
                elif i % 10 == 9:  # an existing order edited (its amount, status or time)
                    oid, cust = existing[(round_ * batches * size + b * size + i) % len(existing)]
                else:
                    oid, cust = f"wh{round_}-{b}-{i}", customers[(b * size + i) % len(customers)]
                orders.append(Order(order_id=oid, customer_id=cust, ordered_at=at, amount=amount))
            t0, c0 = time.perf_counter(), time.process_time()
            stage_records(con, orders)
            merge_staged(con, PullResult(), origin="webhook")
            spent, cpu = spent + time.perf_counter() - t0, cpu + time.process_time() - c0
    return spent / max(batches, 1), cpu / max(batches, 1)


def _noted(store: Path) -> str:
    """The customers the store's merges noted (all notes kept) and their orders: what a kept table's update reads."""
    import duckdb

    from sync.store.connection import store_tables

    with duckdb.connect(str(store), read_only=True) as con:
        if not store_tables(con, "store_merged_customers"):
            total = con.execute("SELECT count(*) FROM orders").fetchall()[0][0]
            return f"no notes: the kept tables read all {total:,} orders"
        customers, orders = con.execute(
            "SELECT count(DISTINCT customer_id), (SELECT count(*) FROM orders WHERE customer_id IN "
            "(SELECT customer_id FROM store_merged_customers)) FROM store_merged_customers").fetchall()[0]
        return f"{customers:,} customers noted, {orders:,} of their orders"


def webhooks(args: argparse.Namespace) -> int:
    """Time ``segments --customers`` and ``--no-predict`` after ``--webhooks`` batches merged into a warm store."""
    from bench.segments import store_of

    batches, size = (int(v) for v in args.webhooks.lower().split("x"))
    orders, csv_path, cfg, out = _shop(args)
    store = store_of(csv_path)

    def run(name: str) -> dict:
        return run_child([sys.executable, str(Path(__file__).resolve()), "--child", name, "--config", str(cfg),
                          "--out", str(out)], cwd=str(ROOT))

    for name in ("no-predict", "predict-fields", "no-predict"):  # ingested, then everything kept is current
        run(name)
    rows = [{"command": f"rfmsync {COMMANDS['no-predict'][0]}", "state": "warm", **_cells(run("no-predict"))},
            {"command": f"rfmsync {COMMANDS['predict-fields'][0]}", "state": "warm", **_cells(run("predict-fields"))}]
    for k, name in enumerate(("predict-fields", "no-predict"), 1):
        merge_s, merge_cpu = _webhook_batches(store, batches, size, k)
        noted = _noted(store)
        print(f"  {batches} webhook batches of {size} orders merged ({merge_s * 1000:.0f} ms, "
              f"{merge_cpu * 1000:.0f} CPU ms a merge); {noted}", flush=True)
        rows.append({"command": f"rfmsync {COMMANDS[name][0]}", "state": f"after {batches}×{size} webhooks",
                     **_cells(run(name))})
    out.unlink(missing_ok=True)
    store.unlink()  # webhook orders are in it now: the next bench run ingests the export again
    print(f"\n{orders:,} orders ({size_label(orders)}), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load "
          f"average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(format_table(rows, [("command", "command"), ("state", "kept"), ("seconds", "seconds"), ("cpu", "CPU s"),
                              ("rss", "peak RSS")]))
    return 0


def _cells(r: dict) -> dict:
    return {"seconds": f"{r['seconds']:.2f}", "cpu": f"{r['cpu']:.2f}", "rss": human_bytes(r["peak_rss"])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--lifetimes-customers", type=int, default=200_000, help="0 skips lifetimes")
    ap.add_argument("--T", type=float, default=39.0, help="observation length in weeks")
    ap.add_argument("--seed", type=int, default=2005)
    ap.add_argument("--orders", help="time the three commands on this many orders instead (e.g. 1m, 10m)")
    ap.add_argument("--workdir", default="/tmp/rfmsync-bench", help="where the CSVs go (shared with segments.py)")
    ap.add_argument("--refunds", type=float, default=0.0,
                    help="with --orders: this percent of the sales returned (a copy of the export, its own store)")
    ap.add_argument("--webhooks", help="BATCHESxORDERS (e.g. 50x100): time the runs after that many webhook "
                                       "merges into a warm store (with --orders)")
    ap.add_argument("--child", choices=COMMANDS, help=argparse.SUPPRESS)
    ap.add_argument("--config", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return _command_child(args)
    if args.orders and args.webhooks:
        return webhooks(args)
    if args.orders:
        return commands(args)

    rng = np.random.default_rng(args.seed)
    T = np.full(args.customers, args.T)
    t0 = time.perf_counter()
    x, tx = simulate_bgnbd(*CDNOW, T, rng)
    print(f"simulated {args.customers:,} customers in {time.perf_counter() - t0:.2f} s "
          f"({np.mean(x > 0):.1%} repeat buyers, {x.sum():,} repeat purchases)")

    t0 = time.perf_counter()
    bg = fit_bgnbd(x, tx, T)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    alive, expected = p_alive(bg, x, tx, T), expected_purchases(bg, 13.0, x, tx, T)
    pred_s = time.perf_counter() - t0
    rows = [("rfmsync", args.customers, fit_s, pred_s, (bg.r, bg.alpha, bg.a, bg.b))]

    k = min(args.lifetimes_customers, args.customers)
    if k:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from lifetimes import BetaGeoFitter

            t0 = time.perf_counter()
            lbg = BetaGeoFitter().fit(x[:k], tx[:k], T[:k])
            lfit_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            lbg.conditional_probability_alive(x[:k], tx[:k], T[:k])
            lbg.conditional_expected_number_of_purchases_up_to_time(13.0, x[:k], tx[:k], T[:k])
            lpred_s = time.perf_counter() - t0
        rows.append(("lifetimes 0.11.3", k, lfit_s, lpred_s, tuple(lbg.params_)))
        t0 = time.perf_counter()
        ours_k = fit_bgnbd(x[:k], tx[:k], T[:k])
        rows.append(("rfmsync (same subsample)", k, time.perf_counter() - t0, float("nan"),
                     (ours_k.r, ours_k.alpha, ours_k.a, ours_k.b)))

    print(f"\n{'engine':<26} {'customers':>10} {'fit s':>8} {'predict s':>10}   recovered (r, alpha, a, b)")
    for name, n, f, p, prm in rows:
        ps = "-" if np.isnan(p) else f"{p:.2f}"
        print(f"{name:<26} {n:>10,} {f:>8.2f} {ps:>10}   " + ", ".join(f"{v:.4f}" for v in prm))
    print(f"{'true':<26} {'':>10} {'':>8} {'':>10}   " + ", ".join(f"{v:.4f}" for v in CDNOW))
    if k:
        scaled = (rows[1][2] + rows[1][3]) * args.customers / k
        print(f"\nlifetimes fit+predict scaled to {args.customers:,}: ~{scaled:.1f} s; "
              f"rfmsync {fit_s + pred_s:.2f} s; ratio ~{scaled / (fit_s + pred_s):.1f}x "
              f"(same {k:,}: {(rows[1][2]) / rows[2][2]:.1f}x on the fit)")
    print(f"mean P(alive) {alive.mean():.4f}, expected purchases in 13 weeks {expected.sum():,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
