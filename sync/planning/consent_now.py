"""A saved plan's consent read again when it is applied: ``apply`` leaves out the contacts the plan subscribes, or
tags under ``skip``, whose consent the order store no longer gives (withdrawn since the plan was made: a webhook
record, an export pulled again).

A plan records the consent of the moment it was made; ``apply`` may run hours later. Before any ESP call, the
store's cards of every address the plan would subscribe (``status_if_new = subscribed`` on a change that upserts,
or that puts a known contact on a Unisender list: its import subscribes him to it) or put a managed tag or list on
under ``new_contacts = skip`` are read in one query (the keys joined as one table, not one query per contact).
The address's consent is the planners' (:func:`~sync.planning.consent.address_consent`: the contact's own card,
and another card's *no* when that customer has a segment at the plan's as-of, as the full planner counts a card).
The subscribing part of a change it no longer allows is left out of the apply (the contact counted as skipped, its
reason naming the card that refuses, as ``explain`` does) and nothing of that part is recorded: the next plan decides
again. The rest of a known contact's change still goes out, never creating him (:func:`_rest`): his removals
(another list he leaves, a withdrawal), field updates and adds that subscribe nobody.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Callable, Mapping, Sequence

from segmentation.metrics import local_cutoff

from ..config import Config
from ..errors import ConfigError
from ..model import ContactChange, Skip
from .consent import address_consent
from .plan import Plan


@dataclass(frozen=True)
class LeftOut:
    """The changes of one destination's saved plan its apply leaves out, and why (one reason per key)."""

    destination: str
    reasons: dict[str, str]
    #: of them, those whose change still goes out in part (what subscribes nobody: :func:`_rest`)
    partly: int = 0
    #: of those, how many still have each kind sent: ``removals`` (tags/lists taken off), ``fields`` (field
    #: updates), ``adds`` (tags/lists put on that subscribe nobody)
    still: Mapping[str, int] = field(default_factory=dict)

    def line(self, shown: int = 3) -> str:
        n = len(self.reasons)
        first = "; ".join(f"{key}: {why}" for key, why in list(self.reasons.items())[:shown])
        more = f"; and {n - shown} more" if n > shown else ""
        head = (f"{self.destination}: {n} contact{'s' if n > 1 else ''} of this plan left out: their consent, read "
                f"again from the order store, no longer allows what the plan does ({first}{more}); ")
        if not self.partly:
            return f"{head}nothing is recorded for them, the next plan decides again"
        kinds = [(label, self.still.get(kind, 0)) for kind, label in _KINDS if self.still.get(kind, 0)]
        if self.partly == 1:
            names = [label for label, _ in kinds]
            what = "his " + (names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1])
        else:
            what = ", ".join(f"{label} ({count})" for label, count in kinds)
        return (f"{head}what it no longer allows is neither sent nor recorded, the next plan decides again; of "
                f"{'them' if n > 1 else 'him'}, {self.partly} still {'has' if self.partly == 1 else 'have'} what "
                f"subscribes nobody sent: {what}")


#: :attr:`LeftOut.still`'s kinds, as the line names them
_KINDS = (("removals", "tag/list removals"), ("fields", "field updates"), ("adds", "tag/list adds"))


def subscribes(change: ContactChange, on_add: Callable[[str], bool] | None = None) -> bool:
    """Whether applying ``change`` may subscribe its contact: an upsert that creates him ``subscribed`` if the ESP
    lacks him (a contact the ledger knows too: the ESP may have lost him since), or, where adding a managed name
    subscribes (``on_add``: the destination's :attr:`~sync.destinations.base.DestinationSpec.subscribes_on_add`,
    Unisender's lists), a change under ``subscribed`` that adds one (a known contact joining a list)."""
    return change.status_if_new == "subscribed" and (
        change.needs_upsert or (on_add is not None and any(on_add(name) for name in change.add_tags)))


def checked(change: ContactChange, new_contacts: str | None, on_add: Callable[[str], bool] | None = None) -> bool:
    """Whether ``change`` waits on its contact's consent: it subscribes him, or adds a managed tag or list to him
    under ``skip`` (where a *no* carries none: :func:`~sync.planning.consent.refused_consent`)."""
    return subscribes(change, on_add) or (bool(change.add_tags) and new_contacts == "skip")


def recheck_consent(cfg: Config, plans: Sequence[Plan], store: Path, as_of: date | None
                    ) -> tuple[list[Plan], list[LeftOut]]:
    """``plans`` without the changes the store's consent no longer allows (each moved to its plan's skipped, its
    contact's owner change dropped), and what was left out. The store is read only when a plan has a change to
    check; a store this host lacks is a clear error, never a subscribe without the check."""
    dests = [cfg.destination(p.destination) for p in plans]
    modes = [d.new_contacts for d in dests]
    adds = [d.spec.subscribes_on_add for d in dests]
    asked = [[c for c in p.changes if checked(c, mode, on_add)] for p, mode, on_add in zip(plans, modes, adds)]
    if not any(asked):
        return list(plans), []
    consent = _consent_now(store, [c.key for a in asked for c in a], [c.customer_id for a in asked for c in a],
                           as_of, cfg.timezone)
    doubted = {key for key, _ in consent}  # (the others: a plain yes of their own card, no other card's no)
    out, left = [], []
    for plan, mode, on_add, changes in zip(plans, modes, adds, asked):
        reasons = {}
        for c in changes:
            if c.key not in doubted:
                continue
            now, card = consent.get((c.key, c.customer_id), ("yes", None))
            if (subscribes(c, on_add) and now != "yes") or (c.add_tags and mode == "skip" and now == "no"):
                reasons[c.key] = _reason(now, card, c.customer_id)
        if not reasons:
            out.append(plan)
            continue
        skipped = tuple(Skip(c.key, c.customer_id, c.segment, reasons[c.key]) for c in changes if c.key in reasons)
        rest = {c.key: _rest(c, on_add, mode) for c in changes if c.key in reasons}
        out.append(replace(plan, changes=tuple(c if c.key not in reasons else rest[c.key] for c in plan.changes
                                               if c.key not in reasons or rest[c.key] is not None),
                           skipped=(*plan.skipped, *skipped),
                           owners=tuple(o for o in plan.owners if o.key not in reasons or rest[o.key] is not None)))
        going = [r for r in rest.values() if r is not None]
        still = {"removals": sum(bool(r.remove_tags) for r in going), "fields": sum(bool(r.set_fields) for r in going),
                 "adds": sum(bool(r.add_tags) for r in going)}
        left.append(LeftOut(plan.destination, reasons, len(going), still))
    return out, left


def _rest(change: ContactChange, on_add: Callable[[str], bool] | None, mode: str | None) -> ContactChange | None:
    """What of ``change`` goes on when the consent now refuses its subscribing part: a known contact's removals
    (his other lists', a withdrawal's), his field updates and the adds that subscribe nobody (none under ``skip``,
    where a refusal carries no managed tag), never creating him (``status_if_new`` None: an ESP that lost him
    since does not get him back). None: nothing goes on (a new contact, or a change that only subscribed)."""
    if change.create:
        return None
    adds = frozenset() if mode == "skip" else frozenset(t for t in change.add_tags if on_add is None or not on_add(t))
    rest = replace(change, add_tags=adds, status_if_new=None)
    return rest if rest.set_fields or rest.add_tags or rest.remove_tags else None


def _reason(now: str, card: str | None, own: str) -> str:
    if card is None:
        return (f"no card of the order store gives this address to customer {own} now (consent not confirmed "
                f"since the plan was made)")
    whose = "his own card" if card == own else f"customer {card}'s card"
    return f"consent {now} now (withdrawn since the plan was made: {whose} says {now if card == own else 'no'})"


def _consent_now(store: Path, keys: list[str], owns: list[str], as_of: date | None, timezone: str
                 ) -> dict[tuple[str, str], tuple[str, str | None]]:
    """The (key, customer) pairs whose address's consent is not a plain *yes* of the customer's own card alone:
    → (the address's consent now, the card that makes it so: the refusing one, else the customer's own; None: no
    card of his gives the address). Pairs not returned are a *yes*. One query over all the keys (a table joined,
    returning only those pairs), then their cards, and the orders of the other cards (whether they have a
    segment) by id: a few rows."""
    if not store.exists():
        raise ConfigError(f"apply reads again the marketing consent of the contacts this plan subscribes (or tags "
                          f"under new_contacts = \"skip\") from the order store, and this host has none ({store}): "
                          f"apply the plan where the store is (the host that made it), or pull the source here "
                          f"(`rfmsync pull`) and make a new plan (docs/sync.md#consent)")
    import duckdb
    import pyarrow as pa

    from ..store import STORE_LOCK, connect_store

    try:
        with STORE_LOCK, connect_store(store) as con:
            con.register("_asked", pa.table({"key": pa.array(keys, pa.string()), "own": pa.array(owns, pa.string())}))
            con.execute("""CREATE TEMP TABLE _doubted AS SELECT DISTINCT a.key, a.own FROM _asked a
                WHERE NOT EXISTS (SELECT 1 FROM contacts c WHERE c.email = a.key AND c.customer_id = a.own
                                  AND c.marketing_consent = 'yes')
                   OR EXISTS (SELECT 1 FROM contacts c WHERE c.email = a.key AND c.customer_id <> a.own
                              AND c.marketing_consent = 'no')""")
            con.unregister("_asked")
            rows = con.execute("""SELECT d.key, d.own, c.customer_id, coalesce(NULLIF(c.marketing_consent, ''),
                'unknown') FROM _doubted d LEFT JOIN contacts c ON c.email = d.key""").fetchall()
            others = sorted({card for _, own, card, _ in rows if card is not None and card != own})
            cutoff = local_cutoff(as_of, timezone) if as_of else None
            segmented = {r[0] for r in con.execute(
                "SELECT DISTINCT customer_id FROM orders WHERE customer_id IN (SELECT unnest(?::VARCHAR[])) "
                "AND status = 'completed' AND (?::TIMESTAMPTZ IS NULL OR ordered_at < ?::TIMESTAMPTZ)",
                [others, cutoff, cutoff]).fetchall()} if others else set()
    except duckdb.Error as exc:
        raise ConfigError(f"apply could not read the marketing consent again from the order store {store}: {exc}; "
                          f"nobody is subscribed without it: fix the store or make a new plan") from None
    cards: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for key, own, card, consent in rows:
        given = cards.setdefault((key, own), [])
        if card is not None and (card == own or card in segmented):
            given.append((card, consent))
    found = {}
    for (key, own), given in cards.items():
        now = address_consent(v for _, v in given) if given else "unknown"
        mine = [v for card, v in given if card == own]
        refusing = sorted(card for card, v in given if v == "no" and card != own)
        card = own if mine and (now != "no" or mine[0] == "no") else refusing[0] if refusing else \
            (given[0][0] if given else None)
        found[(key, own)] = (now, card)
    return found
