"""A saved plan records the epoch of the destination's revision counter beside its revision (``ledger_epoch``), and
``apply`` refuses it (exit 5) under another epoch: a plan saved before a restore is refused even when the cached
copy lagged the ledger, so that syncs after the restore bring the counter back to the plan's revision
(docs/ledger.md#restored-ledger). A plan file without the field (an older rfmsync) is judged by its revision."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from sync.ledger import Ledger
from sync.planning.plan import Plan

from tests.ledger_fixtures import ledger_url  # noqa: F401
from tests.test_config_moved import AS_OF, cli, point_at, shop  # noqa: F401
from tests.test_ledger_statecache import DEST, KEYS, _backup, as_states, read_both, state

NAME = "mailchimp-demo"


def _url(shop: Path) -> str:
    return f"sqlite:///{next(shop.parent.glob('*.db'))}"


def _resave(ledger: Ledger, n: int) -> None:
    """One save of one contact's state (a new value each time: the counter moves)."""
    was = next(iter(ledger.load_state(NAME).values()))
    ledger.save_states(NAME, None, [replace(was, fields={**was.fields, "N": n})])


def _changed_plan(shop: Path, saved: Path, back: bool = True) -> dict:
    """``plan -o saved`` of a plan that changes tags; the config put back after (``back``: then the plan is
    applied only if stale: its tag Lapsed is no longer one the config manages)."""
    point_at(shop, '"Churn" = "Winback"', '"Churn" = "Lapsed"')
    cli("plan", "--config", str(shop), "--as-of", AS_OF, "-o", str(saved))
    if back:
        point_at(shop, '"Churn" = "Lapsed"', '"Churn" = "Winback"')
    plan = json.loads(saved.read_text())["plans"][0]
    assert plan["changes"]
    return plan


def test_a_plan_saved_before_a_restore_is_refused_when_syncs_bring_the_counter_back_to_it(
        shop, mailchimp_fake, tmp_path):  # noqa: F811
    cli("sync", "--config", str(shop), "--as-of", AS_OF)
    url = _url(shop)
    restore = _backup(url)  # the backup, taken after the first sync
    with Ledger.connect(url) as ledger:  # the CLI's copy folder (beside the SQLite file)
        for n in (1, 2):
            _resave(ledger, n)
        read_both(ledger, NAME)  # the copy renewed here...
        for n in (3, 4):
            _resave(ledger, n)  # ...and lagging after these (too few changes for a plan's read to renew it)
    saved = tmp_path / "plan.json"
    plan = _changed_plan(shop, saved)
    restore()
    with Ledger.connect(url) as ledger:  # the restore found by the first save: the counter moves past the copy
        for n in range(5, 5 + plan["ledger_revision"]):
            if ledger.state_revision(NAME) >= plan["ledger_revision"]:
                break
            _resave(ledger, n)
        assert ledger.state_revision(NAME) == plan["ledger_revision"]  # the revision alone would let it through
        assert ledger.state_counter(NAME).epoch != plan["ledger_epoch"]
    writes = mailchimp_fake.write_calls

    refused = cli("apply", "--config", str(shop), str(saved), "--allow-mass-change", code=5).output
    assert "the ledger of destination 'mailchimp-demo' changed since this plan was made" in refused
    assert "under a new epoch" in refused and "make a new plan" in refused
    assert mailchimp_fake.write_calls == writes


def test_a_plan_file_without_the_epoch_is_judged_by_its_revision(shop, mailchimp_fake, tmp_path):  # noqa: F811
    cli("sync", "--config", str(shop), "--as-of", AS_OF)
    saved = tmp_path / "plan.json"
    plan = _changed_plan(shop, saved, back=False)
    assert isinstance(plan["ledger_epoch"], str) and isinstance(plan["ledger_token"], str)
    doc = json.loads(saved.read_text())
    del doc["plans"][0]["ledger_epoch"], doc["plans"][0]["ledger_token"]  # as an older rfmsync saved it
    saved.write_text(json.dumps(doc))
    writes = mailchimp_fake.write_calls
    cli("apply", "--config", str(shop), str(saved), "--allow-mass-change")
    assert mailchimp_fake.write_calls > writes

    with Ledger.connect(_url(shop)) as ledger:
        _resave(ledger, 1)
    refused = cli("apply", "--config", str(shop), str(saved), "--allow-mass-change", code=5).output
    assert "changed since this plan was made" in refused and "new epoch" not in refused


def test_a_plan_saved_before_a_restore_nobody_found_is_refused_once_another_host_saved_back_to_it(
        shop, mailchimp_fake, tmp_path):  # noqa: F811
    """Host A saves a plan, the ledger is restored, host B (no copy ahead of the restored ledger) saves it back up to
    the plan's revision under the same epoch: the plan's token is not the ledger's for that revision: refused."""
    cli("sync", "--config", str(shop), "--as-of", AS_OF)
    url = _url(shop)
    restore = _backup(url)
    with Ledger.connect(url) as ledger:
        for n in (1, 2):
            _resave(ledger, n)
    saved = tmp_path / "plan.json"
    plan = _changed_plan(shop, saved)
    restore()
    with Ledger.connect(url, state_cache=tmp_path / "b.state-cache") as b:
        for n in (7, 8):
            _resave(b, n)
        now = b.state_counter(NAME)
    assert (now.revision, now.epoch) == (plan["ledger_revision"], plan["ledger_epoch"])  # the case
    writes = mailchimp_fake.write_calls

    refused = cli("apply", "--config", str(shop), str(saved), "--allow-mass-change", code=5).output
    assert "the ledger of destination 'mailchimp-demo' changed since this plan was made" in refused
    assert "that revision written again since" in refused and "make a new plan" in refused
    assert mailchimp_fake.write_calls == writes


def test_a_plan_is_made_at_its_revisions_token_on_either_engine(ledger_url, tmp_path):  # noqa: F811
    """Same revision and epoch, another token (a restore, then other saves): not made at it; nor a revision the
    ledger holds no token for (no proof); a plan without a token is judged by revision and epoch."""
    with Ledger.connect(ledger_url, state_cache=tmp_path / "a") as a:
        a.save_states(DEST, None, [state(k, 1) for k in KEYS[:3]])
        restore = _backup(ledger_url)
        for n in (2, 3):
            a.save_states(DEST, None, [state(k, n) for k in KEYS[:3]])
        at = a.state_counter(DEST)
    plan = Plan.from_json({"destination": DEST, "type": "mailchimp", "changes": [], "skipped": [],
                           "managed_tags": [], "fields": {}, "ledger_revision": at.revision,
                           "ledger_epoch": at.epoch, "ledger_token": at.token})
    assert at.token and plan.made_at(at)
    restore()
    with Ledger.connect(ledger_url, state_cache=tmp_path / "b") as b:
        for n in (7, 8):
            b.save_states(DEST, None, [state(KEYS[0], n)])
        now = b.state_counter(DEST)
    assert (now.revision, now.epoch) == (at.revision, at.epoch) and now.token != at.token
    assert not plan.made_at(now) and "written again" in plan.moved_how(now)
    assert not plan.made_at(replace(now, token=None))
    assert replace(plan, ledger_token=None).made_at(now)


def test_no_counter_after_a_restore_with_a_lagging_copy_is_the_one_a_plan_was_made_at(ledger_url,  # noqa: F811
                                                                                      tmp_path):
    """On either engine: the copy at 3, the ledger saved on to 5 (a plan made there), restored to 1: the
    counter, moved past the copy, comes back to 5 under another epoch."""
    folder = tmp_path / "cache"
    with Ledger.connect(ledger_url, state_cache=folder) as a:
        a.save_states(DEST, None, [state(k, 1) for k in KEYS[:3]])
        restore = _backup(ledger_url)
        for n in (2, 3):
            a.save_states(DEST, None, [state(k, n) for k in KEYS[:3]])
        read_both(a, DEST)  # the copy at 3
        for n in (4, 5):
            a.save_states(DEST, None, [state(KEYS[0], n)])
        made_at = a.state_counter(DEST)
    assert made_at.revision == 5 and made_at.epoch
    restore()
    with Ledger.connect(ledger_url, state_cache=folder) as a:
        counters = []
        for n in (7, 8):
            a.save_states(DEST, None, [state(KEYS[0], n)])
            counters.append(a.state_counter(DEST))
    assert made_at.revision in [c.revision for c in counters]  # the case: the revision alone is reached again
    assert made_at not in counters


def test_a_restore_unseen_until_another_host_saved_past_the_copy_is_found(ledger_url, tmp_path, caplog):  # noqa: F811
    """Host A's copy at 3, the ledger restored to 1, host B (no copy ahead) saves three times (4) before A's next
    plan. A's copy, of the same epoch and not ahead, names the token of the revision it was read at; the ledger's
    revision 3 is B's, with another token: A reads in full, says so, and gives the counter a new epoch (a plan
    saved before the restore is refused; every other host's copy of the undone history is read in full)."""
    hosts = {"A": tmp_path / "a.state-cache", "B": tmp_path / "b.state-cache"}
    with Ledger.connect(ledger_url, state_cache=hosts["A"]) as a:
        a.save_states(DEST, None, [state(k, 1) for k in KEYS[:3]])
        restore = _backup(ledger_url)
        for n in (2, 3):
            a.save_states(DEST, None, [state(k, n) for k in KEYS[:3]])
        read_both(a, DEST)  # A's copy at revision 3
        made_at = a.state_counter(DEST)
    restore()
    with Ledger.connect(ledger_url, state_cache=hosts["B"]) as b:
        for n in (7, 8, 9):
            b.save_states(DEST, None, [state(KEYS[0], n)])
    caplog.clear()
    with Ledger.connect(ledger_url, state_cache=hosts["A"]) as a:
        through_cache, full = read_both(a, DEST)
        assert through_cache == full and full["c@x.io"].fields == {"N": 1}
        now = a.state_counter(DEST)
        assert now.revision == 4 and now.epoch != made_at.epoch
    assert "written again since its cached copy (revision 3) was read" in caplog.text
    assert "--full-refresh" in caplog.text
    with Ledger.connect(ledger_url, state_cache=hosts["A"]) as a:  # A's copy kept again, of the new epoch
        assert a.state_parts(DEST).since is None  # (the copy the finding read kept was of the old epoch)
        a.save_states(DEST, None, [state(KEYS[1], 10)])
        parts = a.state_parts(DEST)
        assert parts.since == 4 and parts.read == 1


def test_another_hosts_saves_after_a_copy_keep_it_in_use(ledger_url, tmp_path, caplog):  # noqa: F811
    """No restore: host B's saves after A's copy are of the same history; A's copy's token is the ledger's for its
    revision: A reads only the rows written since, and nothing is told."""
    hosts = {"A": tmp_path / "a.state-cache", "B": tmp_path / "b.state-cache"}
    with Ledger.connect(ledger_url, state_cache=hosts["A"]) as a:
        a.save_states(DEST, None, [state(k, 1) for k in KEYS[:20]])
        read_both(a, DEST)  # A's copy at revision 1
    with Ledger.connect(ledger_url, state_cache=hosts["B"]) as b:
        for n in (7, 8):
            b.save_states(DEST, None, [state(KEYS[0], n)])
    caplog.clear()
    with Ledger.connect(ledger_url, state_cache=hosts["A"]) as a:
        parts = a.state_parts(DEST)
        assert (parts.since, parts.read) == (1, 1)
        assert as_states(parts.merged()) == as_states(a.state_table(DEST, cached=False))
    assert "restored" not in caplog.text


@pytest.mark.parametrize("back", ["behind", "written again"])
def test_apply_refusing_a_plan_saved_before_an_unseen_restore_tells_it_and_gives_a_new_epoch(
        back, tmp_path, mailchimp_fake, monkeypatch, ledger_url, caplog):  # noqa: F811
    """On either engine, no host's copy ahead of the restored ledger (PostgreSQL keeps none by default): the plan
    alone proves the restore (its counter's epoch, at a revision the ledger is behind or holds another token
    for). ``apply`` refuses it (exit 5) and, as a plan or save would, says the ledger was restored and gives the
    counter a new epoch there and then (every host's copy of the undone history is read in full from then on)."""
    from tests.test_retire_fields import AS_OF as SHOP_AS_OF, make_shop

    shop = make_shop("mailchimp", mailchimp_fake, tmp_path, monkeypatch, ledger_url)
    cli("sync", "--config", str(shop), "--as-of", SHOP_AS_OF)
    restore = _backup(ledger_url)
    with Ledger.connect(ledger_url, state_cache=tmp_path / "a") as ledger:
        for n in (1, 2):
            _resave(ledger, n)
    saved = tmp_path / "plan.json"
    point_at(shop, '"Churn" = "Winback"', '"Churn" = "Lapsed"')
    cli("plan", "--config", str(shop), "--as-of", SHOP_AS_OF, "-o", str(saved))
    plan = json.loads(saved.read_text())["plans"][0]
    restore()
    if back == "written again":  # another host (no copy ahead) saved it back up to the plan's revision
        with Ledger.connect(ledger_url, state_cache=tmp_path / "b") as b:
            for n in (7, 8):
                _resave(b, n)
    with Ledger.connect(ledger_url) as ledger:
        before = ledger.state_counter(NAME)
    assert before.epoch == plan["ledger_epoch"]  # the case: nobody found the restore
    assert (before.revision < plan["ledger_revision"]) == (back == "behind")
    writes = mailchimp_fake.write_calls
    caplog.clear()
    refused = cli("apply", "--config", str(shop), str(saved), "--allow-mass-change", code=5).output
    assert "changed since this plan was made" in refused and "make a new plan" in refused
    assert mailchimp_fake.write_calls == writes
    assert "the ledger was restored from an older copy" in caplog.text and "--full-refresh" in caplog.text
    made = plan["ledger_revision"]  # the warning speaks of the saved plan, not of a cached copy (none was read)
    assert (f"behind the plan saved at its revision {made}" if back == "behind" else
            f"written again since the plan saved at its revision {made} was made") in caplog.text
    assert "cached copy" not in caplog.text
    with Ledger.connect(ledger_url) as ledger:
        now = ledger.state_counter(NAME)
    assert now.epoch != plan["ledger_epoch"] and now.revision > plan["ledger_revision"]
    caplog.clear()  # told once: a second apply of it finds the new epoch, nothing more to tell
    cli("apply", "--config", str(shop), str(saved), "--allow-mass-change", code=5)
    assert "restored from an older copy" not in caplog.text
    with Ledger.connect(ledger_url) as ledger:
        assert ledger.state_counter(NAME) == now


@pytest.mark.parametrize("back", ["behind", "written again"])
def test_a_saved_plan_proving_a_restore_on_a_read_only_ledger_is_told_and_the_counter_left(
        back, tmp_path: Path, caplog) -> None:
    """The refusal's telling on a ledger this process may only read (a URI with mode=ro): the restore the saved
    plan proves is told (naming the plan), the counter cannot get a new epoch and that is said too; nothing
    fails, and the counter stands for the next plan or save that can write (docs/ledger.md#restored-ledger)."""
    from sync.ledger.statecache import Counter

    path = tmp_path / "rfmsync.db"
    with Ledger.connect(f"sqlite:///{path}") as ledger:
        ledger.save_states(DEST, None, [state(k, 1) for k in KEYS[:3]])
        now = ledger.state_counter(DEST)
    made = Counter(now.revision + 3, now.epoch, "feedbeef") if back == "behind" else \
        Counter(now.revision, now.epoch, "another")  # the plan's revision written again since, by another host
    caplog.clear()
    with Ledger.connect(f"sqlite:///file:{path}?mode=ro&uri=true") as ledger:
        assert ledger.saved_plan_restored(DEST, made) is True
        assert ledger.state_counter(DEST) == now
    assert (f"behind the plan saved at its revision {made.revision}" if back == "behind" else
            f"written again since the plan saved at its revision {made.revision} was made") in caplog.text
    assert "could not give destination" in caplog.text and "cached copy" not in caplog.text
