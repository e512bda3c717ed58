"""``rfmsync forget --destination NAME``: a destination removed from the config whose warning has no other way out
(two destinations on its audience, no heir: the other one's ``--reconcile`` took its tags off, its rows stay) is
forgotten by the ledger when the user says so, never while it is in the config or a sync of it runs, and nothing
in the ESP is touched (docs/ledger.md#forget)."""

from __future__ import annotations

import json

import pytest

from sync.errors import ConfigError, LockBusyError
from tests.ledger_fixtures import ledger_url  # noqa: F401
from tests.test_config_moved import AS_OF, SECOND, cli, shop  # noqa: F401
from tests.test_removed_destination import removed, state_names, two_audiences


def test_a_removed_destination_is_forgotten_only_with_yes_and_its_warning_goes(shop, mailchimp_fake):  # noqa: F811
    text = two_audiences(shop)
    mapping = shop.read_text(encoding="utf-8")[len(text) + len(SECOND):]
    vip = sum("VIP" in mailchimp_fake.tags_of(k, "aud2") for k in mailchimp_fake.lists["aud2"].members)
    contacts = len(mailchimp_fake.lists["aud2"].members)
    # "second" removed; two destinations on aud2 now: no heir, and its warning would stay for good
    shop.write_text(text + SECOND.replace('"second"', '"x"') + mapping + SECOND.replace('"second"', '"y"'),
                    encoding="utf-8")
    warning = removed(shop, "second")[0]  # x manages its tags: the way out once x's --reconcile took them off
    assert "'rfmsync forget --destination second --yes' makes the ledger forget 'second'" in warning
    said = cli("forget", "--config", str(shop), "--destination", "second").output  # a dry run by default
    assert f"the ledger holds under destination 'second', no longer in the config: {contacts} contacts of " \
           f"mailchimp audience" in said and f"'VIP' ({vip} contacts)" in said and "run again with --yes" in said
    assert "second" in state_names(shop) and removed(shop, "second")  # nothing forgotten
    doc = json.loads(cli("forget", "--config", str(shop), "--destination", "second", "--format", "json").stdout)
    assert doc["forgotten"] is False and doc["contacts"] == contacts and doc["tags"]["VIP"] == vip
    assert doc["in_flight"] == 0

    refused = cli("forget", "--config", str(shop), "--destination", "x", "--yes", code=2).output
    assert "destination 'x' is in the config" in refused
    refused = cli("forget", "--config", str(shop), "--destination", "nope", "--yes", code=2).output
    assert "holds nothing under destination 'nope'" in refused and "no longer has: 'second'" in refused

    writes = mailchimp_fake.write_calls
    said = cli("forget", "--config", str(shop), "--destination", "second", "--yes").output
    assert f"the ledger forgot destination 'second': {contacts} contacts" in said
    assert "second" not in state_names(shop) and not removed(shop, "second")
    assert mailchimp_fake.write_calls == writes  # the ESP untouched: the tags stay where they are
    assert sum("VIP" in mailchimp_fake.tags_of(k, "aud2") for k in mailchimp_fake.lists["aud2"].members) == vip


def test_a_destination_a_renamed_from_names_is_not_forgotten(shop, mailchimp_fake):  # noqa: F811
    cli("sync", "--config", str(shop), "--as-of", AS_OF)
    text = shop.read_text(encoding="utf-8").replace('name = "mailchimp-demo"', 'name = "mc-main"\n'
                                                    'renamed_from = "mailchimp-demo"')
    shop.write_text(text, encoding="utf-8")
    refused = cli("forget", "--config", str(shop), "--destination", "mailchimp-demo", "--yes", code=2).output
    assert "destination 'mc-main' has renamed_from = 'mailchimp-demo'" in refused
    assert "mailchimp-demo" in state_names(shop)


def test_forgetting_waits_for_no_sync_of_the_destination(ledger_url):  # noqa: F811
    """Under ``sync:NAME``'s lock: while a sync of the name holds it, nothing is forgotten (exit 75); then all of
    it, in one transaction (rows, failures, revision, recorded target), another destination's kept."""
    from sync.config import Config
    from sync.forget import forget_destination
    from sync.ledger import Ledger
    from sync.model import ItemResult, PushedState
    from sync.planning.target import known_target, record_target

    cfg = Config.model_validate({"segmentation": {"preset": "tracks"}, "destinations": [
        {"name": "kept", "type": "mailchimp", "audience": "aud1"}]})
    with Ledger.connect(ledger_url) as ledger, Ledger.connect(ledger_url) as other:
        run = ledger.start_run("sync", "gone")
        ledger.save_states("gone", run, [PushedState(f"{i}@x.io", str(i), frozenset({"VIP"} if i else ()), {}, True)
                                         for i in range(3)])
        ledger.save_states("kept", run, [PushedState("0@x.io", "0", frozenset({"VIP"}), {}, True)])
        ledger.record_results("gone", run, [ItemResult("1@x.io", "upsert", False, "Invalid Resource")])
        record_target(ledger, "gone", "mailchimp:aud1")
        owner = other.acquire_lock("sync:gone", ttl_seconds=60)  # a sync of it runs
        with pytest.raises(LockBusyError):
            forget_destination(cfg, ledger, "gone", yes=True)
        assert len(ledger.load_state("gone")) == 3
        other.release_lock("sync:gone", owner)
        done = forget_destination(cfg, ledger, "gone", yes=True)
        assert (done.done, done.contacts, done.tags) == (True, 3, [("VIP", 2)])
        assert ledger.load_state("gone") == {} and ledger.pending_failures("gone") == []
        assert ledger.state_destinations() == ["kept"] and known_target(ledger, "gone") is None
        assert list(ledger.load_state("kept")) == ["0@x.io"]
        with pytest.raises(ConfigError, match="holds nothing under destination 'gone'"):
            forget_destination(cfg, ledger, "gone", yes=True)


def test_a_name_with_only_failures_or_a_recorded_target_left_is_seen_and_forgotten(ledger_url):  # noqa: F811
    """A destination whose rows are gone but whose failures (an upsert that never went) or recorded target remain
    is not said to hold nothing: it is shown with what is left, and forgotten with it."""
    from sync.config import Config
    from sync.forget import forget_destination
    from sync.ledger import Ledger
    from sync.model import ItemResult
    from sync.planning.target import known_target, record_target

    cfg = Config.model_validate({"segmentation": {"preset": "tracks"}, "destinations": [
        {"name": "kept", "type": "mailchimp", "audience": "aud1"}]})
    with Ledger.connect(ledger_url) as ledger:
        run = ledger.start_run("sync", "failed")
        ledger.record_results("failed", run, [ItemResult("1@x.io", "upsert", False, "Invalid Resource"),
                                              ItemResult("2@x.io", "upsert", False, "Invalid Resource")])
        record_target(ledger, "aimed", "mailchimp:aud9")
        said = forget_destination(cfg, ledger, "failed")
        assert (said.done, said.contacts, said.failures) == (False, 0, 2)
        assert "0 contacts; 2 failed operations recorded (rfmsync failures)" in said.text()
        aimed = forget_destination(cfg, ledger, "aimed")
        assert aimed.target == "mailchimp:aud9" and "its recorded target" in aimed.text()
        assert forget_destination(cfg, ledger, "failed", yes=True).done
        assert forget_destination(cfg, ledger, "aimed", yes=True).done
        assert ledger.pending_failures("failed") == [] and known_target(ledger, "aimed") is None
        with pytest.raises(ConfigError, match="holds nothing under destination 'failed'"):
            forget_destination(cfg, ledger, "failed", yes=True)


@pytest.mark.parametrize("yes", [False, True])
def test_forget_before_any_sync_creates_no_ledger_file(tmp_path, monkeypatch, yes):
    """No ledger yet (no sync ever ran): ``forget`` refuses (nothing held under the name), with or without
    --yes, and leaves no ledger file behind (--yes used to create one just to refuse)."""
    from datetime import date

    from sync.demodata import generate_shop

    monkeypatch.delenv("RFMSYNC_LEDGER_URL", raising=False)
    monkeypatch.delenv("RFMSYNC_STORE_URL", raising=False)
    cfg = generate_shop(tmp_path / "shop", customers=20, seed=1, as_of=date.fromisoformat(AS_OF))
    refused = cli("forget", "--config", str(cfg), "--destination", "gone", *(["--yes"] if yes else []),
                  code=2).output
    assert "holds nothing under destination 'gone'" in refused
    assert not (cfg.parent / "rfmsync.db").exists()


def test_a_rename_takes_over_an_old_name_with_only_failures_and_a_target_left(ledger_url):  # noqa: F811
    """The old name of a rename whose contacts are all gone (deleted in the ESP, forgotten one by one) but whose
    failures and recorded target remain is taken over by its heir once the heir synced: nothing is held under it
    any more (it used to be held for good, and forget refused it, saying the heir would take it over)."""
    from sync.config import Config
    from sync.forget import forget_destination
    from sync.ledger import Ledger
    from sync.model import ItemResult, PushedState
    from sync.planning.target import TARGET_CURSOR, known_target, record_target, target_of
    from sync.takeover import take_over_removed

    cfg = Config.model_validate({"segmentation": {"preset": "tracks"}, "destinations": [
        {"name": "heir", "type": "mailchimp", "audience": "aud1", "renamed_from": "gone"}]})
    target = target_of(cfg.destinations[0])
    with Ledger.connect(ledger_url) as ledger:
        run = ledger.start_run("sync", "gone")
        ledger.save_states("gone", run, [PushedState("a@x.io", "1", frozenset(), {}, True)])
        record_target(ledger, "gone", target)
        ledger.record_results("gone", run, [ItemResult("b@x.io", "upsert", False, "Invalid Resource")])
        ledger.forget("gone", ["a@x.io"])  # its last contact deleted in the ESP
        record_target(ledger, "heir", target)
        assert ledger.state_destinations() == [] and "gone" in ledger.held_destinations(TARGET_CURSOR)
        take_over_removed(cfg, ledger, {"heir"})
        assert ledger.held_destinations(TARGET_CURSOR) == ["heir"]
        assert ledger.pending_failures("gone") == [] and known_target(ledger, "gone") is None
        with pytest.raises(ConfigError) as refused:  # nothing held under it any more: said so, not "it takes over"
            forget_destination(cfg, ledger, "gone", yes=True)
        assert str(refused.value) == (
            "the ledger holds nothing under destination 'gone' (destinations it holds that the config no longer has: "
            "none); destination 'heir' has renamed_from = 'gone': it has taken over whatever the ledger held there, "
            "if anything")


@pytest.mark.parametrize("fields, kept, forgotten", [
    ([{"RFM_SEG": None, "RFM_CODE": ""}, {"RFM_SEG": None}], (), True),  # cleared values hold nothing
    ([{"RFM_SEG": None}, {"RFM_CODE": "555"}], (), False),
    ([{"N": 0}], (), False), ([{"N": False}], (), False), ([{"N": []}], (), False),  # a value, however falsy
    ([{"CLV": f"{n}.5", "RFM_SEG": None} for n in range(50)], ("clv",), True),  # values another one manages
    ([{"CLV": "1", "Rfm_Seg ": "x"}], ("clv",), False),
    ([{"CLV": "1", "Rfm_Seg ": "x"}], ("clv", "rfm_seg"), True),  # named as the ESP compares them (folded)
    ([{'a"b': "x"}, {"é": ""}], ('a"b',), True),
])
@pytest.mark.parametrize("few", [None, 0])
def test_a_destination_is_forgotten_only_while_no_row_holds_a_value_it_does_not_keep(
        ledger_url, fields, kept, forgotten, few, monkeypatch):  # noqa: F811
    """forget_destination(unvalued=True) on either engine: the values judged in SQL (past FEW_TEXTS distinct
    texts; 0 here: all of them) as in Python (None and "" hold nothing; 0, false, [] are values), the fields
    another destination manages (``kept``) left out."""
    from sync.ledger import Ledger, moves
    from sync.ledger.moves import Kept
    from sync.model import PushedState, fold

    if few is not None:
        monkeypatch.setattr(moves, "FEW_TEXTS", few)

    with Ledger.connect(ledger_url) as ledger:
        ledger.save_states("gone", None, [PushedState(f"{i}@x.io", str(i), frozenset(), f, exists=True)
                                          for i, f in enumerate(fields)])
        done = ledger.forget_destination("gone", ("target", "gone"), unvalued=True,
                                         kept=Kept(fields=frozenset(kept), key=fold))
        assert (done == len(fields)) if forgotten else done == -1
        assert ("gone" in ledger.state_destinations()) is not forgotten


@pytest.mark.parametrize("odd, forgotten", [
    ("null", False), ("[]", False), ('"x"', False), ("5", False),  # not an object: holds (never forgotten unseen)
    ('{"A": "x", "A": ""}', False), ('{"A": "", "A": "x"}', False),  # a key written twice: any value of it holds
    ('{"A": "", "A": null}', True), ('{ }', True), ('{"CLV": {"x": 1}}', True),
    (' {"A": "x"}', False), ('\n{"A": ""}', True),  # an object all the same, whitespace before it
])
@pytest.mark.parametrize("few", [None, 0])
def test_a_fields_text_not_an_object_holds_alike_on_either_engine_and_either_path(
        ledger_url, odd, forgotten, few, monkeypatch):  # noqa: F811
    """A ``fields`` text an old or hand-edited ledger holds that is no JSON object (or writes a key twice): the
    finish check neither crashes (AttributeError in Python, DataError from PostgreSQL's jsonb_each) nor forgets
    it, the same in Python (the first FEW_TEXTS texts) and in SQL (0 here: all of them), on either engine."""
    from sqlalchemy import update

    from sync.ledger import Ledger, moves
    from sync.ledger.moves import Kept
    from sync.ledger.schema import pushed_state
    from sync.model import PushedState, fold

    if few is not None:
        monkeypatch.setattr(moves, "FEW_TEXTS", few)
    with Ledger.connect(ledger_url) as ledger:
        ledger.save_states("odd", None, [PushedState("1@x.io", "1", frozenset(), {"CLV": "1"}, exists=True)])
        with ledger._db.write() as conn:  # the text as a hand-edited ledger could hold it
            conn.execute(update(pushed_state).where(pushed_state.c.destination == "odd").values(fields=odd))
        done = ledger.forget_destination("odd", ("target", "odd"), untagged=False, unvalued=True,
                                         kept=Kept(fields=frozenset({"clv"}), key=fold))
        assert done == (1 if forgotten else -1)
        assert ("odd" in ledger.state_destinations()) is not forgotten


def test_the_preview_counts_the_operations_a_killed_run_left_in_flight(ledger_url):  # noqa: F811
    """A run killed mid-apply left its adds in flight (in doubt) under a destination since removed: the preview said
    nothing of them (0 contacts) though `--yes` deletes them; it counts them now, and the forget says it did."""
    from sync.config import Config
    from sync.forget import forget_destination
    from sync.ledger import Ledger

    cfg = Config.model_validate({"segmentation": {"preset": "tracks"}, "destinations": [
        {"name": "kept", "type": "mailchimp", "audience": "aud1"}]})
    with Ledger.connect(ledger_url) as ledger:
        run = ledger.start_run("sync", "gone")
        ledger.note_in_flight("gone", run, {"tag+VIP": ["a@x.io", "b@x.io"], "upsert": ["a@x.io"]})
        ledger.finish_run(run, "failed", {})
        said = forget_destination(cfg, ledger, "gone")
        assert (said.done, said.contacts, said.in_flight) == (False, 0, 3)
        assert "0 contacts; 3 operations in doubt (left in flight" in said.text()
        done = forget_destination(cfg, ledger, "gone", yes=True)
        assert done.done and done.in_flight == 3 and ledger.doubted_ops("gone") == []
