"""Kept out by the contact's own choice in the ESP (uni27 #1): he unsubscribed from the list (or from all mailings,
or the ESP blocked his address; Mailchimp: a compliance state). Not a failure: the run ends ``succeeded`` with a
``kept_out`` count, ``rfmsync failures`` does not list him (``--kept-out`` does), the ledger records it and the next
plans leave it out: he is not read nor sent again every night, and a later ``yes`` in the source never
resubscribes him."""

from __future__ import annotations

import random

import pytest

from connectors.retry import RetryPolicy
from sync.config import Config
from sync.destinations.mailchimp import MailchimpDestination
from sync.destinations.unisender import UnisenderDestination
from sync.engine import execute_plan
from sync.ledger import Ledger
from sync.model import ContactChange, ItemResult, PushedState
from sync.planning.kept_out import without_kept_out
from sync.planning.plan import Plan
from sync.planning.planner import plan_one

from tests.ledger_fixtures import ledger_url  # noqa: F401

RETRY = RetryPolicy(attempts=2, sleep=lambda s: None, rng=random.Random(0))


def _night(cfg, rows, ledger, client, full_refresh=False, **kw):
    planned = plan_one(cfg, cfg.destinations[0], rows, ledger, None, None, full_refresh=full_refresh,
                       reconcile=False, forget_kept=True, **kw)  # a sync's plan: applied, it forgets what is no
    return planned.plan, execute_plan(planned.plan, client, ledger, forget=planned.forget)  # longer wanted


@pytest.mark.parametrize("where", ["list", "address"])
def test_a_unisender_contact_who_left_is_kept_out_once_and_every_later_run_ends_ok(  # noqa: F811
        unisender_fake, ledger_url, where):
    """Night 1: a pending contact Unisender shows unsubscribed (from the list, or his address) is not invited: his
    list add is kept out (the run ``succeeded``, exit 0: it was ``partial`` every night, exit 4), the failure an
    older rfmsync recorded for it is resolved. Night 2: nothing planned, no read, no call. Night 3: the source now
    says ``yes`` (he would be ``subscribed``: imported without a read): the list is not sent (never resubscribed)."""
    cfg = Config(destinations=[{"name": "uni", "type": "unisender", "new_contacts": "pending",
                                "segments": {"Churn": "Champions"}, "fields": {"rfm_segment": "segment"}}])
    client = UnisenderDestination("uni", unisender_fake.api_key, api_url=unisender_fake.api_url, timeout=5,
                                  retry=RETRY)
    client.prepare(["list:Champions"], {"rfm_segment": "segment"})
    unisender_fake.add_contact("p@x.com", status="unsubscribed" if where == "address" else "active")
    if where == "list":
        unisender_fake.set_list_status("p@x.com", "Champions", "unsubscribed")
    row = {"customer_id": "c1", "email": "p@x.com", "segment": "Churn", "marketing_consent": "unknown"}
    ledger = Ledger.connect(ledger_url)
    try:
        ledger.record_failures("uni", None, [ItemResult("p@x.com", "tag+list:Champions", False, "he unsubscribed")])
        plan, report = _night(cfg, [row], ledger, client)
        assert [sorted(c.add_tags) for c in plan.changes] == [["list:Champions"]]
        assert report.status == "succeeded" and report.counts["failed"] == 0 and report.counts["kept_out"] == 1
        assert ledger.pending_failures("uni") == []  # the older nightly failure resolved, none recorded
        kept = ledger.kept_out_list("uni")
        assert [(k["key"], k["op"]) for k in kept] == [("p@x.com", "tag+list:Champions")]
        assert "unsubscribed" in kept[0]["reason"] and kept[0]["run_id"] == report.run_id
        reads = unisender_fake.calls["getContact"]

        plan, report = _night(cfg, [row], ledger, client)
        assert plan.changes == () and report.status == "succeeded" and report.counts["kept_out"] == 0
        assert unisender_fake.calls["getContact"] == reads

        cfg = Config(destinations=[{**cfg.destinations[0].model_dump(exclude_unset=True), "new_contacts": "skip"}])
        moved = {**row, "marketing_consent": "yes"}
        plan, report = _night(cfg, [moved], ledger, client)
        assert all("list:Champions" not in c.add_tags for c in plan.changes)
        assert report.status == "succeeded" and ledger.pending_failures("uni") == []
    finally:
        ledger.close()
    assert unisender_fake.members("Champions") == set() and unisender_fake.invitations == []
    imports = [form for method, form in unisender_fake.requests if method == "importContacts"]
    lid = unisender_fake.list_id("Champions")
    assert not any(lid in v.split(",") for form in imports for k, v in form.items() if k != "data[0][0]")


def test_a_mailchimp_create_refused_for_a_compliance_state_is_kept_out(mailchimp_fake, ledger_url):  # noqa: F811
    """Mailchimp: an address in a compliance state (he unsubscribed or bounced before it left the audience) is
    refused when created ``subscribed``: his create and its tag are kept out (the run ``succeeded``; it was
    ``partial`` every night), and the next night creates him no more. Another contact of the call goes on."""
    cfg = Config(destinations=[{"name": "mc", "type": "mailchimp", "audience": "aud1", "new_contacts": "skip",
                                "segments": {"Churn": "rfm:Champions"}}])
    client = MailchimpDestination("mc", "aud1", mailchimp_fake.api_key, api_url=mailchimp_fake.url, retry=RETRY)
    mailchimp_fake.compliance.add("gone@x.com")
    rows = [{"customer_id": c, "email": f"{c}@x.com", "segment": "Churn", "marketing_consent": "yes"}
            for c in ("gone", "ok")]
    ledger = Ledger.connect(ledger_url)
    try:
        client.prepare(["rfm:Champions"], {})
        plan, report = _night(cfg, rows, ledger, client)
        assert report.status == "succeeded" and report.counts["failed"] == 0 and report.counts["kept_out"] == 2
        assert ledger.pending_failures("mc") == []
        assert sorted(k["op"] for k in ledger.kept_out_list("mc")) == ["tag+rfm:Champions", "upsert"]
        plan, report = _night(cfg, rows, ledger, client)
        assert plan.changes == () and report.status == "succeeded"
    finally:
        ledger.close()
    assert "gone@x.com" not in mailchimp_fake.lists["aud1"].members
    assert "ok@x.com" in mailchimp_fake.lists["aud1"].members


def _came_back_himself(unisender_fake):
    """A consenting contact the ledger holds on Loyal, unsubscribed from Champions in Unisender; his row."""
    cfg = Config(destinations=[{"name": "uni", "type": "unisender", "new_contacts": "subscribed",
                                "segments": {"Churn": "Champions", "Other": "Loyal"},
                                "fields": {"rfm_segment": "segment"}}])
    client = UnisenderDestination("uni", unisender_fake.api_key, api_url=unisender_fake.api_url, timeout=5,
                                  retry=RETRY)
    client.prepare(["list:Champions", "list:Loyal"], {"rfm_segment": "segment"})
    unisender_fake.add_contact("k@x.com", status="active", lists=["Loyal"])
    unisender_fake.set_list_status("k@x.com", "Champions", "unsubscribed")
    return cfg, client, {"customer_id": "c1", "email": "k@x.com", "segment": "Churn", "marketing_consent": "yes"}


def test_a_kept_out_add_that_later_succeeds_is_forgotten(unisender_fake, ledger_url):  # noqa: F811
    """fixu27 #1: he subscribes to Champions again himself, a full refresh reads him and the add succeeds: the
    kept-out row goes (it stayed: ``failures --kept-out`` listed him for ever, and when he later left the segment
    and came back his add was silently dropped, no read, though he consents)."""
    cfg, client, row = _came_back_himself(unisender_fake)
    with Ledger.connect(ledger_url) as ledger:
        ledger.save_states("uni", None, [PushedState("k@x.com", "c1", frozenset({"list:Loyal"}),
                                                     {"rfm_segment": "Loyal"})])
        plan, report = _night(cfg, [row], ledger, client)
        assert report.counts["kept_out"] == 1 and len(ledger.kept_out_list("uni")) == 1
        unisender_fake.set_list_status("k@x.com", "Champions", "active")  # he subscribes again himself
        plan, report = _night(cfg, [row], ledger, client, full_refresh=True)
        assert report.status == "succeeded" and report.counts["kept_out"] == 0
        assert "list:Champions" in ledger.load_state("uni")["k@x.com"].tags
        assert ledger.kept_out_list("uni") == []  # done: no longer kept out
        _night(cfg, [{**row, "segment": "Other"}], ledger, client)  # he leaves: taken off (managed)
        assert "k@x.com" not in unisender_fake.members("Champions")
        plan, report = _night(cfg, [row], ledger, client)  # and comes back: put on it again
        assert [sorted(c.add_tags) for c in plan.changes] == [["list:Champions"]]
    assert "k@x.com" in unisender_fake.members("Champions")


def test_a_kept_out_add_he_no_longer_wants_is_forgotten_and_re_entering_reads_him(unisender_fake,
                                                                                   ledger_url):  # noqa: F811
    """fixu27 #2: kept out of Champions, he subscribes to it again himself: the nightly runs do not read him (the
    add stays kept out). He leaves the segment: the kept-out row goes (the ledger cannot take him off a list it
    never saw him on). He re-enters: read once, put on it (he is there: the ledger learns it), and when he leaves
    again he is taken off (he was never managed on that list again: Champions mail for ever)."""
    cfg, client, row = _came_back_himself(unisender_fake)
    with Ledger.connect(ledger_url) as ledger:
        ledger.save_states("uni", None, [PushedState("k@x.com", "c1", frozenset({"list:Loyal"}),
                                                     {"rfm_segment": "Other"})])
        _night(cfg, [row], ledger, client)
        unisender_fake.set_list_status("k@x.com", "Champions", "active")  # he subscribes again himself
        reads = unisender_fake.calls["getContact"]
        for _ in range(2):
            plan, _ = _night(cfg, [row], ledger, client)
            assert plan.changes == ()
        assert unisender_fake.calls["getContact"] == reads and len(ledger.kept_out_list("uni")) == 1
        _night(cfg, [{**row, "segment": "Other"}], ledger, client)  # he leaves Champions
        assert ledger.kept_out_list("uni") == []
        reads = unisender_fake.calls["getContact"]
        plan, report = _night(cfg, [row], ledger, client)  # he re-enters: read once, the add done
        assert [sorted(c.add_tags) for c in plan.changes] == [["list:Champions"]] and report.counts["kept_out"] == 0
        assert unisender_fake.calls["getContact"] == reads + 1
        assert "list:Champions" in ledger.load_state("uni")["k@x.com"].tags
        plan, report = _night(cfg, [{**row, "segment": "Other"}], ledger, client)  # he leaves again: taken off
        assert [sorted(c.remove_tags) for c in plan.changes] == [["list:Champions"]]
    assert "k@x.com" not in unisender_fake.members("Champions")


def _change(key, create=False, add=(), remove=(), fields=None):
    return ContactChange(key, key, key, "s", create, "subscribed", frozenset(add), frozenset(remove), fields or {})


def test_a_plan_leaves_out_what_is_kept_out_and_keeps_the_rest():
    changes = (_change("a", add={"list:A", "list:B"}, fields={"R": 1}), _change("b", add={"list:A"}),
               _change("c", create=True, add={"list:A"}), _change("d", add={"list:A"}, remove={"list:B"}),
               _change("e", add={"list:A"}))
    plan = Plan("uni", "unisender", changes, (), ("list:A", "list:B"), {}, 0)
    kept = {k: frozenset({"tag+list:A"}) for k in "abd"} | {"c": frozenset({"upsert"}), "zz": frozenset({"upsert"})}
    got = {c.key: c for c in without_kept_out(plan, kept).changes}
    assert sorted(got) == ["a", "d", "e"]  # b: nothing left; c: a create kept out entirely
    assert got["a"].add_tags == {"list:B"} and got["a"].set_fields == {"R": 1}
    assert got["d"].add_tags == frozenset() and got["d"].remove_tags == {"list:B"} and got["e"] == changes[4]
    assert without_kept_out(plan, {}) is plan and without_kept_out(plan, {"zz": frozenset({"upsert"})}) is plan


def test_failures_lists_the_kept_out_only_when_asked(tmp_path, monkeypatch):
    """``rfmsync failures`` lists pending failures only; ``--kept-out`` the operations kept out, with the reason
    (masked as the error columns are)."""
    import json

    from click.testing import CliRunner

    from sync.cli.main import main

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "rfmsync.toml"
    path.write_text('[source]\ntype = "file"\npath = "orders.csv"\n[ledger]\nurl = "sqlite:///ledger.db"\n',
                    encoding="utf-8")
    with Ledger.connect(f"sqlite:///{tmp_path / 'ledger.db'}") as ledger:
        ledger.record_results("uni", None, [ItemResult("a@x.com", "upsert", False, "timeout")])
        ledger.record_kept_out("uni", None, [ItemResult("p@x.com", "tag+list:A", False, "he unsubscribed",
                                                        refused=True, kept_out=True),
                                             ItemResult("q@x.com", "tag+list:A", False, "a failure")])
    runner = CliRunner()
    pending = json.loads(runner.invoke(main, ["failures", "--config", str(path), "--format", "json"]).stdout)
    kept = json.loads(runner.invoke(main, ["failures", "--config", str(path), "--format", "json",
                                           "--kept-out"]).stdout)
    assert [(r["key"], r["op"]) for r in pending] == [("a@x.com", "upsert")]
    assert [(r["destination"], r["key"], r["op"], r["reason"]) for r in kept] == [
        ("uni", "p@x.com", "tag+list:A", "he unsubscribed")]
    table = runner.invoke(main, ["failures", "--config", str(path), "--kept-out"])
    assert table.exit_code == 0 and "Kept out by the contact's own choice (1)" in table.stdout


def test_a_plan_on_a_ledger_it_may_only_read_keeps_the_rows_no_longer_wanted(tmp_path, caplog):
    """fixu27 #2: the plan forgets the kept-out operations it no longer wants; on a ledger this process may only read
    (a dry run against a read-only file or a standby) it says so and plans on (the next sync forgets them)."""
    cfg = Config(destinations=[{"name": "uni", "type": "unisender", "new_contacts": "subscribed",
                                "segments": {"Churn": "Champions", "Other": "Loyal"}}])
    path = tmp_path / "ledger.db"
    with Ledger.connect(f"sqlite:///{path}") as ledger:
        ledger.record_kept_out("uni", None, [ItemResult("k@x.com", "tag+list:Champions", False, "he unsubscribed",
                                                        refused=True, kept_out=True)])
    row = {"customer_id": "c1", "email": "k@x.com", "segment": "Other", "marketing_consent": "yes"}  # he left
    with Ledger.connect(f"sqlite:///file:{path}?mode=ro&uri=true") as ledger:
        planned = plan_one(cfg, cfg.destinations[0], [row], ledger, None, None, full_refresh=False,
                           reconcile=False, forget_kept=True)
        assert [sorted(c.add_tags) for c in planned.plan.changes] == [["list:Loyal"]]
        planned.forget()  # (as its apply forgets them)
        assert len(ledger.kept_out_list("uni")) == 1
    assert "no longer wanted not forgotten" in caplog.text
    with Ledger.connect(f"sqlite:///{path}") as ledger:  # a dry run (``rfmsync plan``) writes nothing to the ledger
        assert plan_one(cfg, cfg.destinations[0], [row], ledger, None, None, full_refresh=False,
                        reconcile=False).forget is None
        assert len(ledger.kept_out_list("uni")) == 1
        planned = plan_one(cfg, cfg.destinations[0], [row], ledger, None, None, full_refresh=False, reconcile=False,
                           forget_kept=True)
        assert len(ledger.kept_out_list("uni")) == 1  # a sync's plan: forgotten once applied, not before its guards
        planned.forget()
        assert ledger.kept_out_list("uni") == []


@pytest.mark.parametrize("n", [3, 6000])
def test_the_outcome_writer_forgets_the_kept_out_operations_done(ledger_url, n):  # noqa: F811
    """fixu27 #1 at the writer: the operations kept out that succeed in an apply lose their row, those that do not
    keep it; a few written contacts' rows are read by key, a large apply's (past BY_KEY_LIMIT) read once."""
    from sync.model import CallResults
    from sync.outcomes import OutcomeWriter

    keys = [f"k{i}@x.com" for i in range(n)]
    with Ledger.connect(ledger_url) as ledger:
        ledger.record_kept_out("uni", None, [ItemResult(k, "tag+list:A", False, "unsub", refused=True, kept_out=True)
                                             for k in keys] + [ItemResult("z@x.com", "upsert", False, "gone",
                                                                          refused=True, kept_out=True)])
        writer = OutcomeWriter(ledger, "uni", None, linger=0)
        writer.submit([], CallResults([("tag+list:A", keys[1:]), ("upsert", ["k0@x.com"])],
                                      [ItemResult("z@x.com", "tag+list:A", True)]))
        writer.close()
        assert {(r["key"], r["op"]) for r in ledger.kept_out_list("uni")} == {("k0@x.com", "tag+list:A"),
                                                                             ("z@x.com", "upsert")}
