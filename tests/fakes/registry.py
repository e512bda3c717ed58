"""Destination type → how the contract battery and the sync benchmark drive its stateful loopback fake.

One :class:`FakeDestination` subclass per ESP, registered in :data:`DESTINATIONS` under the ``type`` the config
uses. A harness owns a running fake and knows, for that vendor:

- which environment variables point rfmsync at the fake (:meth:`~FakeDestination.env`), and a
  ``[[destinations]]`` table for it (:meth:`~FakeDestination.destination`);
- how to read a contact back: the managed tags/lists it carries (in the engine's names, see
  :func:`sync.planning.plan.managed_tags`), a field's value, its subscription status (:meth:`~FakeDestination.status`);
- how to seed a pre-existing contact with a status, an unmanaged tag/list and an unmanaged field
  (:meth:`~FakeDestination.seed`), and check those survived (:meth:`~FakeDestination.unmanaged`);
- how to inject 429s, 5xx, timeouts and per-item rejections on its write endpoint;
- how to count write calls, and the theoretical minimum a plan needs per the vendor's documented batch maxima
  (:meth:`~FakeDestination.minimum_writes`: Σ ceil(n / batch max) per operation kind);
- which protocol rules it broke (:meth:`~FakeDestination.violations`: status overwrites, forbidden calls, …).

A new destination joins the battery (``tests/test_destination_contract.py``) and ``bench/sync.py`` by adding its
module in ``sync/destinations/`` (registered in ``sync.destinations.registry``) and one entry here.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from typing import Any, Callable, ClassVar, Iterable, Mapping, Sequence

from connectors.retry import RetryPolicy
from sync.destinations.base import Destination
from sync.model import ContactChange

from .http import Reply, Request
from .mailchimp import MAX_BATCH as MAILCHIMP_MAX, FakeMailchimp
from .sendgrid import MAX_SEARCH, MAX_UPSERT_CONTACTS, FakeSendGrid
from .unisender import MAX_IMPORT_ROWS, FakeUnisender

#: what the battery's "does this contact get marketing e-mail" check compares against
SUBSCRIBED = "subscribed"
UNMANAGED_TAG = "hand-picked"
UNMANAGED_LIST = "Newsletter"
UNMANAGED_FIELD = "CITY"
UNMANAGED_VALUE = "Tashkent"


def _ceil(n: int, size: int) -> int:
    return math.ceil(n / size) if n else 0


def _batch(configured: int | None, api_max: int) -> int:
    return max(1, min(configured or api_max, api_max))


class FakeDestination:
    """Base of the per-ESP harnesses: lifecycle and the parts every vendor shares."""

    type: ClassVar[str]
    #: reconcile (``read_managed``) is supported
    reconcile: ClassVar[bool] = True

    def __init__(self) -> None:
        self.fake: Any = self._make_fake()

    # ------------------------------------------------------------------ lifecycle
    def _make_fake(self) -> Any:
        raise NotImplementedError

    def __enter__(self) -> "FakeDestination":
        self.fake.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.fake.stop()

    # ------------------------------------------------------------------ pointing rfmsync at it
    def env(self) -> dict[str, str]:
        raise NotImplementedError

    def destination(self, name: str, segments: Mapping[str, str], fields: Mapping[str, str],
                    batch_size: int | None = None, tags: Mapping[str, str] | None = None) -> dict[str, Any]:
        """A ``[[destinations]]`` table (as a dict) for this fake: ``fields`` maps a neutral field name to an
        rfmsync value and is renamed to the vendor's conventions (see :meth:`field_name`); ``tags``
        (segment → tag) is used only by destinations that have tags besides lists (Unisender)."""
        out: dict[str, Any] = {"name": name, "type": self.type, "segments": dict(segments),
                               "fields": {self.field_name(k): v for k, v in fields.items()}}
        if batch_size:
            out["batch_size"] = batch_size
        return out

    def field_name(self, neutral: str) -> str:
        return neutral

    def client(self, dest: Any, *, retry: RetryPolicy, timeout: float) -> Destination:
        """The destination client with an injected retry policy and timeout (timeout drills)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ reading back
    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def managed_of(self, key: str, managed: Iterable[str]) -> set[str]:
        """The managed names (engine spelling) the contact carries now."""
        raise NotImplementedError

    def field(self, key: str, esp_field: str) -> Any:
        raise NotImplementedError

    def status(self, key: str) -> str | None:
        """The vendor's status of the contact (None when it does not exist or the vendor has none)."""
        raise NotImplementedError

    def gets_marketing(self, key: str) -> bool:
        """Whether the contact would receive a marketing campaign (subscribed)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ seeding
    def seed(self, email: str, *, unsubscribed: bool) -> None:
        """A contact that exists before rfmsync runs: ``unsubscribed`` (or subscribed), carrying the unmanaged
        tag/list and an unmanaged field value."""
        raise NotImplementedError

    def unmanaged(self, email: str) -> dict[str, Any]:
        """What :meth:`seed` put there that rfmsync must leave alone: {"tag": bool, "field": value}."""
        raise NotImplementedError

    # ------------------------------------------------------------------ drills
    def throttle(self, times: int) -> None:
        """The next ``times`` write calls answer "too many requests" (with a zero wait)."""
        raise NotImplementedError

    def server_error(self, times: int) -> None:
        raise NotImplementedError

    def timeout(self, seconds: float, times: int) -> None:
        """The next ``times`` bulk writes answer only after ``seconds`` (the work is done: a late answer)."""
        raise NotImplementedError

    def reject(self, emails: Iterable[str], message: str | None = None) -> None:
        """These contacts are refused per item, named in the answer with ``message`` (or the fake's own), the
        rest of their batch goes through."""
        raise NotImplementedError

    def clear_rejections(self) -> None:
        raise NotImplementedError

    def answer_raw(self, body: bytes, content_type: str, *, work: bool = False) -> None:
        """One-shot: the next bulk write (the call that creates/updates contacts) is answered 200 with exactly
        ``body`` and ``content_type``; ``work``: the fake did the work before the answer got mangled."""
        self.fake.answer_raw(body, content_type, work=work)

    def forget(self, key: str) -> None:
        """Delete a contact in the ESP behind rfmsync's back (drift the ledger does not know about)."""
        self.fake.forget(key)

    # ------------------------------------------------------------------ counting
    @property
    def write_calls(self) -> int:
        return int(self.fake.write_calls)

    def setup_writes(self, managed: Sequence[str], fields: Mapping[str, str]) -> int:
        """Write calls ``prepare`` must make on the fake as it is now (missing tags/lists and fields)."""
        raise NotImplementedError

    def minimum_writes(self, changes: Sequence[ContactChange], batch_size: int | None = None) -> dict[str, int]:
        """Theoretical minimum write calls per operation kind for these changes (documented maxima)."""
        raise NotImplementedError

    def violations(self) -> list[str]:
        raise NotImplementedError


# ====================================================================== Mailchimp
class MailchimpFake(FakeDestination):
    """Tags are static segments; fields are merge fields (tags upper-cased, ≤ 10 characters)."""

    type = "mailchimp"
    audience = "aud1"
    tag_prefix = "rfm: "

    def _make_fake(self) -> FakeMailchimp:
        fake = FakeMailchimp(list_id=self.audience)
        fake.add_merge_field(UNMANAGED_FIELD, name="City")
        return fake

    def env(self) -> dict[str, str]:
        return {"MAILCHIMP_API_KEY": self.fake.api_key, "MAILCHIMP_API_URL": self.fake.url}

    def destination(self, name, segments, fields, batch_size=None, tags=None):
        return {**super().destination(name, segments, fields, batch_size), "audience": self.audience,
                "tag_prefix": self.tag_prefix}

    def field_name(self, neutral: str) -> str:
        return neutral[:10]  # mixed case on purpose: merge tags are upper-cased by the destination

    def client(self, dest, *, retry, timeout):
        from sync.destinations.mailchimp import MailchimpDestination

        return MailchimpDestination(dest.name, dest.audience, self.fake.api_key, api_url=self.fake.url,
                                    retry=retry, timeout=timeout, batch_size=dest.batch_size)

    def exists(self, key):
        return key.lower() in self.fake.lists[self.audience].members

    def managed_of(self, key, managed):
        return self.fake.tags_of(key) & set(managed) if self.exists(key) else set()

    def field(self, key, esp_field):
        return self.fake.member(key)["merge_fields"].get(esp_field.upper())

    def status(self, key):
        return self.fake.member(key)["status"] if self.exists(key) else None

    def gets_marketing(self, key):
        return self.status(key) == SUBSCRIBED

    def seed(self, email, *, unsubscribed):
        self.fake.add_member(email, status="unsubscribed" if unsubscribed else "subscribed",
                             merge_fields={UNMANAGED_FIELD: UNMANAGED_VALUE}, tags=[UNMANAGED_TAG])

    def unmanaged(self, email):
        return {"tag": UNMANAGED_TAG in self.fake.tags_of(email), "field": self.field(email, UNMANAGED_FIELD)}

    def throttle(self, times):
        self.fake.fail(429, times=times, retry_after="0", method="POST")

    def server_error(self, times):
        self.fake.fail(503, times=times, method="POST")

    def timeout(self, seconds, times):
        self.fake.stall(seconds, times=times, method="POST", path=rf"^/lists/{self.audience}$")

    def answer_raw(self, body, content_type, *, work=False):
        self.fake.answer_raw(body, content_type, method="POST", path=rf"^/lists/{self.audience}$", work=work)

    def reject(self, emails, message=None):
        """Mailchimp's own words for an address it will not take (a refusal of him: MEMBER_REFUSALS), naming
        him, then ``message``."""
        refusal = "{} looks fake or invalid, please enter a real email address."
        self.fake.member_errors.update({e.lower(): " ".join(filter(None, (refusal.format(e), message)))
                                        for e in emails})

    def clear_rejections(self):
        self.fake.member_errors.clear()

    def setup_writes(self, managed, fields):
        lst = self.fake.lists[self.audience]
        return (sum(t.upper() not in lst.merge_fields for t in fields)
                + sum(t not in self.fake.segment_names() for t in managed))

    def minimum_writes(self, changes, batch_size=None):
        """Batch subscribe ≤ 500 members (one pass creates, one pass updates: ``status`` must only go to new
        members); a tag call carries ≤ 500 adds *and* ≤ 500 removes."""
        size = _batch(batch_size, MAILCHIMP_MAX)
        creates = sum(c.create and c.status_if_new is not None for c in changes)
        updates = sum(c.needs_upsert and not (c.create and c.status_if_new is not None) for c in changes)
        adds, removes = Counter(), Counter()
        for c in changes:
            adds.update(c.add_tags)
            removes.update(c.remove_tags)
        tags = sum(max(_ceil(adds[t], size), _ceil(removes[t], size)) for t in set(adds) | set(removes))
        return {"create": _ceil(creates, size), "update": _ceil(updates, size), "tags": tags}

    def violations(self):
        return list(self.fake.violations)


# ====================================================================== SendGrid
class _QuickResetSendGrid(FakeSendGrid):
    """The SendGrid fake, answering injected 429s with ``X-RateLimit-Reset`` = now (no real one-second wait)."""

    def handle(self, req: Request) -> Reply:
        reply = super().handle(req)
        if reply.status == 429:
            reply.headers["X-RateLimit-Reset"] = str(int(time.time()))
        return reply


class SendGridFake(FakeDestination):
    """Managed names are lists (``list_prefix`` + name); fields are custom fields; no subscription status:
    an address on a list gets marketing unless it is globally suppressed."""

    type = "sendgrid"
    list_prefix = "RFM "

    def _make_fake(self) -> FakeSendGrid:
        fake = _QuickResetSendGrid()
        fake.pending_polls = 0  # import jobs finish at once: the client's real 1 s poll sleep never happens
        fake.add_field(UNMANAGED_FIELD.lower())
        fake.add_list(UNMANAGED_LIST)
        return fake

    def env(self):
        return {"SENDGRID_API_KEY": self.fake.api_key, "SENDGRID_API_URL": self.fake.url}

    def destination(self, name, segments, fields, batch_size=None, tags=None):
        # "skip": SendGrid has no subscription status, so customers without consent are not added at all
        return {**super().destination(name, segments, fields, batch_size), "list_prefix": self.list_prefix,
                "new_contacts": "skip"}

    def field_name(self, neutral):
        return neutral.lower()

    def client(self, dest, *, retry, timeout):
        from sync.destinations.sendgrid import SendGridDestination

        return SendGridDestination(dest.name, self.fake.api_key, api_url=self.fake.url, list_prefix=dest.list_prefix,
                                   retry=retry, timeout=timeout, sleep=retry.sleep, poll_interval=0.01,
                                   batch_size=dest.batch_size)

    def exists(self, key):
        return key.lower() in self.fake.contacts

    def managed_of(self, key, managed):
        if not self.exists(key):
            return set()
        lists = self.fake.contacts[key.lower()]["list_ids"]
        return {t for t in managed if self.fake.list_id(t) in lists}

    def field(self, key, esp_field):
        return self.fake.field_value(key, esp_field)

    def status(self, key):
        if not self.exists(key):
            return None
        return "unsubscribed" if key.lower() in self.fake.suppressed else "present"

    def gets_marketing(self, key):
        return self.status(key) == "present" and bool(self.fake.contacts[key.lower()]["list_ids"])

    def seed(self, email, *, unsubscribed):
        self.fake.add_contact(email, lists=[UNMANAGED_LIST], **{UNMANAGED_FIELD.lower(): UNMANAGED_VALUE})
        if unsubscribed:
            self.fake.suppressed.add(email.lower())

    def unmanaged(self, email):
        return {"tag": email.lower() in self.fake.members(UNMANAGED_LIST),
                "field": self.field(email, UNMANAGED_FIELD.lower())}

    def throttle(self, times):
        self.fake.fail(429, times=times, method="PUT")

    def server_error(self, times):
        self.fake.fail(503, times=times, method="PUT")

    def timeout(self, seconds, times):
        self.fake.stall(seconds, times=times, method="PUT", path=r"/contacts$")

    def answer_raw(self, body, content_type, *, work=False):
        self.fake.answer_raw(body, content_type, method="PUT", path=r"/marketing/contacts$", work=work)

    def reject(self, emails, message=None):
        self.fake.reject.update({e.lower(): message or "invalid contact" for e in emails})

    def clear_rejections(self):
        self.fake.reject.clear()

    def setup_writes(self, managed, fields):
        known = {n.lower() for n, _ in self.fake.fields.values()}
        return sum(f.lower() not in known for f in fields) + sum(self.fake.list_id(t) is None for t in managed)

    def minimum_writes(self, changes, batch_size=None):
        """``PUT /contacts`` ≤ 30 000 contacts, one call per set of lists joined (``list_ids`` is per call);
        list removals ≤ 100 contact ids per ``DELETE /lists/{id}/contacts`` (searches are reads)."""
        size = _batch(batch_size, MAX_UPSERT_CONTACTS)
        groups = Counter(tuple(sorted(c.add_tags)) for c in changes if c.needs_upsert or c.add_tags)
        removes = Counter(t for c in changes for t in c.remove_tags)
        return {"upsert": sum(_ceil(n, size) for n in groups.values()),
                "remove": sum(_ceil(n, MAX_SEARCH) for n in removes.values())}

    def violations(self):
        return list(self.fake.forbidden_calls)


# ====================================================================== Unisender
class UnisenderFake(FakeDestination):
    """``list:<title>`` lists and ``tag:<name>`` tags via importContacts; statuses new/active/unsubscribed."""

    type = "unisender"
    reconcile = False
    #: segment → Unisender tag (on top of the lists), so tag removal (getContact + overwrite_tags) is exercised
    tags = {"Best active": "rfm-vip", "Falling asleep": "rfm-sleepy"}

    def _make_fake(self) -> FakeUnisender:
        fake = FakeUnisender()
        fake.add_list(UNMANAGED_LIST)
        return fake

    def env(self):
        return {"UNISENDER_API_KEY": self.fake.api_key, "UNISENDER_API_URL": self.fake.api_url}

    def destination(self, name, segments, fields, batch_size=None, tags=None):
        tags = self.tags if tags is None else tags
        return {**super().destination(name, segments, fields, batch_size),
                "tags": {s: t for s, t in tags.items() if s in segments}}

    def field_name(self, neutral):
        return neutral.lower()

    def client(self, dest, *, retry, timeout):
        from sync.destinations.unisender import UnisenderDestination

        return UnisenderDestination(dest.name, self.fake.api_key, api_url=self.fake.api_url, retry=retry,
                                    timeout=timeout, batch_size=dest.batch_size)

    def _contact(self, key: str) -> dict[str, Any] | None:
        return self.fake.contacts.get(key.lower())

    def exists(self, key):
        return self._contact(key) is not None

    def managed_of(self, key, managed):
        from sync.destinations.unisender import split_name

        c = self._contact(key)
        if c is None:
            return set()
        out = set()
        for name in managed:
            kind, value = split_name(name)
            if kind == "tag" and value in c["tags"] or kind == "list" and self.fake.list_id(value) in c["lists"]:
                out.add(name)
        return out

    def field(self, key, esp_field):
        return self._contact(key)["fields"].get(esp_field)

    def status(self, key):
        c = self._contact(key)
        return c["status"] if c else None

    def gets_marketing(self, key):
        return self.status(key) == "active"

    def seed(self, email, *, unsubscribed):
        self.fake.add_contact(email, status="unsubscribed" if unsubscribed else "active", lists=[UNMANAGED_LIST],
                              tags=[UNMANAGED_TAG], **{UNMANAGED_FIELD.lower(): UNMANAGED_VALUE})

    def unmanaged(self, email):
        c = self._contact(email)
        return {"tag": UNMANAGED_TAG in c["tags"] and self.fake.list_id(UNMANAGED_LIST) in c["lists"],
                "field": c["fields"].get(UNMANAGED_FIELD.lower())}

    def answer_raw(self, body, content_type, *, work=False):
        # the import of rows, not the e-mail-only one that checks which new contacts Unisender holds (kept28 #1)
        self.fake.answer_raw(body, content_type, work=work, column="email_list_ids")

    def throttle(self, times):
        self.fake.fail("api_call_limit_exceeded_for_api_key", times=times, method="importContacts")

    def server_error(self, times):
        self.fake.fail(None, times=times, method="importContacts", status=503)

    def timeout(self, seconds, times):
        self.fake.stall(seconds, times=times, method="importContacts")

    def reject(self, emails, message=None):
        self.fake.reject.update({e.lower(): message or "address blocked" for e in emails})

    def clear_rejections(self):
        self.fake.reject.clear()

    def setup_writes(self, managed, fields):
        from sync.destinations.unisender import split_name

        lists = [v for k, v in map(split_name, managed) if k == "list"]
        return sum(self.fake.list_id(t) is None for t in lists) + sum(f not in self.fake.fields for f in fields)

    def minimum_writes(self, changes, batch_size=None):
        """importContacts ≤ 500 rows; one call shares its columns (the changed fields) and ``overwrite_tags``
        (set only when a managed tag is removed), so rows group by those; getContact reads are not writes."""
        from sync.destinations.unisender import split_name

        size = _batch(batch_size, MAX_IMPORT_ROWS)
        groups = Counter((any(t.startswith("tag:") for t in c.remove_tags), tuple(sorted(c.set_fields)))
                         for c in changes if c.needs_upsert or c.add_tags or c.remove_tags)
        # new consenting contacts put on a list: one e-mail-only import per batch first tells whether Unisender
        # holds any of them already (sync.destinations.unisender_probe, kept28)
        joining = sum(1 for c in changes if c.create and c.status_if_new == "subscribed"
                      and any(split_name(t)[0] == "list" for t in c.add_tags))
        return {"import": sum(_ceil(n, size) for n in groups.values()), "check": _ceil(joining, size)}

    def violations(self):
        return ([f"email_status column sent ({n}x)" for n in [len(self.fake.status_columns)] if n]
                + [f"api_key in the URL of {m}" for m in self.fake.key_in_url]
                + [f"confirmation e-mail sent to {e}" for e in self.fake.invitations]
                + [f"{e} put back by import on list {lid} (his place was {was})"
                   for e, lid, was in self.fake.resubscribed])


#: destination type → its harness class. Add one entry per new ESP.
DESTINATIONS: dict[str, Callable[[], FakeDestination]] = {
    "mailchimp": MailchimpFake,
    "sendgrid": SendGridFake,
    "unisender": UnisenderFake,
}

__all__ = ["DESTINATIONS", "FakeDestination", "MailchimpFake", "SendGridFake", "UnisenderFake", "UNMANAGED_TAG",
           "UNMANAGED_LIST", "UNMANAGED_FIELD", "UNMANAGED_VALUE"]
