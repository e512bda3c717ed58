"""What every destination is (the :class:`Destination` Protocol) and what it tells the rest of rfmsync about
itself (its :class:`DestinationSpec`).

A destination declares its capabilities (``reads_existing_members``, ``reconciles``) instead of callers probing
it with ``hasattr``; its spec says how to build its client, which environment variables carry its key and URL,
how managed segments are named there, the default and refused ``new_contacts``, how each field kind of the
vocabulary (:mod:`sync.planning.values`) maps to its own field types, and its batch maximum. The registry
(:mod:`sync.destinations.registry`) lists the specs, one line each.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Collection, Iterable, Mapping, Protocol, Sequence

from ..errors import DestinationConfigError
from ..model import ContactChange, ItemResult, OnResults, fold
from ..planning.values import KINDS, kind_of

if TYPE_CHECKING:
    from ..config import DestinationConfig


class Action(str, enum.Enum):
    """What an ESP answer asks the caller to do: the one vocabulary of every vendor's status/code table
    (Mailchimp and SendGrid by HTTP status, Unisender by its error code). Sources have their own in
    :mod:`connectors.http` (they also tell "credentials rejected" apart)."""

    RETRY = "retry"  # transient: back off and retry through the one retry layer (connectors.retry)
    CONFIG = "config"  # fix the key, its scopes or the audience (DestinationConfigError, exit 2)
    RECORD = "record"  # this call's content was refused: fail the items it covers, carry on
    FATAL = "fatal"  # stop the run: retrying will not help


#: ``prepare``'s call, before its create calls, with the names it is about to create
Creating = Callable[[Sequence[str]], None]

#: ``apply``'s call before each write call it sends (``dispatching=``), with the changes the call carries and the
#: one operation of theirs it carries (``"upsert"``, ``"tag+<name>"``), or None: every add and create of theirs.
#: Saying more than the call carries is safe, less is not: after a failed or interrupted apply only the operations
#: so reported stay in doubt (:mod:`sync.dispatch`)
Dispatching = Callable[[Sequence[ContactChange], str | None], None]

#: ``apply``'s ``earlier=`` (with :attr:`Destination.checks_earlier_creates`): the creates of this apply whose earlier
#: send, by an earlier run, may have been carried out though its answer was lost for good (a pending ``upsert``
#: failure: the retry gave up, an answer not read, a run killed with it in flight), by key, with the host's time since
#: which it may have landed (:func:`sync.planning.doubt.earlier_sends`). Empty on a normal run: not passed then
Earlier = Mapping[str, datetime]


class Destination(Protocol):
    """One ESP audience/account. Implementations: one module per vendor in ``sync/destinations/``."""

    name: str
    #: :meth:`existing_members` says which addresses the ESP already holds (``new_contacts = "skip"`` and the
    #: ``--full-refresh`` drift repair use it); when False, planning relies on the ledger alone
    reads_existing_members: ClassVar[bool]
    #: :meth:`read_managed` lists the members of each managed tag/list (``--reconcile``)
    reconciles: ClassVar[bool]
    #: :meth:`apply` takes ``dispatching`` and calls it before each write call (:data:`Dispatching`); a
    #: destination without it leaves every operation of a failed apply in doubt
    reports_dispatch: ClassVar[bool]
    #: :meth:`apply` takes ``earlier`` (:data:`Earlier`): a create the ESP answers "already there" is checked for
    #: one an earlier run's lost send made, so that it is recorded as created by rfmsync (Mailchimp). SendGrid and
    #: Unisender do not have it: their upserts do not tell a create from an update, and every create that
    #: succeeds is recorded as rfmsync's anyway
    checks_earlier_creates: ClassVar[bool]

    def check(self) -> str:
        """Read-only: credentials accepted and the audience/account reachable; one line saying what was seen.

        Raises :class:`sync.errors.DestinationConfigError` when the key is rejected or the audience is missing,
        :class:`sync.errors.DestinationError` when the ESP cannot be reached. Writes nothing."""

    def prepare(self, managed_tags: Sequence[str], fields: Mapping[str, str],
                creating: Creating | None = None) -> Sequence[str] | None:
        """Check the audience exists; create missing fields and tags/lists rfmsync manages. Before its first
        create call it calls ``creating`` with the names (of ``fields`` and ``managed_tags``) it is about to
        create (the caller forgets what the ledger holds of them: :func:`sync.engine.lost_in_destination`; it
        may raise, and then nothing is created). Returns the names it created."""

    def check_fields(self, fields: Mapping[str, str]) -> None:
        """Read-only, for ``rfmsync check``: DestinationConfigError for what :meth:`prepare` would refuse of
        ``fields`` before any write (a field name the ESP refuses, an existing field whose type cannot take the
        values: :mod:`sync.destinations.field_types`)."""

    def apply(self, changes: Sequence[ContactChange], on_results: OnResults,
              dispatching: Dispatching | None = None, earlier: Earlier | None = None) -> None:
        """Push changes in batches at the API maxima; call ``on_results`` after each batch. A phase that only
        reads (contacts looked up before they are written) calls ``on_results([])`` between its reads: the
        caller's check that it may go on (it raises when the destination's lock was lost). ``dispatching``
        (with :attr:`reports_dispatch`): called before each write call goes out, with what it carries.
        ``earlier`` (with :attr:`checks_earlier_creates`, only when not empty): :data:`Earlier`."""

    def read_managed(self, managed_tags: Sequence[str]) -> Mapping[str, set[str]]:
        """Current members (normalised emails) of each managed tag/list, for --reconcile (``reconciles``)."""

    def existing_members(self, keys: Iterable[str] | None = None) -> Mapping[str, str] | None:
        """Normalised email → ESP status for the ``keys`` the ESP holds (``reads_existing_members``)."""


@dataclass(frozen=True)
class ClientOptions:
    """How a client talks to its ESP: the endpoint override and the destination's effective [http] settings."""

    api_url: str | None
    retry: Any  # connectors.retry.RetryPolicy
    timeout: float
    concurrency: int


#: builds the client of a destination from its config table, its API key (a SecretStr) and the options
Builder = Callable[["DestinationConfig", Any, ClientOptions], Destination]


@dataclass(frozen=True)
class DestinationSpec:
    """Everything vendor-specific the config, settings and planner need, declared by the vendor's module."""

    type: str  # the config's ``type``
    label: str  # the vendor's name in messages ("Mailchimp")
    build: Builder
    key_env: str  # environment variable of the API key (a Settings field of the same name, lower-cased)
    url_env: str  # environment variable of the API endpoint override
    #: field kind (number/text/date/bool) → the vendor's own field type
    field_types: Mapping[str, str]
    max_batch: int  # contacts per write call (``batch_size`` is capped to it)
    #: ``[destinations.segments]`` value → the managed tag/list name (prefixes applied)
    segment_name: Callable[["DestinationConfig", str], str]
    #: ``[destinations.tags]`` value → the managed tag name; None: the vendor has no tags besides its lists
    tag_name: Callable[[str], str] | None = None
    needs_audience: bool = False  # ``audience = "<list id>"`` is required
    default_new_contacts: str = "transactional"
    #: ``new_contacts`` values the vendor cannot honour → the config error's sentence
    refused_new_contacts: Mapping[str, str] = field(default_factory=dict)
    #: the vendor holds one field for ``RFM_CODE`` and ``rfm_code`` (Mailchimp's merge tags, SendGrid's custom
    #: fields); False: field names are case-sensitive (Unisender's), two spellings are two fields
    fields_fold_case: bool = True
    #: rfmsync takes the vendor to hold one tag for ``VIP`` and ``vip`` (Mailchimp's: no vendor source says either
    #: way; docs/sync.md#retired-tags says why it is safe: only spellings the ledger says rfmsync gave come off);
    #: False: tag/list names are taken as spelled (nothing says SendGrid's or Unisender's lists fold case)
    tags_fold_case: bool = False
    #: what is wrong with a ``[destinations.fields]`` name the vendor refuses (None: nothing), checked when the
    #: config loads (:class:`sync.config.DestinationConfig`), before any call; None: every name is taken
    field_name_error: Callable[[str], str | None] | None = None
    #: a managed name whose add puts a known contact on it as a subscriber when his change's ``status_if_new`` is
    #: ``subscribed`` (Unisender's lists: an import subscribes him to the lists it names, without confirmation);
    #: ``apply`` reads such a contact's consent again (:mod:`sync.planning.consent_now`). None: no such name
    subscribes_on_add: Callable[[str], bool] | None = None

    def __post_init__(self) -> None:
        missing = set(KINDS) - set(self.field_types)
        if missing:
            raise ValueError(f"destination type {self.type!r}: no field type for kind(s) {', '.join(sorted(missing))}")
        object.__setattr__(self, "field_types", MappingProxyType(dict(self.field_types)))
        object.__setattr__(self, "refused_new_contacts", MappingProxyType(dict(self.refused_new_contacts)))

    def field_key(self, name: str) -> str:
        """A field name as the vendor compares them: spaces around it stripped, and case folded where the vendor
        folds it (:attr:`fields_fold_case`)."""
        return fold(name) if self.fields_fold_case else name.strip()

    def tag_key(self, name: str) -> str:
        """A tag/list name as the vendor is taken to compare them: spaces around it stripped, and case folded only
        where it folds tag case (:attr:`tags_fold_case`: Mailchimp); elsewhere ``VIP`` and ``vip`` are two lists."""
        return fold(name) if self.tags_fold_case else name.strip()

    def field_type(self, value_name: str) -> str:
        """The vendor field type created for an rfmsync value (through the value's kind)."""
        return self.field_types[kind_of(value_name)]

    def managed_tags(self, dest: "DestinationConfig") -> dict[str, list[str]]:
        """segment → the tags/lists this destination gives it (the vendor's naming applied)."""
        out: dict[str, list[str]] = {}
        for seg, name in dest.segments.items():
            out.setdefault(seg, []).append(self.segment_name(dest, name))
        if self.tag_name is not None:
            for seg, name in dest.tags.items():
                out.setdefault(seg, []).append(self.tag_name(name))
        return out

    def settings_names(self) -> tuple[str, str]:
        """The :class:`sync.settings.Settings` fields of the key and the URL."""
        return self.key_env.lower(), self.url_env.lower()


def without_lost_fields(changes: Sequence[ContactChange], known: Collection[str],
                        key: Callable[[str], str] = str) -> tuple[list[ContactChange], list[ItemResult]]:
    """``changes`` without the empty value of a field the account no longer has (``known``: its field names as
    ``key`` spells them), e.g. one retired after its deletion in the ESP (its values went with it): Unisender's
    ``importContacts`` refuses the whole call for an unknown column ("Unknown field"), Mailchimp a member's
    unknown merge field, every tag and list change sent with it. A contact left with no field to send has his
    upsert done (he holds nothing there: the ledger records the field cleared); his tag changes still go. Also
    the results so decided."""
    kept: list[ContactChange] = []
    done: list[ItemResult] = []
    for ch in changes:
        lost = [n for n, v in ch.set_fields.items() if v is None and key(n) not in known]
        if not lost:
            kept.append(ch)
            continue
        rest = {n: v for n, v in ch.set_fields.items() if n not in lost}
        if not rest and not ch.create:
            done.append(ItemResult(ch.key, "upsert", True))
        if rest or ch.create or ch.add_tags or ch.remove_tags:
            kept.append(replace(ch, set_fields=rest, fields_text=None))
    return kept, done


def dispatch(dispatching: Dispatching | None, changes: Sequence[ContactChange], op: str | None = None) -> None:
    """Tell ``dispatching`` (when given) that a write call carrying ``changes`` (their ``op``; None: every add and
    create of theirs) goes out now (:data:`Dispatching`)."""
    if dispatching is not None:
        dispatching(changes, op)


def secret_text(value: Any) -> str:
    """An API key as text: a ``SecretStr``'s value, or the value itself ('' for None)."""
    raw = value.get_secret_value() if hasattr(value, "get_secret_value") else value
    return str(raw or "")


def uncleared_field(vendor: str, name: str, field_is: str, remedy: str) -> DestinationConfigError:
    """The error, before any write, for a retired field (``retire_fields``) the ESP refuses an empty value of:
    ``field_is`` names the field and why, ``remedy`` what to do in the ESP."""
    return DestinationConfigError(f"{vendor} destination {name!r}: retire_fields: {field_is}, and {vendor} refuses "
                                  f"an empty value there: {remedy}, or take it out of retire_fields")


def not_recreated(email: str, vendor: str) -> str:
    """Why a change of a contact deleted in the ESP (an erasure) is not sent: it would re-create him."""
    return (f"{email} is not in {vendor} (deleted there): not re-created without consent; the next run adds him "
            "again only under the consent rules (new_contacts)")


__all__ = ["Builder", "ClientOptions", "Creating", "Destination", "DestinationSpec", "Dispatching", "Earlier",
           "dispatch", "not_recreated", "secret_text", "uncleared_field", "without_lost_fields"]
