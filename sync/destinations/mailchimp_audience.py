"""The audience side of the Mailchimp destination: the read-only check and ``prepare`` (merge fields and the
static segments that carry managed tags, read at once and created at once), as a part of
:class:`sync.destinations.mailchimp.MailchimpDestination`.

Calls: ``GET /lists/{id}``; ``GET``/``POST /lists/{id}/merge-fields``; ``GET``/``POST /lists/{id}/segments``. A create
whose answer is lost or unreadable is read back: fine if the field or segment now exists.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any, Callable, Mapping, Sequence

from ..errors import DestinationConfigError, DestinationError
from ..model import ContactChange, OnResults
from ..planning.values import kind_of
from . import specs
from .answers import BadAnswer
from .base import Creating, uncleared_field, without_lost_fields
from .field_types import MAILCHIMP_TAKES, check_field_type
from .mailchimp_answers import Created, ListInfo, MergeField
from .mailchimp_api import BatchRejected
from .mailchimp_bodies import check_merge_tags, field_tags

log = logging.getLogger("sync.destinations.mailchimp")

FIELD_TYPES: Mapping[str, str] = specs.MAILCHIMP_FIELD_TYPES  # merge field types (text for dates and yes/no)


def merge_field_type(value_name: str) -> str:
    """Mailchimp merge-field type created for an rfmsync value (by its kind, see :data:`FIELD_TYPES`)."""
    return FIELD_TYPES[kind_of(value_name)]


class AudienceSetup:
    """The check and ``prepare`` of one audience; the destination gives ``name``, ``audience``, ``max_connections``,
    its API's ``_call``/``_paged``/``_lists``, ``_lock`` and the ``_segments``/``_field_tags`` it keeps."""

    name: str
    audience: str
    max_connections: int
    _call: Callable[..., Any]
    _paged: Callable[..., Any]
    _lists: Any
    _lock: threading.Lock
    _segments: dict[str, int] | None
    _field_tags: dict[str, str]
    _merge_known: dict[str, bool] | None  # the audience's merge tags as prepare read them → required

    def check(self) -> str:
        """Read-only: the API key is accepted and the audience exists (``GET /lists/{id}``)."""
        try:
            info = self._call(f"GET /lists/{self.audience}", self._lists.get_list, self.audience,
                              fields=["id", "name"], shape=ListInfo)
        except DestinationConfigError as exc:
            if exc.status != 404:
                raise
            raise DestinationConfigError(
                f"destination {self.name!r}: Mailchimp audience {self.audience!r} not found; check `audience` "
                "(Audience > Settings > Audience name and defaults > Audience ID) and that the API key belongs "
                "to the same account", status=404, body=exc.body) from None
        return f"API key accepted, audience {info.id!r} ({info.name}) found"

    def prepare(self, managed_tags: Sequence[str], fields: Mapping[str, str],
                creating: Creating | None = None) -> list[str]:
        """Check the audience; create missing merge fields (see :func:`merge_field_type`) and managed tags
        (``creating`` told their names first: :meth:`sync.destinations.base.Destination.prepare`).

        The three reads (the audience, its merge fields, its tags) run at once, then the creates at once (up
        to ``max_connections`` calls): a first sync's dozen setup calls take two or three round trips, not
        twelve. The audience check's error, when there is one, is the one raised."""
        check_merge_tags(self.name, fields)
        with ThreadPoolExecutor(max_workers=min(3, self.max_connections),
                                thread_name_prefix=f"mailchimp-{self.name}-prepare") as pool:
            reads = [pool.submit(self.check), pool.submit(self._merge_fields), pool.submit(self._load_segments)]
            wait(reads)
            reads[0].result()  # an unknown audience or a refused key, said as such
            existing, segments = reads[1].result(), reads[2].result()
        with self._lock:
            if self._segments is None:
                self._segments = segments
            missing = [tag for tag in dict.fromkeys(managed_tags) if tag not in self._segments]
        todo: list[tuple[Callable[..., Any], Any]] = [*((self._create_field, item) for item in fields.items()
                                                        if item[0].upper() not in existing),
                                                      *((self._create_segment, tag) for tag in missing)]
        self._typed(fields, existing)
        names = [arg if fn == self._create_segment else arg[0] for fn, arg in todo]
        if todo and creating is not None:
            creating(names)
        if todo:
            with ThreadPoolExecutor(max_workers=min(len(todo), self.max_connections),
                                    thread_name_prefix=f"mailchimp-{self.name}-prepare") as pool:
                made = [pool.submit(fn, arg) for fn, arg in todo]
                wait(made)
            with self._lock:
                for (fn, arg), future in zip(todo, made):
                    found = future.result()  # the first failure, in the order above
                    if fn == self._create_segment:
                        self._segments[arg] = found
        self._field_tags = field_tags(fields)
        self._merge_known = {**{tag: bool(f.get("required")) for tag, f in existing.items()},
                             **{tag.upper(): False for tag in fields if tag.upper() not in existing}}
        return names

    def _retired_checked(self, changes: Sequence[ContactChange], on_results: OnResults) -> Sequence[ContactChange]:
        """``changes`` as they may go, for fields a change clears that the mapping does not name (``retire_fields``),
        by what :meth:`prepare` read of the audience's merge fields: a merge field deleted in Mailchimp (its values
        with it) is left out and recorded cleared (Mailchimp refuses a member with an unknown merge field, his tag
        changes with him); one marked required there (Mailchimp refuses its empty value) stops the apply before
        any write, naming it and the remedy."""
        known = self._merge_known
        if known is None or not any(v is None for ch in changes for v in ch.set_fields.values()):
            return changes
        tags = self._field_tags
        for name in sorted({n for ch in changes for n, v in ch.set_fields.items() if v is None and n not in tags}):
            if known.get(name.upper()):
                raise uncleared_field("Mailchimp", self.name, f"merge field {name.upper()!r} is required in "
                                      f"audience {self.audience!r}", "make it optional in Mailchimp (Audience fields "
                                      "and *|MERGE|* tags: untick Required) and sync again, or delete the merge "
                                      "field there (its values go with it)")
        kept, done = without_lost_fields(changes, known, key=lambda n: tags.get(n, n.upper()))
        if done:
            on_results(done)
        return kept

    # ------------------------------------------------------------------ prepare internals
    def _create_field(self, item: tuple[str, str]) -> None:
        tag, value = item[0].upper(), item[1]
        kind = merge_field_type(value)
        body = {"tag": tag, "name": value, "type": kind, "public": False}
        what = f"POST /lists/{self.audience}/merge-fields ({tag})"
        try:
            made = self._call(what, self._lists.add_list_merge_field, self.audience, body, shape=MergeField)
            if made.tag.upper() != tag:
                raise BadAnswer(f"Mailchimp {what}", f"the field made is {made.tag!r}", made.model_dump())
        except (BatchRejected, BadAnswer) as exc:  # a retried create whose first attempt landed, or an answer
            if tag not in self._merge_fields():  # that is not the field made: fine if it now exists
                raise DestinationError(f"Mailchimp could not create merge field {tag} in audience "
                                       f"{self.audience!r}: {exc}", status=exc.status, body=exc.body) from None
        log.info("mailchimp %s: created merge field %s (%s) for %r", self.name, tag, kind, value)

    def check_fields(self, fields: Mapping[str, str]) -> None:
        """Read-only (``rfmsync check``): DestinationConfigError for what ``prepare`` would refuse of ``fields``."""
        check_merge_tags(self.name, fields)
        self._typed(fields, self._merge_fields())

    def _typed(self, fields: Mapping[str, str], existing: Mapping[str, dict[str, Any]]) -> None:
        """An existing merge field's type that cannot take the values is refused; another one is a warning."""
        for tag, value in fields.items():
            have = existing.get(tag.upper())
            if have is not None and have.get("type") != merge_field_type(value):
                check_field_type("Mailchimp", self.name, tag.upper(), have.get("type"), value, merge_field_type(value),
                                 MAILCHIMP_TAKES)
                log.warning("mailchimp %s: merge field %s is %s, rfmsync would use %s for %r; leaving it",
                            self.name, tag.upper(), have.get("type"), merge_field_type(value), value)

    def _merge_fields(self) -> dict[str, dict[str, Any]]:
        return {str(f["tag"]).upper(): f for f in self._paged(
            "GET merge-fields", self._lists.get_list_merge_fields, (self.audience,), "merge_fields", ("tag",),
            fields=["merge_fields.tag", "merge_fields.type", "merge_fields.required", "total_items"])}

    def _segment_ids(self, tags: Sequence[str], create: bool) -> dict[str, int]:
        with self._lock:
            if self._segments is None:
                self._segments = self._load_segments()
            for tag in tags:
                if tag not in self._segments and create:
                    self._segments[tag] = self._create_segment(tag)
            return {t: self._segments[t] for t in tags if t in self._segments}

    def _load_segments(self) -> dict[str, int]:
        return {s["name"]: int(s["id"]) for s in self._paged(
            "GET segments", self._lists.list_segments, (self.audience,), "segments", ("id", "name"), type="static",
            fields=["segments.id", "segments.name", "total_items"])}

    def _create_segment(self, tag: str) -> int:
        try:
            answer = self._call(f"POST /lists/{self.audience}/segments ({tag!r})", self._lists.create_segment,
                                self.audience, {"name": tag, "static_segment": []}, shape=Created)
        except (BatchRejected, BadAnswer):  # a retried create whose first attempt landed, or an unreadable
            found = self._load_segments().get(tag)  # answer: fine if it now exists
            if found is None:
                raise DestinationError(f"Mailchimp could not create tag {tag!r} in audience {self.audience!r}")
            return found
        log.info("mailchimp %s: created tag %r", self.name, tag)
        return answer.id
