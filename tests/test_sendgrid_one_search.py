"""SendGrid's apply searches an address once (``search/emails``): a contact whose change clears a retired field
(looked up first, so that the upsert never re-creates him) and takes a list off him was searched again for the
removal. Counted by the loopback fake's request log."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from tests.fakes.sendgrid import sendgrid_fake  # noqa: F401  (fixture)
from tests.test_sendgrid import FIELDS, Recorder, change, make

SEARCH = "/v3/marketing/contacts/search/emails"


def _clear_and_remove(email: str):  # retire_fields' clear merged into a change that also takes a list off him
    return replace(change(email, create=False, fields={"rfm_segment": None}, remove={"Lost"}), status_if_new=None)


def test_a_clear_s_lookup_serves_the_removal_and_each_address_is_searched_once(sendgrid_fake):  # noqa: F811
    dest, _, _ = make(sendgrid_fake)
    dest.prepare(["Lost"], FIELDS)
    for email in ("a@x.com", "c@x.com"):
        sendgrid_fake.add_contact(email, lists=["RFM Lost"], rfm_segment="Lost")
    rec = Recorder()
    dest.apply([_clear_and_remove("a@x.com"), _clear_and_remove("gone@x.com"),  # gone: deleted in SendGrid
                change("c@x.com", remove={"Lost"}, create=False)], rec)  # a removal alone: searched for it

    searched = Counter(e for method, path, _, body in sendgrid_fake.requests if (method, path) == ("POST", SEARCH)
                       for e in body["emails"])
    assert searched == {"a@x.com": 1, "gone@x.com": 1, "c@x.com": 1}
    assert sendgrid_fake.members("RFM Lost") == set() and "gone@x.com" not in sendgrid_fake.contacts
    assert not sendgrid_fake.field_value("a@x.com", "rfm_segment")
    assert sendgrid_fake.field_value("c@x.com", "rfm_segment") == "Lost"
    items = rec.items
    assert all(items[(e, "tag-Lost")].ok for e in ("a@x.com", "gone@x.com", "c@x.com"))
    assert items[("a@x.com", "upsert")].ok and items[("gone@x.com", "upsert")].missing
    assert sendgrid_fake.forbidden_calls == []
