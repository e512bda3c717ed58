"""One address, several customer cards (a family account, one person's old and new card): the contact is the
first card's in planning order (the more valuable), and its consent is what all the cards say: a "no" on any of
them wins, else a "yes" on any, else unknown (docs/sync.md, "Plan"; :func:`sync.planning.consent.address_consent`).
Before, the first card's consent alone counted: the owner's "no" on his newer card was ignored, and the address
was created ``subscribed``. Both planners (the columnar one of a full sync, the Python one of a webhook resync),
and a plan through `rfmsync` of the demo shop with a second card of its most valuable customer."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal

import pytest

from sync.model import PushedState
from tests.builders import run_cli
from tests.test_guards_withdrawal import MANAGED, managed_contacts, small_shop  # noqa: F401
from tests.test_plan_columnar import DEST, columnar, reference
from tests.test_worker import AS_OF as AS_OF_SHOP

AS_OF = date(2025, 6, 30)


def _rows(*consents: str | None) -> list[dict]:
    """A card per consent, all giving fam@shop.uz, in planning order (the first the most valuable)."""
    return [{"customer_id": f"C{i}", "email": "fam@shop.uz" if i % 2 else " FAM@Shop.uz", "segment": "Churn",
             "r": 2, "monetary": Decimal(100 - i), "p_alive": 0.5, "first_order_at": date(2024, 1, 2),
             "marketing_consent": consent} for i, consent in enumerate(consents, 1)]


@pytest.mark.parametrize("planner", [columnar, reference])
@pytest.mark.parametrize("consents, mode, expected", [
    (("yes", "no"), "subscribed", (True, "transactional")),  # the hunter's case: it was created subscribed
    (("yes", "no"), "pending", (True, "pending")),
    (("yes", "unknown", "no"), "skip", None),  # not created: the address's consent is no
    (("no", "yes"), "transactional", (True, "transactional")),  # a later card's yes does not beat a no
    (("unknown", "yes"), "subscribed", (True, "subscribed")),  # a card that says nothing is no statement
    ((None, ""), "subscribed", (True, "transactional")),
    (("yes", "yes"), "skip", (True, "subscribed")),
])
def test_a_new_shared_address_is_created_under_what_all_its_cards_say(planner, consents, mode, expected):
    plan = planner(_rows(*consents), {}, DEST.model_copy(update={"new_contacts": mode}))
    created = {c.key: (c.create, c.status_if_new) for c in plan.changes}
    if expected is None:
        assert created == {} and [(s.key, s.customer_id) for s in plan.skipped] == [("fam@shop.uz", "C1")]
    else:
        assert created == {"fam@shop.uz": expected}
        assert {c.customer_id for c in plan.changes} == {"C1"}  # still the first card's contact


@pytest.mark.parametrize("planner", [columnar, reference])
def test_under_skip_a_no_on_the_other_card_takes_the_managed_tags_off_as_a_withdrawal(planner):
    dest = DEST.model_copy(update={"new_contacts": "skip"})
    last = {"fam@shop.uz": PushedState("fam@shop.uz", "C1", frozenset({"rfm:Winback", "hand-added"}),
                                       {"SEG": "Churn"})}
    plan = planner(_rows("yes", "no"), last, dest)
    assert [(c.key, c.add_tags, c.remove_tags) for c in plan.changes] == [
        ("fam@shop.uz", frozenset(), frozenset({"rfm:Winback"}))]
    assert plan.withdrawn == ("fam@shop.uz",)
    kept = planner(_rows("yes", "unknown"), last, dest)  # no "no": the tags stay
    assert kept.withdrawn == () and not any(c.remove_tags for c in kept.changes)


def _hunters_shop(tmp_path, monkeypatch):
    """The hunter's shop: C00001 (the most valuable, "да") and a new card C09999 with her e-mail and "нет"; its
    config and the address."""
    from sync.demodata import generate_shop

    cfg = generate_shop(tmp_path / "shop", customers=60, seed=3, as_of=AS_OF)
    cfg.write_text(cfg.read_text(encoding="utf-8").replace('new_contacts = "transactional"',
                                                           'new_contacts = "subscribed"'), encoding="utf-8")
    clients = tmp_path / "shop" / "clients.csv"
    lines = clients.read_text(encoding="utf-8-sig").splitlines()
    first = next(line for line in lines if line.startswith("C00001;"))
    email = first.split(";")[4]
    assert ";да;" in first and email
    clients.write_text("\ufeff" + "\n".join([*lines, f"C09999;Усманова;Малика;;{email};нет;Бухара;20.06.2025"])
                       + "\n", encoding="utf-8")
    orders = tmp_path / "shop" / "orders.csv"
    order = f"199999;20.06.2025 12:00;C09999;;{email};50 000,00;;Продажа"  # her one small order
    orders.write_text("\ufeff" + "\n".join([*orders.read_text(encoding="utf-8-sig").splitlines(), order]) + "\n",
                      encoding="utf-8")
    monkeypatch.delenv("MAILCHIMP_API_KEY", raising=False)
    monkeypatch.setenv("RFMSYNC_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.db'}")
    return cfg, email


def test_the_plan_of_a_shop_creates_the_shared_address_under_the_newer_cards_no(tmp_path, monkeypatch):
    cfg, email = _hunters_shop(tmp_path, monkeypatch)
    doc = json.loads(run_cli("plan", "--config", str(cfg), "--as-of", AS_OF.isoformat(), "--format", "json").stdout)
    (change,) = [c for c in doc["plans"][0]["changes"] if c["key"] == email]
    assert (change["customer_id"], change["create"], change["status_if_new"]) == ("C00001", True, "transactional")


def test_explain_of_either_card_says_whose_no_the_address_carries(tmp_path, monkeypatch):
    """Before, explain showed each card's own consent alone: C00001's "yes" for an address that is not
    subscribed."""
    cfg, email = _hunters_shop(tmp_path, monkeypatch)
    args = ("--config", str(cfg), "--as-of", AS_OF.isoformat())
    first = json.loads(run_cli("explain", "C00001", *args, "--format", "json").stdout)["contact"]
    assert (first["marketing_consent"], first["shared_with"], first["address_consent"], first["refused_by"]) == (
        "yes", ["C09999"], "no", ["C09999"])
    second = json.loads(run_cli("explain", "C09999", *args, "--format", "json").stdout)["contact"]
    assert (second["marketing_consent"], second["shared_with"], second["address_consent"], second["refused_by"]) \
        == ("no", ["C00001"], "no", [])
    text = run_cli("explain", "C00001", *args).stdout
    assert "Address shared with customer(s) C09999: its consent is no (customer C09999's card refuses)" in text


def test_a_webhook_resync_of_the_card_saying_yes_does_not_tag_again_what_the_other_cards_no_withdrew(
        small_shop, mailchimp_fake):  # noqa: F811
    """Under ``skip``: a managed contact's address given by a new card with "нет" is withdrawn by the full sync;
    a webhook order of the first card ("да") then resyncs him alone. Before, the resync saw his card only and put
    the tags back (until the next full sync took them off again)."""
    from sync.config import load_config
    from sync.ledger import open_ledger
    from sync.serve.resync import resync
    from sync.settings import load_settings
    from tests.test_serve_resync import orders_for

    key, cid = next(iter(managed_contacts(small_shop).items()))
    clients = small_shop.parent / "clients.csv"
    header, *lines = clients.read_text(encoding="utf-8-sig").splitlines()
    cells = next(line for line in lines if line.startswith(cid + ";")).split(";")
    column = header.split(";").index("Согласие на рассылку")
    assert cells[column] == "да"
    cells[0], cells[column] = "C09999", "нет"
    clients.write_text("\ufeff" + "\n".join([header, *lines, ";".join(cells)]) + "\n", encoding="utf-8")
    orders = small_shop.parent / "orders.csv"  # her one small order: a customer of the segments
    orders.write_text("\ufeff" + "\n".join([*orders.read_text(encoding="utf-8-sig").splitlines(),
                                             f"199999;20.06.2025 12:00;C09999;;{key};50 000,00;;Продажа"]) + "\n",
                      encoding="utf-8")
    run_cli("sync", "--config", str(small_shop), "--as-of", AS_OF_SHOP.isoformat())
    assert key not in managed_contacts(small_shop)
    cfg, settings = load_config(small_shop), load_settings()
    with open_ledger(cfg, settings) as ledger:
        resync(cfg, ledger, settings, orders_for([cid], "W"), as_of=AS_OF_SHOP)
    assert key not in managed_contacts(small_shop)
    assert not set(mailchimp_fake.tags_of(key)) & MANAGED, mailchimp_fake.tags_of(key)


@pytest.mark.parametrize("planner", [columnar, reference])
@pytest.mark.parametrize("consents, reason", [
    (("yes", "no"), "another card of this address (customer C2's) refuses marketing consent (new_contacts = skip)"),
    (("unknown", "yes", "no", "no"), "another card of this address (customer C3's) refuses marketing consent "
                                     "(new_contacts = skip)"),
    (("no", "yes"), "no marketing consent (new_contacts = skip)"),  # the contact's own card refuses
    (("no",), "no marketing consent (new_contacts = skip)"),
])
def test_a_skip_names_the_card_that_refuses(planner, consents, reason):
    """Before, the reason said the first card (C1, the contact's) had no marketing consent when it said yes."""
    plan = planner(_rows(*consents), {}, DEST.model_copy(update={"new_contacts": "skip"}))
    assert [(s.customer_id, s.reason) for s in plan.skipped] == [("C1", reason)]
    assert plan.new_by_status()["skipped"] == 1
