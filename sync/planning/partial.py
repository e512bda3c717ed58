"""A partial plan (a webhook resync of a few customers) and the addresses it shares with customers outside it:
left to the full sync, which sees every card, except where these customers' cards already decide what the full
sync would do (a refusal under ``skip``: :func:`sync.planning.consent.owners_withdrawal`)."""

from __future__ import annotations

from typing import Callable, Iterable, Mapping

from ..model import DesiredContact, PushedState
from .consent import owners_withdrawal, refused_consent

#: the store's answer to "which customers give these addresses now" (normalised key → customer ids), asked
#: ``holders(keys, among)``: among the customers ``among`` (read by id), or, with ``None``, among everyone
Holders = Callable[[set[str], "set[str] | None"], Mapping[str, set[str]]]
#: the store's answer to "which segment does each of these customers hold now" (customer id → segment; one it
#: does not know is left out)
Segments = Callable[[set[str]], Mapping[str, str]]


def leave_shared_to_full_sync(desired: Iterable[DesiredContact], last: Mapping[str, PushedState],
                              customer_ids: Iterable[str], holders: Holders, new_contacts: str | None = None,
                              segments: Segments | None = None
                              ) -> tuple[list[DesiredContact], dict[str, PushedState], list[str]]:
    """A partial plan (a webhook resync of ``customer_ids``) leaves alone an address the ledger holds for another
    customer outside them who still gives it (two customers sharing an address, a family account): which of them
    the contact follows is the full plan's choice (the more valuable one), and taking it over for one resync would
    only last until the next full sync gave it back. Nor does it strip the tags of an address these customers
    left (a changed e-mail) that another customer still gives: his contact now, for the full sync to plan.

    The ledger's owner is the customer the last plan applied gave the contact (named before its ESP calls:
    :class:`~sync.model.OwnerChange`), but the store decides: an owner it no longer gives the address to (his
    e-mail changed, he was deleted or merged into another id) does not hold it, and the resync plans it (and
    names its own customer in the ledger). ``holders`` is asked only when the ledger names
    another customer (about those owners, by id) or a key still holding tags was left (about everyone). An
    address whose consent these customers' cards make *no* under ``new_contacts`` = ``skip`` is not left: its
    managed tags come off the owner's contact (:func:`~sync.planning.consent.owners_withdrawal`), as the full
    sync's would, labelled with the owner's segment (``segments``, asked only then) as the full sync's change is.
    Returns ``desired`` and ``last`` without the addresses left, and a note for each."""
    ids = {str(c) for c in customer_ids}
    desired = list(desired)
    wanted = {d.key for d in desired}

    def owner(key: str) -> str | None:
        prev = last.get(key)
        return prev.customer_id if prev is not None else None

    contested = {d.key for d in desired if (o := owner(d.key)) and o != d.customer_id and o not in ids}
    # an address left whose tags are off already (an earlier resync took them): nothing to decide, no store scan
    departed = {k for k, s in last.items() if k not in wanted and s.customer_id in ids and s.tags}
    owned = holders(contested, {str(owner(k)) for k in contested}) if contested else {}
    still = holders(departed, None) if departed else {}
    refusing = {str(owner(d.key)) for d in desired if d.key in contested and owner(d.key) in owned.get(d.key, ())
                and refused_consent(d.consent, new_contacts or "skip")}
    labels = segments(refusing) if segments is not None and refusing else {}
    kept, rest, notes = [], dict(last), []
    for d in desired:
        if d.key in contested and owner(d.key) in owned.get(d.key, ()):
            if (off := owners_withdrawal(d, last[d.key], new_contacts, labels.get(str(owner(d.key))))) is not None:
                kept.append(off)
                notes.append(f"{d.key} is customer {off.customer_id}'s contact and also customer {d.customer_id}'s "
                             f"address, whose card refuses marketing: its managed tags come off")
                continue
            rest.pop(d.key, None)
            notes.append(f"{d.key} is customer {owner(d.key)}'s contact and also customer {d.customer_id}'s "
                         f"address: left to the full sync, which picks the more valuable one")
            continue
        kept.append(d)
    for key in sorted(departed):
        others = sorted(set(still.get(key, ())) - ids)
        if others:
            rest.pop(key)
            notes.append(f"{key} is no longer customer {owner(key)}'s address but still customer {others[0]}'s: "
                         f"left to the full sync")
    return kept, rest, notes
