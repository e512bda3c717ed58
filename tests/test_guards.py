"""The guards (docs/safety.md): each rule as a table, then through `rfmsync` against the fake Mailchimp.

Every case asserts what a user sees: the exit code, the guard line on stderr, the run `refused` in the ledger
(`rfmsync runs`, `GET /runs`, `/metrics`) and an audience the fake holds unchanged.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from sync.cli import main
from sync.config import GuardsConfig, load_config
from sync.ledger import open_ledger
from sync.errors import ConfigError, GuardRefusedError
from sync.guards import DataStats, PlanStats, customer_drop_line, data_lines, plan_lines, plan_stats
from sync.model import ContactChange, PushedState
from sync.planning.plan import Plan
from sync.planning.values import DRIFTING_VALUES
from sync.serve.resync import resync
from sync.run import require_destinations
from sync.serve.scheduler import Schedule, Scheduler, run_full_sync
from sync.settings import load_settings
from tests.test_webhooks_generic import live_server
from tests.test_worker import AS_OF, DEST, churned_contact, make_shop

G = GuardsConfig()


# ------------------------------------------------------------------------------------------- the rules


@pytest.mark.parametrize("orders, rows, bad, expected", [
    (0, 0, 1447, ["guard min_orders: 0 valid orders; at least 1 needed",
                  "guard max_bad_rows_pct: 1447 of 1447 rows (100 %) are bad; limit 5 %"]),
    (1, 1, 0, []),
    (100, 100, 5, []),  # 4.8 %
    (95, 95, 5, []),  # exactly 5 %: the limit itself passes
    (94, 94, 6, ["guard max_bad_rows_pct: 6 of 100 rows (6 %) are bad; limit 5 %"]),
    # (file31: "1 of 1 rows (100 %) are bad", "1 valid orders")
    (0, 0, 1, ["guard min_orders: 0 valid orders; at least 1 needed",
               "guard max_bad_rows_pct: 1 of 1 row (100 %) is bad; limit 5 %"]),
])
def test_data_guards(orders, rows, bad, expected):
    assert data_lines(G, DataStats(orders=orders, rows=rows, bad_rows=bad)) == expected


def test_min_orders_is_configurable():
    assert data_lines(GuardsConfig(min_orders=100), DataStats(99, 99, 0)) == [
        "guard min_orders: 99 valid orders; at least 100 needed"]
    assert data_lines(GuardsConfig(min_orders=0), DataStats(0, 0, 0)) == []
    assert data_lines(GuardsConfig(min_orders=2), DataStats(1, 1, 0)) == [
        "guard min_orders: 1 valid order; at least 2 needed"]


@pytest.mark.parametrize("now, before, expected", [
    (2100, None, None),  # the first run has nothing to compare with
    (2100, 3000, "guard max_customer_drop_pct: 2100 customers, 3000 at the last successful run of mc "
                 "(30 % fewer); limit 20 %"),
    (2400, 3000, None),  # 20 %: the limit itself passes
    (5000, 3000, None),
])
def test_customer_drop_guard(now, before, expected):
    assert customer_drop_line(G, now, before, "mc") == expected


@pytest.mark.parametrize("stats, expected", [
    (PlanStats(managed=266, removed=266, changed=266),
     ["guard max_removal_pct: 266 of 266 managed contacts (100 %) would lose their tags; limit 10 %",
      "guard max_change_pct: 266 of 266 managed contacts (100 %) would change; limit 50 %"]),
    (PlanStats(managed=100, removed=10, changed=50), []),
    (PlanStats(managed=100, removed=11, changed=20),
     ["guard max_removal_pct: 11 of 100 managed contacts (11 %) would lose their tags; limit 10 %"]),
    (PlanStats(managed=8, removed=0, changed=5),
     ["guard max_change_pct: 5 of 8 managed contacts (62.5 %) would change; limit 50 %"]),
    (PlanStats(managed=0, removed=0, changed=0), []),  # the first sync of an empty destination
])
def test_plan_guards(stats, expected):
    assert plan_lines(G, stats) == expected


def _plan(*changes: ContactChange) -> Plan:
    return Plan(destination="mc", type="mailchimp", changes=tuple(changes), skipped=(),
                managed_tags=("VIP", "Winback"), fields={"SEG": "segment"}, ledger_revision=1)


def _state(key: str, tags: set[str], **fields) -> PushedState:
    return PushedState(key=key, customer_id=key, tags=frozenset(tags), fields=fields)


def test_plan_stats_counts_what_really_changes_for_managed_contacts():
    state = {"a": _state("a", {"VIP"}, SEG="Best"), "b": _state("b", {"Winback"}, SEG="Churn"),
             "c": _state("c", {"VIP"}, SEG="Best"), "d": _state("d", {"Hand picked"}),
             "e": _state("e", {"VIP"}, SEG="Best")}
    plan = _plan(
        ContactChange("a", "a", "a", "", False, None, remove_tags=frozenset({"VIP"})),  # loses every tag
        ContactChange("b", "b", "b", "VIP", False, None, add_tags=frozenset({"VIP"}),  # moves: not a removal
                      remove_tags=frozenset({"Winback"}), set_fields={"SEG": "Best"}),
        ContactChange("c", "c", "c", "VIP", False, None, add_tags=frozenset({"VIP"}),  # a --full-refresh re-send
                      set_fields={"SEG": "Best"}),
        ContactChange("n", "n", "n", "VIP", True, "transactional", add_tags=frozenset({"VIP"})),  # new contact
    )
    assert plan_stats(plan, state) == PlanStats(managed=4, removed=1, changed=2)


def test_old_tags_left_on_contacts_do_not_dilute_a_removal_of_the_managed_ones():
    """A mapping trimmed to "Winback": "VIP" is no longer managed and stays on its holders (until retire_tags). A
    bad day takes "Winback" off all of its holders: 2 of 2 managed contacts, not 2 of the 6 rfmsync ever tagged
    (before: every holder of any tag it pushed counted, so a mass removal passed under max_removal_pct). The one
    the plan gives "Winback" while he holds "VIP" only is one of them (a re-tag), as is a rename's every holder."""
    state = {"w1": _state("w1", {"Winback"}), "w2": _state("w2", {"Winback"}), "v1": _state("v1", {"VIP"}),
             "v2": _state("v2", {"VIP"}), "v3": _state("v3", {"VIP"}), "v4": _state("v4", {"VIP"}, SEG="Best")}
    plan = Plan(destination="mc", type="mailchimp", managed_tags=("Winback",), fields={"SEG": "segment"},
                ledger_revision=1, skipped=(), changes=(
                    ContactChange("w1", "w1", "w1", "", False, None, remove_tags=frozenset({"Winback"})),
                    ContactChange("w2", "w2", "w2", "", False, None, remove_tags=frozenset({"Winback"})),
                    ContactChange("v1", "v1", "v1", "Churn", False, None, add_tags=frozenset({"Winback"})),
                    ContactChange("v4", "v4", "v4", "Loyal", False, None, set_fields={"SEG": "Loyal"})))
    stats = plan_stats(plan, state)
    assert stats == PlanStats(managed=3, removed=2, changed=3, retagged=1)
    # the line's "managed contacts" are not all holders of "Winback": it says which is which (the refusal as before)
    assert plan_lines(G, stats)[0] == ("guard max_removal_pct: 2 of 3 managed contacts (66.7 %) would lose their "
                                       "tags; limit 10 %; of the 3 managed contacts, 1 is re-tagged from tags no "
                                       "longer managed (holding no managed tag yet)")


def test_a_field_that_drifts_by_itself_is_not_a_change_but_the_others_are():
    """recency_days grows by one a day for every customer, the models' numbers move with the day and each refit:
    their new values alone do not count towards max_change_pct; a field of another value still does."""
    fields = {"SEG": "segment", "DAYS": "recency_days", "ALIVE": "p_alive", "CLV": "clv"}
    state = {k: _state(k, {"VIP"}, SEG="Best", DAYS=10, ALIVE=0.91, CLV="120.00") for k in "abc"}
    plan = Plan(destination="mc", type="mailchimp", managed_tags=("VIP", "Winback"), fields=fields,
                ledger_revision=1, skipped=(), changes=(
                    ContactChange("a", "a", "a", "VIP", False, None,
                                  set_fields={"DAYS": 11, "ALIVE": 0.9, "CLV": "119.50"}),  # a day later
                    ContactChange("b", "b", "b", "VIP", False, None, set_fields={"DAYS": 11, "SEG": "Other"}),
                ))
    assert plan_stats(plan, state) == PlanStats(managed=3, removed=0, changed=1)


# ------------------------------------------------------------------------------------------- end to end


@pytest.fixture
def shop(tmp_path, mailchimp_fake, monkeypatch) -> Path:
    """The 250-customer demo shop synced once (as of AS_OF) through `rfmsync sync`."""
    path = make_shop(tmp_path / "shop", mailchimp_fake, monkeypatch)
    run_cli("sync", "--config", str(path), "--as-of", AS_OF.isoformat())
    return path


def run_cli(*args: str, code: int = 0):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result


def audience(fake) -> dict:
    """Everything the fake holds for the audience: members (status, merge fields) and segment members."""
    lst = fake.lists["aud1"]
    return {"members": json.dumps(lst.members, sort_keys=True, default=str),
            "segments": {s["name"]: sorted(s["members"]) for s in lst.segments.values()}}


def set_guards(path: Path, **values) -> None:
    body = "".join(f"{k} = {v}\n" for k, v in values.items())
    path.write_text(path.read_text(encoding="utf-8") + f"\n[guards]\n{body}", encoding="utf-8")


def swap_tags(path: Path) -> None:
    """Swap the tags of two segments in the mapping: every contact of both moves tags (a mass change)."""
    text = path.read_text(encoding="utf-8")
    text = text.replace('"Falling asleep" = "Winback soft"', '"Falling asleep" = "@"')
    text = text.replace('"Churn" = "Winback"', '"Churn" = "Winback soft"').replace('"@"', '"Winback"')
    path.write_text(text, encoding="utf-8")


def month_first(path: Path, every: int = 1) -> None:
    """Rewrite the export's dates month-first (05.07.2023 → 07/05/2023) on every ``every``-th data row: the
    reader cannot parse them."""
    orders = path.parent / "orders.csv"
    header, *rows = orders.read_text(encoding="utf-8-sig").splitlines(keepends=True)
    rows = [re.sub(r"(\d\d)\.(\d\d)\.(\d{4})", r"\2/\1/\3", r) if i % every == 0 else r for i, r in enumerate(rows)]
    orders.write_text(header + "".join(rows), encoding="utf-8")


def truncate(path: Path, share: float = 0.4) -> None:
    """Cut the export after a whole row, as an interrupted download that ended on a row's line break does (cut
    mid-row and fresh, it is a copy under way: exit 3 until [source] quiet_seconds pass, test_files_copy_pause)."""
    orders = path.parent / "orders.csv"
    data = orders.read_bytes()
    orders.write_bytes(data[:data.rindex(b"\n", 0, int(len(data) * share)) + 1])


def runs_of(path: Path) -> list[dict]:
    return json.loads(run_cli("runs", "--config", str(path), "--format", "json").output)


def assert_refused(path: Path, fake, before: dict, writes: int, result, *lines: str, code: int = 6) -> None:
    assert result.exit_code == code, result.output
    for line in lines:
        assert line in result.output
    assert audience(fake) == before and fake.write_calls == writes, "a refused run wrote to the ESP"
    last = next(r for r in runs_of(path) if r["kind"] == "sync")
    assert last["status"] == "refused" and last["destination"] == DEST
    assert all(line in last["error"] for line in lines)


def test_a_month_first_export_is_refused_by_the_data_guards(shop, mailchimp_fake):
    before, writes = audience(mailchimp_fake), mailchimp_fake.write_calls
    month_first(shop, every=3)  # a third of the rows: the file reads, the share of bad rows trips the guard
    line = "guard max_bad_rows_pct: 294 of 871 rows (33.8 %) are bad; limit 5 %"
    result = run_cli("sync", "--config", str(shop), "--as-of", AS_OF.isoformat(), code=6)
    assert_refused(shop, mailchimp_fake, before, writes, result, line)
    # the data guards hold even when a mass change is allowed
    again = run_cli("sync", "--config", str(shop), "--as-of", AS_OF.isoformat(), "--allow-mass-change", code=6)
    assert_refused(shop, mailchimp_fake, before, writes, again, line)
    # and `check` stops a `check && sync` cron line first
    check = run_cli("check", "--config", str(shop), code=3)
    assert line in check.output


def test_an_export_with_every_date_month_first_is_a_bad_file_and_a_refused_run(shop, mailchimp_fake):
    before, writes = audience(mailchimp_fake), mailchimp_fake.write_calls
    month_first(shop)  # every row: the file is not usable at all (exit 3), and says which date_format reads it
    result = run_cli("sync", "--config", str(shop), "--as-of", AS_OF.isoformat(), code=3)
    assert_refused(shop, mailchimp_fake, before, writes, result, "871 of 871 rows have a date in column",
                   'set [source] date_format = "%m/%d/%Y %H:%M"', code=3)
    assert "date_format" in run_cli("check", "--config", str(shop), code=3).output


def test_too_few_orders_refuses(shop, mailchimp_fake):
    set_guards(shop, min_orders=100000)
    before, writes = audience(mailchimp_fake), mailchimp_fake.write_calls
    result = run_cli("sync", "--config", str(shop), "--as-of", AS_OF.isoformat(), "--allow-mass-change", code=6)
    assert_refused(shop, mailchimp_fake, before, writes, result, "guard min_orders: ",
                   "valid orders; at least 100000 needed")


def test_bad_rows_share_alone_refuses(shop, mailchimp_fake):
    set_guards(shop, max_bad_rows_pct=0.5, max_removal_pct=100, max_change_pct=100)  # the demo has 6 of 871
    before, writes = audience(mailchimp_fake), mailchimp_fake.write_calls
    result = run_cli("sync", "--config", str(shop), "--as-of", AS_OF.isoformat(), code=6)
    assert_refused(shop, mailchimp_fake, before, writes, result,
                   "guard max_bad_rows_pct: 6 of 871 rows (0.7 %) are bad; limit 0.5 %")


def test_a_truncated_export_is_refused_by_the_customer_drop_guard(shop, mailchimp_fake):
    set_guards(shop, max_removal_pct=100, max_change_pct=100)  # only the data guard is left to catch it
    before, writes = audience(mailchimp_fake), mailchimp_fake.write_calls
    truncate(shop)
    result = run_cli("sync", "--config", str(shop), "--as-of", AS_OF.isoformat(), code=6)
    assert_refused(shop, mailchimp_fake, before, writes, result, "guard max_customer_drop_pct: ",
                   f"at the last successful run of {DEST}")
    counts = next(r for r in runs_of(shop) if r["status"] == "succeeded" and r["kind"] == "sync")["counts"]
    assert counts["customers"] > 0  # what the refused run compared with


def test_removals_are_refused_unless_allowed_once(shop, mailchimp_fake):
    set_guards(shop, max_change_pct=100)
    truncate(shop, 0.05)  # most customers vanish: their tags would be taken off
    set_guards_text = shop.read_text(encoding="utf-8")
    shop.write_text(set_guards_text.replace("max_change_pct = 100\n", "max_change_pct = 100\n"
                                            "max_customer_drop_pct = 100\n"), encoding="utf-8")
    before, writes = audience(mailchimp_fake), mailchimp_fake.write_calls
    result = run_cli("sync", "--config", str(shop), "--as-of", AS_OF.isoformat(), code=6)
    assert_refused(shop, mailchimp_fake, before, writes, result, f"{DEST}: guard max_removal_pct: ",
                   "managed contacts", "would lose their tags; limit 10 %")
    plan = run_cli("plan", "--config", str(shop), "--as-of", AS_OF.isoformat(), "--format", "json")
    assert any("guard max_removal_pct" in w for w in json.loads(plan.stdout)["warnings"])
    run_cli("sync", "--config", str(shop), "--as-of", AS_OF.isoformat(), "--allow-mass-change")
    assert mailchimp_fake.write_calls > writes
    assert next(r for r in runs_of(shop) if r["kind"] == "sync")["status"] == "succeeded"


def test_mass_changes_are_refused_warned_by_plan_and_allowed_once(shop, mailchimp_fake, tmp_path):
    set_guards(shop, max_change_pct=5)
    swap_tags(shop)
    later = AS_OF.isoformat()
    before, writes = audience(mailchimp_fake), mailchimp_fake.write_calls
    result = run_cli("sync", "--config", str(shop), "--as-of", later, code=6)
    assert_refused(shop, mailchimp_fake, before, writes, result, f"{DEST}: guard max_change_pct: ",
                   "managed contacts", "would change; limit 5 %")
    # `plan` and `sync --dry-run` say the same as warnings and exit 0
    plan = run_cli("plan", "--config", str(shop), "--as-of", later)
    assert "warning: mailchimp-demo: guard max_change_pct: " in plan.output
    assert "guard max_change_pct" in run_cli("sync", "--config", str(shop), "--as-of", later, "--dry-run").output
    # a saved plan is checked again at apply time, against the ledger as it is then
    saved = tmp_path / "mass.json"
    run_cli("plan", "--config", str(shop), "--as-of", later, "-o", str(saved))
    assert "guard max_change_pct" in run_cli("apply", "--config", str(shop), str(saved), code=6).output
    assert audience(mailchimp_fake) == before and mailchimp_fake.write_calls == writes
    assert next(r for r in runs_of(shop))["kind"] == "apply"
    run_cli("apply", "--config", str(shop), str(saved), "--allow-mass-change")
    assert mailchimp_fake.write_calls > writes


def test_a_saved_plan_of_a_broken_export_is_refused_at_apply(shop, mailchimp_fake, tmp_path):
    month_first(shop, every=3)
    line = "guard max_bad_rows_pct: 294 of 871 rows (33.8 %) are bad; limit 5 %"
    saved = tmp_path / "broken.json"
    plan = run_cli("plan", "--config", str(shop), "--as-of", AS_OF.isoformat(), "-o", str(saved), "--format", "json")
    doc = json.loads(plan.stdout)
    assert doc["data"]["orders"] == 577 and doc["data"]["bad_rows"] == 294
    assert line in doc["warnings"]
    before, writes = audience(mailchimp_fake), mailchimp_fake.write_calls
    result = run_cli("apply", "--config", str(shop), str(saved), "--allow-mass-change", code=6)
    assert line in result.output
    assert audience(mailchimp_fake) == before and mailchimp_fake.write_calls == writes


def test_the_first_sync_of_an_empty_destination_is_not_a_mass_change(tmp_path, mailchimp_fake, monkeypatch):
    path = make_shop(tmp_path / "shop", mailchimp_fake, monkeypatch)
    set_guards(path, max_removal_pct=0, max_change_pct=0)
    run_cli("sync", "--config", str(path), "--as-of", AS_OF.isoformat())
    assert mailchimp_fake.write_calls > 0
    assert runs_of(path)[0]["status"] == "succeeded"


@pytest.mark.parametrize("command", [["sync"], ["plan"], ["sync", "--dry-run"], ["apply", "PLAN"]])
def test_no_destinations_is_a_config_error(tmp_path, mailchimp_fake, monkeypatch, command):
    path = make_shop(tmp_path / "shop", mailchimp_fake, monkeypatch)
    text = path.read_text(encoding="utf-8")
    path.write_text(text[:text.index("[[destinations]]")] + text[text.index("[serve]"):], encoding="utf-8")
    plan_file = tmp_path / "p.json"
    plan_file.write_text(json.dumps({"version": 1, "plans": []}), encoding="utf-8")
    args = [str(plan_file) if a == "PLAN" else a for a in command]
    result = run_cli(*args, "--config", str(path), code=2)
    assert "no [" in result.output and f"in {path}" in result.output  # no [[destinations]] in CONFIG
    with pytest.raises(ConfigError) as info:
        require_destinations(load_config(path))
    assert str(info.value) == f"no [[destinations]] in {path}"
    assert mailchimp_fake.write_calls == 0


def test_a_scheduled_run_never_overrides_and_shows_in_runs_and_metrics(shop, mailchimp_fake):
    from sync.serve.service import Service

    set_guards(shop, max_change_pct=5)
    swap_tags(shop)
    cfg, settings = load_config(shop), load_settings()
    before, writes = audience(mailchimp_fake), mailchimp_fake.write_calls
    with open_ledger(cfg, settings) as ledger:
        with pytest.raises(GuardRefusedError) as info:
            run_full_sync(cfg, ledger, settings, as_of=AS_OF)  # kind "scheduled"
        assert info.value.exit_code == 6 and info.value.destinations == [DEST]
        service = Service(cfg, settings, ledger, schedule=False)
        now = datetime(2025, 10, 28, 3, 0, tzinfo=timezone.utc)
        scheduler = Scheduler(cfg, ledger, settings, schedule=Schedule(every=timedelta(hours=1)),
                              clock=lambda: now, metrics=service.metrics,
                              job=lambda: run_full_sync(cfg, ledger, settings, as_of=AS_OF))
        assert scheduler.tick(now + timedelta(hours=1)) is False
        assert audience(mailchimp_fake) == before and mailchimp_fake.write_calls == writes
        with live_server(service.app) as base:
            runs = requests.get(f"{base}/runs", timeout=10).json()
            metrics = requests.get(f"{base}/metrics", timeout=10).text
    runs = [r for r in runs if r["destination"] == DEST]
    assert [(r["kind"], r["status"]) for r in runs[:3]] == [("scheduled", "refused"), ("scheduled", "refused"),
                                                            ("sync", "succeeded")]
    assert "guard max_change_pct" in runs[0]["error"]
    assert 'rfmsync_scheduled_syncs_total{outcome="refused"} 1' in metrics
    assert f'rfmsync_guard_refusals_total{{destination="{DEST}"}} 1' in metrics


def test_a_webhook_resync_never_overrides(shop, mailchimp_fake):
    from decimal import Decimal

    from connectors.records import Order

    set_guards(shop, max_change_pct=0, min_mass_change=1)  # any change to a managed contact is a mass change here
    cfg, settings = load_config(shop), load_settings()
    before, writes = audience(mailchimp_fake), mailchimp_fake.write_calls
    with open_ledger(cfg, settings) as ledger:
        _, cid = churned_contact(ledger)
        order = Order(order_id="W-1", customer_id=cid, amount=Decimal("990000"),
                      ordered_at=datetime(2025, 6, 29, 12, tzinfo=timezone.utc))
        with pytest.raises(GuardRefusedError, match="guard max_change_pct: 1 of"):
            resync(cfg, ledger, settings, [order], as_of=AS_OF)
        assert ledger.recent_runs(1)[0]["status"] == "refused" and ledger.recent_runs(1)[0]["kind"] == "webhook"
    assert audience(mailchimp_fake) == before and mailchimp_fake.write_calls == writes


def test_guards_are_documented():
    readme = "".join((Path(__file__).resolve().parents[1] / "docs" / name).read_text(encoding="utf-8")
                     for name in ("safety.md", "configuration.md"))
    example = (Path(__file__).resolve().parents[1] / "examples" / "rfmsync.toml").read_text(encoding="utf-8")
    for key in GuardsConfig.model_fields:
        assert key in readme and key in example, key
    assert "--allow-mass-change" in readme and "| 6 |" in readme
    uncounted = readme[readme.index("nor a new value of a field mapped to"):][:300]
    assert all(f"`{name}`" in uncounted for name in DRIFTING_VALUES), uncounted
    for command in ("sync", "apply"):
        assert "--allow-mass-change" in CliRunner().invoke(main, [command, "--help"]).output


def test_a_daily_sync_of_fields_that_drift_is_not_refused(tmp_path, mailchimp_fake, monkeypatch):
    """Fields mapped to recency_days and the models' numbers change for every customer every day: the next day's
    sync, and a scheduled one (never overridden), go through instead of being refused every day from then on."""
    path = make_shop(tmp_path / "shop", mailchimp_fake, monkeypatch)
    path.write_text(path.read_text(encoding="utf-8").replace(
        'RFM_CODE = "rfm"', 'RFM_CODE = "rfm"\nRECENCY = "recency_days"\nALIVE = "p_alive"\nCLV = "clv"\n'
                            'CHURNP = "churn_probability"\nEXPP = "expected_purchases"\nAOV = "expected_aov"'),
        encoding="utf-8")
    run_cli("sync", "--config", str(path), "--as-of", AS_OF.isoformat())
    members = mailchimp_fake.lists["aud1"].members.values()
    days = {m["email_address"]: int(m["merge_fields"]["RECENCY"]) for m in members}
    next_day = AS_OF + timedelta(days=1)
    run_cli("sync", "--config", str(path), "--as-of", next_day.isoformat())
    assert {m["email_address"]: int(m["merge_fields"]["RECENCY"]) for m in members} == {
        k: d + 1 for k, d in days.items()}
    assert next(r for r in runs_of(path) if r["kind"] == "sync")["status"] == "succeeded"
    cfg, settings = load_config(path), load_settings()
    with open_ledger(cfg, settings) as ledger:
        run_full_sync(cfg, ledger, settings, as_of=next_day + timedelta(days=1))  # kind "scheduled"
    assert {m["email_address"]: int(m["merge_fields"]["RECENCY"]) for m in members} == {
        k: d + 2 for k, d in days.items()}
