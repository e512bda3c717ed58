"""`rfmsync report`: the numbers behind the charts, escaping, self-containment, and a real browser."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from click.testing import CliRunner

from sync import api
from sync.cli import main
from sync.config import load_config
from sync.demodata import generate_shop
from sync.pipeline import store_path
from sync.report import build_report_data, report_run

AS_OF = date(2026, 6, 1)
#: where the browser test copies its screenshot (docs/report.md); read at import: the tests' env is cleared later
SCREENSHOT_TO = Path(os.environ["RFMSYNC_TEST_REPORT_PNG"]).resolve() if os.environ.get("RFMSYNC_TEST_REPORT_PNG") \
    else None
EVIL = '<script>alert("x")</script> «Магазин» \'q\''


def _cli(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.stdout


@pytest.fixture(scope="module")
def shop(tmp_path_factory) -> Path:
    return generate_shop(tmp_path_factory.mktemp("shop"), customers=300, seed=1, as_of=AS_OF)


@pytest.fixture(scope="module")
def data(shop) -> dict:
    run = report_run(load_config(shop), AS_OF)
    try:
        return build_report_data(run)
    finally:
        run.close()


#: the segment-history tables of the history contract (/work/briefs/history-contract.md), as `hist` creates them
HISTORY_DDL = """
CREATE TABLE IF NOT EXISTS segment_history_lines (
    line INTEGER PRIMARY KEY, preset VARCHAR NOT NULL, rules_hash VARCHAR NOT NULL, started_on DATE NOT NULL);
CREATE TABLE IF NOT EXISTS segment_history_records (
    line INTEGER NOT NULL, as_of DATE NOT NULL, source VARCHAR NOT NULL,
    customers BIGINT NOT NULL, recorded_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (line, as_of));
CREATE TABLE IF NOT EXISTS segment_history (
    line INTEGER NOT NULL, customer_id VARCHAR NOT NULL, segment VARCHAR NOT NULL,
    valid_from DATE NOT NULL, valid_to DATE);
"""


def record_history(con: duckdb.DuckDBPyConnection, as_of: date, members: list[tuple[str, str]] | pa.Table,
                   line: int = 1, preset: str = "tracks") -> None:
    """Record one run's (customer_id, segment) pairs the way the contract describes (type 2, changes only)."""
    con.execute(HISTORY_DDL)
    con.execute("INSERT INTO segment_history_lines VALUES (?, ?, 'rules', ?) ON CONFLICT DO NOTHING",
                [line, preset, as_of])
    now = members if isinstance(members, pa.Table) else pa.table(
        {"customer_id": [c for c, _ in members], "segment": [s for _, s in members]})
    con.register("_now", now)
    params = {"line": line, "d": as_of}
    con.execute("""UPDATE segment_history h SET valid_to = $d WHERE line = $line AND valid_to IS NULL
                   AND NOT EXISTS (SELECT 1 FROM _now n WHERE n.customer_id = h.customer_id
                                   AND n.segment = h.segment)""", params)
    con.execute("""INSERT INTO segment_history SELECT $line, customer_id, segment, $d, NULL FROM _now n
                   WHERE NOT EXISTS (SELECT 1 FROM segment_history h WHERE h.line = $line AND h.valid_to IS NULL
                                     AND h.customer_id = n.customer_id AND h.segment = n.segment)""", params)
    con.execute("INSERT INTO segment_history_records VALUES ($line, $d, 'segments', (SELECT count(*) FROM _now), "
                "now())", params)
    con.unregister("_now")


def record_shop_history(config: Path, dates: list[date]) -> None:
    """Segment the shop as of each date and record the runs in its segment history, as `rfmsync segments
    --record` does (:mod:`sync.store.history`)."""
    cfg = load_config(config)
    for day in dates:
        run = api.segments(cfg, day, boundary=False)
        try:
            api.record_history(cfg, run)
        finally:
            run.close()


#: the history the browser test and the README screenshot show: every two weeks over the last two months
HISTORY_DATES = [AS_OF - timedelta(days=d) for d in (56, 42, 28, 14, 0)]


def _copy_shop(shop: Path, tmp_path: Path, extra: str = "") -> Path:
    folder = tmp_path / "shop"
    shutil.copytree(shop.parent, folder)
    cfg = folder / "rfmsync.toml"
    cfg.write_text(cfg.read_text(encoding="utf-8") + extra, encoding="utf-8")
    return cfg


def test_segments_grid_and_boundary_equal_the_segments_command(shop, data, tmp_path):
    seg = json.loads(_cli("segments", "--config", str(shop), "--as-of", AS_OF.isoformat(), "--format", "json"))
    assert data["segments"] == seg["segments"]
    assert data["header"]["customers"] == seg["customers"] == seg["totals"]["customers"]
    assert data["header"]["revenue"] == seg["totals"]["revenue"]
    assert data["header"]["bad_rows"] == seg["bad_rows"]
    assert data["boundary"]["curve"] == seg["boundary"]["curve"]
    assert (data["boundary"]["days"], data["boundary"]["reminder_day"]) == \
        (seg["boundary"]["days"], seg["boundary"]["reminder_day"])
    assert data["boundary"]["gap_percentiles"] == seg["boundary"]["gap_percentiles"]

    out = tmp_path / "customers.csv"
    _cli("segments", "--config", str(shop), "--as-of", AS_OF.isoformat(), "--customers", "--no-predict",
         "-o", str(out))
    with out.open(encoding="utf-8") as fh:
        customers = list(csv.DictReader(fh))
    cells = Counter((int(c["r"]), int(c["f"])) for c in customers)
    assert {(c["r"], c["f"]): c["customers"] for c in data["grid"]["cells"]} == dict(cells)
    for cell in data["grid"]["cells"]:
        members = [c for c in customers if (int(c["r"]), int(c["f"])) == (cell["r"], cell["f"])]
        assert cell["avg_monetary"] == pytest.approx(sum(float(c["monetary"]) for c in members) / len(members),
                                                     abs=0.01)
        top = Counter(c["segment"] for c in members).most_common()
        assert cell["segment"] in {s for s, n in top if n == top[0][1]}
    for axis, col in (("r", "recency_days"), ("f", "frequency")):
        values: dict[int, list[int]] = {}
        for c in customers:
            values.setdefault(int(c[axis]), []).append(int(c[col]))
        assert data["grid"]["ranges"][axis] == [{"score": k, "min": min(v), "max": max(v)}
                                                for k, v in sorted(values.items())]
    lo, hi = data["boundary"]["reminder_day"], data["boundary"]["days"]
    assert data["boundary"]["in_reminder_window"] == sum(lo <= int(c["recency_days"]) <= hi for c in customers)


def test_predictions_equal_the_predict_command(shop, data):
    report = json.loads(_cli("predict", "--config", str(shop), "--as-of", AS_OF.isoformat(), "--format", "json"))
    assert data["predictions"]["fitted"]
    by_seg = report["churn_risk_by_segment"]
    for row in data["predictions"]["segments"]:
        expected = by_seg[row["segment"]]
        assert {k: row[k] for k in ("low", "medium", "high") if row[k]} == \
            {k: v for k, v in expected.items() if k in ("low", "medium", "high")}
        assert row["unknown"] == expected.get("unknown", 0)


def test_the_predictions_section_reads_a_run_whose_predictions_are_a_view(shop, data):
    """A run made `rfmsync predict`'s way (``join_predictions=False``: ``customer_predictions`` is a view, not a
    table) gives the section the numbers of the report's own run, not "not computed"."""
    from sync.explain import _prediction_columns
    from sync.report.forecast import predictions

    run = api.segments(load_config(shop), AS_OF, predict=True, holdout=True, join_predictions=False)
    try:
        assert run.con.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = 'customer_predictions'"
                               ).fetchall() == [(1,)]
        section = predictions(run)
        assert "churn_risk" in _prediction_columns(run.con)
    finally:
        run.close()
    assert section["fitted"] and section["segments"] == data["predictions"]["segments"]


def test_the_command_writes_the_default_file_and_prints_its_path(shop, tmp_path):
    cfg = _copy_shop(shop, tmp_path)
    printed = _cli("report", "--config", str(cfg), "--as-of", AS_OF.isoformat()).strip()
    path = cfg.parent / "rfmsync-report-2026-06-01.html"
    assert printed == str(path) and path.exists()
    html = path.read_text(encoding="utf-8")
    assert "<h1>shop</h1>" in html  # the default title: the config folder's name
    assert len(re.findall(r'<tr class="segment">', html)) == 5  # the tracks' four and Other
    assert len(re.findall(r'<tr class="cell">', html)) == 9  # 3 × 3
    assert html.count('<svg class="chart heatmap"') == 1 and html.count('<svg class="chart curve"') == 1
    assert "Remind them 14 days before the boundary" in html


def test_russian_page_and_output_option(shop, tmp_path):
    cfg = _copy_shop(shop, tmp_path)
    out = tmp_path / "r.html"
    assert _cli("report", "--config", str(cfg), "--as-of", AS_OF.isoformat(), "--lang", "ru",
                "-o", str(out)).strip() == str(out)
    html = out.read_text(encoding="utf-8")
    assert '<html lang="ru">' in html and "Что делать" in html and "Удерживайте без скидок" in html
    for heading in ("Ценность клиента (CLV) за 365 дн. по сегментам", "Пора повторить заказ",
                    "Проверка на отложенном периоде: прогноз и факт", "Под каждым баллом: диапазон значений"):
        assert heading in html, heading


def test_every_value_is_escaped(shop, tmp_path):
    title = EVIL.replace('"', '\\"')
    cfg = _copy_shop(shop, tmp_path, f'''
[report]
title = "{title}"
currency_symbol = "₽"

[report.playbook]
"Falling asleep" = "{title}"
''')
    text = cfg.read_text(encoding="utf-8")
    text = text.replace('preset = "tracks"', f'preset = "tracks"\n\n[[segmentation.rules]]\nname = "{title}"\n'
                                             f'match = ["R3F3M3"]')
    cfg.write_text(text, encoding="utf-8")
    with duckdb.connect(str(store_path(load_config(cfg)))) as con:  # a recorded history with that segment
        record_history(con, AS_OF - timedelta(days=7), [("a", EVIL), ("b", "Churn")])
        record_history(con, AS_OF, [("a", "Churn"), ("b", EVIL), ("c", EVIL)])
    out = tmp_path / "r.html"
    _cli("report", "--config", str(cfg), "--as-of", AS_OF.isoformat(), "-o", str(out))
    html = out.read_text(encoding="utf-8")
    assert "<script" not in html
    literal = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; «Магазин» &#39;q&#39;"
    assert html.count(literal) >= 4  # the <title>, <h1>, the segment's row and grid legend, the playbook line
    sections = {name: html[html.index(f'<section id="{name}">'):] for name in ("predictions", "movement")}
    sections["predictions"] = sections["predictions"][:sections["predictions"].index("</section>")]
    # churn risk (chart and table), CLV (chart, its tooltip and table); sizes (chart, table), the matrix (chart
    # row and column, table row and column)
    assert sections["predictions"].count(literal) >= 5 and sections["movement"].count(literal) >= 6
    assert "₽" in html


def test_the_file_is_self_contained_small_and_holds_no_customer(shop, tmp_path):
    cfg = _copy_shop(shop, tmp_path)
    out = tmp_path / "r.html"
    _cli("report", "--config", str(cfg), "--as-of", AS_OF.isoformat(), "-o", str(out))
    html = out.read_text(encoding="utf-8")
    assert not re.search(r"https?://|src=|@import|url\(", html)
    assert out.stat().st_size < 200_000
    with (cfg.parent / "clients.csv").open(encoding="utf-8-sig") as fh:
        first = next(csv.DictReader(fh, delimiter=";"))
    assert first["Код клиента"] not in html and first["Email"] not in html


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


#: the browser's own background calls (time sync, accounts, the new-tab page), not the page's
BROWSER_OWN = re.compile(r"^https?://([a-z0-9.-]+\.)?(google\.com|gvt1\.com|googleapis\.com|gstatic\.com)/")


def _browse(browser: str, page: Path, tmp: Path, *extra: str) -> tuple[str, list[str], list[str]]:
    """Open ``page`` headless with the network disabled: its DOM, the requests that left the file (from the
    net log) and the console messages."""
    tmp.mkdir(exist_ok=True)
    netlog = tmp / "net.json"
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-sync", "--disable-component-update",
             f"--user-data-dir={tmp / 'profile'}", "--proxy-server=127.0.0.1:9",
             "--host-resolver-rules=MAP * ~NOTFOUND", "--virtual-time-budget=2000",
             "--enable-logging=stderr", "--v=0", f"--log-net-log={netlog}", *extra]
    done = subprocess.run([*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=60,
                          check=True)
    urls = set(re.findall(r'"url":"(https?://[^"]*)"', netlog.read_text(encoding="utf-8", errors="replace")))
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return done.stdout, sorted(u for u in urls if not BROWSER_OWN.match(u)), console


def test_a_real_browser_renders_the_page_offline(shop, tmp_path):
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have Chromium (.ci/run installs it)")
        pytest.skip("no Chromium installed (apt-get install chromium); the browser check runs in CI")
    # the detectors see a page that fetches and logs
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><script>console.error("boom")</script><img src="https://cdn.example.org/x.png">'
                   "</body></html>", encoding="utf-8")
    _, leaks, console = _browse(browser, bad, tmp_path / "bad")
    assert leaks == ["https://cdn.example.org/x.png"] and any("boom" in line for line in console)

    cfg = _copy_shop(shop, tmp_path)
    record_shop_history(cfg, HISTORY_DATES)  # the movement section too
    out = tmp_path / "r.html"
    _cli("report", "--config", str(cfg), "--as-of", AS_OF.isoformat(), "-o", str(out))
    dom, leaks, console = _browse(browser, out, tmp_path / "report")
    assert leaks == [] and console == []
    assert len(re.findall(r'<tr class="segment">', dom)) == 5
    assert len(re.findall(r'<tr class="cell">', dom)) == 9
    assert len(re.findall(r'<tr class="point">', dom)) == len(build_curve_points(shop))
    assert len(re.findall(r'<tr class="clv">', dom)) == 5 and len(re.findall(r'<tr class="hgroup">', dom)) == 7
    assert len(re.findall(r'<tr class="size">', dom)) == len(HISTORY_DATES)
    # two bars per segment; the grid, the curve, churn risk, CLV, the holdout check, sizes, the from → to matrix
    assert len(re.findall(r"<svg ", dom)) == 5 * 2 + 7
    png = tmp_path / "report.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--user-data-dir={tmp_path / 'profile'}", "--proxy-server=127.0.0.1:9",
                    "--window-size=1280,5600", f"--screenshot={png}", out.as_uri()],
                   capture_output=True, timeout=60, check=True)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    if SCREENSHOT_TO is not None:  # regenerate docs/report.png (see docs/report.md)
        shutil.copyfile(png, SCREENSHOT_TO)


def build_curve_points(shop: Path) -> list:
    run = api.segments(load_config(shop), AS_OF)
    try:
        return run.result.boundary["curve"]
    finally:
        run.close()


def test_demo_ends_with_the_report_page(tmp_path):
    result = CliRunner().invoke(main, ["demo", "--workdir", str(tmp_path / "demo"), "--customers", "300"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    line = next(x for x in result.stdout.splitlines() if x.startswith("Report page: "))
    page = Path(line.removeprefix("Report page: "))
    assert page.parent == tmp_path / "demo" and page.name.startswith("rfmsync-report-")
    assert "<h1>demo</h1>" in page.read_text(encoding="utf-8")


def test_destinations_show_the_last_run_and_the_ledger_members(shop):
    from sync.ledger import Ledger
    from sync.model import PushedState

    cfg = load_config(shop)
    ledger = Ledger.connect("sqlite://")
    try:
        run_id = ledger.start_run("sync", "mailchimp-demo")
        ledger.save_states("mailchimp-demo", run_id, [
            PushedState("a@x.uz", "1", frozenset({"VIP"}), {}),
            PushedState("b@x.uz", "2", frozenset({"VIP"}), {}),
            PushedState("c@x.uz", "3", frozenset({"Welcome"}), {}),
            PushedState("d@x.uz", "4", frozenset({"VIP"}), {}, exists=False),  # gone from the ESP
        ])
        ledger.finish_run(run_id, "succeeded", {"added": 3, "failed": 0})
        run = api.segments(cfg, AS_OF)
        try:
            dests = build_report_data(run, ledger)["destinations"]
        finally:
            run.close()
    finally:
        ledger.close()
    assert [d["name"] for d in dests] == ["mailchimp-demo"]
    (dest,) = dests
    assert dest["last_run"]["status"] == "succeeded" and dest["last_run"]["changes"] == {"added": 3, "failed": 0}
    members = {m["segment"]: m["members"] for m in dest["mapped"]}
    assert members == {"Best active": 2, "Falling asleep": 0, "Churn": 0, "Beginners": 1}
