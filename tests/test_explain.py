"""Answers about one segment: ``segments --segment NAME`` and the per-customer file's names, .xlsx and stdout."""

from __future__ import annotations

import csv
import io
import json
from datetime import date, timedelta

import pytest
from click.testing import CliRunner
from openpyxl import load_workbook

from sync.cli import main
from sync.demodata import generate_shop
from tests.builders import run_cli as run

AS_OF = "2025-06-30"


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    return generate_shop(tmp_path_factory.mktemp("shop"), customers=300, seed=7, as_of=date.fromisoformat(AS_OF))




def seg(shop, *args, code=0):
    return run("segments", "--config", str(shop), "--as-of", AS_OF, *args, code=code)


def customers_csv(shop, *args) -> list[dict]:
    return list(csv.DictReader(io.StringIO(seg(shop, "--customers", "-o", "-", *args).stdout)))


def test_segment_json_lists_that_segments_customers_by_monetary(shop):
    data = json.loads(seg(shop, "--segment", "Best active", "--format", "json", "--limit", "5").stdout)
    assert data["segment"] == "Best active" and data["sort"] == "monetary" and data["as_of"] == AS_OF
    rows = data["customers"]
    assert len(rows) == 5
    assert list(rows[0]) == ["customer_id", "name", "email", "phone", "r", "f", "m", "monetary", "last_order",
                             "churn_risk", "next_order_date"]
    monetary = [r["monetary"] for r in rows]
    assert monetary == sorted(monetary, reverse=True)
    everyone = {r["customer_id"]: r for r in customers_csv(shop)}
    best = sorted((r for r in everyone.values() if r["segment"] == "Best active"),
                  key=lambda r: (-float(r["monetary"]), r["customer_id"]))
    assert [r["customer_id"] for r in rows] == [r["customer_id"] for r in best[:5]]
    top = everyone[rows[0]["customer_id"]]
    assert rows[0]["name"] == f"{top['first_name']} {top['last_name']}".strip()
    assert rows[0]["email"] == (top["email"] or None) and rows[0]["churn_risk"] == top["churn_risk"]
    assert rows[0]["last_order"] <= AS_OF and rows[0]["next_order_date"]


def test_segment_sorts_by_recency_and_clv_and_writes_csv(shop, tmp_path):
    everyone = {r["customer_id"]: r for r in customers_csv(shop)}
    recent = json.loads(seg(shop, "--segment", "Churn", "--sort", "recency", "--format", "json").stdout)
    days = [int(everyone[r["customer_id"]]["recency_days"]) for r in recent["customers"]]
    assert days == sorted(days) and all(everyone[r["customer_id"]]["segment"] == "Churn" for r in recent["customers"])
    out = tmp_path / "best.csv"
    seg(shop, "--segment", "Best active", "--sort", "clv", "--format", "csv", "-o", str(out))
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert len(rows) == 20
    clv = [float(everyone[r["customer_id"]]["clv"]) for r in rows]
    assert clv == sorted(clv, reverse=True)


def test_segment_table_names_the_segment(shop):
    out = seg(shop, "--segment", "Beginners", "--limit", "3").stdout
    assert "Beginners: 3 customers shown" in out


def test_unknown_segment_is_exit_2_with_did_you_mean(shop):
    result = seg(shop, "--segment", "Best activ", code=2)
    assert "unknown segment 'Best activ' (did you mean 'Best active'?)" in result.output
    assert "Traceback" not in result.output


def test_customers_file_has_names_and_goes_to_stdout(shop):
    rows = customers_csv(shop)
    assert {"first_name", "last_name"} <= set(rows[0])
    assert any(r["first_name"] for r in rows)
    assert len(rows) == len({r["customer_id"] for r in rows}) > 100


def test_customers_xlsx(shop, tmp_path):
    out = tmp_path / "c.xlsx"
    result = seg(shop, "--customers", "-o", str(out))
    assert "customers to" in result.output
    ws = load_workbook(out, read_only=True).active
    sheet = [list(r) for r in ws.iter_rows(values_only=True)]
    assert sheet[0][:3] == ["customer_id", "email", "phone"] and "first_name" in sheet[0]
    assert [r[0] for r in sheet[1:]] == [r["customer_id"] for r in customers_csv(shop)]


def test_customers_and_segment_are_exclusive(shop):
    assert "exclusive" in seg(shop, "--customers", "-o", "-", "--segment", "Churn", code=2).output


# -- rfmsync explain --------------------------------------------------------------------------------------------

def explain(shop, who, *args, code=0):
    return run("explain", who, "--config", str(shop), "--as-of", AS_OF, *args, code=code)


def test_explain_finds_one_customer_by_id_email_or_phone(shop):
    everyone = customers_csv(shop)
    c = next(r for r in everyone if r["email"] and r["phone"])
    by_id = json.loads(explain(shop, c["customer_id"], "--format", "json").stdout)
    assert by_id["customer_id"] == c["customer_id"] and by_id["segment"] == c["segment"]
    for who in (c["email"].upper(), f" {c['email']} ", c["phone"]):
        assert json.loads(explain(shop, who, "--format", "json").stdout)["customer_id"] == c["customer_id"], who
    assert by_id["metrics"]["frequency"] == int(c["frequency"])
    assert by_id["metrics"]["recency_days"] == int(c["recency_days"])
    assert by_id["orders"]["by_status"]["completed"]["orders"] >= int(c["frequency"])
    assert by_id["predictions"]["churn_risk"] == c["churn_risk"]


def _within(band: dict, value: float) -> bool:
    low, high = band["low"], band["high"]
    if band["metric"] == "recency_days":
        return (low is None or value > low) and (high is None or value <= high)
    return (low is None or value >= low) and (high is None or value < high)


def test_explain_shows_the_score_bands_and_the_rules_tried(shop):
    everyone = customers_csv(shop)
    churned = next(r for r in everyone if r["segment"] == "Churn")
    data = json.loads(explain(shop, churned["customer_id"], "--format", "json").stdout)
    scores = data["scores"]
    assert scores["method"] == "quantile" and scores["levels"] == 3
    for letter in "rfm":
        band = scores[letter]
        assert band["score"] == int(churned[letter]) and _within(band, band["value"]), band
    # the band is the score's: every customer whose value lies in it has that score
    r_band = scores["r"]
    assert all(int(x["r"]) == r_band["score"] for x in everyone if _within(r_band, int(x["recency_days"])))
    rules = data["rules"]
    assert [r["segment"] for r in rules["did_not_match"]] == ["Best active", "Falling asleep"]
    assert rules["matched"] == {"segment": "Churn", "patterns": ["R1"], "matched_by": ["R1"]}
    other = next(r for r in everyone if r["segment"] == "Other")
    rules = json.loads(explain(shop, other["customer_id"], "--format", "json").stdout)["rules"]
    assert rules["matched"] is None and rules["default"] == "Other" and len(rules["did_not_match"]) == 4
    text = explain(shop, churned["customer_id"]).stdout
    assert f"Customer {churned['customer_id']}" in text and "yes: Churn (matched R1)" in text
    assert "no:  Best active" in text and "R = 1: recency_days" in text


def test_explain_unknown_customer_is_exit_3(shop):
    for who in ("C99999", "nobody@example.com", "+998 90 000 00 00"):
        result = explain(shop, who, code=3)
        assert f"no customer with id, e-mail or phone {who!r}" in result.output
        assert "Traceback" not in result.output


def test_explain_shows_what_mailchimp_holds_and_pending_failures(tmp_path, mailchimp_fake, monkeypatch):
    cfg = generate_shop(tmp_path / "shop", customers=150, seed=3, as_of=date.fromisoformat(AS_OF))
    cfg.write_text(cfg.read_text(encoding="utf-8").replace('audience = "demo000001"', 'audience = "aud1"'),
                   encoding="utf-8")
    monkeypatch.setenv("MAILCHIMP_API_KEY", mailchimp_fake.api_key)
    monkeypatch.setenv("MAILCHIMP_API_URL", mailchimp_fake.url)
    before = json.loads(explain(cfg, next(r["customer_id"] for r in customers_csv(cfg) if r["email"]),
                                "--format", "json").stdout)
    assert before["destinations"][0]["contacts"] == []  # no ledger yet: nothing pushed, no file created
    assert not (cfg.parent / "rfmsync.db").exists()
    plan_file = tmp_path / "plan.json"
    run("plan", "--config", str(cfg), "--as-of", AS_OF, "-o", str(plan_file), "--format", "json")
    changes = [c for c in json.loads(plan_file.read_text())["plans"][0]["changes"] if c["add_tags"]]
    pushed, blocked = changes[0], changes[1]
    mailchimp_fake.member_errors[blocked["key"]] = "This e-mail is blocked"
    CliRunner().invoke(main, ["sync", "--config", str(cfg), "--as-of", AS_OF], catch_exceptions=False)

    data = json.loads(explain(cfg, pushed["key"], "--format", "json").stdout)
    dest = data["destinations"][0]
    assert dest["destination"] == "mailchimp-demo" and dest["type"] == "mailchimp"
    (held,) = dest["contacts"]
    assert held["key"] == pushed["key"] and held["last_pushed"] and held["in_destination"]
    assert set(held["tags"]) == set(pushed["add_tags"]) == mailchimp_fake.tags_of(pushed["key"])
    assert held["fields"] and dest["pending_failures"] == []
    assert f"mailchimp-demo (mailchimp): {pushed['key']}: tags " in explain(cfg, pushed["key"]).stdout

    failing = json.loads(explain(cfg, blocked["key"], "--format", "json").stdout)["destinations"][0]
    assert failing["contacts"] == []
    failures = failing["pending_failures"]
    assert failures and all(f["attempts"] == 1 for f in failures), failures
    assert any("This e-mail is blocked" in f["last_error"] for f in failures), failures
    assert "pending failure" in explain(cfg, blocked["key"]).stdout


def test_explain_a_customer_before_their_first_order(shop):
    beginner = next(r for r in customers_csv(shop) if r["segment"] == "Beginners" and r["frequency"] == "1")
    first = json.loads(explain(shop, beginner["customer_id"], "--format", "json").stdout)["orders"]["first_order"]
    before = (date.fromisoformat(first) - timedelta(days=1)).isoformat()
    result = run("explain", beginner["customer_id"], "--config", str(shop), "--as-of", before, "--format", "json")
    data = json.loads(result.stdout)
    assert data["segment"] is None and data["why"] == f"no completed order up to {before}: not scored"
    assert data["contact"] is not None and data["orders"]["last_order"] is None
    assert "Segment: none (no completed order" in run("explain", beginner["customer_id"], "--config", str(shop),
                                                      "--as-of", before).stdout


def test_segment_without_predictions_has_no_churn_risk_and_cannot_sort_by_clv(shop):
    rows = json.loads(seg(shop, "--segment", "Churn", "--no-predict", "--format", "json").stdout)["customers"]
    assert rows and all(r["churn_risk"] is None and r["next_order_date"] is None for r in rows)
    assert "--sort clv needs the predictive fields" in seg(shop, "--segment", "Churn", "--no-predict", "--sort", "clv",
                                                          code=2).output


def test_explain_before_any_sync_has_no_history_and_does_not_call_the_store_in_use(tmp_path, caplog):
    """Nothing recorded yet: the history is empty, and no warning says the store is in use (explain's own
    connection to it was taken for another process's)."""
    cfg = generate_shop(tmp_path / "shop", customers=60, seed=5, as_of=date.fromisoformat(AS_OF))
    who = next(r["customer_id"] for r in customers_csv(cfg))
    result = explain(cfg, who, "--format", "json")
    assert json.loads(result.stdout)["history"] == []
    said = result.stderr + "\n".join(r.getMessage() for r in caplog.records)
    assert "in use" not in said and "segment history left out" not in said


def test_explain_shows_the_operations_kept_out_with_the_esp_s_reason(tmp_path):
    """kept28 #2: an operation the contact's own choice in the ESP keeps out (recorded in the ledger's kept_out
    table, listed by ``failures --kept-out``) was shown nowhere by ``explain``: neither held nor failing, his list
    add simply missing. Each destination shows them now (JSON ``kept_out``: op, reason, kept_at; the text a line),
    with the reason the ESP gave, masked as ``failures`` masks it; another contact's are not his."""
    from sync.ledger import Ledger
    from sync.model import ItemResult

    cfg = generate_shop(tmp_path / "shop", customers=150, seed=3, as_of=date.fromisoformat(AS_OF))
    who = next(r for r in customers_csv(cfg) if r["email"])
    reason = "Unisender shows him unsubscribed on the list (he unsubscribed: his choice, nothing to do)"
    with Ledger.connect(f"sqlite:///{cfg.parent / 'rfmsync.db'}") as ledger:
        ledger.record_kept_out("mailchimp-demo", None, [
            ItemResult(who["email"], "tag+rfm:Champions", False, reason, refused=True, kept_out=True),
            ItemResult("someone.else@example.com", "upsert", False, "not his", refused=True, kept_out=True)])
    data = json.loads(explain(cfg, who["customer_id"], "--format", "json").stdout)
    (dest,) = data["destinations"]
    assert [(k["op"], k["reason"]) for k in dest["kept_out"]] == [("tag+rfm:Champions", reason)]
    assert dest["kept_out"][0]["kept_at"] and dest["pending_failures"] == [] and dest["contacts"] == []
    text = explain(cfg, who["customer_id"]).stdout
    assert f"kept out: tag+rfm:Champions ({reason})" in " ".join(text.split())


def test_explain_masks_a_secret_in_a_stored_error_as_failures_does(tmp_path, monkeypatch):
    """fixk28 #1: ``explain`` printed a pending failure's stored ``last_error`` as stored: an error an older
    rfmsync wrote before the secrets in it were masked showed the key in the text and in ``--format json``, where
    ``failures`` masks it. Both mask it now, as the kept-out reason is masked."""
    from sync.ledger import Ledger
    from sync.model import ItemResult

    code = "sk-TESTSECRET-123"
    cfg = generate_shop(tmp_path / "shop", customers=20, seed=3, as_of=date.fromisoformat(AS_OF))
    who = next(r for r in customers_csv(cfg) if r["email"])
    with Ledger.connect(f"sqlite:///{cfg.parent / 'rfmsync.db'}") as ledger:
        run_id = ledger.start_run("sync", "mailchimp-demo")
        ledger.record_failures("mailchimp-demo", run_id, [ItemResult(who["email"], "upsert", False, f"apikey={code}")])
        ledger.record_kept_out("mailchimp-demo", run_id, [
            ItemResult(who["email"], "tag+rfm:Champions", False, f"refused (key {code})", refused=True, kept_out=True)])
        ledger.finish_run(run_id, "failed", {})
    monkeypatch.setenv("MAILCHIMP_API_KEY", code)
    assert code not in run("failures", "--config", str(cfg)).output  # what failures prints: masked
    (dest,) = json.loads(explain(cfg, who["customer_id"], "--format", "json").stdout)["destinations"]
    assert [f["last_error"] for f in dest["pending_failures"]] == ["apikey=***"]
    assert [k["reason"] for k in dest["kept_out"]] == ["refused (key ***)"]
    text = explain(cfg, who["customer_id"]).stdout
    assert "pending failure: upsert" in text and "apikey=***" in text and code not in text


def test_explain_a_customer_of_the_orders_alone_with_no_completed_order_up_to_the_as_of(tmp_path):
    """Hunter 28a: a customer whose only order is cancelled, or whose orders all come after --as-of, with no
    contacts row, was "no customer with id, e-mail or phone 'f'" (exit 3); docs/explain.md: segment null, a why."""
    (tmp_path / "orders.csv").write_text("order_id,customer_id,ordered_at,amount,status\n"
                                         "1,a,2026-01-10 10:00,100,completed\n2,f,2026-01-12 10:00,70,cancelled\n"
                                         "3,g,2026-03-10 10:00,50,completed\n", encoding="utf-8")
    (tmp_path / "rfmsync.toml").write_text(
        '[source]\ntype = "file"\norders = "orders.csv"\ntimezone = "UTC"\ncurrency = "USD"\n[source.columns]\n'
        + "".join(f'{c} = "{c}"\n' for c in ("order_id", "customer_id", "ordered_at", "amount", "status")),
        encoding="utf-8")
    cfg = str(tmp_path / "rfmsync.toml")
    for who, held in (("f", {"cancelled": {"orders": 1, "amount": 70.0}}), ("g", {})):
        data = json.loads(run("explain", who, "--config", cfg, "--as-of", "2026-02-01", "--format", "json").stdout)
        assert (data["customer_id"], data["segment"]) == (who, None)
        assert data["why"] == "no completed order up to 2026-02-01: not scored"
        assert data["orders"]["by_status"] == held
    assert json.loads(run("explain", "a", "--config", cfg, "--as-of", "2026-02-01", "--format", "json").stdout
                      )["segment"] is not None
    assert "no customer with id, e-mail or phone 'h'" in run("explain", "h", "--config", cfg, "--as-of", "2026-02-01",
                                                             code=3).output
