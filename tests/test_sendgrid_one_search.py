"""SendGrid's apply searches an address once (``search/emails``): a contact whose change clears a retired field
(looked up first, so that the upsert never re-creates him) and takes a list off him was searched again for the
removal. Counted by the loopback fake's request log. And the fallbacks: an address the lookup did not account
for is searched again; the removal search's bad answer fails only the removals it was asked for."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace

import pytest

from tests.fakes.sendgrid import sendgrid_fake  # noqa: F401  (fixture)
from tests.test_sendgrid import FIELDS, Recorder, change, make

SEARCH = "/v3/marketing/contacts/search/emails"


def _clear_and_remove(email: str):  # retire_fields' clear merged into a change that also takes a list off him
    return replace(change(email, create=False, fields={"rfm_segment": None}, remove={"Lost"}), status_if_new=None)


def searched_emails(fake) -> Counter:
    """How many times each address was sent to ``search/emails``, by the fake's request log."""
    return Counter(e for method, path, _, body in fake.requests if (method, path) == ("POST", SEARCH)
                   for e in body["emails"])


def test_a_clear_s_lookup_serves_the_removal_and_each_address_is_searched_once(sendgrid_fake):  # noqa: F811
    dest, _, _ = make(sendgrid_fake)
    dest.prepare(["Lost"], FIELDS)
    for email in ("a@x.com", "c@x.com"):
        sendgrid_fake.add_contact(email, lists=["RFM Lost"], rfm_segment="Lost")
    rec = Recorder()
    dest.apply([_clear_and_remove("a@x.com"), _clear_and_remove("gone@x.com"),  # gone: deleted in SendGrid
                change("c@x.com", remove={"Lost"}, create=False)], rec)  # a removal alone: searched for it

    assert searched_emails(sendgrid_fake) == {"a@x.com": 1, "gone@x.com": 1, "c@x.com": 1}
    assert sendgrid_fake.members("RFM Lost") == set() and "gone@x.com" not in sendgrid_fake.contacts
    assert not sendgrid_fake.field_value("a@x.com", "rfm_segment")
    assert sendgrid_fake.field_value("c@x.com", "rfm_segment") == "Lost"
    items = rec.items
    assert all(items[(e, "tag-Lost")].ok for e in ("a@x.com", "gone@x.com", "c@x.com"))
    assert items[("a@x.com", "upsert")].ok and items[("gone@x.com", "upsert")].missing
    assert sendgrid_fake.forbidden_calls == []


@pytest.mark.parametrize("body, ctype, status", [
    (json.dumps({"result": {}}).encode(), "application/json", 200),  # a 200 that leaves the address out
    (b"<html>not found</html>", "text/html", 404),  # a 404 that says nothing (not SendGrid's "not found")
], ids=["200-leaves-out", "bare-404"])
def test_an_address_the_clear_s_lookup_did_not_account_for_is_searched_again_for_its_removal(
        sendgrid_fake, body, ctype, status):  # noqa: F811
    dest, _, _ = make(sendgrid_fake)
    dest.prepare(["Lost"], FIELDS)
    sendgrid_fake.add_contact("a@x.com", lists=["RFM Lost"], rfm_segment="Lost")
    sendgrid_fake.answer_raw(body, ctype, status=status, method="POST", path="search/emails")
    rec = Recorder()
    dest.apply([_clear_and_remove("a@x.com")], rec)
    assert searched_emails(sendgrid_fake)["a@x.com"] == 2  # the lookup's answer proved nothing: searched again
    assert rec.items[("a@x.com", "tag-Lost")].ok and sendgrid_fake.members("RFM Lost") == set()
    assert not rec.items[("a@x.com", "upsert")].ok  # the clear itself is not sent on an unaccounted lookup


def test_a_removal_search_s_bad_answer_fails_only_the_addresses_it_was_asked_for(sendgrid_fake):  # noqa: F811
    """The removal's own search answers badly: the removals of the addresses it searched fail (sent again next
    run); the one the clear's lookup found still goes out (it used to fail too, though its id was known)."""
    dest, _, _ = make(sendgrid_fake)
    dest.prepare(["Lost"], FIELDS)
    a = sendgrid_fake.add_contact("a@x.com", lists=["RFM Lost"], rfm_segment="Lost")
    sendgrid_fake.add_contact("c@x.com", lists=["RFM Lost"], rfm_segment="Lost")
    found = {"result": {"a@x.com": {"contact": {"id": a["id"], "email": "a@x.com", "list_ids": [],
                                                "custom_fields": {}}}}}
    sendgrid_fake.answer_raw(json.dumps(found).encode(), "application/json", method="POST", path="search/emails")
    sendgrid_fake.answer_raw(b"<html>nope</html>", "text/html", status=404, method="POST", path="search/emails")
    rec = Recorder()
    dest.apply([_clear_and_remove("a@x.com"), change("c@x.com", remove={"Lost"}, create=False)], rec)
    assert searched_emails(sendgrid_fake) == {"a@x.com": 1, "c@x.com": 1}
    assert rec.items[("a@x.com", "tag-Lost")].ok and not rec.items[("c@x.com", "tag-Lost")].ok
    assert sendgrid_fake.members("RFM Lost") == {"c@x.com"}
