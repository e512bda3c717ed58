"""The Mailchimp client's requests: what :class:`sync.destinations.mailchimp_api._ApiClient` sends is what a
``requests.Session`` would send (prepared without the session's merging), redirects are followed as the session
follows them, and no cookie is kept or sent."""

from __future__ import annotations

import random

import pytest
import requests

from connectors.retry import RetryPolicy
from sync.destinations.mailchimp import MailchimpDestination
from sync.destinations.mailchimp_api import _ApiClient
from sync.destinations.mailchimp_bodies import JsonText
from sync.model import ContactChange, ItemResult
from tests.fakes.http import LoopbackServer, Reply, Request
from tests.fakes.mailchimp import FakeMailchimp

#: what the SDK's ``call_api`` passes: its default headers and the call's (some with the SDK's own spelling)
SDK_HEADERS = {"Accept": "application/json", "Content-Type": "application/json",
               "User-Agent": "Swagger-Codegen/3.0.80/python"}


@pytest.mark.parametrize("method, url, query, headers, data", [
    ("GET", "https://us21.api.mailchimp.com/3.0/lists/aud1", [("fields", "id,name")], SDK_HEADERS, None),
    ("GET", "https://us21.api.mailchimp.com/3.0/lists/aud1/members",
     [("count", 1000), ("offset", 2000), ("fields", "members.email_address,total_items")], {}, None),
    ("POST", "https://us21.api.mailchimp.com/3.0/lists/aud1", [], SDK_HEADERS,
     JsonText('{"members":[{"email_address":"a@example.com"}],"update_existing":true}')),
    ("POST", "https://us21.api.mailchimp.com/3.0/lists/aud1/segments/12", None, SDK_HEADERS, '{"members_to_add":[]}'),
    ("PATCH", "http://127.0.0.1:8080/3.0/lists/aud%201/merge-fields/3", None, {**SDK_HEADERS, "Accept": None}, "{}"),
    ("DELETE", "https://us21.api.mailchimp.com/3.0/lists/aud1/segments/12", None, {"Connection": "close"}, None),
])
def test_a_call_is_prepared_as_the_session_prepares_it(method, url, query, headers, data) -> None:
    client = _ApiClient({"api_key": "k3y-us21", "server": "", "timeout": 5}, "https://us21.api.mailchimp.com")
    for key in ("k3y-us21", "k3y-us21", "0ther-us21"):  # the auth header follows a changed key
        client.api_key = key
        mine = client.prepare(method, url, query, headers, data)
        theirs = client.session.prepare_request(requests.Request(method, url, params=query, headers=headers,
                                                                 data=data, auth=("user", key)))
        assert (mine.method, mine.url, mine.body) == (theirs.method, theirs.url, theirs.body)
        assert list(mine.headers.items()) == list(theirs.headers.items())  # the same headers, in the same order
        assert client.prepare(method, url, query, headers, data).url == mine.url  # a cached URL as well


def change(email: str, **kwargs) -> ContactChange:
    return ContactChange(key=email.lower(), email=email, customer_id=email, segment="s", create=True,
                         status_if_new="subscribed", set_fields={"segment": "s"}, **kwargs)


def test_redirects_are_followed_and_no_cookie_is_kept_or_sent() -> None:
    """Every call answered first by a 307 to the API's real path with a cookie: the calls land (as the session
    followed redirects), and no call, redirected or later, carries a cookie."""
    fake = FakeMailchimp()
    seen: list[Request] = []

    def handle(req: Request) -> Reply:
        seen.append(req)
        if req.path.startswith("/moved/"):
            query = "&".join(f"{k}={v}" for k, v in req.query.items())
            return Reply(307, b"", {"Location": req.path.removeprefix("/moved") + ("?" + query if query else ""),
                                    "Set-Cookie": "lb=node7; Path=/"})
        return fake.handle(req)

    with LoopbackServer(handle) as server:
        dest = MailchimpDestination("mc", "aud1", fake.api_key, api_url=server.url + "/moved/3.0",
                                    retry=RetryPolicy(attempts=1, sleep=lambda s: None, rng=random.Random(0)),
                                    timeout=5)
        dest.prepare(["rfm:A"], {"SEGMENT": "segment"})
        results: list[ItemResult] = []
        dest.apply([change("a@example.com", add_tags=frozenset({"rfm:A"})), change("b@example.com")],
                   results.extend)
    assert sorted((r.key, r.op, r.ok) for r in results) == [
        ("a@example.com", "tag+rfm:A", True), ("a@example.com", "upsert", True), ("b@example.com", "upsert", True)]
    assert fake.member("b@example.com")["merge_fields"] == {"SEGMENT": "s"}
    assert fake.tags_of("a@example.com") == {"rfm:A"}
    moved = [r for r in seen if r.path.startswith("/moved/")]
    assert len(moved) == len(seen) // 2 >= 5  # every call redirected once
    assert not [r for r in seen if "cookie" in r.headers]
