"""What a webhook resync plans (:mod:`sync.serve.resync`): each destination narrowed to what a few customers can be
planned for, and which customers the store gives an address now (an address shared with, or left to, a customer
outside the batch is the full sync's)."""

from __future__ import annotations

from typing import Any, Callable

from connectors.email_phone import normalize_email

from ..config import Config, DestinationConfig
from ..pipeline import store_path
from ..planning.values import PREDICTIVE_VALUES
from ..store import STORE_LOCK, connect_store, lookup_by_key
from .readcount import CountingConnection


def store_holders(cfg: Config, keys: set[str], among: set[str] | None, wait_seconds: float = 60.0,
                  refused: bool = False, counted: Callable[[int], None] | None = None) -> dict[str, set[str]]:
    """Which customers the store gives each of ``keys`` (normalised addresses) now, among the customers ``among``
    (read by id through the lookup index) or, with ``None``, among everyone (read by address through the lookup
    index on the contacts' e-mails: every write path stores an e-mail normalised, so the key matches it exactly),
    made only when an affected customer left an address the ledger still gives him with tags (a changed e-mail;
    once the tags are off, never again for it) or for :func:`sync.planning.consent.refused_by_others`.
    ``refused``: only the customers whose card says *no* to marketing, for an address the resync would tag or
    subscribe. ``counted``: told the store rows read (the resync's ``rows_read``)."""
    if among is not None:
        where, params = "customer_id IN (SELECT unnest(?::VARCHAR[]))", [sorted(among)]
    else:
        where, params = "email IN (SELECT unnest(?::VARCHAR[]))", [sorted(keys)]
    with STORE_LOCK, connect_store(store_path(cfg), wait_seconds=wait_seconds) as raw:  # closed on leaving
        lookup_by_key(raw)
        con = CountingConnection(raw)
        rows = con.execute(f"SELECT customer_id, email, marketing_consent FROM contacts WHERE {where}",
                           params).fetchall()
        if counted is not None:
            counted(con.rows())
    held: dict[str, set[str]] = {}
    for customer, email, consent in rows:
        if email is not None and (not refused or consent == "no") and (key := normalize_email(email)) in keys:
            held.setdefault(key, set()).add(str(customer))
    return held


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
