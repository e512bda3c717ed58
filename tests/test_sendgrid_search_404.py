"""SendGrid's ``search/emails`` 404: "none of these addresses is a contact" only when its JSON errors say so.

Before an upsert that must not create anyone (a ``retire_fields`` clear; a known contact planned without a
creation status) the destination looks the addresses up. A 404 whose body is not SendGrid's JSON errors (a
proxy's HTML page) used to be read as "none found": every clear was recorded done and every such contact
``missing``, so the ledger forgot contacts whose values stayed in SendGrid. It is now a bad answer: nothing is
accounted for, the items fail (sent again next run), nobody is forgotten."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sync.errors import DestinationError
from tests.fakes.sendgrid import sendgrid_fake  # noqa: F401  (fixture)
from tests.test_sendgrid import FIELDS, Recorder, change, make

HTML_404 = b"<html><body><h1>404 Not Found</h1>nginx</body></html>"
JSON_404 = b'{"errors": [{"field": null, "message": "No contacts found"}]}'
SEARCH = "/v3/marketing/contacts/search/emails"


def _clear(email: str):  # retire_fields' clear of a contact the ledger holds
    return replace(change(email, create=False, fields={"recency_days": None}), status_if_new=None)


def _known(email: str):  # a known contact's field update, planned without a creation status
    return replace(change(email, create=False, fields={"recency_days": 12}), status_if_new=None)


def _apply(fake, changes, body, content_type):
    dest, _, _ = make(fake)
    dest.prepare([], FIELDS)
    fake.answer_raw(body, content_type, status=404, method="POST", path="search/emails$")
    rec = Recorder()
    dest.apply(changes, rec)
    return rec.items


@pytest.mark.parametrize("make_change", [_clear, _known], ids=["clear", "known-contact-update"])
def test_an_html_404_on_the_search_forgets_nobody_and_fails_the_upserts(sendgrid_fake, make_change):
    items = _apply(sendgrid_fake, [make_change("a@x.com"), make_change("b@x.com")], HTML_404, "text/html")
    for email in ("a@x.com", "b@x.com"):
        item = items[(email, "upsert")]
        assert not item.ok and not item.missing  # not done, not forgotten: sent again next run
        assert "search contacts by email" in item.error and "404" in item.error
    assert sendgrid_fake.count("PUT", "/v3/marketing/contacts") == 0  # and nobody created by the upsert


@pytest.mark.parametrize("make_change, done", [(_clear, True), (_known, False)], ids=["clear", "known-contact-update"])
def test_sendgrids_own_404_still_means_none_found(sendgrid_fake, make_change, done):
    items = _apply(sendgrid_fake, [make_change("a@x.com")], JSON_404, "application/json")
    item = items[("a@x.com", "upsert")]
    assert item.missing and item.ok is done  # a clear of a contact SendGrid lacks is done: he holds nothing
    assert sendgrid_fake.count("PUT", "/v3/marketing/contacts") == 0


def test_an_html_404_on_the_search_is_no_answer_to_existing_members(sendgrid_fake):
    sendgrid_fake.add_contact("a@x.com")
    dest, _, _ = make(sendgrid_fake)
    sendgrid_fake.answer_raw(HTML_404, "text/html", status=404, method="POST", path="search/emails$")
    with pytest.raises(DestinationError, match="search contacts by email.*not believed"):
        dest.existing_members(["a@x.com", "b@x.com"])
    assert dest.existing_members(["a@x.com", "b@x.com"]) == {"a@x.com": "present"}  # the real 200 answer
    assert sendgrid_fake.count("POST", SEARCH) == 2
