"""The BG/NBD fit on a daemon thread beside the run's own DuckDB work (segmentation.guarded_fits.beside: a cold
build's kept tables written while the fit runs, sync.store.day_cache.building_purchase_days). The work runs once
whatever the fit does; the fit's error is raised as it is, or reported as without the overlap; an interrupted work
(Ctrl-C) does not wait for the fit; and a Ctrl-C sent to `rfmsync predict` while both run exits as a Ctrl-C always
did, with the order store as consistent as before: the next run gives what a run on a fresh store gives."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import numpy as np
import pytest

from segmentation.btyd import SummaryCounts
from segmentation.guarded_fits import beside, fit_bgnbd_guarded
from segmentation.predictive import PredictConfig

ROOT = Path(__file__).resolve().parents[1]


def test_the_work_runs_beside_the_fit_and_the_fits_error_is_raised_after_it():
    ran, error = [], RuntimeError("the fit failed")

    def fit():
        raise error

    with pytest.raises(RuntimeError) as caught:
        beside(fit, lambda: ran.append(threading.current_thread()))
    assert caught.value is error and ran == [threading.main_thread()]
    assert beside(lambda: 42, lambda: ran.append(1)) == 42 and ran[1:] == [1]


@pytest.mark.parametrize("ctrl_c", [KeyboardInterrupt, lambda: RuntimeError("Query interrupted")],
                         ids=["KeyboardInterrupt", "DuckDB's Query interrupted"])
def test_an_interrupted_work_does_not_wait_for_the_fit(ctrl_c):
    release, started = threading.Event(), threading.Event()

    def fit():
        started.set()
        release.wait(30)
        return "late"

    def work():
        assert started.wait(10)
        raise ctrl_c()

    t0 = time.monotonic()
    try:
        with pytest.raises((KeyboardInterrupt, RuntimeError)):
            beside(fit, work)
        assert time.monotonic() - t0 < 10 and not release.is_set()  # (raised while the fit still ran)
        assert any(t.name == "rfmsync-fit" and t.daemon for t in threading.enumerate())
    finally:
        release.set()


def test_a_work_that_fails_waits_for_the_fit_then_raises_its_error():
    error, fitted = OSError("the writes failed"), []

    def fit():
        time.sleep(0.3)
        fitted.append(1)
        raise RuntimeError("not this one")

    def work():
        raise error

    with pytest.raises(OSError) as caught:
        beside(fit, work)
    assert caught.value is error and fitted == [1]  # (the fit ended before the work's error was raised)


_CTRL_C_IN_DUCKDB = """\
import os, signal, sys, threading
import click, duckdb
from sync.cli.main import main

@main.command("slow-statement")
def slow_statement():
    con = duckdb.connect()
    con.execute("SET threads = 1")
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT)).start()  # the statement runs for many seconds
    try:
        con.execute("SELECT count(*) FROM (SELECT i % 1000003 AS g, count(*) FROM range(1000000000) t(i) GROUP BY g)")
    except BaseException as exc:
        print(type(exc).__name__, exc, file=sys.stderr)
        raise
    print("the statement ended before the signal", file=sys.stderr)

main(["-v", "slow-statement"], prog_name="rfmsync")
"""


def test_a_ctrl_c_inside_a_duckdb_statement_exits_as_a_ctrl_c():
    """DuckDB's Python client answers a Ctrl-C during a statement with its own error (RuntimeError "Query
    interrupted", the KeyboardInterrupt gone): the program exits as for any Ctrl-C, not as an internal error."""
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", _CTRL_C_IN_DUCKDB], cwd=str(ROOT), env=env, text=True,
                          capture_output=True, timeout=300)
    assert "RuntimeError Query interrupted" in done.stderr, done.stderr[-2000:]  # (DuckDB's form, seen)
    assert done.returncode == 1 and "Aborted!" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr, done.stderr[-2000:]


_NEXT_FIT = """\
import json, sys, time
import numpy as np
from threadpoolctl import threadpool_info
from segmentation.btyd import SummaryCounts
from segmentation.guarded_fits import fit_bgnbd_guarded
from segmentation.predictive import PredictConfig

def blas():
    return sorted(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")

rng = np.random.default_rng(5)  # 40 000 customers, thousands of distinct (x, t_x, T): a fit of a second or so
n = 40000
t = rng.integers(100, 1400, n)
x = rng.poisson(rng.gamma(0.8, 3.0, n))
rec = np.where(x > 0, (t * rng.random(n)).astype(int), 0)
s = SummaryCounts.from_arrays(x, rec, t, np.ones(n), "weeks")
if sys.argv[1] == "after a failure":
    def writes():
        time.sleep(0.05)
        raise OSError("the writes failed")
    try:
        fit_bgnbd_guarded(s, PredictConfig(), meanwhile=writes)
    except OSError:
        pass
bg, _ = fit_bgnbd_guarded(s, PredictConfig())
print(json.dumps({"fit": repr(bg), "blas threads": blas()}))
"""


def test_after_the_writes_failed_beside_a_fit_the_processs_next_fit_is_a_fresh_processs():
    """The failed work's fit is waited for before its error is raised: no fit of the failed run overlaps the
    next one (their BLAS limits, process-wide, would overlap), and the BLAS is left as it was."""
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    runs = {}
    for case in ("fresh", "after a failure"):
        done = subprocess.run([sys.executable, "-c", _NEXT_FIT, case], cwd=str(ROOT), env=env, text=True,
                              capture_output=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        runs[case] = json.loads(done.stdout)
    assert runs["after a failure"]["fit"] == runs["fresh"]["fit"]
    assert runs["after a failure"]["blas threads"] == runs["fresh"]["blas threads"]


def _summary(inconsistent: bool) -> SummaryCounts:
    rng = np.random.default_rng(3)
    x = rng.integers(0, 6, 300)
    t = rng.integers(200, 400, 300)
    rec = np.where(x > 0, rng.integers(1, 200, 300), 0)
    if inconsistent:  # recency after T: the fit raises FitError
        rec[x > 0] = t[x > 0] + 5
    return SummaryCounts.from_arrays(x, rec, t, np.ones(300), "weeks")


class _Fits(dict):
    def put(self, key, params):
        self[key] = params


@pytest.mark.parametrize("case", ["fitted", "fit error", "thin data", "kept fit"])
def test_the_fits_result_and_reason_are_those_without_the_overlap_and_the_work_runs_once(case):
    cfg = PredictConfig(min_customers=1000) if case == "thin data" else PredictConfig()
    s = _summary(case == "fit error")
    fits = _Fits() if case == "kept fit" else None
    alone = fit_bgnbd_guarded(s, cfg, fits=fits)
    ran = []
    together = fit_bgnbd_guarded(s, cfg, fits=fits, meanwhile=lambda: ran.append(1))
    assert together == alone and ran == [1]
    assert (together[0] is None) == (case in ("fit error", "thin data"))
    assert (together[1] is None) == (case in ("fitted", "kept fit"))


CONFIG = """\
[source]
type = "file"
orders = "{csv}"
timezone = "UTC"
currency = "EUR"

[source.columns]
order_id = "order_id"
customer_id = "customer_id"
ordered_at = "ordered_at"
amount = "amount"
status = "status"

[store]
orders = "{store}"
"""


def _shop(folder: Path, name: str, csv: Path) -> Path:
    cfg = folder / f"{name}.toml"
    cfg.write_text(CONFIG.format(csv=csv, store=folder / f"{name}.duckdb"), encoding="utf-8")
    return cfg


def _cli(*args: str, **kw) -> subprocess.Popen:
    env = os.environ | {"PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return subprocess.Popen([sys.executable, "-m", "sync", *args], cwd=str(ROOT), env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


@pytest.mark.slow
def test_a_ctrl_c_while_the_kept_tables_are_written_beside_the_fit(tmp_path):
    csv = tmp_path / "orders.csv"
    with duckdb.connect() as con:  # 60 000 customers of varied habits: a fit of a few hundred ms or more
        con.execute(f"""COPY (SELECT 'o' || i AS order_id, 'c' || (hash(i) % 60000) AS customer_id,
                                     strftime(TIMESTAMP '2023-01-01' + INTERVAL (hash(i * 7) % 1000) DAY
                                              + INTERVAL (i % 86400) SECOND, '%Y-%m-%dT%H:%M:%S') AS ordered_at,
                                     (10 + i % 300)::DECIMAL(18,2) AS amount, 'completed' AS status
                              FROM range(300000) t(i)) TO '{csv}' (HEADER)""")
    interrupted, fresh = _shop(tmp_path, "interrupted", csv), _shop(tmp_path, "fresh", csv)
    args = ["--as-of", "2025-10-01"]
    # the store ingested, then the kept tables dropped: the next predict builds them (the cold state)
    prep = _cli("segments", "--customers", "--no-predict", "-o", str(tmp_path / "c.csv"), "--config",
                str(interrupted), *args)
    assert prep.communicate(timeout=300) and prep.returncode == 0
    with duckdb.connect(str(tmp_path / "interrupted.duckdb")) as con:
        from sync.store.day_cache import drop_cache
        drop_cache(con)
    child = _cli("-vv", "predict", "--config", str(interrupted), *args)
    seen = []
    for line in child.stderr:  # the overlap has started: the fit runs, the kept tables are (being) written
        seen.append(line)
        if "fitting on a worker beside the caller's work" in line:
            child.send_signal(signal.SIGINT)
            break
    else:
        child.communicate(timeout=60)
        pytest.fail("no overlap seen:\n" + "".join(seen[-20:]))
    rest = child.communicate(timeout=60)[1]
    code = child.returncode
    assert code == 1 and "Aborted!" in rest, rest[-2000:]  # click's answer to a Ctrl-C, as before the overlap
    assert "Traceback" not in rest, rest[-2000:]
    assert "BG/NBD fit:" not in rest  # (its line when it ends: the exit did not wait for it)
    # the store: the next run's report is a fresh store's
    again = _cli("predict", "--format", "json", "--config", str(interrupted), *args)
    alone = _cli("predict", "--format", "json", "--config", str(fresh), *args)
    out_again, out_alone = again.communicate(timeout=300), alone.communicate(timeout=300)
    assert again.returncode == 0 and alone.returncode == 0, out_again[1][-2000:] + out_alone[1][-2000:]
    assert json.loads(out_again[0]) == json.loads(out_alone[0])


def _orders_csv(path: Path, first: int, n: int, mode: str = "w") -> None:
    with duckdb.connect() as con:
        rows = con.execute(f"""SELECT 'o' || i, 'c' || (hash(i) % 20000),
                                      strftime(TIMESTAMP '2023-01-01' + INTERVAL (hash(i * 7) % 900) DAY
                                               + INTERVAL (i % 86400) SECOND, '%Y-%m-%dT%H:%M:%S'),
                                      (10 + i % 300)::DECIMAL(18,2)::VARCHAR, 'completed'
                               FROM range({first}, {first + n}) t(i)""").fetchall()
    with path.open(mode, encoding="utf-8") as f:
        if mode == "w":
            f.write("order_id,customer_id,ordered_at,amount,status\n")
        f.writelines(",".join(r) + "\n" for r in rows)


def test_warm_and_updated_kept_tables_are_not_written_beside_the_fit(tmp_path, caplog):
    """Only a cold build defers its writes beside the fit: a run on current kept tables, and one that updates
    them for a few new orders, write (or read) them before predicting and fit on the run's thread."""
    from datetime import date

    from sync import api
    from sync.config import load_config

    csv = tmp_path / "orders.csv"
    _orders_csv(csv, 0, 120000)
    cfg = load_config(_shop(tmp_path, "shop", csv))

    def predict(as_of: date) -> tuple[set[str], list[str]]:
        caplog.clear()
        with caplog.at_level("DEBUG"):
            run = api.segments(cfg, as_of, predict=True, holdout=False, boundary=False, join_predictions=False)
            run.close()
        said = [r.getMessage() for r in caplog.records]
        return {m for m in said if m.startswith(("fitting on a worker", "BG/NBD fit:"))}, said

    cold, _ = predict(date(2025, 10, 1))
    assert "fitting on a worker beside the caller's work" in cold  # (the cold build: beside its fit)
    warm, said = predict(date(2025, 10, 8))  # another day: the fit runs again, the kept tables are current
    assert "purchase days: the order store's are current" in said
    assert any(m.startswith("BG/NBD fit:") for m in warm) and not any(m.startswith("fitting on a worker")
                                                                      for m in warm)
    _orders_csv(csv, 120000, 50, mode="a")  # a few new orders: the kept tables updated, not rebuilt
    updated, said = predict(date(2025, 10, 8))
    assert any(m.startswith("purchase days: replaced the rows of") for m in said), said
    assert any(m.startswith("BG/NBD fit:") for m in updated) and not any(m.startswith("fitting on a worker")
                                                                         for m in updated)
