"""`rfmsync report`: the numbers behind the charts, escaping, self-containment, and a real browser."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
from collections import Counter
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner

from sync import api
from sync.cli import main
from sync.config import load_config
from sync.demodata import generate_shop
from sync.report import build_report_data

AS_OF = date(2026, 6, 1)
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
    run = api.segments(load_config(shop), AS_OF, predict=True)
    try:
        return build_report_data(run)
    finally:
        run.close()


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
    out = tmp_path / "r.html"
    _cli("report", "--config", str(cfg), "--as-of", AS_OF.isoformat(), "-o", str(out))
    html = out.read_text(encoding="utf-8")
    assert "<script" not in html
    literal = "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; «Магазин» &#39;q&#39;"
    assert html.count(literal) >= 4  # the <title>, <h1>, the segment's row and grid legend, the playbook line
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
    out = tmp_path / "r.html"
    _cli("report", "--config", str(cfg), "--as-of", AS_OF.isoformat(), "-o", str(out))
    dom, leaks, console = _browse(browser, out, tmp_path / "report")
    assert leaks == [] and console == []
    assert len(re.findall(r'<tr class="segment">', dom)) == 5
    assert len(re.findall(r'<tr class="cell">', dom)) == 9
    assert len(re.findall(r'<tr class="point">', dom)) == len(build_curve_points(shop))
    assert len(re.findall(r"<svg ", dom)) == 5 * 2 + 3  # two bars per segment, the grid, the curve, churn risk
    png = tmp_path / "report.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--user-data-dir={tmp_path / 'profile'}", "--proxy-server=127.0.0.1:9",
                    "--window-size=1280,4000", f"--screenshot={png}", out.as_uri()],
                   capture_output=True, timeout=60, check=True)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


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
