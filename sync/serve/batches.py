"""A webhook batch and how its failures are classed, for the resync worker (:mod:`sync.serve.worker`).

:class:`Batch` is what the resync gets: the claimed events' decoded records with each record's age. A failure is
an outage (:func:`retry_later`: the batch waits, uncounted), a 5xx one event may cause (:func:`_suspect`: bisected
after :data:`PROBE_AFTER` in a row), a config error (never split: no event is at fault) or the events' own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Callable

import duckdb

from connectors.errors import ConfigError as SourceConfigError
from connectors.secrets import redact
from connectors.records import Consent, Contact, Order, OrderStatus

from ..destinations.answers import BadAnswer
from ..errors import ConfigError, DestinationConfigError, LedgerError, LockLostError, RunStopped
from ..ledger import Event
from .resync import ResyncReport
from .schedule_retry import transient

log = logging.getLogger(__name__)


def retry_later(exc: BaseException) -> bool:
    """A failure that is not the events': the ESP or the source failing the transient way after the retry layer's
    own retries (5xx, 429, timeouts, connection errors: :func:`sync.serve.schedule_retry.transient`, a busy destination
    included), the ledger failing (:class:`LedgerError`: locked, connection lost, and the disk full too: it is
    about the machine, not the event), the order store failing to read or write its file
    (``duckdb.IOException``: the disk full; its lock busy is a :class:`LockBusyError` already), a lock lost
    (:class:`LockLostError`), the worker stopping in the middle of a batch's bisection (:class:`RunStopped`), or
    settings the resync cannot work with (:data:`CONFIG_ERRORS`: a key rejected or rotated, an audience missing:
    no event is at fault, so none spends an attempt; the batch waits with the back-off for the config to be
    fixed, up to the give-up), or an ESP's 2xx answer not believed (:class:`BadAnswer`, a proxy's maintenance page:
    one that fails a resync is a read's, which says nothing about the events; a write's fails its items instead,
    recorded as failures, and the resync goes through). The batch waits, uncounted (but see :data:`PROBE_AFTER`:
    a 5xx one event causes)."""
    return transient(exc) or isinstance(exc, (LedgerError, LockLostError, RunStopped, duckdb.IOException,
                                              BadAnswer, *CONFIG_ERRORS))


#: 5xx-like failures in a row (the back-off at 20 s and more) after which a batch failing so is bisected (a poison
#: event the ESP always answers 500 to fails one half only; a real outage fails both: two more calls)
PROBE_AFTER = 3


def _suspect(exc: BaseException) -> bool:
    """A transient failure one event may cause every time: an HTTP 5xx (of the ESP or the source) that the retry
    layer's retries did not get past. Not a timeout, a connection error or an import job still pending (the
    service slow or gone), a rate limit (429), a busy lock, the ledger or the order store."""
    status = getattr(exc, "status", None)
    return transient(exc) and isinstance(status, int) and 500 <= status <= 599


def _resync_budget(n: int) -> int:
    """The resyncs one claim of ``n`` events makes at most: ``2·⌈log2 n⌉ + 2`` (one poison event costs
    ``2·⌈log2 n⌉ + 1``)."""
    return 2 * max(0, n - 1).bit_length() + 2


#: settings the resync cannot work with (a key rejected, an audience missing): no event is at fault, so a batch
#: failing so is not split to find one (each half would fail alike, calling the ESP each time)
CONFIG_ERRORS = (ConfigError, DestinationConfigError, SourceConfigError)

@dataclass
class Batch:
    """Decoded events handed to the resync function."""

    events: list[Event]
    orders: list[Order] = field(default_factory=list)
    contacts: list[Contact] = field(default_factory=list)
    pull: bool = False
    #: when the ledger accepted each record: ``(kind, id)`` → its event's time (:data:`sync.store.ordering.Ages`)
    ages: dict[tuple[str, str], datetime] = field(default_factory=dict)
    #: who sent each record's version staged: ``(kind, id)`` → its event's source
    #: (:data:`sync.store.ordering.Senders`)
    senders: dict[tuple[str, str], str] = field(default_factory=dict)
    #: versions left out because the batch holds a newer one of the record (by the vendor's times, or the order's
    #: delete for good): per kind
    stale: dict[str, int] = field(default_factory=dict)
    #: of :attr:`stale`'s orders, those left out because the batch holds the order's delete for good
    stale_deleted: int = 0
    #: event id → the records it holds (events holding one record are given up together)
    keys: dict[int, set[tuple[str, str]]] = field(default_factory=dict)
    #: the destinations to resync (None: every one; others paused, :mod:`sync.serve.pauses`)
    destinations: list[str] | None = None
    #: the contacts whose kept version follows their deletion in the batch (restored in the CRM): the resync keeps
    #: nothing of their stored row either (:func:`sync.serve.resync.resync`'s ``restored``)
    restored: set[str] = field(default_factory=set)


def count_stale(batch: Batch, report: ResyncReport) -> ResyncReport:
    """``report`` with the versions ``batch`` left out as stale (:attr:`Batch.stale`) added to its own, logged."""
    for kind, n in batch.stale.items():
        report.stale[kind] = report.stale.get(kind, 0) + n
        gone = batch.stale_deleted if kind == "order" else 0
        if n > gone:
            log.info("webhook batch: %d %s versions left out as stale: the batch holds a newer one (by the vendor's "
                     "updated_at)", n - gone, kind)
        if gone:
            log.info("webhook batch: %d order versions left out as stale: the order was deleted for good", gone)
    return report


ResyncFn = Callable[[Batch], ResyncReport | None]
_Part = tuple[Event, list[Order], list[Contact], bool]  # one event and its decoded records (orders, contacts, pull)
_Later = tuple[list[_Part], Exception] | None  # events left to wait out a transient failure, and that failure


def not_believed(failure: BaseException, metrics, worker: str, now: float) -> None:
    """A resync failed on an ESP's 2xx answer not believed (:class:`BadAnswer`: a proxy's maintenance page): its
    events wait uncounted like an outage's, up to the give-up, their releases logged at INFO. The first of such
    failures since the worker's last resync that went through (whatever other outages came before or between) is
    a WARNING naming it, and ``GET /healthz`` shows the wait (``answer_not_believed``) until a resync goes through
    or the give-up leaves nothing queued."""
    if not isinstance(failure, BadAnswer):
        return
    error = _text(failure)
    if metrics.config_wait(worker, error, now, waits="not_believed"):
        log.warning("resync: an answer not believed (%s): the events wait, uncounted, as in an outage, until the "
                    "ESP answers as it should (a proxy or maintenance page in front of it?)", error)


def given_up(batch: Batch, ids: list[int], waited: dict[int, float], limit: float) -> set[int]:
    """Of ``ids`` (the batch's events waiting for another run or an outage's end, ``waited`` seconds each since
    accepted), those given up: each that waited ``limit``, and with them every event holding one of their records
    (replayed later on its own, an old event would be merged after a newer version of its record and undo it: an
    upsert, the last one merged wins)."""
    old = {i for i in ids if waited[i] >= limit}
    grown = True
    while old and grown:
        held = set().union(*(batch.keys.get(i, set()) for i in old))
        more = {i for i in ids if i not in old and batch.keys.get(i, set()) & held}
        old, grown = old | more, bool(more)
    return old


def _text(exc: BaseException) -> str:
    """A failure's text as the worker logs it and the ledger keeps it: every known secret masked (a vendor's or our
    own message may quote a key: :func:`connectors.secrets.remember_secrets`, and ``api_key=``-like parameters)."""
    return redact(f"{type(exc).__name__}: {exc}")


def _batch(parts: list[_Part]) -> Batch:
    """The batch of these decoded events, in their order. Of one record's versions the last one accepted is
    staged, unless an earlier one is newer by the vendor's times (both have one: an older delivery retried after a
    newer one; that older one is counted in :attr:`Batch.stale`), as the store orders them
    (:func:`sync.store.merge.merge_staged`): a version without a time that replaces one with a time is at least as
    new as that time within the batch, and is staged without a time (the store then orders it by acceptance, as it
    was: given the held time, an untimed withdrawal accepted last lost to a newer stored ``yes``); of a contact's
    versions with equal times the withdrawal (``no``) is kept; an order's delete for good is kept over any other
    version of it, before or after it (:func:`_older`); and a contact's stale version that withdraws consent
    still withdraws it from the version kept (a later edit that said nothing of consent, or gave it, must not hide
    a withdrawal: never subscribe on a doubt)."""
    batch = Batch(events=[])
    kept: dict[tuple[str, str], Order | Contact] = {}
    times: dict[tuple[str, str], datetime | None] = {}  # each kept version's effective vendor time in the batch
    for ev, orders, contacts, pull in parts:
        batch.events.append(ev)
        keys = []
        for key, record in [*((("order", o.order_id), o) for o in orders),
                            *((("contact", c.customer_id), c) for c in contacts)]:
            keys.append(key)
            held = kept.get(key)
            if held is not None and _older(record, held, times[key]):
                batch.stale[key[0]] = batch.stale.get(key[0], 0) + 1
                if _final(held):  # the order's delete for good: the reason logged
                    batch.stale_deleted += 1
                if _withdraws(record, held):
                    kept[key] = replace(held, marketing_consent=Consent.NO)  # type: ignore[arg-type]
                continue
            # an untimed version is as new as the held one (its time, for the batch's comparisons only)
            times[key] = record.updated_at if record.updated_at is not None or held is None else times[key]
            if isinstance(record, Contact) and isinstance(held, Contact):
                if held.gone and not record.gone:
                    batch.restored.add(record.customer_id)
                record = _carried(record, held)
            # a record's age is its own event's (the one holding the version staged)
            kept.pop(key, None)  # (in the batch's order: the latest version last)
            kept[key] = record
            batch.ages[key] = ev.received_at
            batch.senders[key] = ev.source
        batch.keys[ev.id] = set(keys)
        batch.pull = batch.pull or pull
    batch.orders = [r for (kind, _), r in kept.items() if kind == "order"]  # type: ignore[misc]
    batch.contacts = [r for (kind, _), r in kept.items() if kind == "contact"]  # type: ignore[misc]
    return batch


def _older(record: Order | Contact, held: Order | Contact, held_at: datetime | None) -> bool:
    """Whether ``record``, accepted after ``held`` (whose time in the batch is ``held_at``), is an older version by
    the vendor's times: earlier, or, for a contact, equal with ``held`` a withdrawal and ``record`` not (two edits
    in one second: the safe side). An order's delete for good (:attr:`OrderStatus.DELETED`, a Shopify order's) is
    its last version, whatever the times: any other version is older than it, it is older than none
    (:mod:`sync.store.deletes`)."""
    if _final(record) or _final(held):
        return not _final(record)
    if held_at is None or record.updated_at is None:
        return False
    if record.updated_at == held_at and isinstance(record, Contact) and isinstance(held, Contact):
        return held.marketing_consent is Consent.NO and record.marketing_consent is not Consent.NO
    return record.updated_at < held_at


def _final(record: Order | Contact) -> bool:
    """An order's tombstone for good (the vendor never brings the order back)."""
    return isinstance(record, Order) and record.status is OrderStatus.DELETED


def _carried(record: Contact, held: Contact) -> Contact:
    """``record`` keeping what the batch's earlier version ``held`` said and it leaves out (an ``unknown`` consent,
    an empty field), as the store keeps the stored values (``coalesce_webhook_contacts``): a withdrawal, then an
    edit that says nothing of consent, in one batch, stays a withdrawal (it became the stored ``yes``). A contact the
    CRM deleted (emptied: :func:`connectors.contacts.gone_contact`) carries nothing: its address must go; nor does
    its version after that deletion (restored there): it is what it says, never the deletion's ``no``."""
    if record.gone or held.gone:
        return record
    changes: dict[str, object] = {f: getattr(held, f) for f in _CARRIED if getattr(record, f) is None}
    if record.marketing_consent is Consent.UNKNOWN:
        changes["marketing_consent"] = held.marketing_consent
    if not record.attributes and held.attributes:
        changes["attributes"] = held.attributes
    return replace(record, **changes)  # type: ignore[arg-type]


_CARRIED = ("email", "phone", "first_name", "last_name", "created_at")


def _withdraws(record: Order | Contact, held: Order | Contact) -> bool:
    """A stale contact version withdrawing a consent the kept one does not withdraw. A stale deletion (a CRM's
    delete retried after the contact's restore) withdraws nothing: its "no" is the deletion's, not his word."""
    return (isinstance(record, Contact) and record.marketing_consent is Consent.NO and not record.gone
            and held.marketing_consent is not Consent.NO)
