"""What SendGrid holds, read: contact ids by e-mail (``search/emails``), the members of managed lists (one
contact export each), and which of the plan's keys are SendGrid contacts. A mixin of
:class:`sync.destinations.sendgrid.SendGridDestination` (its requests, polls and lists)."""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from typing import Any, Iterable, Sequence

from ..errors import DestinationError
from ..model import ContactChange, ItemResult, OnResults
from .answers import BadAnswer, excerpt
from .base import not_recreated
from .sendgrid_api import ExportJob, Id, Refused, Search, emails_from_csv, error_text

log = logging.getLogger("sync.destinations.sendgrid")

MAX_SEARCH_EMAILS = 100  # POST /v3/marketing/contacts/search/emails returns up to 100 contacts
PRESENT = "present"  # existing_members() status: SendGrid contacts have no subscription status
_NOT_FOUND = re.compile(r"not found|no contacts? found", re.I)  # search/emails' miss: "contact not found" per
# address in a 200, "no contacts found" in the JSON errors of its 404 (none of the addresses held)


class SendGridReads:
    """The reads of :class:`~sync.destinations.sendgrid.SendGridDestination` (which provides ``_request``,
    ``_poll``, ``_download``, ``_load_lists`` and the list names)."""

    name: str
    _api: Any
    _lists: dict[str, str] | None
    _list_counts: dict[str, int]

    def _contact_ids(self, emails: Sequence[str]) -> tuple[dict[str, str], dict[str, str]]:
        """email → contact id for those SendGrid knows (``search/emails``, 100 per call), and email → why it is
        unknown for those a 200 does not account for. A 200 names every address sent: ``{"contact": {"id"…}}``
        or ``{"error": "contact not found"}`` (a 404: none found); an address it leaves out, or names with
        anything else, is neither known nor absent."""
        found: dict[str, str] = {}
        unknown: dict[str, str] = {}
        what = "search contacts by email"
        for start in range(0, len(emails), MAX_SEARCH_EMAILS):
            chunk = list(emails[start:start + MAX_SEARCH_EMAILS])
            try:
                status, payload = self._request("post", ["marketing", "contacts", "search", "emails"],
                                                body={"emails": chunk}, what=what, ok_404=True, shape=Search)
            except Refused as refused:
                raise DestinationError(f"SendGrid search by email refused: "
                                       f"{error_text({'errors': refused.errors})}", status=refused.status) from None
            if status == 404:
                self._none_found(payload, what)
                continue
            answered = {str(email).lower(): entry for email, entry in payload.result.items()}
            for email in chunk:
                entry = answered.get(email)
                contact = entry.get("contact") if isinstance(entry, dict) else None
                if isinstance(contact, dict) and isinstance(contact.get("id"), str) and contact["id"]:
                    found[email] = contact["id"]
                elif not (isinstance(entry, dict) and contact is None and _NOT_FOUND.search(str(entry.get("error")))):
                    unknown[email] = (f"SendGrid {what}: the 200 answer does not account for {email} "
                                      f"({'left out' if entry is None else excerpt(entry, self._api.secrets, 80)}); "
                                      "not believed, sent again next run")
        return found, unknown

    def _none_found(self, payload: Any, what: str) -> None:
        """A 404 to ``search/emails`` means "none of these addresses is a contact" only when its JSON errors say
        so; any other 404 (a proxy's HTML page, an empty body) is a :class:`BadAnswer`: nothing is accounted
        for (the upserts it guards fail, sent again next run), never every address taken as deleted."""
        errors = payload.get("errors") if isinstance(payload, dict) else None
        if not (isinstance(errors, list) and errors and all(
                isinstance(e, dict) and _NOT_FOUND.search(str(e.get("message"))) for e in errors)):
            raise BadAnswer(f"SendGrid {what}", "a 404 whose errors do not say the contacts were not found",
                            b"" if payload is None else payload, self._api.secrets)

    def _held_only(self, changes: Sequence[ContactChange], on_results: OnResults
                   ) -> tuple[list[ContactChange], dict[str, str | None]]:
        """``changes`` without the upsert of a change that must not create anyone (a clear of ``retire_fields``,
        or a known contact with no status to be created with) for an address SendGrid does not hold
        (``search/emails``, 100 a call): a ``PUT /marketing/contacts`` creates any address it lacks, and one
        deleted there (an erasure) is not brought back. Those upserts are reported ``missing`` (the ledger forgets
        the contact; the next plan adds him only under the consent rules; a clear is done: he holds nothing), one
        the search cannot account for fails (sent again next run); the change's removals still go. Also what the
        search answered for sure (email → contact id, None: not held), which the removals then search no more."""
        must = sorted({ch.email.lower() for ch in changes if ch.needs_upsert and not ch.create
                       and (ch.status_if_new is None or ch.clears_only)})
        if not must:
            return list(changes), {}
        try:
            ids, unknown = self._contact_ids(must)
        except BadAnswer as exc:
            ids, unknown = {}, dict.fromkeys(must, str(exc))
        kept: list[ContactChange] = []
        results: list[ItemResult] = []
        asked = set(must)
        for ch in changes:
            email = ch.email.lower()
            if email not in asked or email in ids:
                kept.append(ch)
                continue
            why = unknown.get(email) or not_recreated(ch.email, "SendGrid")
            done = ch.clears_only and email not in unknown  # nothing to clear on a contact SendGrid lacks
            results += [ItemResult(ch.key, op, done, None if done else why, missing=email not in unknown)
                        for op in ["upsert", *(f"tag+{t}" for t in sorted(ch.add_tags))]]
            kept.append(replace(ch, set_fields={}, add_tags=frozenset(), fields_text=None))
        if results:
            on_results(results)
        return kept, {email: ids.get(email) for email in must if email not in unknown}

    # ---------------------------------------------------------------- reads
    def read_managed(self, managed_tags: Sequence[str]) -> dict[str, set[str]]:
        """Members of each managed list, via one contact export per non-empty list."""
        self._load_lists()
        out: dict[str, set[str]] = {}
        for tag in managed_tags:
            lname = self.list_name(tag)
            lid = (self._lists or {}).get(lname)
            if lid is None or self._list_counts.get(lname, 1) == 0:
                out[tag] = set()
                continue
            _, started = self._request("post", ["marketing", "contacts", "exports"],
                                       body={"list_ids": [lid], "file_type": "csv"}, what=f"export list {lname!r}",
                                       shape=Id)
            job = self._poll(["marketing", "contacts", "exports", started.id],
                             lambda p: p.status in ("ready", "failure"), what=f"export {started.id}",
                             shape=ExportJob)
            if job.status != "ready":
                raise DestinationError(f"SendGrid export of list {lname!r} failed: {job.message or ''}")
            members: set[str] = set()
            for n, url in enumerate(job.urls or [], 1):  # a file that cannot be read stops the read: never believed
                what = f"file {n} of export job {started.id} (list {lname!r})"  # as an empty list (the URL unnamed)
                members |= emails_from_csv(self._download(url, what), what)
            out[tag] = members
        return out

    def existing_members(self, keys: Iterable[str] | None = None) -> dict[str, str] | None:
        """``{email: "present"}`` for the given keys SendGrid holds; ``None`` without keys (no cheap full read).

        An address the search answer does not account for (left out, e.g. matched by an ``alternate_emails``
        entry; an error other than "contact not found") is left out, as one not held, with a warning naming the
        count and the first: the planner then believes the ledger for a contact it knows (``new_contacts =
        "skip"``), and otherwise plans a creation only under the consent rules; no tag is removed for it. One
        such address used to abort the whole ``--full-refresh`` and webhook resync."""
        if keys is None:
            return None
        asked = sorted({k.lower() for k in keys})
        found, unknown = self._contact_ids(asked)
        if unknown:
            first = min(unknown)
            log.warning("SendGrid %s: search contacts by email did not account for %d of %d addresses (first: "
                        "%s); taken as not held: %s", self.name, len(unknown), len(asked), first, unknown[first])
        return {email: PRESENT for email in found}
