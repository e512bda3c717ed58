"""A sync killed (SIGKILL) with calls in flight: the ESP carried out adds whose outcomes never reached the ledger.
The adds were written durably before the first call (sync.ledger.inflight), so they are in doubt: a contact who
withdraws afterwards has the tag taken off by the next sync (never left on him for ever), and nothing stays
pending. End to end against the Mailchimp fake, on both ledger engines; the ledger part alone below."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from sync.engine import execute_plan
from sync.errors import DestinationConfigError
from sync.ledger import Ledger
from sync.ledger.inflight import in_flight_ops
from sync.ledger.locks import apply_lock
from sync.model import ContactChange, ItemResult, PushedState
from tests.builders import run_cli as cli
from tests.test_apply_outcomes import change, client, ledger, plan_of  # noqa: F401
from tests.ledger_fixtures import ledger_url  # noqa: F401
from tests.test_retire_fields import AS_OF, make_shop
from tests.test_retire_fields_esp import _withdraw_consent

SEGMENT_ADD = r"/segments/\d+$"


def _killed_mid_apply(cfg, fake) -> set[str]:
    """Run ``rfmsync sync`` in a process killed once Mailchimp carried out a tag add whose answer it holds back;
    the members the fake put on a managed tag."""
    fake.stall(120, times=10_000, method="POST", path=SEGMENT_ADD)  # the adds done, their answers late
    proc = subprocess.Popen([sys.executable, "-m", "sync", "sync", "--config", str(cfg), "--as-of", AS_OF],
                            env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not any(k.startswith("POST") and k.split("/")[-2] == "segments" for k in list(fake.calls)):
        assert proc.poll() is None and time.monotonic() < deadline, "the sync ended before any tag add"
        time.sleep(0.05)
    time.sleep(0.3)  # (the other tags' calls reach the fake too)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    fake._faults.clear()  # the ESP answers again
    return {m for s in fake.lists["aud1"].segments.values() for m in s["members"]}  # (all rfmsync's tags)


def test_a_killed_syncs_adds_are_in_doubt_and_come_off_a_contact_who_withdraws(tmp_path, monkeypatch,
                                                                              mailchimp_fake, ledger_url):  # noqa: F811
    fake = mailchimp_fake
    cfg = make_shop("mailchimp", fake, tmp_path, monkeypatch, ledger_url)
    text = re.sub(r'new_contacts = "\w+"\n', "", cfg.read_text(encoding="utf-8"))  # only consent creates
    cfg.write_text(text.replace('type = "mailchimp"\n', 'type = "mailchimp"\nnew_contacts = "skip"\n', 1),
                   encoding="utf-8")
    tagged = _killed_mid_apply(cfg, fake)
    assert tagged, "the fake carried out no add before the kill"
    with Ledger.connect(ledger_url) as ledger:
        dest = ledger.recent_runs(1)[0]["destination"]
        state = ledger.load_state(dest)
    unknown = sorted(k for k in tagged if not (state.get(k) and state[k].tags))  # the ledger says nothing pushed
    assert unknown
    withdrawn = unknown[:3]
    for key in withdrawn:
        _withdraw_consent(cfg, key)

    plan = json.loads(cli("plan", "--config", str(cfg), "--as-of", AS_OF, "--format", "json").stdout)["plans"][0]
    planned = {c["key"]: c for c in plan["changes"] if c["key"] in withdrawn}
    shown = [(c["key"], c["create"], c["add_tags"], c["remove_tags"]) for c in planned.values()]
    assert set(planned) == set(withdrawn), shown
    assert all(c["remove_tags"] and not c["add_tags"] and not c["create"] for c in planned.values()), shown
    cli("sync", "--config", str(cfg), "--as-of", AS_OF)

    assert not any(fake.tags_of(k) for k in withdrawn), {k: fake.tags_of(k) for k in withdrawn}
    assert json.loads(cli("failures", "--config", str(cfg), "--format", "json").stdout) == []
    runs = json.loads(cli("runs", "--config", str(cfg), "--format", "json").stdout)
    assert [r["status"] for r in runs if r["kind"] == "sync"] == ["succeeded", "abandoned"]
    again = json.loads(cli("plan", "--config", str(cfg), "--as-of", AS_OF, "--format", "json").stdout)["plans"][0]
    assert again["changes"] == []
    with Ledger.connect(ledger_url) as ledger:
        assert ledger.doubted_ops(dest) == []  # nothing left in flight


def _change(key: str, add=(), create=False) -> ContactChange:
    return ContactChange(key=key, email=key, customer_id="c", segment="s", create=create,
                         status_if_new="subscribed" if create else None, add_tags=frozenset(add))


def test_a_run_that_ends_leaves_nothing_in_flight_and_a_dead_runs_ops_become_doubts(ledger_url):  # noqa: F811
    with Ledger.connect(ledger_url) as ledger:
        ops = in_flight_ops([_change("a@x.uz", ["VIP"], create=True), _change("b@x.uz", ["VIP", "Out"]),
                             _change("c@x.uz")])
        assert {op: sorted(keys) for op, keys in ops.items()} == {
            "upsert": ["a@x.uz"], "tag+VIP": ["a@x.uz", "b@x.uz"], "tag+Out": ["b@x.uz"]}
        owner = ledger.acquire_lock("sync:mc")  # (as its apply holds it)
        live = ledger.start_run("sync", "mc")
        assert ledger.note_in_flight("mc", live, ops) == 4
        assert ledger.doubted_ops("mc") == []  # running, the lock held: not in doubt
        ledger.release_lock("sync:mc", owner)  # nobody holds it (a run of another host, its lock's time lapsed)
        assert len(ledger.doubted_ops("mc")) == 4
        owner = ledger.acquire_lock("sync:mc")
        ledger.finish_run(live, "succeeded", {})
        ledger.clear_in_flight("mc", live)
        assert ledger.doubted_ops("mc") == []

        dead = ledger.start_run("sync", "mc")
        ledger.note_in_flight("mc", dead, ops)
        ledger.finish_run(dead, "failed", {})  # ended without clearing (as a kill leaves it, once found)
        assert sorted(ledger.doubted_ops("mc")) == sorted(
            [("a@x.uz", "upsert"), ("a@x.uz", "tag+VIP"), ("b@x.uz", "tag+VIP"), ("b@x.uz", "tag+Out")])
        assert sorted(ledger.doubted_ops("mc", ["b@x.uz"])) == [("b@x.uz", "tag+Out"), ("b@x.uz", "tag+VIP")]
        nxt = ledger.start_run("sync", "mc")
        # b's VIP outcome was recorded before the kill: not in doubt
        held = {"b@x.uz": PushedState("b@x.uz", "c", frozenset({"VIP"}), {}, True)}
        assert ledger.doubt_in_flight("mc", nxt, lambda keys: {k: held[k] for k in keys if k in held}) == 3
        pending = {(f["key"], f["op"]): f for f in ledger.pending_failures("mc")}
        assert set(pending) == {("a@x.uz", "upsert"), ("a@x.uz", "tag+VIP"), ("b@x.uz", "tag+Out")}
        assert all(f["run_id"] == dead and "in doubt" in f["last_error"] for f in pending.values())
        assert sorted(ledger.doubted_ops("mc")) == sorted(pending)  # read once: from the failures now


def test_any_key_and_tag_name_is_read_back_as_written(ledger_url):  # noqa: F811
    ops = {"tag+Сон ёжик": ["ж@пример.uz", "b@x.uz"], "upsert": ["line\nbreak@x.uz", "c@x.uz"], "tag+none": []}
    with Ledger.connect(ledger_url) as ledger:
        run = ledger.start_run("sync", "mc")
        ledger.note_in_flight("mc", run, ops)
        ledger.finish_run(run, "stopped", {})
        assert sorted(ledger.doubted_ops("mc")) == sorted((k, op) for op, keys in ops.items() for k in keys)


def test_an_apply_that_fails_leaves_its_ops_in_flight_and_the_next_apply_doubts_the_unrecorded(
        mailchimp_fake, client, ledger):  # noqa: F811
    """The tag calls refused (a revoked key): the apply stops with a config error past its first call, so its row
    in flight stays, with what its calls carried (a call that raised may have been carried out though no outcome
    says so; a tag call never sent is not in doubt: sync.dispatch); the run ended ``failed``, so the plans read the
    row as doubts even while another live run holds the lock; the next apply turns into failures only the
    operations whose outcome is not recorded (the upserts that answered are)."""
    mailchimp_fake.fail(401, times=None, fraction=1.0, path=r"/segments/\d+$")
    with pytest.raises(DestinationConfigError):
        execute_plan(plan_of([change(i) for i in range(25)]), client, ledger)
    failed = ledger.recent_runs(1)[0]
    assert failed["status"] == "failed"
    sent = [(path, body) for method, path, _, body in mailchimp_fake.requests if method == "POST"]
    created = {m["email_address"] for path, body in sent if path == "/lists/aud1" for m in body["members"]}
    tagged = {e for path, body in sent if "/segments/" in path for e in body.get("members_to_add", [])}
    everything = {(k, "upsert") for k in created} | {(k, "tag+rfm:A") for k in tagged}
    assert tagged and len(tagged) < 25  # the tag calls after the first refused ones never went
    assert set(ledger.in_flight.stale_ops("mc")) == everything
    owner = ledger.acquire_lock(apply_lock("mc"))  # a live run holds the lock: the failed run's row is stale still
    assert set(ledger.doubted_ops("mc")) >= everything
    nxt = ledger.start_run("sync", "mc")
    ledger.doubt_in_flight("mc", nxt, lambda ks: ledger.load_states("mc", ks))
    ledger.release_lock(apply_lock("mc"), owner)
    assert ledger.in_flight.stale_ops("mc") == []
    upserted = {k for k, s in ledger.load_state("mc").items() if s.exists}
    assert upserted and not any(s.tags for s in ledger.load_state("mc").values())
    assert {(f["key"], f["op"]) for f in ledger.pending_failures("mc")} == \
        {(k, "tag+rfm:A") for k in tagged} | {(k, "upsert") for k in created - upserted}


def test_a_failed_apply_with_an_add_carried_out_leaves_it_in_doubt(mailchimp_fake, client, ledger):  # noqa: F811
    """(The review's reproduction.) A gateway's 502 after Mailchimp carried out the add, on both attempts of each
    call: the apply fails, no outcome says the contacts hold the tag; they are in doubt, not forgotten."""
    for _ in range(4):
        mailchimp_fake.answer_raw(b"<html>502 Bad Gateway</html>", status=502, path=r"/segments/\d+$", work=True)
    with pytest.raises(Exception):
        execute_plan(plan_of([change(i) for i in range(5)]), client, ledger)
    tagged = {m for s in mailchimp_fake.lists["aud1"].segments.values() for m in s["members"]}
    assert tagged
    state = ledger.load_state("mc")
    doubted = ledger.doubted_ops("mc")
    assert {k for k, op in doubted if op.startswith("tag+")} >= tagged - {k for k, s in state.items() if s.tags}


def test_an_apply_that_fails_before_its_first_write_call_leaves_nothing_in_flight(mailchimp_fake, client,
                                                                                  ledger):  # noqa: F811
    """The destination's setup refused (a revoked key reading its fields): no add or upsert went out, so nothing
    is in doubt."""
    mailchimp_fake.fail(401, times=None, fraction=1.0, path=r"/merge-fields")
    with pytest.raises(DestinationConfigError):
        execute_plan(plan_of([change(i) for i in range(25)]), client, ledger)
    assert not any(k.startswith("POST") for k in mailchimp_fake.calls)
    assert ledger.recent_runs(1)[0]["status"] == "failed"
    assert ledger.in_flight.stale_ops("mc") == [] and ledger.doubted_ops("mc") == []


def test_a_renamed_destination_takes_over_the_old_name_s_doubts(ledger_url):  # noqa: F811
    """A rename (the same ESP target) took over the old name's rows but deleted what it holds in doubt: a killed
    run's adds in flight and the pending failed adds (the review's rename.py): the tags stayed on for ever."""
    from sync.planning.target import TARGET_CURSOR

    with Ledger.connect(ledger_url) as ledger:
        killed = ledger.start_run("sync", "old")
        ledger.note_in_flight("old", killed, {"tag+VIP": ["a@x.uz", "b@x.uz"]})
        ledger.finish_run(killed, "failed", {})  # killed, found ended
        ledger.record_results("old", killed, [ItemResult("c@x.uz", "tag+VIP", False, "timeout"),
                                              ItemResult("d@x.uz", "tag+VIP", False, "old d")])
        ledger.record_results("new", None, [ItemResult("d@x.uz", "tag+VIP", False, "new d")])
        ledger.take_over("old", "new", (TARGET_CURSOR, "old"))
        assert sorted(ledger.doubted_ops("new")) == [("a@x.uz", "tag+VIP"), ("b@x.uz", "tag+VIP"),
                                                     ("c@x.uz", "tag+VIP"), ("d@x.uz", "tag+VIP")]
        assert [f["last_error"] for f in ledger.pending_failures("new") if f["key"] == "d@x.uz"] == ["new d"]
        assert ledger.doubted_ops("old") == [] and ledger.pending_failures("old") == []
        nxt = ledger.start_run("sync", "new")  # new's next apply turns the killed run's adds into failures
        assert ledger.doubt_in_flight("new", nxt, lambda keys: {}) == 2
        assert {f["key"] for f in ledger.pending_failures("new")} == {"a@x.uz", "b@x.uz", "c@x.uz", "d@x.uz"}


def test_the_ops_in_flight_come_in_plan_order_and_pack_as_one_body():
    """in_flight_ops and _pack, made cheaper for a million contacts (perf32): each op's keys in plan order, the ops
    in the order each first comes, and the row's blob the zlib stream of the whole body at once (what older
    rfmsync versions wrote and every version reads). Pins behaviour: passes before the change too."""
    import zlib

    from sync.ledger.inflight import _pack, _unpack

    changes = [_change(f"k{i}@x.uz", [t for t in ("VIP", "Out", "Сон") if i % (2 + len(t)) == 0], create=i % 3 == 0)
               for i in range(1, 400)]
    ops = in_flight_ops(changes)
    assert list(ops) == list(dict.fromkeys(op for c in changes for op in
                                           (["upsert"] if c.create else []) + [f"tag+{t}" for t in c.add_tags]))
    assert ops == {op: [c.key for c in changes if (c.create if op == "upsert" else op[4:] in c.add_tags)]
                   for op in ops}
    body = "\n".join([json.dumps([[op, len(keys)] for op, keys in ops.items()], separators=(",", ":")),
                      *("\n".join(keys) for keys in ops.values())])
    assert _pack(ops) == zlib.compress(body.encode("utf-8"), 1)
    assert sorted(_unpack(_pack(ops))) == sorted((k, op) for op, keys in ops.items() for k in keys)
