"""Model fits kept in the order store (segmentation.fit_cache, sync.store.fit_cache) are read only for the very
inputs they were fitted on: a second command on the same orders reads them, any change fits again, and the
results are those of a run without the store's fits."""

from __future__ import annotations

import logging
from datetime import date

import duckdb

from connectors.tables import create_tables
from sync.config import load_config
from sync.demodata import generate_shop
from sync.pipeline import compute_segments, store_path
from sync.store.day_cache import drop_cache
from sync.store.fit_cache import TABLE

AS_OF = date(2025, 6, 30)


def _run(cfg, caplog) -> tuple[dict, list[str]]:
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="segmentation.predictive"):
        run = compute_segments(cfg, AS_OF, predict=True, holdout=True, boundary=False)
    try:
        return run.predictions.to_json(), [r.getMessage() for r in caplog.records if "read from" in r.getMessage()]
    finally:
        run.close()


def _fresh(cfg) -> dict:
    """The same run on a copy of the store's orders, without any of its caches."""
    with duckdb.connect(str(store_path(cfg)), read_only=True) as src:
        orders = src.sql("SELECT * FROM orders").arrow()
    con = duckdb.connect()
    con.register("orders_copy", orders)
    create_tables(con)
    con.execute("INSERT INTO orders BY NAME SELECT * EXCLUDE (file_id) FROM orders_copy")
    run = compute_segments(cfg, AS_OF, con=con, predict=True, holdout=True, boundary=False)
    return run.predictions.to_json()


def test_a_second_run_on_the_same_orders_reads_its_fits_and_a_change_fits_again(tmp_path, caplog):
    cfg = load_config(generate_shop(tmp_path, customers=300, seed=11, as_of=AS_OF))
    first, read = _run(cfg, caplog)
    assert read == [] and first["bgnbd"]["r"] is not None and first["holdout"].get("bgnbd")
    with duckdb.connect(str(store_path(cfg)), read_only=True) as con:
        assert con.execute(f"SELECT count(*) FROM {TABLE}").fetchall() == [(3,)]  # BG/NBD, its holdout, Gamma-Gamma
    second, read = _run(cfg, caplog)
    assert len(read) == 3 and second == first
    orders = tmp_path / "orders.csv"
    lines = orders.read_text(encoding="utf-8").splitlines(keepends=True)
    orders.write_text("".join(lines[: len(lines) * 9 // 10]), encoding="utf-8")  # the export lost its last tenth
    third, read = _run(cfg, caplog)
    assert read == [] and third != first and third == _fresh(cfg)
    with duckdb.connect(str(store_path(cfg))) as con:
        drop_cache(con)  # a cold run pays for its fits too
        assert con.execute(f"SELECT count(*) FROM duckdb_tables() WHERE table_name = '{TABLE}'").fetchall() == [(0,)]
    assert _run(cfg, caplog) == (third, [])
