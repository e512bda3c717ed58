"""What a webhook resync plans (:mod:`sync.serve.resync`): each destination narrowed to what a few customers can be
planned for, and which customers the store gives an address now (an address shared with, or left to, a customer
outside the batch is the full sync's)."""

from __future__ import annotations

from typing import Any

from connectors.email_phone import normalize_email

from ..config import Config, DestinationConfig
from ..pipeline import store_path
from ..planning.values import PREDICTIVE_VALUES
from ..store import STORE_LOCK, connect_store


def store_holders(cfg: Config, keys: set[str], among: set[str] | None, wait_seconds: float = 60.0,
                  refused: bool = False) -> dict[str, set[str]]:
    """Which customers the store gives each of ``keys`` (normalised addresses) now, among the customers ``among``
    (read by id through the lookup index) or, with ``None``, among everyone: one scan of the contacts' e-mails
    (no index holds them; ILIKE keeps every spelling of a key, and its value is normalised here), made only when
    an affected customer left an address the ledger still gives him with tags (a changed e-mail; once the
    tags are off, never again for it). ``refused``: only the customers whose card says *no* to marketing, for
    an address the resync would tag or subscribe (:func:`sync.planning.consent.refused_by_others`)."""
    if among is not None:
        where, params = "customer_id IN (SELECT unnest(?))", [sorted(among)]
    else:
        where, params = "(" + " OR ".join(["email ILIKE ?"] * len(keys)) + ")", [f"%{k}%" for k in sorted(keys)]
    with STORE_LOCK, connect_store(store_path(cfg), wait_seconds=wait_seconds) as con:  # closed on leaving
        no = " AND marketing_consent = 'no'" if refused else ""
        rows = con.execute(f"SELECT customer_id, email FROM contacts WHERE email IS NOT NULL{no} AND {where}",
                           params).fetchall()
    held: dict[str, set[str]] = {}
    for customer, email in rows:
        if (key := normalize_email(email)) in keys:
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
