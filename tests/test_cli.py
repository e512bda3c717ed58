"""The CLI as a user meets it: segments in every format, check, config errors, docs and settings kept true."""

from __future__ import annotations

import csv
import json
import re
from datetime import date
from pathlib import Path

import duckdb
import pytest

from sync.demodata import generate_shop
from tests.builders import run_cli as run
from sync.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
AS_OF = "2025-06-30"


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    return generate_shop(tmp_path_factory.mktemp("shop"), customers=400, seed=5, as_of=date.fromisoformat(AS_OF))




def test_segments_json_has_the_public_keys(shop):
    data = json.loads(run("segments", "--config", str(shop), "--as-of", AS_OF, "--format", "json").output)
    assert {"as_of", "preset", "method", "segments", "boundary", "bad_rows"} <= set(data)
    assert data["as_of"] == AS_OF and data["preset"] == "tracks" and data["method"] == "quantile"
    assert [s["segment"] for s in data["segments"]] == ["Best active", "Falling asleep", "Churn", "Beginners", "Other"]
    for s in data["segments"]:
        assert set(s) == {"segment", "customers", "customers_pct", "revenue", "revenue_pct", "avg_check",
                          "avg_repeat_purchases"}
    assert {"days", "reminder_day"} <= set(data["boundary"])
    assert data["bad_rows"] > 0  # the demo shop carries a few deliberately bad rows
    assert sum(s["customers"] for s in data["segments"]) == data["customers"]


def test_preset_override_and_csv(shop, tmp_path):
    out = tmp_path / "s.csv"
    run("segments", "--config", str(shop), "--as-of", AS_OF, "--preset", "crm-4", "--format", "csv", "-o", str(out))
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert rows[0]["segment"] == "VIP" and rows[-1]["segment"] == "Total"


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".json"])
def test_customers_file_in_every_format(shop, tmp_path, suffix):
    out = tmp_path / f"customers{suffix}"
    run("segments", "--config", str(shop), "--as-of", AS_OF, "--customers", "-o", str(out))
    reader = {".csv": "read_csv_auto", ".parquet": "read_parquet", ".json": "read_json_auto"}[suffix]
    con = duckdb.connect()
    cols = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {reader}('{out}')").fetchall()]
    assert cols[:11] == ["customer_id", "email", "phone", "recency_days", "frequency", "monetary", "r", "f", "m",
                         "rfm", "segment"]
    rfm = con.execute(f"SELECT CAST(rfm AS VARCHAR), r, f, m FROM {reader}('{out}') LIMIT 20").fetchall()
    assert all(code == f"{r}{f}{m}" for code, r, f, m in rfm)


def test_check_lists_bad_rows_with_file_and_row(shop):
    out = run("check", "--config", str(shop)).output
    assert re.search(r"orders\.csv, row \d+: (ordered_at|amount)", out)
    assert run("check", "--config", str(shop), "--strict", code=3).exit_code == 3


def test_missing_config_and_bad_toml_are_one_line_config_errors(tmp_path):
    out = run("segments", "--config", str(tmp_path / "nope.toml"), code=2).output
    assert "not found" in out and "Traceback" not in out
    bad = tmp_path / "bad.toml"
    bad.write_text("[segmentation]\npreset = 'tracks'\nmethod = 'magic'\n", encoding="utf-8")
    out = run("segments", "--config", str(bad), code=2).output
    assert "segmentation.method" in out


def test_config_from_environment_variable(shop, monkeypatch):
    monkeypatch.setenv("RFMSYNC_CONFIG", str(shop))
    assert "Best active" in run("segments", "--as-of", AS_OF, "--format", "json").output


def test_settings_example_lists_every_setting():
    text = (ROOT / "settings.example.env").read_text(encoding="utf-8")
    listed = set(re.findall(r"^([A-Z0-9_]+)=", text, re.M))
    assert listed == {name.upper() for name in Settings.model_fields}


def test_demo_runs_and_prints_segments_and_plan(tmp_path, caplog):
    out = run("demo", "--workdir", str(tmp_path / "demo"), "--customers", "300").output
    assert "Best active" in out and "Dry-run plan" in out and "Falling-asleep boundary" in out
    # the demo's own steps never find its order store busy (the report reads the run's own database)
    assert not [r.getMessage() for r in caplog.records if "in use" in r.getMessage()]


def test_predict_json_has_the_public_keys(shop):
    data = json.loads(run("predict", "--config", str(shop), "--as-of", AS_OF, "--format", "json").output)
    assert set(data["bgnbd"]) >= {"r", "alpha", "a", "b", "log_likelihood", "time_unit"}
    assert set(data["gamma_gamma"]) >= {"p", "q", "gamma"}
    assert data["customers"] > 0 and data["bgnbd"]["time_unit"] == "weeks"
    by_segment = data["churn_risk_by_segment"]
    assert sum(sum(v.values()) for v in by_segment.values()) == data["customers"]


@pytest.mark.parametrize("fitted", [True, False])
def test_predict_churn_risk_by_segment_counts_each_customer_in_their_segment(shop, fitted):
    """The per-segment churn risk counts are those of joining each customer's segment to their predictions
    (the command joins the two columns: its segments table does not carry the predictions'); without a model
    every customer counts as unknown."""
    from sync import api
    from sync.cli.main import load

    cfg = shop
    if not fitted:
        cfg = shop.with_name("unfitted.toml")
        cfg.write_text(shop.read_text(encoding="utf-8") + "\n[predict]\nmin_customers = 100000\n", encoding="utf-8")
    data = json.loads(run("predict", "--config", str(cfg), "--as-of", AS_OF, "--format", "json").stdout)
    run_ = api.segments(load(str(cfg)), date.fromisoformat(AS_OF), predict=True, holdout=True, boundary=False)
    try:
        rows = run_.con.execute(f"""SELECT s.segment, coalesce(p.churn_risk, 'unknown'), count(*)
                                      FROM {run_.result.table} s JOIN customer_predictions p USING (customer_id)
                                      GROUP BY ALL""").fetchall()
    finally:
        run_.close()
    expected: dict = {}
    for segment, risk, n in rows:
        expected.setdefault(segment, {})[risk] = n
    assert data["churn_risk_by_segment"] == expected
    risks = {r for v in expected.values() for r in v}
    assert len(expected) > 1 and (len(risks) > 1 if fitted else risks == {"unknown"})


def test_customers_file_gains_predictions_and_rules_can_use_them(shop, tmp_path):
    out = tmp_path / "c.parquet"
    run("segments", "--config", str(shop), "--as-of", AS_OF, "--customers", "-o", str(out))
    cols = [r[0] for r in duckdb.connect().execute(f"DESCRIBE SELECT * FROM read_parquet('{out}')").fetchall()]
    assert cols[11:] == ["first_name", "last_name", "p_alive", "expected_purchases", "churn_risk", "clv", "next_order_date", "next_order_reason"]
    cfg = tmp_path / "rules.toml"
    cfg.write_text(shop.read_text(encoding="utf-8").replace(
        '[segmentation]\npreset = "tracks"',
        '[segmentation]\npreset = "tracks"\n[[segmentation.rules]]\nname = "Reorder due"\nmatch = ["reorder_due"]')
        .replace('orders = "orders.csv"', f'orders = "{shop.parent}/orders.csv"')
        .replace('contacts = "clients.csv"', f'contacts = "{shop.parent}/clients.csv"'), encoding="utf-8")
    data = json.loads(run("segments", "--config", str(cfg), "--as-of", AS_OF, "--format", "json").output)
    assert data["segments"][0]["segment"] == "Reorder due" and data["segments"][0]["customers"] > 0


def _rules_config(shop: Path, tmp_path: Path, match: str) -> Path:
    """The demo shop's config with a first rule ``match`` (the shop's files found where they are)."""
    cfg = tmp_path / "rules.toml"
    cfg.write_text(shop.read_text(encoding="utf-8").replace(
        '[segmentation]\npreset = "tracks"',
        f'[segmentation]\npreset = "tracks"\n[[segmentation.rules]]\nname = "First rule"\nmatch = ["{match}"]')
        .replace('orders = "orders.csv"', f'orders = "{shop.parent}/orders.csv"')
        .replace('contacts = "clients.csv"', f'contacts = "{shop.parent}/clients.csv"'), encoding="utf-8")
    return cfg


@pytest.mark.parametrize("match", [None, "reorder_due", "churn_risk = 'high'"])
def test_predictions_kept_out_of_the_segments_table_give_the_same_customers(shop, tmp_path, match):
    """`segments --customers` and `predict` leave the predictions' columns in customer_predictions unless a rule
    reads one (then the segments table must carry them): the segments, the per-customer rows and the listing of a
    segment are those of the run that joins them."""
    from sync.config import load_config
    from sync.pipeline import compute_segments, customers_relation
    from sync.segment_list import segment_customers

    cfg = load_config(_rules_config(shop, tmp_path, match) if match else shop)
    runs = [compute_segments(cfg, date.fromisoformat(AS_OF), predict=True, boundary=False, join_predictions=j)
            for j in (True, False)]
    try:
        joined, apart = runs
        cols = {r[0] for r in apart.con.execute(f"DESCRIBE {apart.result.table}").fetchall()}
        assert ("p_alive" in cols) == (match is not None)
        assert apart.result.summary == joined.result.summary
        if match:
            assert apart.result.summary[0]["segment"] == "First rule" and apart.result.summary[0]["customers"] > 0
        assert customers_relation(apart).fetchall() == customers_relation(joined).fetchall()
        assert customers_relation(apart).columns == customers_relation(joined).columns
        for segment in apart.result.segment_names:
            assert segment_customers(apart, segment, limit=50, sort="clv") == segment_customers(
                joined, segment, limit=50, sort="clv")
    finally:
        for r in runs:
            r.close()


def test_customers_path_skips_only_the_boundary(shop):
    """`segments --customers` runs compute_segments(boundary=False): the same customers and summary, no boundary."""
    from sync.config import load_config
    from sync.pipeline import compute_segments, customers_relation

    runs = [compute_segments(load_config(shop), date.fromisoformat(AS_OF), boundary=b) for b in (True, False)]
    try:
        full, lean = runs
        assert full.result.boundary["days"] is not None and lean.result.boundary == {}
        assert lean.result.summary == full.result.summary
        assert customers_relation(lean).fetchall() == customers_relation(full).fetchall()
    finally:
        for r in runs:
            r.close()


def test_no_predict_writes_the_rfm_columns_alone(shop, tmp_path):
    out = tmp_path / "c.csv"
    run("segments", "--config", str(shop), "--as-of", AS_OF, "--customers", "--no-predict", "-o", str(out))
    header = out.read_text(encoding="utf-8").splitlines()[0].split(",")
    assert header == ["customer_id", "email", "phone", "recency_days", "frequency", "monetary", "r", "f", "m", "rfm",
                      "segment", "first_name", "last_name"]
    default = tmp_path / "d.csv"
    run("segments", "--config", str(shop), "--as-of", AS_OF, "--customers", "-o", str(default))
    rows = list(csv.DictReader(default.open(encoding="utf-8")))
    assert "churn_risk" in rows[0]
    lean = {r["customer_id"]: r["segment"] for r in csv.DictReader(out.open(encoding="utf-8"))}
    assert lean == {r["customer_id"]: r["segment"] for r in rows}


def test_every_segments_output_says_the_bad_rows_it_left_out_on_stderr(tmp_path):
    """Only the summary table said "2 bad rows were left out": `segments --customers`, `--segment NAME`,
    `--format csv` and `predict` left them out without a word. Each says it now, on stderr, never among its data
    (a JSON output in its ``bad_rows``), as a ``warning:`` line that ``--quiet`` keeps;
    and one customer is "1 customer", not "1 customers"."""
    (tmp_path / "orders.csv").write_text(
        "order_id,customer_id,ordered_at,amount,status\no1,a,2025-06-01 10:00,100,completed\n"
        "o2,a,2025-06-02 10:00,abc,completed\no3,b,2025-06-03 10:00,\"12,3,4\",completed\n", encoding="utf-8")
    cfg = tmp_path / "rfmsync.toml"
    cfg.write_text('[source]\ntype = "file"\norders = "orders.csv"\ntimezone = "UTC"\ncurrency = "USD"\n'
                   '[source.columns]\n' + "".join(f'{c} = "{c}"\n' for c in ("order_id", "customer_id", "ordered_at",
                                                                              "amount", "status")), encoding="utf-8")
    line = "warning: 2 bad rows were left out (see `rfmsync check`)."
    for args in (["segments", "--customers", "-o", "-", "--no-predict"], ["segments", "--format", "csv"],
                 ["segments", "--segment", "Churn", "--format", "csv"], ["segments", "--segment", "Churn"],
                 ["predict"]):
        result = run(*args, "--config", str(cfg), "--as-of", AS_OF)
        assert line in result.stderr.splitlines(), (args, result.stderr)
        assert "bad row" not in result.stdout, args
        assert line in run(*args, "--config", str(cfg), "--as-of", AS_OF, "--quiet").stderr.splitlines(), args
    for args in (["segments", "--format", "json"], ["segments", "--segment", "Churn", "--format", "json"],
                 ["predict", "--format", "json"]):  # the JSON says it in its bad_rows
        result = run(*args, "--config", str(cfg), "--as-of", AS_OF)
        assert json.loads(result.stdout)["bad_rows"] == 2 and "bad row" not in result.stderr, args
    table = run("segments", "--config", str(cfg), "--as-of", AS_OF)
    assert line.removeprefix("warning: ") in table.stdout and "bad row" not in table.stderr  # under the table, once
    assert "wrote 1 customer to stdout" in run("segments", "--customers", "-o", "-", "--config", str(cfg),
                                               "--as-of", AS_OF).stderr.splitlines()
