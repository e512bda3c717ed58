"""Model fits and whole runs' model numbers kept in the order store (segmentation.fit_cache, sync.store.fit_cache)
are read only for the very inputs they were computed from: a second command on the same orders reads them, any
change (the orders, an order's currency edited in place, the as-of day, a [predict] value) computes again, and the
results are those of a run without the store's caches."""

from __future__ import annotations

import ast
import logging
from datetime import date
from pathlib import Path

import duckdb

from connectors.tables import create_tables
from segmentation import fit_cache
from sync.config import load_config
from sync.demodata import generate_shop
from sync.pipeline import compute_segments, store_path
from sync.store.day_cache import drop_cache
from sync.store.fit_cache import NUMBERS_TABLE, ROWS_TABLE, TABLE

AS_OF = date(2025, 6, 30)


def _run(cfg, caplog, as_of: date = AS_OF, **kw) -> tuple[dict, list[str]]:
    out, read, _ = _run_rows(cfg, caplog, as_of, **kw)
    return out, read


def _run_rows(cfg, caplog, as_of: date = AS_OF, **kw) -> tuple[dict, list[str], list[tuple]]:
    """The report, the cache reads logged and the per-customer predictions of a run on the store."""
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="segmentation.predictive"):
        run = compute_segments(cfg, as_of, predict=True, holdout=True, boundary=False, **kw)
    try:
        return (run.predictions.to_json(), [r.getMessage() for r in caplog.records if "read from" in r.getMessage()],
                _predictions(run.con))
    finally:
        run.close()


def _predictions(con) -> list[tuple]:
    return con.execute("SELECT * FROM customer_predictions ORDER BY customer_id").fetchall()


def _fresh(cfg, as_of: date = AS_OF, rows: bool = False):
    """The same run on a copy of the store's orders, without any of its caches (``rows``: and its predictions)."""
    with duckdb.connect(str(store_path(cfg)), read_only=True) as src:
        orders = src.sql("SELECT * FROM orders").arrow()
    con = duckdb.connect()
    con.register("orders_copy", orders)
    create_tables(con)
    con.execute("INSERT INTO orders BY NAME SELECT * EXCLUDE (file_id) FROM orders_copy")
    run = compute_segments(cfg, as_of, con=con, predict=True, holdout=True, boundary=False)
    return (run.predictions.to_json(), _predictions(con)) if rows else run.predictions.to_json()


def test_a_second_run_on_the_same_orders_reads_its_fits_and_a_change_fits_again(tmp_path, caplog):
    cfg = load_config(generate_shop(tmp_path, customers=300, seed=11, as_of=AS_OF))
    first, read, rows = _run_rows(cfg, caplog)
    assert read == [] and first["bgnbd"]["r"] is not None and first["holdout"].get("bgnbd")
    with duckdb.connect(str(store_path(cfg)), read_only=True) as con:
        assert con.execute(f"SELECT count(*) FROM {TABLE}").fetchall() == [(3,)]  # BG/NBD, its holdout, Gamma-Gamma
    second, read = _run(cfg, caplog)  # the whole run's numbers are read: no fit is looked up
    assert read == ["model numbers read from an earlier run on the same orders, as-of and config"]
    assert second == first
    with duckdb.connect(str(store_path(cfg))) as con:  # without the run's numbers, its fits are read
        con.execute(f"DROP TABLE {NUMBERS_TABLE}")
    second, read = _run(cfg, caplog)
    assert len(read) == 3 and second == first
    second, read, again = _run_rows(cfg, caplog)  # kept again: read alone (none of the orphaned table's rows)
    assert len(read) == 1 and second == first and again == rows
    orders = tmp_path / "orders.csv"
    lines = orders.read_text(encoding="utf-8").splitlines(keepends=True)
    orders.write_text("".join(lines[: len(lines) * 9 // 10]), encoding="utf-8")  # the export lost its last tenth
    third, read = _run(cfg, caplog)
    assert read == [] and third != first and third == _fresh(cfg)
    with duckdb.connect(str(store_path(cfg))) as con:
        drop_cache(con)  # a cold run pays for its fits too
        assert con.execute("SELECT count(*) FROM duckdb_tables() WHERE table_name IN (?, ?, ?)",
                           [TABLE, NUMBERS_TABLE, ROWS_TABLE]).fetchall() == [(0,)]
    assert _run(cfg, caplog) == (third, [])


def test_kept_numbers_are_read_for_the_same_inputs_only_and_equal_a_fresh_run(tmp_path, caplog):
    """Each input of the kept numbers changed alone: the run computes them again, and reports and predicts what a
    run without any cache does; the same inputs again read them, with the same rows as the run that kept them."""
    cfg = load_config(generate_shop(tmp_path, customers=300, seed=5, as_of=AS_OF))
    first, read, rows = _run_rows(cfg, caplog)
    assert read == [] and (first, rows) == _fresh(cfg, rows=True)
    again, read, again_rows = _run_rows(cfg, caplog)
    assert len(read) == 1 and (again, again_rows) == (first, rows)
    numbers = [r for r in caplog.records if "read from" in r.getMessage()]
    assert numbers and "model numbers" in numbers[0].getMessage()
    # joined into the segments table (a TABLE of predictions) or not (a VIEW): the same rows from the kept numbers
    _, read, view_rows = _run_rows(cfg, caplog, join_predictions=False)
    assert len(read) == 1 and view_rows == rows

    earlier = AS_OF.replace(day=AS_OF.day - 3)  # another as-of
    out, read, got = _run_rows(cfg, caplog, earlier)
    assert not any("model numbers" in m for m in read) and (out, got) == _fresh(cfg, earlier, rows=True)
    assert out != first

    other = cfg.model_copy(update={"predict": cfg.predict | {"horizon_days": 30}})  # a [predict] value
    out, read, got = _run_rows(other, caplog)
    assert not any("model numbers" in m for m in read) and (out, got) == _fresh(other, rows=True)
    assert (out, got) != (first, rows)

    _, read = _run(cfg, caplog)  # (computed again: the store keeps the latest two runs' numbers)
    _, read = _run(cfg, caplog)
    assert len(read) == 1 and "model numbers" in read[0]
    with duckdb.connect(str(store_path(cfg))) as con:  # an order's currency edited in place (the store's key is
        # of the orders' times, amounts, discounts and statuses: this alone leaves the purchase days current)
        con.execute("UPDATE orders SET currency = 'EUR' WHERE order_id = (SELECT min(order_id) FROM orders "
                    "WHERE status = 'completed')")
    out, read, got = _run_rows(cfg, caplog)
    assert not any("model numbers" in m for m in read) and (out, got) == _fresh(cfg, rows=True)
    assert out["gamma_gamma"]["p"] is None and "currenc" in out["reason"]


def test_segments_and_predict_taking_turns_each_read_their_own_kept_numbers(tmp_path, caplog):
    """``segments`` (no holdout) and ``predict`` (a holdout) on one store keep two entries: taking turns, each
    reads its own from the second round on (the store keeps the latest two); another time zone computes again."""
    cfg = load_config(generate_shop(tmp_path, customers=300, seed=7, as_of=AS_OF))

    def run(holdout: bool, config=cfg) -> tuple[dict, bool]:
        caplog.clear()
        with caplog.at_level(logging.DEBUG, logger="segmentation.predictive"):
            got = compute_segments(config, AS_OF, predict=True, holdout=holdout, boundary=False)
        try:
            return got.predictions.to_json(), any("model numbers read" in r.getMessage() for r in caplog.records)
        finally:
            got.close()

    predict, read_p = run(True)
    segments, read_s = run(False)
    assert not read_p and not read_s and predict["holdout"].get("bgnbd") and not segments["holdout"].get("bgnbd")
    for _ in range(2):
        assert run(True) == (predict, True)
        assert run(False) == (segments, True)
    zone = "UTC" if cfg.timezone != "UTC" else "Asia/Tashkent"
    other = cfg.model_copy(update={"source": cfg.source | {"timezone": zone}})
    assert other.timezone == zone
    out, read = run(True, other)
    assert not read and out == _fresh(other)


def test_kept_numbers_of_a_shop_too_small_to_fit_keep_its_reasons_and_warnings(tmp_path, caplog):
    cfg = load_config(generate_shop(tmp_path, customers=30, seed=3, as_of=AS_OF))
    first, read, rows = _run_rows(cfg, caplog)
    assert read == [] and first["bgnbd"]["r"] is None and first["reason"] and first["warnings"]
    again, read, again_rows = _run_rows(cfg, caplog)
    assert len(read) == 1 and (again, again_rows) == (first, rows) == _fresh(cfg, rows=True)


def test_kept_numbers_of_other_columns_are_replaced(tmp_path, caplog):
    """A store whose kept numbers' table has other columns (kept by another version) gets this run's."""
    cfg = load_config(generate_shop(tmp_path, customers=300, seed=7, as_of=AS_OF))
    first, _, rows = _run_rows(cfg, caplog)
    with duckdb.connect(str(store_path(cfg))) as con:
        con.execute(f"ALTER TABLE {ROWS_TABLE} ADD COLUMN older DOUBLE")
        con.execute(f"DELETE FROM {NUMBERS_TABLE}")
    again, read, again_rows = _run_rows(cfg, caplog)
    assert read and not any("model numbers" in m for m in read) and (again, again_rows) == (first, rows)
    again, read, again_rows = _run_rows(cfg, caplog)
    assert len(read) == 1 and (again, again_rows) == (first, rows)


def _package_imports(module: Path) -> set[str]:
    """The files of this package that ``module`` imports (``from . import x``, ``from .x import y``,
    ``import segmentation.x``, anywhere in it, functions included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names.update([node.module] if node.module else [a.name for a in node.names])
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("segmentation."):
            names.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            names.update(a.name.split(".")[1] for a in node.names if a.name.startswith("segmentation."))
    return {f"{n.split('.')[0]}.py" for n in names}


def test_the_kept_numbers_key_covers_every_module_the_predictions_import():
    """A change to any module the predictions' code runs (however indirectly) must change the kept numbers' key:
    otherwise a warm run reads numbers the old code computed (hypergeometric.py and metrics.py were missed once)."""
    package = Path(fit_cache.__file__).parent
    seen, todo = set(), ["predictive.py"]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(_package_imports(package / name))
    assert {"btyd_models.py", "hypergeometric.py", "outliers.py", "metrics.py"} <= seen  # (the walk finds them)
    assert sorted(seen - set(fit_cache._NUMBERS_MODULES)) == []
