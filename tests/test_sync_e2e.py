"""End to end: demo data → plan → sync against the stateful fake Mailchimp on 127.0.0.1, through the CLI."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from sync.cli import main
from sync.demodata import generate_shop
from sync.ledger import Ledger

AS_OF = "2025-06-30"


@pytest.fixture
def shop(tmp_path, mailchimp_fake, monkeypatch):
    from datetime import date

    cfg = generate_shop(tmp_path / "shop", customers=250, seed=3, as_of=date.fromisoformat(AS_OF))
    text = cfg.read_text(encoding="utf-8").replace('audience = "demo000001"', 'audience = "aud1"')
    text = text.replace('RFM_CODE = "rfm"', 'RFM_CODE = "rfm"\nRFM_R = "r"\nCHURN = "churn_risk"')
    cfg.write_text(text, encoding="utf-8")
    monkeypatch.setenv("MAILCHIMP_API_KEY", mailchimp_fake.api_key)
    monkeypatch.setenv("MAILCHIMP_API_URL", mailchimp_fake.url)
    return cfg


def cli(*args: str, ok: bool = True):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def planned(cfg: Path, tmp: Path) -> dict:
    out = tmp / "plan.json"
    cli("plan", "--config", str(cfg), "--as-of", AS_OF, "-o", str(out), "--format", "json")
    return json.loads(out.read_text())["plans"][0]


def assert_audience_matches(fake, plan: dict, exclude: set[str] = frozenset()):
    wanted = {c["key"]: c for c in plan["changes"]}
    for key, c in wanted.items():
        if key in exclude:
            continue
        assert fake.tags_of(key) & set(plan["managed_tags"]) == set(c["add_tags"]), key
        merge = fake.member(key)["merge_fields"]
        for tag, value in c["set_fields"].items():
            assert str(merge[tag]) == str(value), (key, tag)


def test_plan_writes_nothing_then_sync_creates_exactly_the_plan_and_rerun_writes_nothing(shop, mailchimp_fake,
                                                                                         tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    # a member who unsubscribed earlier, with a tag the user added by hand
    cli("plan", "--config", str(shop), "--as-of", AS_OF, "--format", "json")
    assert not (shop.parent / "rfmsync.db").exists()  # a plan not saved writes nothing, not even a ledger
    plan = planned(shop, tmp_path)
    assert mailchimp_fake.write_calls == 0
    # a saved plan makes the ledger, with nothing in it but the id the plan names (docs/sync.md#plan)
    with Ledger.connect(f"sqlite:///{shop.parent / 'rfmsync.db'}") as ledger:
        assert ledger.state_revision("mailchimp-demo") == 0 and not ledger.load_state("mailchimp-demo")
        assert ledger.ledger_id() == json.loads((tmp_path / "plan.json").read_text())["ledger_id"] is not None
    victim = next(c["key"] for c in plan["changes"] if c["add_tags"])
    mailchimp_fake.add_member(victim, status="unsubscribed", tags=["Hand picked"])

    out = cli("-vv", "sync", "--config", str(shop), "--as-of", AS_OF).output
    assert mailchimp_fake.api_key not in out
    assert mailchimp_fake.api_key not in caplog.text and "sync mailchimp-demo" in caplog.text
    assert_audience_matches(mailchimp_fake, plan)
    assert mailchimp_fake.member(victim)["status"] == "unsubscribed"
    assert "Hand picked" in mailchimp_fake.tags_of(victim)
    assert not mailchimp_fake.violations
    # every created member got a status its consent allows
    for c in plan["changes"]:
        if c["create"] and c["key"] != victim:
            assert mailchimp_fake.member(c["key"])["status"] == c["status_if_new"]

    writes = mailchimp_fake.write_calls
    cli("sync", "--config", str(shop), "--as-of", AS_OF)
    assert mailchimp_fake.write_calls == writes, "a second run with no change must not write"
    again = planned(shop, tmp_path)
    assert again["changes"] == []

    runs = json.loads(cli("runs", "--config", str(shop), "--format", "json").output)
    assert [r["status"] for r in runs if r["kind"] == "sync"] == ["succeeded", "succeeded"]


def test_per_member_errors_are_recorded_and_retried_until_convergence(shop, mailchimp_fake, tmp_path, monkeypatch):
    plan = planned(shop, tmp_path)
    keys = [c["key"] for c in plan["changes"]]
    bad = set(keys[::3])  # ~30 % of contacts fail on the first run
    for k in bad:
        mailchimp_fake.member_errors[k] = "Invalid Resource"
    mailchimp_fake.fail(429, times=3, retry_after="0")  # and some throttling on top
    monkeypatch.setenv("RFMSYNC_HTTP_MAX_WAIT_SECONDS", "0")  # (a "retry now" still waits the back-off: none here)

    first = cli("sync", "--config", str(shop), "--as-of", AS_OF, ok=False)
    assert first.exit_code == 4
    pending = json.loads(cli("failures", "--config", str(shop), "--format", "json").output)
    assert {p["key"] for p in pending} == bad
    assert all(p["last_error"] for p in pending)
    assert_audience_matches(mailchimp_fake, plan, exclude=bad)

    mailchimp_fake.member_errors.clear()
    cli("sync", "--config", str(shop), "--as-of", AS_OF)
    assert_audience_matches(mailchimp_fake, plan)
    assert json.loads(cli("failures", "--config", str(shop), "--format", "json").output) == []


def test_saved_plan_is_applied_exactly_and_refused_when_stale(shop, mailchimp_fake, tmp_path):
    plan_file = tmp_path / "p.json"
    cli("sync", "--config", str(shop), "--as-of", AS_OF)  # creates the ledger
    mailchimp_fake.member(next(iter(mailchimp_fake.lists["aud1"].members)))  # audience populated
    cli("plan", "--config", str(shop), "--as-of", AS_OF, "--full-refresh", "-o", str(plan_file))
    before = mailchimp_fake.write_calls
    cli("apply", "--config", str(shop), str(plan_file))
    assert mailchimp_fake.write_calls > before
    stale = cli("apply", "--config", str(shop), str(plan_file), ok=False)
    assert stale.exit_code == 5 and "changed since this plan was made" in stale.output


def test_missing_credentials_is_a_config_error_without_secrets(shop, monkeypatch):
    monkeypatch.delenv("MAILCHIMP_API_KEY")
    result = cli("sync", "--config", str(shop), "--as-of", AS_OF, ok=False)
    assert result.exit_code == 2
    assert "MAILCHIMP_API_KEY is not set" in result.output


def test_killed_mid_run_resumes_without_repeating_completed_calls(shop, mailchimp_fake, tmp_path):
    plan = planned(shop, tmp_path)
    mailchimp_fake.latency = 0.3  # slow calls so the kill lands mid-run
    env = dict(os.environ, MAILCHIMP_API_KEY=mailchimp_fake.api_key, MAILCHIMP_API_URL=mailchimp_fake.url)
    proc = subprocess.Popen([sys.executable, "-m", "sync", "sync", "--config", str(shop), "--as-of", AS_OF],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while mailchimp_fake.write_calls < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    done_before = dict(mailchimp_fake.calls)
    mailchimp_fake.latency = 0.0
    cli("sync", "--config", str(shop), "--as-of", AS_OF)
    assert_audience_matches(mailchimp_fake, plan)
    # the resumed run re-sent no tag call that had completed before the kill
    for key, n in done_before.items():
        if "/segments/" in key and key.startswith("POST"):
            assert mailchimp_fake.calls[key] >= n
    tag_calls = sum(n for k, n in mailchimp_fake.calls.items() if k.startswith("POST") and "/segments/" in k
                    and not k.endswith("/segments"))
    tags = {t for c in plan["changes"] for t in c["add_tags"]}
    assert tag_calls <= len(tags) * 2 + 2  # minimum is one call per tag; a kill may split at most one more each


def test_reconcile_repairs_drift_on_managed_tags_only(shop, mailchimp_fake, tmp_path):
    plan = planned(shop, tmp_path)
    cli("sync", "--config", str(shop), "--as-of", AS_OF)
    lst = mailchimp_fake.lists["aud1"]
    seg_by_name = {s["name"]: s for s in lst.segments.values()}
    tagged = next(c for c in plan["changes"] if c["add_tags"])
    tag = tagged["add_tags"][0]
    other_tag = next(t for t in plan["managed_tags"] if t != tag)
    seg_by_name[tag]["members"].discard(tagged["key"])  # removed by hand in Mailchimp
    seg_by_name[other_tag]["members"].add(tagged["key"])  # added by hand
    mailchimp_fake.add_segment("Hand list", [tagged["key"]])  # an unmanaged tag
    writes = mailchimp_fake.write_calls
    cli("sync", "--config", str(shop), "--as-of", AS_OF)
    assert mailchimp_fake.write_calls == writes  # the ledger alone does not see drift
    cli("sync", "--config", str(shop), "--as-of", AS_OF, "--reconcile")
    assert mailchimp_fake.tags_of(tagged["key"]) == {tag, "Hand list"}


def test_predictive_fields_are_pushed_when_mapped(shop, mailchimp_fake, tmp_path):
    plan = planned(shop, tmp_path)
    risks = {c["set_fields"].get("CHURN") for c in plan["changes"] if c["create"]}
    assert risks <= {"low", "medium", "high", None} and risks & {"low", "medium", "high"}
    cli("sync", "--config", str(shop), "--as-of", AS_OF)
    assert_audience_matches(mailchimp_fake, plan)


def _audience(fake, list_id: str = "aud1") -> dict:
    lst = fake.lists[list_id]
    return {"members": json.dumps(lst.members, sort_keys=True, default=str),
            "segments": {s["name"]: sorted(s["members"]) for s in lst.segments.values()}}


def _month_first(orders: Path) -> None:
    import re

    text = orders.read_text(encoding="utf-8-sig")
    orders.write_text(re.sub(r"(\d\d)\.(\d\d)\.(\d{4})", r"\2/\1/\3", text), encoding="utf-8")


def _truncated(orders: Path) -> None:
    """Cut short after a whole row (one cut mid-line and fresh is a copy under way: exit 3, test_files_copy_pause)."""
    data = orders.read_bytes()
    orders.write_bytes(data[:data.rindex(b"\n", 0, len(data) // 4) + 1])


def _empty(orders: Path) -> None:
    orders.write_bytes(b"")


@pytest.mark.parametrize("break_export", [_month_first, _truncated, _empty])
def test_a_broken_export_after_a_good_one_changes_nothing_at_the_esp(shop, mailchimp_fake, break_export):
    """Issue 12 §5: a good export synced, then a broken one: the audience is unchanged and the run refused."""
    cli("sync", "--config", str(shop), "--as-of", AS_OF)
    before, writes = _audience(mailchimp_fake), mailchimp_fake.write_calls
    assert writes > 0 and before["segments"]["Winback"]
    break_export(shop.parent / "orders.csv")
    result = cli("sync", "--config", str(shop), "--as-of", AS_OF, ok=False)
    assert _audience(mailchimp_fake) == before and mailchimp_fake.write_calls == writes, result.output
    runs = json.loads(cli("runs", "--config", str(shop), "--format", "json").output)
    last = next(r for r in runs if r["kind"] == "sync")
    # an unusable file (empty, every date unreadable) is a data error (exit 3); a file that reads but is mostly
    # bad or much smaller trips a guard (exit 6): either way the run is recorded as refused with the reason
    assert result.exit_code in (3, 6), result.output
    assert last["status"] == "refused" and last["error"] and last["error"].split("; ")[0] in result.output


def test_overlapping_full_and_single_destination_syncs_never_send_an_operation_twice(tmp_path, monkeypatch):
    """Issue 13 §7, with two processes: a full `sync` plans both destinations and waits on the first one's
    writes; meanwhile `sync --destination mc` syncs mc completely. When the full sync reaches mc, the ledger has
    moved: it plans mc again (nothing left to do) instead of re-sending mc's operations."""
    import threading
    from datetime import date

    from tests.fakes.http import LoopbackServer
    from tests.fakes.mailchimp import FakeMailchimp

    fake = FakeMailchimp()
    fake.add_list("aud0")
    gate, arrived = threading.Event(), threading.Event()

    def gated(req):
        if req.method == "POST" and req.path == "/3.0/lists/aud0" and not gate.is_set():
            arrived.set()  # the full sync's first write to the other destination: it has planned mc already
            gate.wait(60)
        return fake.handle(req)

    cfg = generate_shop(tmp_path / "shop", customers=250, seed=3, as_of=date.fromisoformat(AS_OF))
    text = cfg.read_text(encoding="utf-8").replace('audience = "demo000001"', 'audience = "aud1"')
    text = text.replace('name = "mailchimp-demo"', 'name = "mc"')
    first = text[text.index("[[destinations]]"):].replace('name = "mc"', 'name = "first"').replace(
        'audience = "aud1"', 'audience = "aud0"')
    cfg.write_text(text[:text.index("[[destinations]]")] + first + "\n" + text[text.index("[[destinations]]"):],
                   encoding="utf-8")
    with LoopbackServer(gated) as server:
        env = dict(os.environ, MAILCHIMP_API_KEY=fake.api_key, MAILCHIMP_API_URL=server.url + "/3.0")
        base = [sys.executable, "-m", "sync", "sync", "--config", str(cfg), "--as-of", AS_OF]
        full = subprocess.Popen(base, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            assert arrived.wait(60), "the full sync never reached its first write"
            single = subprocess.run(base + ["--destination", "mc"], env=env, capture_output=True, timeout=120)
            assert single.returncode == 0, single.stdout + single.stderr
            mc_writes = sum(n for k, n in fake.calls.items() if not k.startswith("GET") and "/lists/aud1" in k)
            assert mc_writes > 0
        finally:
            gate.set()
        out, _ = full.communicate(timeout=120)
        assert full.returncode == 0, out
    after = sum(n for k, n in fake.calls.items() if not k.startswith("GET") and "/lists/aud1" in k)
    assert after == mc_writes, "the full sync re-sent mc's operations"
    subscribed = [m["email_address"] for method, path, _, body in fake.requests
                  if method == "POST" and path == "/lists/aud1" for m in body["members"]]
    assert len(subscribed) == len(set(subscribed)) > 0
    assert fake.lists["aud0"].members  # the full sync did sync the other destination


def test_a_plan_saved_before_a_restore_is_refused_once_the_ledger_is_written_back_to_its_revision(
        shop, mailchimp_fake, tmp_path):
    """A plan saved at revision R, then the ledger file put back from an older copy (revision r < R) and synced
    again up to R: the saved plan is of the history the restore undid and must not pass ``apply``'s revision check.
    The first sync after the restore finds its copy ahead (a restore) and moves the counter past it, so the
    ledger never reads R again. Before, the counter stayed at r and the syncs brought it back to R: the old plan
    was applied."""

    db = shop.parent / "rfmsync.db"

    def revision() -> int:
        with Ledger.connect(f"sqlite:///{db}") as ledger:
            return ledger.state_revision("mailchimp-demo")

    cli("sync", "--config", str(shop), "--as-of", "2025-03-31")
    backup = {p.name: p.read_bytes() for p in shop.parent.glob("rfmsync.db*") if p.is_file()}
    restored_to = revision()
    cli("sync", "--config", str(shop), "--as-of", AS_OF)
    plan_file = tmp_path / "p.json"
    cli("plan", "--config", str(shop), "--as-of", "2025-09-30", "-o", str(plan_file), "--format", "json")
    saved_at = json.loads(plan_file.read_text())["plans"][0]["ledger_revision"]
    assert saved_at == revision() > restored_to
    for p in shop.parent.glob("rfmsync.db*"):  # the older file back (the cache folder beside it kept)
        if p.is_file():
            p.unlink()
    for name, data in backup.items():
        (shop.parent / name).write_bytes(data)
    assert revision() == restored_to
    cli("sync", "--config", str(shop), "--as-of", AS_OF)  # the same changes again: as many saves as before
    assert revision() >= saved_at
    before = mailchimp_fake.write_calls
    stale = cli("apply", "--config", str(shop), str(plan_file), ok=False)
    assert stale.exit_code == 5 and "changed since this plan was made" in stale.output
    assert mailchimp_fake.write_calls == before
