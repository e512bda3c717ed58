"""A shop none of whose orders is completed (every one refunded or cancelled: hunt31b F7): nobody is scored, and
it is said (a warning on stderr and in the JSON ``warnings``), not shown as a table of zeros with placeholder cut
points (``recency_days: [-1.0, -0.999999]``, "rule: recency_days > -1") and "Orders 0" on the report page."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from sync.cli import main

AS_OF = "2025-06-30"
CONFIG = """[source]
orders = "orders.csv"
timezone = "Asia/Tashkent"
currency = "UZS"
[source.columns]
order_id = "id"
customer_id = "cust"
ordered_at = "date"
amount = "amount"
status = "status"
email = "email"
"""
NONE_COMPLETED = ("id,cust,date,amount,status,email\n1,C1,2025-06-01 10:00,100,refunded,a@example.com\n"
                  "2,C2,2025-06-02 10:00,50,refunded,b@example.com\n3,C2,2025-06-05 10:00,70,cancelled,b@example.com\n")
LINE = ("no completed order in the store (3 orders: 2 refunded, 1 cancelled), so no customer is scored, every "
        "segment is empty and there are no cut points (only a completed order makes a customer count)")


def shop(tmp_path: Path, orders: str = NONE_COMPLETED) -> Path:
    (tmp_path / "orders.csv").write_text(orders, encoding="utf-8")
    path = tmp_path / "rfmsync.toml"
    path.write_text(CONFIG, encoding="utf-8")
    return path


def run(*args: str):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_segments_say_no_order_is_completed_and_show_no_cut_points(tmp_path):
    cfg = shop(tmp_path)
    table = run("segments", "--config", str(cfg), "--as-of", AS_OF)
    assert f"warning: {LINE}" in table.stderr.splitlines()
    doc = json.loads(run("segments", "--config", str(cfg), "--as-of", AS_OF, "--format", "json").stdout)
    assert doc["customers"] == 0 and LINE in doc["warnings"]
    assert doc["cut_points"] == {"recency_days": [], "frequency": [], "monetary": []}  # no placeholder numbers


def test_the_report_says_what_the_store_holds_and_shows_no_placeholder_cut_points(tmp_path):
    cfg = shop(tmp_path)
    run("report", "--config", str(cfg), "--as-of", AS_OF, "-o", str(tmp_path / "r.html"))
    page = (tmp_path / "r.html").read_text(encoding="utf-8")
    assert "Orders<b>0</b> <span class=\"muted held\">(3 in the store, none completed)</span>" in page
    assert "Cut points (quantile): none: nobody was scored" in page
    assert "-1" not in page.split('id="grid"')[1].split("</section>")[0]  # no "recency_days &gt; -1", "R -1.0"
    assert LINE in page


def test_a_run_that_scores_nobody_keeps_the_last_cut_points_for_the_webhook_resync(tmp_path):
    """The resync scores new orders against the last full run's cut points (:func:`sync.ingest.save_cut_points`):
    a run as of a day before every order (nobody scored) no longer replaces them with placeholders."""
    from datetime import date

    from sync.config import load_config
    from sync.ingest import load_cut_points, save_cut_points
    from sync.pipeline import compute_segments

    cfg = load_config(shop(tmp_path, NONE_COMPLETED.replace("refunded", "completed").replace("cancelled",
                                                                                              "completed")))
    full = compute_segments(cfg, date(2025, 6, 30))
    try:
        save_cut_points(full.con, full)
        saved = load_cut_points(full.con)
        assert saved is not None and len(saved.recency_days) == 2
        nobody = compute_segments(cfg, date(2025, 5, 1), con=full.con)
        assert nobody.result.customers == 0 and nobody.result.cut_points.recency_days == []
        save_cut_points(full.con, nobody)
        assert load_cut_points(full.con) == saved
    finally:
        full.con.close()
