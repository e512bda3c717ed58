"""``bench/serve.py --duration``: webhook → ESP latency at a sustained order rate on a big shop.

    .venv/bin/python bench/serve.py --customers 1m --rate 50 --duration 60 [--debounce 1] [--history 30] [--json]

:func:`big_store` writes the shop straight into the order store (DuckDB ``range``: ``--customers`` customers,
about five orders each, a third of them with one refunded; a tenth of the customers without an e-mail), segments
it once (the full run that saves the cut points), marks every customer with an e-mail as synced in the ledger and
builds the store's lookup indexes, as the first webhook resync would; only the churned customers the run will use
are put in the fake Mailchimp. ``rfmsync serve`` then runs as shipped (worker
process at nice +10, SQLite ledger); after one warm-up webhook, a load generator in its own process sends
``--rate`` signed orders per second for ``--duration`` seconds, each for another churned customer (open loop:
order i is due at start + i/rate). The latency of each is from its due time to the moment the fake ESP no longer
holds the customer's "Winback" tag. Rows read per resync come from ``rfmsync_resync_rows_read_total`` on
``/metrics``. Target: p95 ≤ debounce + 1 s, and rows read proportional to the customers a resync touches.
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.serve import AS_OF, SECRET, _free_port, end_to_end, order, percentile, signed, start_server


#: the customers (``B<i>``) of :func:`big_store` without an e-mail
_NO_EMAIL = "{i} % 10 = 9"


def big_store(workdir: Path, customers: int, debounce: float, orders_per_customer: int = 5,
              pool: int = 0, fake=None, history_days: int = 0) -> tuple[Path, dict[str, str]]:
    """A shop of ``customers`` customers (about ``orders_per_customer`` orders each) written straight into the
    order store with DuckDB ``range``, segmented once (the full run: cut points saved), and a ledger that
    marks every customer as already synced to ``mailchimp-demo``. Nothing goes through the ESP: ``pool``
    churned customers ("Winback") are put in the fake Mailchimp directly. ``history_days``: a segment history
    recorded for that many days before the as-of date (:func:`record_history`). Returns the config and
    {customer_id: email} of those ``pool`` customers."""
    from sync.config import load_config
    from sync.demodata import generate_shop
    from sync.ingest import segments_from_store
    from sync.ledger import open_ledger
    from sync.model import PushedState
    from sync.pipeline import store_path
    from sync.planning.plan import managed_tags
    from sync.settings import load_settings
    from sync.store import ensure_lookup_indexes, open_store

    cfg_path = generate_shop(workdir, customers=20, seed=7, as_of=AS_OF)
    text = cfg_path.read_text(encoding="utf-8").replace('audience = "demo000001"', 'audience = "aud1"')
    cfg_path.write_text(text + f"\n[serve]\ndebounce_seconds = {debounce}\n", encoding="utf-8")
    cfg, settings = load_config(cfg_path), load_settings()
    n_orders = customers * orders_per_customer
    with open_store(store_path(cfg)) as con:
        for table in ("orders", "contacts", "line_items"):
            con.execute(f"DELETE FROM {table}")
        # a tenth of the customers have no e-mail (a phone-only client: not synced)
        con.execute(f"""INSERT INTO contacts (customer_id, email, marketing_consent, created_at)
            SELECT 'B' || i, CASE WHEN {_NO_EMAIL.format(i="i")} THEN NULL ELSE 'b' || i || '@example.com' END,
                   'yes', TIMESTAMPTZ '2022-01-01'
            FROM range({customers}) t(i)""")
        # every customer orders at least once; days and amounts spread by a hash, a quarter of customers stop early;
        # a third of them had their second order refunded (with refunds and missing e-mails beside the completed
        # orders, DuckDB answers a filter by customer from an index only when it is not mixed with other filters)
        con.execute(f"""INSERT INTO orders (order_id, customer_id, ordered_at, amount, currency, status)
            SELECT 'G' || i, 'B' || (i % {customers}),
                   TIMESTAMPTZ '2023-07-01 10:00:00+00' + to_days(CAST(hash(i) % (CASE WHEN (i % {customers}) % 4 = 0
                       THEN 300 ELSE 730 END) AS INTEGER)),
                   CAST(5000 + hash(i * 7) % 900000 AS DECIMAL(18, 2)), 'UZS',
                   CASE WHEN i // {customers} = 1 AND (i % {customers}) % 3 = 0 THEN 'refunded' ELSE 'completed' END
            FROM range({n_orders}) t(i)""")
        con.execute("CHECKPOINT")
    with open_ledger(cfg, settings) as ledger:
        run = segments_from_store(cfg, ledger, settings, as_of=AS_OF, pull=False)  # the full run
        try:
            rows = run.con.execute("SELECT customer_id, segment, rfm FROM customer_segments").fetchall()
            if history_days:
                record_history(run.con, cfg, "customer_segments", history_days)
        finally:
            run.close()
        dest = cfg.destination("mailchimp-demo")
        tags_for = {seg: frozenset(t) for seg, t in managed_tags(dest).items()}
        run_id = ledger.start_run("sync", dest.name)
        states = [PushedState(f"b{cid[1:]}@example.com", cid, tags_for.get(seg, frozenset()),
                              {"RFM_SEG": seg, "RFM_CODE": rfm}, True) for cid, seg, rfm in rows
                  if int(cid[1:]) % 10 != 9]  # (_NO_EMAIL: no contact to sync)
        ledger.save_states(dest.name, run_id, states)
        ledger.finish_run(run_id, "succeeded", {"planned": len(states)})
    with open_store(store_path(cfg)) as con:
        ensure_lookup_indexes(con)  # what the first webhook resync would do
    churned = {s.customer_id: s.key for s in states if s.tags == {"Winback"}}
    picked = dict(list(churned.items())[:pool])
    if fake is not None:  # the audience as a sync left it: the fields and tags the ledger says were pushed exist
        for name in sorted({n for s in states for n in s.fields}):
            fake.add_merge_field(name)
        for tag in sorted(set().union(*tags_for.values())):
            fake.add_segment(tag)
    if fake is not None and picked:
        for email in picked.values():
            fake.add_member(email, merge_fields={"RFM_SEG": "Churn"}, tags=["Winback"])
    return cfg_path, picked


def record_history(con, cfg, segments: str, days: int) -> int:
    """Record ``days`` days of segment history before the as-of date, the last one being ``segments`` (the full
    run's): on each earlier day a different tenth of the customers was one segment further along, so each
    customer has about ``days / 5`` moves (rows: customers × (1 + days / 5)). Returns the history rows."""
    from datetime import timedelta

    from sync.store import history

    names = sorted(r[0] for r in con.execute(f"SELECT DISTINCT segment FROM {segments}").fetchall())
    rotated = "CASE segment " + " ".join(f"WHEN '{a}' THEN '{b}'" for a, b in zip(names, names[1:] + names[:1])
                                         ) + " END"
    rules = history.rules_hash(cfg.segmentation)
    for k in range(days, 0, -1):
        con.execute(f"""CREATE OR REPLACE TEMP TABLE _bench_day AS SELECT customer_id, CASE WHEN
            hash(customer_id, {k}) % 10 = 0 THEN {rotated} ELSE segment END AS segment FROM {segments}""")
        table = "_bench_day" if k > 1 else segments
        history.record(con, table, as_of=AS_OF - timedelta(days=k), preset=cfg.segmentation.preset,
                       rules_hash=rules, source="sync")
    con.execute("DROP TABLE _bench_day")
    return con.execute(f"SELECT count(*) FROM {history.HISTORY}").fetchall()[0][0]


def _sustained_child(port: int, pool: list[str], rate: float, start_wall: float) -> None:
    """Order i for pool customer i, due at ``start_wall + i / rate`` (open loop, one keep-alive connection per
    client thread, 4 threads so one slow reply does not delay the next due request)."""
    counter = iter(range(len(pool)))
    signed(b"{}")

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for i in counter:
            body = order(f"S-{i}", pool[i])
            pause = start_wall + i / rate - time.time()
            if pause > 0:
                time.sleep(pause)
            conn.request("POST", "/webhooks/generic", body=body, headers=signed(body))
            resp = conn.getresponse()
            resp.read()
            if resp.status != 202:
                print(f"webhook {i}: HTTP {resp.status}", file=sys.stderr)
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def scrape(port: int) -> dict[str, float]:
    """The resync counters of ``GET /metrics``: resyncs ok, rows read (store, ledger), events done."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    want = {'rfmsync_resyncs_total{outcome="ok"}': "resyncs", 'rfmsync_resync_rows_read_total{part="store"}': "store",
            'rfmsync_resync_rows_read_total{part="ledger"}': "ledger",
            'rfmsync_events_processed_total{outcome="done"}': "events"}
    out = {v: 0.0 for v in want.values()}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name in want:
            out[want[name]] = float(value)
    return out


def sustained(args: argparse.Namespace) -> dict:
    """``--duration``: a big store (``--customers``, e.g. 1m), then ``--rate`` orders/s for ``--duration`` s,
    each for another churned customer; webhook → fake ESP latency of every one, rows read per resync."""
    import multiprocessing

    from tests.fakes.mailchimp import FakeMailchimp

    n = int(args.rate * args.duration)
    with tempfile.TemporaryDirectory() as tmp, FakeMailchimp() as fake:
        env = dict(os.environ, MAILCHIMP_API_KEY=fake.api_key, MAILCHIMP_API_URL=fake.url,
                   RFMSYNC_WEBHOOK_SECRET=SECRET)
        os.environ.update(env)
        t0 = time.perf_counter()
        cfg_path, churned = big_store(Path(tmp) / "shop", args.customers, args.debounce, pool=n + 1, fake=fake,
                                      history_days=getattr(args, "history", 0))
        setup_s = time.perf_counter() - t0
        if len(churned) < n + 1:
            raise SystemExit(f"only {len(churned)} churned customers for {n} webhooks: use more --customers")
        warm, *pool = list(churned)
        port = _free_port()
        proc = start_server(cfg_path, port, env)
        try:
            # one webhook first: the worker process is up and has counted the managed contacts (steady state)
            end_to_end(port, fake, {warm: churned[warm]}, 1)
            time.sleep(1.5)  # the worker's metrics reach the intake process once a second
            before = scrape(port)
            start_wall = time.time() + 1.0
            ctx = multiprocessing.get_context("spawn")
            child = ctx.Process(target=_sustained_child, args=(port, pool, args.rate, start_wall))
            child.start()
            latencies: dict[int, float] = {}
            pending: list[int] = []
            nxt = 0
            deadline = start_wall + args.duration + 120
            while len(latencies) < n and time.time() < deadline:
                now = time.time()
                while nxt < n and start_wall + nxt / args.rate <= now:
                    pending.append(nxt)
                    nxt += 1
                still = []
                for i in pending:
                    if "Winback" in fake.tags_of(churned[pool[i]]):
                        still.append(i)
                    else:
                        latencies[i] = now - (start_wall + i / args.rate)
                pending = still
                time.sleep(0.05)  # the fake ESP answers in this process: poll lightly
            child.join(60)
            time.sleep(1.5)
            after = scrape(port)
            if os.environ.get("BENCH_DEBUG"):
                print((Path(tmp) / "shop" / "serve.log").read_text()[-3000:], file=sys.stderr)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    values = list(latencies.values())
    resyncs = max(1.0, after["resyncs"] - before["resyncs"])
    return {"customers": args.customers, "history_days": getattr(args, "history", 0), "rate": args.rate, "duration_s": args.duration, "webhooks": n,
            "applied": len(values), "setup_s": setup_s, "debounce_s": args.debounce,
            "p50_s": percentile(values, 50) if values else None, "p95_s": percentile(values, 95) if values else None,
            "p99_s": percentile(values, 99) if values else None, "max_s": max(values) if values else None,
            "resyncs": after["resyncs"] - before["resyncs"],
            "events_per_resync": (after["events"] - before["events"]) / resyncs,
            "store_rows_per_resync": (after["store"] - before["store"]) / resyncs,
            "ledger_rows_per_resync": (after["ledger"] - before["ledger"]) / resyncs,
            "cpus": os.cpu_count(), "load_average": os.getloadavg()}


def print_sustained(r: dict) -> None:
    target = r["debounce_s"] + 1
    ok = r["p95_s"] is not None and r["applied"] == r["webhooks"] and r["p95_s"] <= target
    print(f"store: {r['customers']:,} customers generated, synced and indexed in {r['setup_s']:.0f} s; "
          f"load average after the run {r['load_average'][0]:.2f} on {r['cpus']} CPUs")
    if r["p95_s"] is None:
        print("webhook → ESP: nothing applied  [MISSED]")
        return
    print(f"webhook → ESP at {r['rate']:g} orders/s for {r['duration_s']:g} s: {r['applied']} of {r['webhooks']} "
          f"applied; p50 {r['p50_s']:.2f} s, p95 {r['p95_s']:.2f} s, p99 {r['p99_s']:.2f} s, max {r['max_s']:.2f} s"
          f"  [{'ok' if ok else 'MISSED'}: p95 ≤ debounce {r['debounce_s']:g} s + 1 s]")
    print(f"resyncs: {r['resyncs']:.0f}, {r['events_per_resync']:.1f} webhooks each; rows read per resync: "
          f"store {r['store_rows_per_resync']:,.0f}, ledger {r['ledger_rows_per_resync']:,.0f} "
          f"(the store holds {r['customers']:,} customers"
          + (f" and {r['history_days']} recorded days of segment history)" if r.get("history_days") else ")"))


