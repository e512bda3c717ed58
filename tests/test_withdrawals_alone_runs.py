"""The run that sends a held plan's consent withdrawals alone (docs/safety.md, "Consent withdrawals") changes the
withdrawn contacts and nothing else: not the lost-tag memory of the others, not the ESP's fields and tags, not the
``max_customer_drop_pct`` baseline, not the scheduler's catch-up; a saved plan's hand-listed keys do not ride
along; a crash right after it resumes without duplicates; a re-plan under the lock judges by the same rule.
End to end against the fake Mailchimp, with the small ``skip`` shop of :mod:`tests.test_withdrawals_alone`."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from datetime import datetime, timezone

import pytest

from connectors.records import Consent, Contact
from sync import progress
from sync.config import load_config
from sync.errors import GuardRefusedError
from sync.ledger import Ledger, open_ledger
from sync.model import PushedState
from sync.run import full_sync
from sync.serve.resync import resync
from sync.serve.scheduler import CURSOR, Scheduler
from sync.settings import load_settings
from tests.ledger_fixtures import clock  # noqa: F401
from tests.test_guards import swap_tags
from tests.test_withdrawals_alone import (AS_OF, DAY, DEST, MANAGED, REMOVAL, WENT_OUT, add_order,  # noqa: F401
                                          audience, bad_day, changed, drop_orders, managed_contacts, run_cli,
                                          runs_of, set_consent, shop)


def lost_memory(path) -> dict[str, frozenset[str]]:
    with open_ledger(load_config(path), load_settings()) as ledger:
        return ledger.lost_tags(DEST)


def test_the_lost_tag_memory_survives_a_withdrawals_alone_run(shop, mailchimp_fake):
    """A managed tag deleted in Mailchimp: its holders wait to be given it back, and max_change_pct holds that
    re-add. One other contact withdraws: his tags go out alone, and the holders still wait (before, the alone run
    settled the memory as a whole plan does: the held re-add then went out unseen by the guard's line)."""
    with open_ledger(load_config(shop), load_settings()) as ledger:
        state = ledger.load_state(DEST)
    tag, _ = Counter(t for s in state.values() for t in s.tags & MANAGED).most_common(1)[0]
    holders = {k for k, s in state.items() if tag in s.tags}
    lst = mailchimp_fake.lists["aud1"]
    lst.segments = {i: s for i, s in lst.segments.items() if s["name"] != tag}  # deleted in Mailchimp's web app
    other = next(k for k in managed_contacts(shop) if k not in holders)
    add_order(shop, managed_contacts(shop)[other])
    run_cli("sync", "--config", str(shop), "--as-of", DAY, "--allow-mass-change")  # the tag created again, empty
    assert set(lost_memory(shop)) == holders
    shop.write_text(shop.read_text(encoding="utf-8") + "max_change_pct = 10\n", encoding="utf-8")
    withdrawn = next(k for k in managed_contacts(shop) if k not in holders and k != other)
    set_consent(shop, "нет", {managed_contacts(shop)[withdrawn]})
    result = run_cli("sync", "--config", str(shop), "--as-of", DAY, code=6)
    assert "1 consent withdrawal went out alone" in result.output
    assert "would get back tags the ESP lost" in result.output
    assert not mailchimp_fake.tags_of(withdrawn) & MANAGED
    assert set(lost_memory(shop)) == holders  # only the withdrawn contact's run: the others still wait
    again = run_cli("sync", "--config", str(shop), "--as-of", DAY, code=6)  # the held re-add is still seen
    assert f"{len(holders)} would get back tags the ESP lost: {tag}" in again.output
    run_cli("sync", "--config", str(shop), "--as-of", DAY, "--allow-mass-change")
    assert all(tag in mailchimp_fake.tags_of(k) for k in holders) and not lost_memory(shop)


def test_the_customer_drop_baseline_stays_the_last_whole_run(shop, mailchimp_fake):
    """max_customer_drop_pct = 10: day 2, one managed customer leaves (under 10 % of the customers) and another
    withdraws: the withdrawal goes out alone. Day 3, one more leaves: two of day 1's count in all, over 10 %: refused
    (before, the alone run recorded day 2's customers, the new baseline, and each day's small drop passed)."""
    base = next(r for r in runs_of(shop) if r["status"] == "succeeded")["counts"]["customers"]
    shop.write_text(shop.read_text(encoding="utf-8") + "max_customer_drop_pct = 10\n", encoding="utf-8")
    key, gone, _ = bad_day(shop)
    result = run_cli("sync", "--config", str(shop), "--as-of", DAY, code=6)
    assert WENT_OUT in result.output and "max_customer_drop_pct" not in result.output
    alone = runs_of(shop)[1]
    assert alone["status"] == "succeeded" and alone["counts"]["withdrawals_alone"] == 1
    drop_orders(shop, next(c for k, c in managed_contacts(shop).items() if k not in (key, gone)))
    result = run_cli("sync", "--config", str(shop), "--as-of", DAY, code=6)
    assert f"at the last successful run of {DEST}" in result.output and f", {base} at the last" in result.output
    assert "went out" not in result.output  # a data guard: everything held
    assert "customers" not in alone["counts"]  # the alone run records no input counts


def test_the_withdrawals_alone_create_no_field_or_tag_of_the_held_plan(shop, mailchimp_fake):
    """The held plan maps a new field (RFM_R) and reshuffles the segments' tags (max_change_pct): the alone run
    takes the withdrawn contact's tags off and creates neither the merge field nor a tag in Mailchimp."""
    lst = mailchimp_fake.lists["aud1"]
    fields, tags = set(lst.merge_fields), {s["name"] for s in lst.segments.values()}
    text = shop.read_text(encoding="utf-8").replace('RFM_CODE = "rfm"\n', 'RFM_CODE = "rfm"\nRFM_R = "r"\n')
    shop.write_text(text + "max_change_pct = 10\n", encoding="utf-8")
    swap_tags(shop)
    key, cid = next((k, c) for k, c in managed_contacts(shop).items() if mailchimp_fake.tags_of(k) & MANAGED)
    set_consent(shop, "нет", {cid})
    result = run_cli("sync", "--config", str(shop), "--as-of", DAY, code=6)
    assert "1 consent withdrawal went out alone" in result.output and not mailchimp_fake.tags_of(key) & MANAGED
    assert set(lst.merge_fields) == fields and {s["name"] for s in lst.segments.values()} == tags
    run_cli("sync", "--config", str(shop), "--as-of", DAY, "--allow-mass-change")  # the held plan creates them
    assert "RFM_R" in lst.merge_fields


def test_apply_sends_alone_only_the_withdrawals_the_guards_counted(shop, mailchimp_fake, tmp_path):
    """A saved plan edited by hand: another managed contact listed as withdrawn with a change that takes off a
    managed tag he does not hold (his tags stay: the guards count no withdrawal). Only the real withdrawal goes out
    alone; no call is made for him (before, he was sent with it)."""
    key, gone, _ = bad_day(shop)
    saved = tmp_path / "plan.json"
    run_cli("plan", "--config", str(shop), "--as-of", DAY, "-o", str(saved))
    doc = json.loads(saved.read_text(encoding="utf-8"))
    plan = doc["plans"][0]
    with open_ledger(load_config(shop), load_settings()) as ledger:
        state = ledger.load_state(DEST)
    other = next(k for k in managed_contacts(shop) if k not in (key, gone))
    lacking = sorted(MANAGED - state[other].tags)[0]
    plan["changes"].append({"key": other, "email": other, "customer_id": state[other].customer_id,
                            "segment": "Champions", "create": False, "status_if_new": None, "add_tags": [],
                            "remove_tags": [lacking], "set_fields": {}})
    plan["withdrawn"] = sorted([key, other])
    saved.write_text(json.dumps(doc), encoding="utf-8")
    before, calls = audience(mailchimp_fake), len(mailchimp_fake.requests)
    out = json.loads(run_cli("apply", "--config", str(shop), str(saved), "--format", "json", code=6).stdout)
    assert out["guards"] == [REMOVAL] and [r["counts"]["planned"] for r in out["withdrawals_applied"]] == [1]
    assert changed(before, audience(mailchimp_fake)) == {key}
    member = hashlib.md5(other.lower().encode()).hexdigest()
    sent = [json.dumps(r) for r in mailchimp_fake.requests[calls:]]
    assert not [r for r in sent if other in r or member in r], "a call for the listed key"


DRIVER = """
import os, signal, sys
import sync.refusals
from sync.cli import main

def killed(*args, **kwargs):  # the process dies right after the withdrawals' run, before the refused run
    os.kill(os.getpid(), signal.SIGKILL)

sync.refusals.refuse = killed
main(sys.argv[1:])
"""


def test_a_process_killed_between_the_alone_run_and_the_refusal(shop, mailchimp_fake, tmp_path, monkeypatch):
    """`rfmsync apply` dies (SIGKILL) at the one point between the two runs: the withdrawals' run recorded
    `succeeded`, the `refused` one never. The ledger matches the ESP, `rfmsync runs` tells the run apart, the saved
    plan is stale (exit 5, nothing sent), and the next sync holds the removal and sends nothing twice."""
    key, gone, _ = bad_day(shop)
    saved = tmp_path / "plan.json"
    run_cli("plan", "--config", str(shop), "--as-of", DAY, "-o", str(saved))
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER, encoding="utf-8")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, str(driver), "apply", "--config", str(shop), str(saved)],
                          capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()
    newest = runs_of(shop)[0]
    assert (newest["kind"], newest["status"], newest["counts"]["withdrawals_alone"]) == ("apply", "succeeded", 1)
    with open_ledger(load_config(shop), load_settings()) as ledger:
        state = ledger.load_state(DEST)
    assert {k: s.tags for k, s in state.items() if s.exists} == {
        k: frozenset(mailchimp_fake.tags_of(k)) for k in mailchimp_fake.lists["aud1"].members}
    assert not state[key].tags & MANAGED and state[gone].tags & MANAGED
    table = run_cli("runs", "--config", str(shop), "--limit", "1").output
    status = " ".join(line.split("│")[6].strip() for line in table.splitlines() if line.count("│") > 6)
    assert status.split() == ["succeeded", "(withdrawals", "alone)"], table  # its status cell, wrapped or not
    writes = mailchimp_fake.write_calls
    stale = run_cli("apply", "--config", str(shop), str(saved), code=5)
    assert "changed since this plan was made" in stale.output and mailchimp_fake.write_calls == writes
    result = run_cli("sync", "--config", str(shop), "--as-of", DAY, code=6)
    assert "guard max_removal_pct: 1 of 6 managed contacts" in result.output  # the withdrawn one is managed no more
    assert "went out" not in result.output and mailchimp_fake.write_calls == writes


KILLED_IN_APPLY = """
import os, signal, sys
from sync.cli import main
from sync.destinations.mailchimp import MailchimpDestination

def killed(*args, **kwargs):  # the process dies as the withdrawals' calls go out (the run recorded running)
    os.kill(os.getpid(), signal.SIGKILL)

MailchimpDestination.apply = killed
main(sys.argv[1:])
"""


def test_a_withdrawals_alone_run_killed_half_way_is_shown_as_one(shop, mailchimp_fake, tmp_path, monkeypatch):
    """`rfmsync sync` dies (SIGKILL) inside the withdrawals' run: the next run marks it `abandoned`, and `rfmsync
    runs` says it was the withdrawals alone (before: a bare `abandoned` sync with no counts, as if a whole sync had
    died half-way). It is not the customer-drop baseline (nor a sync for the catch-up: not succeeded); the next sync
    sends the withdrawal once and refuses the rest."""
    shop.write_text(shop.read_text(encoding="utf-8") + "max_customer_drop_pct = 10\n", encoding="utf-8")
    key, gone, _ = bad_day(shop)
    driver = tmp_path / "driver.py"
    driver.write_text(KILLED_IN_APPLY, encoding="utf-8")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, str(driver), "sync", "--config", str(shop), "--as-of", DAY],
                          capture_output=True, timeout=120)
    assert proc.returncode == -9, proc.stderr.decode()
    writes = mailchimp_fake.write_calls
    result = run_cli("sync", "--config", str(shop), "--as-of", DAY, code=6)  # marks the killed run abandoned
    assert WENT_OUT in result.output and "max_customer_drop_pct" not in result.output
    assert not mailchimp_fake.tags_of(key) & MANAGED and mailchimp_fake.tags_of(gone) & MANAGED
    assert mailchimp_fake.write_calls == writes + 1  # the withdrawal sent once: the killed run sent nothing
    first, *_, killed, alone, refused = [r for r in reversed(runs_of(shop)) if r["kind"] == "sync"]
    assert (refused["status"], alone["status"], alone["counts"]["withdrawals_alone"]) == ("refused", "succeeded", 1)
    assert (killed["status"], killed["counts"]) == ("abandoned", {"withdrawals_alone": 1})
    shown = run_cli("runs", "--config", str(shop)).output
    cells = [line.split("│") for line in shown.splitlines() if line.count("│") > 6]
    at = next(i for i, c in enumerate(cells) if c[1].strip() == str(killed["id"]))
    end = next((i for i in range(at + 1, len(cells)) if cells[i][1].strip()), len(cells))
    assert " ".join(c[6].strip() for c in cells[at:end]).split() == ["abandoned", "(withdrawals", "alone)"], shown
    with open_ledger(load_config(shop), load_settings()) as ledger:  # the baseline: still the first sync's
        assert ledger.last_run_counts(DEST, "customers") == first["counts"]


class _MovesTheLedger:
    """A progress reporter that, when the apply of ``DEST`` starts (before it takes the destination's lock), has
    "another run" write the ledger: one managed contact recorded with one more managed tag than the ESP holds."""

    def __init__(self, ledger: Ledger, key: str, tag: str) -> None:
        self.ledger, self.key, self.tag, self.moved = ledger, key, tag, 0

    def start(self, label, total=None, unit=""):
        if label == f"applying {DEST}" and not self.moved:
            self.moved = 1
            prev = self.ledger.load_state(DEST)[self.key]
            self.ledger.save_states(DEST, None, [PushedState(prev.key, prev.customer_id, prev.tags | {self.tag},
                                                             prev.fields, True)])
        return progress.SILENT.start(label, total, unit)

    def retry_wait(self, wait):
        pass


def test_a_sync_replanned_under_the_lock_sends_the_withdrawals_alone(shop, mailchimp_fake):
    """The plan of a day with one withdrawal trips nothing; while the apply waits for the lock another run moves the
    ledger, and the re-plan trips max_change_pct: the withdrawal goes out alone, the rest is refused (before, the
    re-plan's refusal held the withdrawal too). The other run strips a third contact's managed tags: one change
    of 6 managed contacts is over the limit, of 7 it was not. (A contact the other run wrote is left out of the
    re-plan, :mod:`sync.planning.replanned`: before that, it recorded one more tag than the ESP held.)"""
    shop.write_text(shop.read_text(encoding="utf-8") + "max_change_pct = 15\n", encoding="utf-8")
    (key, cid), (_, changer), (third, _) = list(managed_contacts(shop).items())[:3]
    set_consent(shop, "нет", {cid})
    add_order(shop, changer)
    cfg, settings = load_config(shop), load_settings()
    before = audience(mailchimp_fake)
    with open_ledger(cfg, settings) as ledger, pytest.raises(GuardRefusedError) as refused:
        with progress.reporting(_StripsTheLedger(ledger, third, "")):
            full_sync(cfg, ledger, settings, as_of=AS_OF)
    assert refused.value.lines == [
        f"{DEST}: guard max_change_pct: 1 of 6 managed contacts (16.7 %) would change; limit 15 %"]
    assert refused.value.note == WENT_OUT
    assert changed(before, audience(mailchimp_fake)) == {key} and not mailchimp_fake.tags_of(key) & MANAGED
    assert [(r["status"], "withdrawals_alone" in r["counts"]) for r in runs_of(shop)[:2]] == [
        ("refused", False), ("succeeded", True)]


def test_a_webhook_resync_replanned_under_the_lock_sends_the_withdrawals_alone(shop, mailchimp_fake):
    """The same in a webhook batch: the resync waits for the destination's lock (held by "another run", which
    moves the ledger and lets go during the wait); the re-plan trips max_change_pct: the withdrawal goes out
    alone, the batch is refused."""
    shop.write_text(shop.read_text(encoding="utf-8") + "max_change_pct = 10\n", encoding="utf-8")
    (key, cid), (other, other_id) = list(managed_contacts(shop).items())[:2]
    extra = sorted(MANAGED - set(mailchimp_fake.tags_of(other)))[0]
    cfg, settings = load_config(shop), load_settings()
    before = audience(mailchimp_fake)
    with open_ledger(cfg, settings) as ledger:
        owner = ledger.acquire_lock(f"sync:{DEST}", ttl_seconds=600)
        mover = _MovesTheLedger(ledger, other, extra)

        def wait(_seconds: float) -> None:  # the other run writes the ledger, then lets go of the lock
            mover.start(f"applying {DEST}")
            ledger.release_lock(f"sync:{DEST}", owner)

        with pytest.raises(GuardRefusedError) as refused:
            resync(cfg, ledger, settings, contacts=[Contact(cid, email=key, marketing_consent=Consent.NO),
                                                    Contact(other_id, email=other, marketing_consent=Consent.YES)],
                   as_of=AS_OF, sleep=wait)
        # the managed-contact count kept between resyncs (by ledger) moved by the withdrawal (kept by the held
        # plan's tags): the next resync reads its own contact's row only, not every row to count them again
        third, third_id = list(managed_contacts(shop).items())[2]
        quiet = resync(cfg, ledger, settings, contacts=[Contact(third_id, email=third, marketing_consent=Consent.YES)],
                       as_of=AS_OF)
        assert quiet.ledger_rows_read == 1, quiet.ledger_rows_read
    assert mover.moved
    assert refused.value.lines == [
        f"{DEST}: guard max_change_pct: 1 of 7 managed contacts (14.3 %) would change; limit 10 %"]
    assert refused.value.note == WENT_OUT
    assert changed(before, audience(mailchimp_fake)) == {key} and not mailchimp_fake.tags_of(key) & MANAGED
    assert [(r["kind"], r["status"], "withdrawals_alone" in r["counts"]) for r in runs_of(shop)[:3]] == [
        ("webhook", "succeeded", False), ("webhook", "refused", False), ("webhook", "succeeded", True)]  # quiet first
    with open_ledger(cfg, settings) as ledger, pytest.raises(GuardRefusedError) as again:
        resync(cfg, ledger, settings, contacts=[Contact(other_id, email=other, marketing_consent=Consent.YES)],
               as_of=AS_OF)
    assert again.value.lines == [
        f"{DEST}: guard max_change_pct: 1 of 6 managed contacts (16.7 %) would change; limit 10 %"]


class _StripsTheLedger(_MovesTheLedger):
    """Another run records one managed contact without any managed tag (the managed contacts one fewer)."""

    def start(self, label, total=None, unit=""):
        if label == f"applying {DEST}" and not self.moved:
            self.moved = 1
            prev = self.ledger.load_state(DEST)[self.key]
            self.ledger.save_states(DEST, None, [PushedState(prev.key, prev.customer_id, prev.tags - MANAGED,
                                                             prev.fields, True)])
        return progress.SILENT.start(label, total, unit)


def test_withdrawals_replanned_into_a_withdrawal_rule_say_only_that_rule(shop, mailchimp_fake):
    """A change trips max_change_pct, the two withdrawals (2 of 7, under max_withdrawal_pct = 30) go out alone;
    while they wait for the lock another run leaves 6 managed contacts: the re-plan trips max_withdrawal_pct and
    nothing goes out. The note names that rule, the destination once, and claims nothing went out alone (before:
    "0 consent withdrawals went out alone: …; not applied: mc: mc: guard max_change_pct: …")."""
    shop.write_text(shop.read_text(encoding="utf-8").replace("max_withdrawal_pct = 50", "max_withdrawal_pct = 30")
                    + "max_change_pct = 10\n", encoding="utf-8")
    (_, a), (_, b), (_, mover_id), (third, _) = list(managed_contacts(shop).items())[:4]
    set_consent(shop, "нет", {a, b})
    add_order(shop, mover_id)
    cfg, settings = load_config(shop), load_settings()
    before = audience(mailchimp_fake)
    with open_ledger(cfg, settings) as ledger, pytest.raises(GuardRefusedError) as refused:
        with progress.reporting(_StripsTheLedger(ledger, third, "")):
            full_sync(cfg, ledger, settings, as_of=AS_OF)
    assert_only_that_rule(refused.value, before, mailchimp_fake)


def assert_only_that_rule(refused: GuardRefusedError, before: dict, fake) -> None:
    """The re-plan's withdrawal rule held the withdrawals: the change guard's line, a note naming that rule and
    the destination once, nothing applied, the audience as it was."""
    assert refused.lines == [
        f"{DEST}: guard max_change_pct: 1 of 7 managed contacts (14.3 %) would change; limit 10 %"]
    assert refused.applied == []
    assert refused.note == (
        f"consent withdrawals not applied: {DEST}: guard max_withdrawal_pct: 2 of 6 managed contacts (33.3 %) would "
        "lose their tags for a marketing consent the source says is no; limit 30 %: is [source] marketing_consent "
        "mapped to the consent column?")
    assert audience(fake) == before


def test_webhook_withdrawals_replanned_into_a_withdrawal_rule_say_only_that_rule(shop, mailchimp_fake):
    """The same in a webhook batch: the two withdrawals' apply waits for the lock, another run leaves 6 managed
    contacts meanwhile; the note names max_withdrawal_pct and the destination once. (The change: the ledger says
    one more managed tag for a contact of the batch than the ESP holds.)"""
    shop.write_text(shop.read_text(encoding="utf-8").replace("max_withdrawal_pct = 50", "max_withdrawal_pct = 30")
                    + "max_change_pct = 10\n", encoding="utf-8")
    (a, a_id), (b, b_id), (mover, mover_id), (third, _) = list(managed_contacts(shop).items())[:4]
    cfg, settings = load_config(shop), load_settings()
    before = audience(mailchimp_fake)
    with open_ledger(cfg, settings) as ledger:
        _MovesTheLedger(ledger, mover, sorted(MANAGED - set(mailchimp_fake.tags_of(mover)))[0]).start(
            f"applying {DEST}")
        owner = ledger.acquire_lock(f"sync:{DEST}", ttl_seconds=600)
        strip = _StripsTheLedger(ledger, third, "")

        def wait(_seconds: float) -> None:  # the other run writes the ledger, then lets go of the lock
            strip.start(f"applying {DEST}")
            ledger.release_lock(f"sync:{DEST}", owner)

        with pytest.raises(GuardRefusedError) as refused:
            resync(cfg, ledger, settings, contacts=[Contact(a_id, email=a, marketing_consent=Consent.NO),
                                                    Contact(b_id, email=b, marketing_consent=Consent.NO),
                                                    Contact(mover_id, email=mover, marketing_consent=Consent.YES)],
                   as_of=AS_OF, pull=False, sleep=wait)
    assert strip.moved
    assert_only_that_rule(refused.value, before, mailchimp_fake)


def test_the_catch_up_at_a_start_counts_no_withdrawals_alone_run(tmp_path, clock):
    """The nightly 03:00 sync was missed; a sync that only sent a refused plan's withdrawals (its run `succeeded`,
    `withdrawals_alone` in its counts) started after it: the start still catches the fire time up. A whole
    sync by hand after it: nothing to catch up."""
    from sync.config import Config, DestinationConfig, ScheduleConfig

    cfg = Config(schedule=ScheduleConfig(cron="0 3 * * *"),
                 destinations=[DestinationConfig(name="mc", type="mailchimp", audience="a")])
    runs: list[datetime] = []
    with Ledger.connect(f"sqlite:///{tmp_path / 'l.db'}", clock=clock) as ledger:
        ledger.set_cursor(*CURSOR, "2025-03-01T03:00:00+00:00")  # yesterday's ran
        clock.now = datetime(2025, 3, 2, 3, 5, tzinfo=timezone.utc)
        ledger.finish_run(ledger.start_run("sync", "mc"), "succeeded", {"withdrawals_alone": 1, "planned": 1})
        ledger.finish_run(ledger.start_run("sync", "mc"), "refused", {"customers": 10})
        clock.now = datetime(2025, 3, 2, 3, 10, tzinfo=timezone.utc)
        assert Scheduler(cfg, ledger, None, clock=clock, job=lambda: runs.append(clock.now)).tick()  # type: ignore
        assert runs == [clock.now]
        ledger.set_cursor(*CURSOR, "2025-03-02T03:00:00+00:00")
        clock.now = datetime(2025, 3, 3, 3, 5, tzinfo=timezone.utc)
        ledger.finish_run(ledger.start_run("sync", "mc"), "succeeded", {"customers": 10, "planned": 0})
        clock.now = datetime(2025, 3, 3, 3, 10, tzinfo=timezone.utc)
        assert not Scheduler(cfg, ledger, None, clock=clock, job=lambda: runs.append(clock.now)).tick()  # type: ignore
        assert len(runs) == 1


def test_counted_withdrawals_are_the_listed_keys_the_stats_count():
    """A saved plan lists 6 of 10 contacts as withdrawn whose change takes Welcome off and leaves VIP: each passes
    the planners' test of a withdrawal change, none is a withdrawal by the stats (a change): none is sent alone."""
    from sync.config import GuardsConfig
    from sync.guards import believed_withdrawals, judge_plan, plan_lines, plan_stats, saved_withdrawals
    from sync.model import ContactChange
    from sync.planning.plan import Plan
    from sync.planning.withdrawals import withdrawals_alone

    state = {f"k{i}": PushedState(f"k{i}", f"c{i}", frozenset({"VIP", "Welcome"}), {}) for i in range(10)}
    changes = tuple(ContactChange(f"k{i}", f"k{i}", f"c{i}", "Best", False, None, remove_tags=frozenset({"Welcome"}))
                    for i in range(6))
    gone = ContactChange("k9", "k9", "c9", "Best", False, None, remove_tags=frozenset({"VIP", "Welcome"}))
    plan = Plan("mc", "mailchimp", (*changes, gone), (), ("VIP", "Welcome"), {}, 0,
                withdrawn=(*(c.key for c in changes), "k9"))
    believed = replace(plan, withdrawn=saved_withdrawals(plan, "skip"))
    assert len(believed.withdrawn) == 7
    judged = replace(plan, withdrawn=believed_withdrawals(plan, "skip", state))
    assert judged.withdrawn == ("k9",)
    stats = plan_stats(judged, state)
    assert stats == plan_stats(believed, state) and (stats.withdrawn, stats.changed) == (1, 6)
    g = GuardsConfig(min_mass_change=1, max_change_pct=10)
    assert plan_lines(g, stats) and not list(judge_plan(g, stats).withdrawal_lines)
    assert [c.key for c in withdrawals_alone(judged).changes] == ["k9"]


def test_runs_help_names_both_statuses_of_a_withdrawals_alone_run():
    shown = " ".join(run_cli("runs", "--help").output.split())
    assert "`succeeded (withdrawals alone)`" in shown and "`abandoned (withdrawals alone)`" in shown
