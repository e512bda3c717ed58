"""A "no" given after the full sync by one card of a shared address (two customer cards, one e-mail) takes effect
in the webhook resync, within seconds, as the full planner would take it (docs/sync.md, "Consent"): under
``skip`` the address's managed tags come off (a withdrawal; the ESP's status is left alone, tags it does not
manage too). Before, the resync of the card saying no left the address to the full sync (the other card's
contact), and the resync of the card saying yes read no other card for an address still tagged: the tags stayed
until the nightly sync."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.records import Consent, Contact
from sync.model import DesiredContact, PushedState
from sync.planning.plan import leave_shared_to_full_sync
from tests.builders import run_cli
from tests.test_guards_withdrawal import MANAGED, managed_contacts, small_shop  # noqa: F401
from tests.test_worker import AS_OF

SECOND = "C09999"


def _second_card(shop: Path, consent: str) -> tuple[str, str]:
    """A second card (:data:`SECOND`, one small order) giving the e-mail of the shop's first managed contact,
    with ``consent`` in its consent cell; (the address, the first card's customer id)."""
    key, cid = next(iter(managed_contacts(shop).items()))
    clients = shop.parent / "clients.csv"
    header, *lines = clients.read_text(encoding="utf-8-sig").splitlines()
    column = header.split(";").index("Согласие на рассылку")
    lines = [line for line in lines if not line.startswith(SECOND + ";")]
    cells = next(line for line in lines if line.startswith(cid + ";")).split(";")
    cells[0], cells[column] = SECOND, consent
    clients.write_text("\ufeff" + "\n".join([header, *lines, ";".join(cells)]) + "\n", encoding="utf-8")
    orders = shop.parent / "orders.csv"
    rows = [r for r in orders.read_text(encoding="utf-8-sig").splitlines() if not r.startswith("199999;")]
    orders.write_text("\ufeff" + "\n".join([*rows, f"199999;20.06.2025 12:00;{SECOND};;{key};50 000,00;;Продажа"])
                      + "\n", encoding="utf-8")
    return key, cid


def _resync(shop: Path, **records) -> None:
    from sync.config import load_config
    from sync.ledger import open_ledger
    from sync.serve.resync import resync
    from sync.settings import load_settings

    cfg, settings = load_config(shop), load_settings()
    with open_ledger(cfg, settings) as ledger:
        resync(cfg, ledger, settings, as_of=AS_OF, **records)


def _shared_and_synced(shop: Path) -> tuple[str, str]:
    """Both cards say yes at the full sync: the address stays the first card's managed contact."""
    key, cid = _second_card(shop, "да")
    run_cli("sync", "--config", str(shop), "--as-of", AS_OF.isoformat())
    assert managed_contacts(shop)[key] == cid
    return key, cid


@pytest.mark.parametrize("spelling", [str, lambda key: f"  {key.upper()} "])  # as a library caller may give it
def test_a_webhook_no_of_the_other_card_withdraws_the_address_at_once(small_shop, mailchimp_fake,  # noqa: F811
                                                                      spelling):
    key, cid = _shared_and_synced(small_shop)
    mailchimp_fake.add_segment("hand-added", [key])  # a tag rfmsync does not manage
    before = set(mailchimp_fake.tags_of(key))
    _resync(small_shop, contacts=[Contact(customer_id=SECOND, email=spelling(key), marketing_consent=Consent.NO)])
    assert key not in managed_contacts(small_shop)
    tags = set(mailchimp_fake.tags_of(key))
    assert not tags & MANAGED and tags == before - MANAGED, tags  # unmanaged tags stay
    assert mailchimp_fake.member(key)["status"] == "subscribed"  # a withdrawal, as the full sync's: no unsubscribe
    # and the resync of the first card keeps it so (the store's other card, read by its address, says no)
    from tests.test_serve_resync import orders_for

    _resync(small_shop, orders=orders_for([cid], "W"))
    assert key not in managed_contacts(small_shop) and not set(mailchimp_fake.tags_of(key)) & MANAGED


def test_a_resync_of_the_card_saying_yes_withdraws_what_the_other_cards_later_no_refuses(
        small_shop, mailchimp_fake):  # noqa: F811
    """The other card's "нет" reached the store by a file refresh (a pull, no sync): a webhook order of the
    first card then resyncs the address with both cards' consent."""
    from tests.test_serve_resync import orders_for

    key, cid = _shared_and_synced(small_shop)
    _second_card(small_shop, "нет")
    run_cli("pull", "--config", str(small_shop))
    _resync(small_shop, orders=orders_for([cid], "W"))
    assert key not in managed_contacts(small_shop)
    assert not set(mailchimp_fake.tags_of(key)) & MANAGED, mailchimp_fake.tags_of(key)


def _contested(mode: str):
    """A resync of card C2 (no) of an address the ledger gives card C1 (another customer, still giving it)."""
    last = {"fam@shop.uz": PushedState("fam@shop.uz", "C1", frozenset({"rfm:Winback", "hand"}), {"SEG": "Churn"})}
    tags = frozenset() if mode == "skip" else frozenset({"rfm:Winback"})
    desired = [DesiredContact(key="fam@shop.uz", customer_id="C2", email="fam@shop.uz", consent="no",
                              segment="Churn", tags=tags, fields={"SEG": "Lost"})]
    return leave_shared_to_full_sync(desired, last, {"C2"}, lambda keys, among: {"fam@shop.uz": {"C1"}},
                                     new_contacts=mode)


def test_a_contested_address_refused_under_skip_is_planned_as_its_owners_withdrawal():
    kept, last, notes = _contested("skip")
    assert [(d.customer_id, d.tags, d.consent, d.fields) for d in kept] == [("C1", frozenset(), "no",
                                                                              {"SEG": "Churn"})]
    assert "fam@shop.uz" in last and "refuses" in notes[0]
    # the no is C2's, not the owner's (a skip's reason, were the contact gone from the ESP, names C2)
    from sync.planning.consent import no_consent_reason

    assert kept[0].refused_by == "C2" and "customer C2's" in no_consent_reason(kept[0].refused_by)


@pytest.mark.parametrize("mode", ["transactional", "subscribed", "pending"])
def test_a_contested_address_refused_where_a_no_takes_nothing_off_is_left_to_the_full_sync(mode):
    kept, last, notes = _contested(mode)
    assert kept == [] and last == {} and "left to the full sync" in notes[0]


def test_who_refuses_an_address_is_read_by_the_address_not_by_a_scan(tmp_path, mailchimp_fake, monkeypatch):
    """On a store of 60 000 customers, which cards refuse fifty addresses is read through the contacts' e-mail
    index: their rows, counted into the resync's rows read. Before, an ILIKE of every address scanned every
    contact (and was not counted)."""
    from bench.serve_load import big_store
    from sync.config import load_config
    from sync.pipeline import store_path
    from sync.serve.resync_scope import StoreReads, store_holders
    from sync.store import open_store

    monkeypatch.setenv("MAILCHIMP_API_KEY", mailchimp_fake.api_key)
    monkeypatch.setenv("MAILCHIMP_API_URL", mailchimp_fake.url)
    path, churned = big_store(tmp_path / "big", 60_000, 0.2, pool=50, fake=mailchimp_fake)
    cfg = load_config(path)
    refusing = sorted(churned)[:3]
    with open_store(store_path(cfg)) as con:
        con.execute("UPDATE contacts SET marketing_consent = 'no' WHERE customer_id IN (SELECT unnest(?))",
                    [refusing])
    keys = set(churned.values()) | {"nobody@example.com"}
    reads = StoreReads()
    assert store_holders(cfg, keys, None, refused=True, reads=reads) == {churned[c]: {c} for c in refusing}
    assert 0 < reads.rows <= 2 * len(keys), reads.rows
    everyone = store_holders(cfg, keys, None, reads=reads)
    assert everyone == {email: {c} for c, email in churned.items()}


def test_a_refusing_card_without_a_segment_counts_in_neither_plan(small_shop, mailchimp_fake):  # noqa: F811
    """A second card saying "нет" that has no orders (no segment): the full planner does not read it (it plans
    segmented customers' cards), so neither does the resync. Before, the resync counted every card's no from the
    store: the address lost its tags at every resync and got them back at every full sync (True/False/True/False).
    """
    from tests.test_serve_resync import orders_for

    key, cid = next(iter(managed_contacts(small_shop).items()))
    clients = small_shop.parent / "clients.csv"
    header, *lines = clients.read_text(encoding="utf-8-sig").splitlines()
    column = header.split(";").index("Согласие на рассылку")
    cells = next(line for line in lines if line.startswith(cid + ";")).split(";")
    cells[0], cells[column] = SECOND, "нет"
    clients.write_text("\ufeff" + "\n".join([header, *lines, ";".join(cells)]) + "\n", encoding="utf-8")
    tagged = []
    for tag in ("W", "W2"):
        run_cli("sync", "--config", str(small_shop), "--as-of", AS_OF.isoformat())
        tagged.append(key in managed_contacts(small_shop))
        _resync(small_shop, orders=orders_for([cid], tag))
        tagged.append(key in managed_contacts(small_shop))
    assert tagged == [True] * 4, tagged


def test_a_card_has_a_segment_at_the_as_of_as_the_full_planner_reads_it():
    """A completed order before the as-of's local midnight gives a segment; a refund alone, an order after the
    as-of or none does not (segmentation.metrics scores only frequency > 0)."""
    from datetime import date
    from types import SimpleNamespace

    from sync.serve.resync_scope import segmented
    from sync.store import connect_store

    con = connect_store(None)
    con.executemany("INSERT INTO orders (order_id, customer_id, ordered_at, amount, status) VALUES (?, ?, ?, 1, ?)", [
        ("1", "sold", "2025-06-30 23:30:00+05", "completed"), ("2", "refund", "2025-06-01 12:00:00+05", "refunded"),
        ("3", "later", "2025-07-01 00:30:00+05", "completed")])
    cfg = SimpleNamespace(timezone="Asia/Tashkent")
    assert segmented(con, {"sold", "refund", "later", "none"}, cfg, date(2025, 6, 30)) == {"sold"}
    assert segmented(con, {"sold", "refund", "later", "none"}, cfg, date(2025, 7, 1)) == {"sold", "later"}
    assert segmented(con, set(), cfg, None) == set()


def test_an_address_an_older_resync_stored_unnormalised_is_found_after_the_upgrade(
        small_shop, mailchimp_fake):  # noqa: F811
    """A store written before e-mails were staged normalised holds a library caller's ``'  FAM@SHOP.UZ '``: the
    first webhook resync after the upgrade normalises it (when it builds the index on the contacts' e-mails), so
    that card's no is found by the exact lookup. Before, the address kept its tags until the nightly sync."""
    from sync.config import load_config
    from sync.pipeline import store_path
    from sync.store import open_store
    from tests.test_serve_resync import orders_for

    key, cid = next(iter(managed_contacts(small_shop).items()))
    with open_store(store_path(load_config(small_shop))) as con:
        con.execute("INSERT INTO contacts (customer_id, email, marketing_consent) VALUES (?, ?, 'no')",
                    [SECOND, f"  {key.upper()} "])
        con.execute("INSERT INTO orders (order_id, customer_id, ordered_at, amount, status) "
                    "VALUES ('old-W', ?, '2025-06-20 12:00:00+00', 50000, 'completed')", [SECOND])
    _resync(small_shop, orders=orders_for([cid], "W"))
    assert key not in managed_contacts(small_shop)
    assert not set(mailchimp_fake.tags_of(key)) & MANAGED
    with open_store(store_path(load_config(small_shop))) as con:
        assert con.execute("SELECT email FROM contacts WHERE customer_id = ?", [SECOND]).fetchall() == [(key,)]


def test_a_contested_withdrawal_is_labelled_with_its_owner_s_segment_and_pushes_the_same():
    """kept28 #5: the owner's withdrawal planned by a resync of the refusing card C2 (segment "Churn") carried
    C2's segment under C1's customer id: C1's contact labelled with another customer's segment. It carries C1's
    segment now, as the store's segment history gives it (the full sync's label); what is pushed (no managed tag,
    the owner's fields) and the guards' reading of it (a withdrawal, not one who left the base) are unchanged.
    Without a segment for C1 in the store, C2's stays (never ``""``: the guards would take it for one who left)."""
    from sync.guards import withdrawal_change
    from sync.planning.plan import plan_destination
    from sync.config import DestinationConfig

    last = {"fam@shop.uz": PushedState("fam@shop.uz", "C1", frozenset({"rfm:Winback", "hand"}), {"SEG": "Churn"})}
    desired = [DesiredContact(key="fam@shop.uz", customer_id="C2", email="fam@shop.uz", consent="no",
                              segment="Beginners", tags=frozenset(), fields={"SEG": "Beginners"})]
    asked: list[set[str]] = []

    def segments(ids):
        asked.append(set(ids))
        return {"C1": "Best active"}

    kept, _, _ = leave_shared_to_full_sync(desired, last, {"C2"}, lambda keys, among: {"fam@shop.uz": {"C1"}},
                                           new_contacts="skip", segments=segments)
    assert [(d.customer_id, d.segment, d.tags, d.fields) for d in kept] == [
        ("C1", "Best active", frozenset(), {"SEG": "Churn"})] and asked == [{"C1"}]
    dest = DestinationConfig(name="mc", type="mailchimp", audience="a", new_contacts="skip",
                             segments={"Best active": "rfm:Winback"},
                             fields={"SEG": "segment"})
    (change,) = plan_destination(dest, kept, last).changes
    assert change.segment == "Best active" and change.remove_tags == {"rfm:Winback"} and not change.add_tags
    assert withdrawal_change(change, "skip")
    unknown, _, _ = leave_shared_to_full_sync(desired, last, {"C2"}, lambda keys, among: {"fam@shop.uz": {"C1"}},
                                              new_contacts="skip", segments=lambda ids: {})
    assert unknown[0].segment == "Beginners"


def test_the_owner_s_segment_labelling_his_withdrawal_is_the_store_s(small_shop, mailchimp_fake):  # noqa: F811
    """kept28 #5: the label's source, :func:`sync.serve.resync_scope.store_segments`: the owner's segment on the
    history's latest line (what the last sync recorded), nothing for a customer it does not hold; and the resync of
    the refusing card still withdraws the address (what is pushed unchanged)."""
    import csv
    import io

    from sync.config import load_config
    from sync.serve.resync_scope import StoreReads, store_segments

    key, cid = _shared_and_synced(small_shop)
    rows = csv.DictReader(io.StringIO(run_cli("segments", "--config", str(small_shop), "--as-of", AS_OF.isoformat(),
                                              "--customers", "-o", "-").stdout))
    segment = next(r["segment"] for r in rows if r["customer_id"] == cid)
    reads = StoreReads()
    assert store_segments(load_config(small_shop), {cid, "nobody"}, reads=reads) == {cid: segment}
    assert reads.rows >= 1
    # inside the resync's shared reads (holding the non-re-entrant store lock): on their one connection, no second
    # lock taken (fixk28), as shared_addresses reads it
    cfg, shared = load_config(small_shop), StoreReads()
    with shared.shared():
        assert store_segments(cfg, {cid}, reads=shared) == {cid: segment}
        assert store_segments(cfg, {cid, "nobody"}, reads=shared) == {cid: segment} and shared.opens == 1
    _resync(small_shop, contacts=[Contact(customer_id=SECOND, email=key, marketing_consent=Consent.NO)])
    assert key not in managed_contacts(small_shop) and not set(mailchimp_fake.tags_of(key)) & MANAGED
