"""A full sync's re-plan under the destination's lock does not undo what a later run wrote meanwhile
(:mod:`sync.planning.replanned`): the sync planned from the segments it read, a webhook resync applied a newer
order or a withdrawn consent to the destination before the sync took its lock, and the re-plan (made from the
sync's older rows) leaves that contact as the resync wrote him; a withdrawal of the sync's own data still goes out.
End to end against the fake Mailchimp, on both ledger engines."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Callable

import pytest

from connectors.records import Consent, Contact, Order
from sync import progress
from sync.config import load_config
from sync.ledger import Ledger, open_ledger
from sync.model import PushedState
from sync.run import full_sync
from sync.serve.resync import resync
from sync.settings import load_settings
from tests.ledger_fixtures import ledger_url  # noqa: F401
from tests.test_guards import set_guards
from tests.test_guards_withdrawal import MANAGED, set_consent
from tests.test_worker import AS_OF, DEST, make_shop


class _LaterRun:
    """A progress reporter that, when the sync's apply of ``DEST`` starts (planned, not yet under the lock), has a
    later run write the destination first."""

    def __init__(self, later: Callable[[], None]) -> None:
        self.later, self.ran = later, False

    def start(self, label, total=None, unit=""):
        if label == f"applying {DEST}" and not self.ran:
            self.ran = True
            self.later()
        return progress.SILENT.start(label, total, unit)

    def retry_wait(self, wait):
        pass


@pytest.fixture
def shop(request, tmp_path, mailchimp_fake, monkeypatch, ledger_url) -> Path:  # noqa: F811
    """A 60-customer demo shop, synced once, its ledger on the engine of ``ledger_url``; ``new_contacts`` the
    indirect parameter's (``transactional`` when none; a withdrawal takes the managed tags off under ``skip``)."""
    monkeypatch.setenv("RFMSYNC_LEDGER_URL", ledger_url)
    path = make_shop(tmp_path / "shop", mailchimp_fake, monkeypatch, customers=60)
    mode = getattr(request, "param", "transactional")
    path.write_text(path.read_text(encoding="utf-8").replace('new_contacts = "transactional"',
                                                              f'new_contacts = "{mode}"'), encoding="utf-8")
    set_guards(path, max_bad_rows_pct=100)
    _sync(path)
    return path


def _sync(path: Path, later: Callable[[Ledger], None] | None = None, full_refresh: bool = False) -> None:
    cfg, settings = load_config(path), load_settings()
    with open_ledger(cfg, settings) as ledger:
        if later is None:
            full_sync(cfg, ledger, settings, as_of=AS_OF, full_refresh=full_refresh)
            return
        reporter = _LaterRun(lambda: later(ledger))
        with progress.reporting(reporter):
            full_sync(cfg, ledger, settings, as_of=AS_OF, full_refresh=full_refresh)
        assert reporter.ran


def _state(path: Path, key: str) -> PushedState:
    with open_ledger(load_config(path), load_settings()) as ledger:
        return ledger.load_state_of(DEST, {key})[key]


def _churned(path: Path) -> PushedState:
    """A contact of the Churn segment (tag Winback) whose customer consented."""
    with open_ledger(load_config(path), load_settings()) as ledger:
        state = ledger.load_state(DEST)
    return next(s for _, s in sorted(state.items()) if s.tags == {"Winback"})


@pytest.mark.parametrize("shop", ["transactional", "skip"], indirect=True)
def test_a_resync_of_a_new_order_applied_while_the_sync_waited_is_not_undone(shop, mailchimp_fake):
    """The customer's new order reaches the destination by webhook after the sync read its segments: the sync's
    re-plan leaves him in his new segment (before, it moved him back to Winback, in the ESP and the ledger)."""
    x = _churned(shop)
    order = Order(order_id="WH-1", customer_id=x.customer_id, amount=Decimal("9900000"),
                  ordered_at=datetime(2025, 6, 29, 12, tzinfo=timezone.utc))
    after_resync: dict[str, object] = {}

    def later(ledger: Ledger) -> None:
        resync(load_config(shop), ledger, load_settings(), [order], as_of=AS_OF)
        after_resync["esp"], after_resync["ledger"] = set(mailchimp_fake.tags_of(x.key, "aud1")), _state(shop, x.key)

    _sync(shop, later)
    moved = after_resync["ledger"]
    assert moved.tags & MANAGED and moved.tags != x.tags and after_resync["esp"] == set(moved.tags)
    assert set(mailchimp_fake.tags_of(x.key, "aud1")) == set(moved.tags)
    assert _state(shop, x.key) == moved
    assert mailchimp_fake.lists["aud1"].members[x.key]["merge_fields"]["RFM_CODE"] == moved.fields["RFM_CODE"]


@pytest.mark.parametrize("shop", ["skip"], indirect=True)
def test_a_consent_withdrawn_by_webhook_while_the_sync_waited_stays_withdrawn(shop, mailchimp_fake):
    """The customer says no by webhook after the sync read his yes: the resync takes his tags off, and the sync's
    re-plan does not put them back (before, a contact who withdrew got Winback again)."""
    x = _churned(shop)

    def later(ledger: Ledger) -> None:
        resync(load_config(shop), ledger, load_settings(),
               contacts=[Contact(customer_id=x.customer_id, email=x.key, marketing_consent=Consent.NO)], as_of=AS_OF)
        assert not mailchimp_fake.tags_of(x.key, "aud1") & MANAGED

    _sync(shop, later)
    assert not mailchimp_fake.tags_of(x.key, "aud1") & MANAGED
    assert not _state(shop, x.key).tags & MANAGED


@pytest.mark.parametrize("shop", ["skip"], indirect=True)
def test_the_syncs_own_withdrawal_still_goes_out_for_a_contact_another_run_wrote(shop, mailchimp_fake, caplog):
    """Consent first: the sync's data says the customer withdrew; another run wrote him (his tags kept) after the
    sync planned: the re-plan leaves out the rest of his change but still takes his managed tags off, and says
    so (before: "0 contacts left out of the re-plan …; 1 consent withdrawal among them still taken off")."""
    x = _churned(shop)
    set_consent(shop, "нет", {x.customer_id})

    def later(ledger: Ledger) -> None:
        prev = ledger.load_state_of(DEST, {x.key})[x.key]
        ledger.save_states(DEST, None, [PushedState(prev.key, prev.customer_id, prev.tags, {**prev.fields,
                                                                                           "RFM_CODE": "555"}, True)])

    with caplog.at_level(logging.INFO, logger="sync.planning.planner"):
        _sync(shop, later)
    assert f"sync {DEST}: 1 contact left out of the re-plan: another run wrote it since" in caplog.text
    assert "only removals still go out for it: 1 consent withdrawal (managed tags/lists off)\n" in caplog.text
    assert not mailchimp_fake.tags_of(x.key, "aud1") & MANAGED
    state = _state(shop, x.key)
    assert not state.tags & MANAGED and state.fields["RFM_CODE"] == "555"  # nothing but the withdrawal sent


def _retire_vip(path: Path) -> None:
    """Destination mc retires its tag VIP (``retire_tags``): no segment gives it, the full sync takes it off."""
    text = path.read_text(encoding="utf-8")
    assert '"Best active" = "VIP"\n' in text
    text = text.replace('"Best active" = "VIP"\n', "").replace(
        'new_contacts = "transactional"', 'new_contacts = "transactional"\nretire_tags = ["VIP"]')
    path.write_text(text.replace("max_bad_rows_pct = 100\n", "max_bad_rows_pct = 100\nmax_removal_pct = 100\n"
                                 "max_change_pct = 100\n"), encoding="utf-8")


def test_a_retired_tag_still_comes_off_a_contact_another_run_wrote(shop, mailchimp_fake, caplog):
    """A webhook resync never takes a retired tag off (the full sync's guards see them all at once); a contact it
    wrote while the sync waited is left out of the sync's re-plan, but its retired tag still comes off with the
    others' (before, he kept VIP in the ESP and the ledger until a sync that did not re-plan)."""
    with open_ledger(load_config(shop), load_settings()) as ledger:
        state = ledger.load_state(DEST)
    vip = sorted((s for s in state.values() if "VIP" in s.tags), key=lambda s: (s.fields["RFM_CODE"], s.key))
    assert len(vip) >= 2
    x, other = vip[0], vip[1]  # x the least recent: his new order moves him (RFM_CODE)
    _retire_vip(shop)
    order = Order(order_id="WH-9", customer_id=x.customer_id, amount=Decimal("9900000"),
                  ordered_at=datetime(2025, 6, 29, 12, tzinfo=timezone.utc))
    written: dict[str, PushedState] = {}

    def later(ledger: Ledger) -> None:
        resync(load_config(shop), ledger, load_settings(), [order], as_of=AS_OF)
        written["x"] = _state(shop, x.key)
        assert "VIP" in mailchimp_fake.tags_of(x.key, "aud1") and written["x"].fields != x.fields

    with caplog.at_level(logging.INFO, logger="sync.planning.planner"):
        _sync(shop, later)
    assert "only removals still go out for it: 1 retired tag removal (retire_tags)\n" in caplog.text
    assert "VIP" not in mailchimp_fake.tags_of(other.key, "aud1") and "VIP" not in _state(shop, other.key).tags
    assert "VIP" not in mailchimp_fake.tags_of(x.key, "aud1")
    now = _state(shop, x.key)
    assert now.tags == written["x"].tags - {"VIP"} and now.fields == written["x"].fields  # nothing else of the sync's


def test_a_move_to_another_audience_leaves_out_no_contact_another_run_wrote(shop, mailchimp_fake):
    """A full refresh moving the destination to another audience forgets the old audience's ledger rows as a
    whole: a contact another run wrote there while the sync waited is moved too, with his tags and fields (left
    out, he would be missing from the new audience, his old rows forgotten)."""
    mailchimp_fake.add_list("aud2", "Second audience")
    x = _churned(shop)
    text = shop.read_text(encoding="utf-8")
    assert 'audience = "aud1"' in text
    shop.write_text(text.replace('audience = "aud1"', 'audience = "aud2"'), encoding="utf-8")

    def later(ledger: Ledger) -> None:
        prev = ledger.load_state_of(DEST, {x.key})[x.key]
        ledger.save_states(DEST, None, [PushedState(prev.key, prev.customer_id, prev.tags, {**prev.fields,
                                                                                           "RFM_CODE": "555"}, True)])

    _sync(shop, later, full_refresh=True)
    assert mailchimp_fake.tags_of(x.key, "aud2") == set(x.tags)
    assert mailchimp_fake.member(x.key, "aud2")["merge_fields"]["RFM_CODE"] == x.fields["RFM_CODE"]
    assert _state(shop, x.key).tags == x.tags and _state(shop, x.key).fields == x.fields
