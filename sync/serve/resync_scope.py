"""What a webhook resync plans (:mod:`sync.serve.resync`): each destination narrowed to what a few customers can be
planned for, and which customers the store gives an address now (an address shared with, or left to, a customer
outside the batch is the full sync's; another card's *no* makes the address's consent *no*: :func:`shared_addresses`)."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Iterator

from connectors.email_phone import normalize_email
from segmentation.metrics import local_cutoff

from ..config import Config, DestinationConfig
from ..model import DesiredContact, PushedState
from ..pipeline import store_path, today_in
from ..planning.consent import refused_by_others
from ..planning.partial import leave_shared_to_full_sync
from ..planning.values import PREDICTIVE_VALUES
from ..store import STORE_LOCK, connect_store, lookup_by_key
from ..store.history import HISTORY, LINES, has_history
from .readcount import CountingConnection


@dataclass
class StoreReads:
    """The store rows a resync's reads of who gives an address scanned (:func:`store_holders`), counted into
    :attr:`sync.serve.resync.ResyncReport.store_rows_read`, and the store connections they opened. Inside
    :meth:`shared`, the reads share one connection (opened by the first, under :data:`STORE_LOCK` until the end)."""

    rows: int = 0
    opens: int = 0
    _con: Any = field(default=None, repr=False)
    _sharing: bool = field(default=False, repr=False)

    @contextmanager
    def shared(self) -> Iterator["StoreReads"]:
        """The reads inside share one store connection, closed (and :data:`STORE_LOCK` released) on leaving."""
        self._sharing = True
        try:
            yield self
        finally:
            self._sharing, con, self._con = False, self._con, None
            if con is not None:
                try:
                    con.close()
                finally:
                    STORE_LOCK.release()

    @contextmanager
    def connection(self, cfg: Config, wait_seconds: float) -> Iterator[Any]:
        """A connection to the store for one read: the shared one inside :meth:`shared`, else its own."""
        if self._con is not None:
            yield self._con
        elif self._sharing:
            STORE_LOCK.acquire()  # held until the shared connection closes (:meth:`shared`)
            try:
                self._con = self._open(cfg, wait_seconds)
            except BaseException:
                STORE_LOCK.release()
                raise
            yield self._con
        else:
            with STORE_LOCK:
                con = self._open(cfg, wait_seconds)
                try:
                    yield con
                finally:
                    con.close()

    def _open(self, cfg: Config, wait_seconds: float) -> Any:
        con = connect_store(store_path(cfg), wait_seconds=wait_seconds)
        self.opens += 1
        try:
            lookup_by_key(con)
        except BaseException:
            con.close()
            raise
        return con


def store_holders(cfg: Config, keys: set[str], among: set[str] | None, wait_seconds: float = 60.0,
                  refused: bool = False, reads: StoreReads | None = None, as_of: date | None = None
                  ) -> dict[str, set[str]]:
    """Which customers the store gives each of ``keys`` (normalised addresses) now, among the customers ``among``
    (read by id through the lookup index) or, with ``None``, among everyone (read by address through the lookup
    index on the contacts' e-mails: every write path stores an e-mail normalised, the file reader's
    ``email_map`` and the records' ``clean_contact``, so the key matches it exactly). ``refused``: only the
    customers whose card says *no* to marketing (:func:`sync.planning.consent.refused_by_others`) and who have a
    segment at ``as_of`` (today when None), as the full planner counts a card (:func:`segmented`).
    ``reads``: the rows scanned are added to it."""
    if among is not None:
        where, params = "customer_id IN (SELECT unnest(?::VARCHAR[]))", [sorted(among)]
    else:
        where, params = "email IN (SELECT unnest(?::VARCHAR[]))", [sorted(keys)]
    reads = reads if reads is not None else StoreReads()
    with reads.connection(cfg, wait_seconds) as con:
        counted = CountingConnection(con)
        rows = counted.execute(f"SELECT customer_id, email, marketing_consent FROM contacts WHERE {where}",
                               params).fetchall()
        if refused:  # the refusing cards the full planner reads: those with a segment
            with_segment = segmented(counted, {str(r[0]) for r in rows if r[2] == "no"}, cfg, as_of)
            rows = [r for r in rows if str(r[0]) in with_segment]
        reads.rows += counted.rows()
    held: dict[str, set[str]] = {}
    for customer, email, consent in rows:
        if (key := normalize_email(email)) in keys and (consent == "no" or not refused):
            held.setdefault(key, set()).add(str(customer))
    return held


def segmented(con: Any, customers: set[str], cfg: Config, as_of: date | None) -> set[str]:
    """Those of ``customers`` who have a segment at ``as_of`` (today when None): a completed order before its
    cut-off (:func:`segmentation.metrics.build_customer_metrics` scores only them), as the full planner plans only
    segmented customers' cards (``segments JOIN contacts``: :func:`sync.planning.rows.stage_segments`). Their orders
    are read by id alone (the lookup index; a status or date filter beside it scans every order), then filtered."""
    if not customers:
        return set()
    cutoff = local_cutoff(as_of or today_in(cfg.timezone), cfg.timezone)
    rows = con.execute("SELECT customer_id, status, ordered_at FROM orders WHERE customer_id IN "
                       "(SELECT unnest(?::VARCHAR[]))", [sorted(customers)]).fetchall()
    return {str(c) for c, status, at in rows if status == "completed" and at is not None and at < cutoff}


def shared_addresses(cfg: Config, dest: DestinationConfig, desired: list[DesiredContact],
                     last: dict[str, PushedState], customer_ids: set[str], wait_seconds: float, reads: StoreReads,
                     as_of: date | None = None) -> tuple[list[DesiredContact], dict[str, PushedState], list[str]]:
    """A resync's contacts with their address's consent (another card's *no*, read from the store, wins:
    :func:`~sync.planning.consent.refused_by_others`), then without the addresses left to the full sync
    (:func:`~sync.planning.partial.leave_shared_to_full_sync`), and its notes."""
    with reads.shared():  # one store connection for both reads (opened by the first that reads)
        desired = refused_by_others(desired, customer_ids, dest.new_contacts, lambda keys: store_holders(
            cfg, keys, None, wait_seconds, refused=True, reads=reads, as_of=as_of))
        return leave_shared_to_full_sync(desired, last, customer_ids, lambda keys, among: store_holders(
            cfg, keys, among, wait_seconds, reads=reads), dest.new_contacts,
            lambda owners: store_segments(cfg, owners, wait_seconds, reads))


def store_segments(cfg: Config, customers: set[str], wait_seconds: float = 60.0, reads: StoreReads | None = None
                   ) -> dict[str, str]:
    """The segment each of ``customers`` holds now by the store's segment history (its latest line, the row still
    valid): the label of an owner's withdrawal a resync plans (:func:`~sync.planning.consent.owners_withdrawal`).
    One without (no history recorded, not on that line) is left out. ``reads``: the rows scanned are added to it,
    and its connection is read (the shared one inside :meth:`StoreReads.shared`: :data:`STORE_LOCK`, not
    re-entrant, taken once for all its reads), else one of its own."""
    reads = reads if reads is not None else StoreReads()
    with reads.connection(cfg, wait_seconds) as own:
        return _segments(own, customers, reads)


def _segments(con, customers: set[str], reads: StoreReads) -> dict[str, str]:
    if not has_history(con):
        return {}
    counted = CountingConnection(con)
    rows = counted.execute(f"SELECT customer_id, segment FROM {HISTORY} WHERE valid_to IS NULL AND line = "
                           f"(SELECT max(line) FROM {LINES}) AND customer_id IN (SELECT unnest(?::VARCHAR[]))",
                           [sorted(customers)]).fetchall()
    reads.rows += counted.rows()
    return {str(c): str(s) for c, s in rows}


def incremental_destination(dest: DestinationConfig) -> DestinationConfig:
    """Predictive fields need a model fitted over everyone: the webhook path leaves them to the full sync. So
    are retired tags (``retire_tags``): their removals are the full sync's, whose plan guards see all of them at
    once (a mistaken entry takes the tag off everyone: refused there when its holders trip them, i.e. at least
    ``min_mass_change`` of them or most of the managed contacts: :func:`sync.guards.mass_floor`), not a few
    contacts per webhook, each below any limit; the ledger keeps them on the resynced contacts for the full sync
    to take off."""
    kept = {k: v for k, v in dest.fields.items() if v not in PREDICTIVE_VALUES}
    update: dict[str, Any] = {"fields": kept} if kept != dest.fields else {}
    if dest.retire_tags:
        update["retire_tags"] = []
    return dest.model_copy(update=update) if update else dest
