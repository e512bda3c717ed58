"""Consent: who may be created in a destination and with which status, and who carries no managed tag (the
``new_contacts`` rules of docs/sync.md#consent), shared by both planners and the guards."""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Iterable, Mapping

from ..config import DestinationConfig
from ..model import DesiredContact, PushedState


NO_CONSENT_SKIP = "no marketing consent (new_contacts = skip)"
#: a skip's reason when the card refusing is another customer's of the same address (``{customer}``)
REFUSED_BY_OTHER_SKIP = ("another card of this address (customer {customer}'s) refuses marketing consent "
                         "(new_contacts = skip)")
NEW_STATUSES = ("subscribed", "transactional", "pending", "skipped")


def refused_consent(consent: str, new_contacts: str) -> bool:
    """Under ``skip``, a contact whose source says *no* to marketing (refused, or withdrawn since he was synced)
    carries no managed tag or list at all, also one the ESP holds already: ``skip`` leaves customers without
    consent out, and a SendGrid or Unisender list is what a campaign is sent to. His managed tags and lists are
    taken off; his fields are kept up to date; an ``unknown`` consent (the source does not say) changes nothing
    for a contact the ESP holds. The columnar planner's twin: ``sync.planning.columnar._diff_sql``."""
    return new_contacts == "skip" and consent == "no"


def address_consent(consents: Iterable[str]) -> str:
    """The consent of an address several customers give (a family account, one person's two cards: one contact):
    a *no* on any of them wins, else a *yes* on any, else ``unknown``. The store keeps no date of a consent, so
    the latest statement cannot be told; a "no" is the side that never mails anyone against his word.
    :data:`ADDRESS_CONSENT_SQL` is its twin over a group of rows (:mod:`sync.planning.rows`)."""
    given = set(consents)
    return "no" if "no" in given else "yes" if "yes" in given else "unknown"


#: :func:`address_consent` as a SQL aggregate of the consent column ``{c}`` (a VARCHAR of yes / no / unknown)
ADDRESS_CONSENT_SQL = ("CASE WHEN bool_or({c} = 'no') THEN 'no' WHEN bool_or({c} = 'yes') THEN 'yes' "
                       "ELSE 'unknown' END")


def shared_consent(first: DesiredContact, consent: str, new_contacts: str, customer: str | None = None
                   ) -> DesiredContact:
    """``first``, the contact of an address another customer's row gives too (``consent``: his, ``customer``),
    with the address's consent (:func:`address_consent`): a *no* under ``skip`` leaves it no managed tag
    (:func:`refused_consent`); the address's first *no* names its card's customer (``refused_by``) unless it is
    the contact's own (one customer's two rows), as the columnar planner's shared table does."""
    both = address_consent((first.consent, consent))
    if both == first.consent:
        return first
    return replace(first, consent=both, tags=frozenset() if refused_consent(both, new_contacts) else first.tags,
                   refused_by=customer if both == "no" and customer != first.customer_id else first.refused_by)


def no_consent_reason(refused_by: str | None) -> str:
    """Why a contact is not created under ``skip``: its card's own consent, or another card's *no* (naming its
    customer), so that the plan and ``explain`` never say a card refuses that says yes."""
    return REFUSED_BY_OTHER_SKIP.format(customer=refused_by) if refused_by else NO_CONSENT_SKIP


def consent_skip(reason: str) -> bool:
    """Whether a skip's ``reason`` is a want of consent (:func:`no_consent_reason`)."""
    return reason == NO_CONSENT_SKIP or reason.startswith(REFUSED_BY_OTHER_SKIP[:REFUSED_BY_OTHER_SKIP.index("{")])


def refused_by_others(desired: list[DesiredContact], customer_ids: Iterable[str], new_contacts: str | None,
                      refusals: Callable[[set[str]], Mapping[str, set[str]]]) -> list[DesiredContact]:
    """A partial plan's (a webhook resync of ``customer_ids``) contacts with the consent of their address
    (:func:`address_consent`) where another customer's card gives it with a *no*: as the full plan, which sees
    every card, gives it. Else a resync of the card saying *yes* would tag again (or subscribe) the address the
    full sync withdrew for the other card's *no*, or keep the tags of an address whose other card said *no* since
    the full sync (a webhook, a file refreshed) until the next one. ``refusals(keys)``: the customers whose card
    gives each key with a *no* (an exact read of the store's contacts by address), asked about every address the
    plan would tag or subscribe, tagged or not."""
    ids = {str(c) for c in customer_ids}
    ask = {d.key for d in desired if d.consent != "no" and (d.tags or d.consent == "yes")}
    refused = refusals(ask) if ask else {}
    return [shared_consent(d, "no", new_contacts or "skip", min(others)) if (others := set(refused.get(d.key, ()))
                                                                             - ids) else d for d in desired]


def owners_withdrawal(d: DesiredContact, prev: PushedState, new_contacts: str | None,
                      segment: str | None = None) -> DesiredContact | None:
    """The plan of an address a partial plan leaves to the full sync (another customer's contact by the ledger,
    ``prev``, who still gives it) when ``d``, this plan's card of it, makes the address's consent *no* under
    ``skip``: whichever card the full sync picks, the address then carries no managed tag (:func:`refused_consent`),
    so the withdrawal is not left waiting for it. The contact stays the owner's, his fields as the ledger holds
    them (none written); only the managed tags come off. None: nothing a *no* takes off (another mode, no tags).
    The *no* is named as another card's (``refused_by``: ``d``'s own, or the card that made ``d``'s *no*), not the
    owner's, whose card may say yes (a skip's reason when the ESP lost the contact: :func:`no_consent_reason`).
    It is labelled with the owner's ``segment`` (the store's); unknown, with ``d``'s, never ``""``: the guards read
    that as one who left the customer base (:func:`sync.guards.withdrawal_change`), not a withdrawal."""
    if not (refused_consent(d.consent, new_contacts or "skip") and prev.tags and prev.customer_id):
        return None
    refused_by = d.refused_by or d.customer_id
    return replace(d, customer_id=prev.customer_id, tags=frozenset(), fields=dict(prev.fields),
                   refused_by=None if refused_by == prev.customer_id else refused_by, segment=segment or d.segment)


def status_for_new(consent: str, new_contacts: str) -> str | None:
    """The ESP status a contact gets if it has to be created; None → do not create (skip).

    | consent  | skip       | transactional | pending | subscribed    |
    |----------|------------|---------------|---------|---------------|
    | yes      | subscribed | subscribed    | pending | subscribed    |
    | no / unknown | —      | transactional | pending | transactional |

    Nobody is ever subscribed without consent; existing contacts keep whatever status they have.
    """
    if consent == "yes":
        return "pending" if new_contacts == "pending" else "subscribed"
    if new_contacts == "skip":
        return None
    return "pending" if new_contacts == "pending" else "transactional"


def consent_warning(dest: DestinationConfig, consents: set[str], creates: int) -> str | None:
    """A warning when the destination would create contacts (``creates`` > 0, or ``new_contacts`` is not
    ``skip``) and the source gives no marketing consent for any of its contacts: a file source that maps no
    ``marketing_consent`` column, a CRM without a consent field (amoCRM), or a mapped column that is empty
    throughout. Every new contact then gets the status of an ``unknown`` consent."""
    if not consents or consents != {"unknown"} or (creates == 0 and dest.new_contacts == "skip"):
        return None
    status = status_for_new("unknown", dest.new_contacts or "skip") or "skipped"
    asked = f" (not {dest.new_contacts}: nobody is subscribed without consent)" \
        if dest.new_contacts == "subscribed" else ""
    return (f"no consent column: the source gives no marketing_consent for any contact, so the {creates} contacts "
            f"this plan creates get status {status}{asked}, and so will every new contact later; map "
            f"marketing_consent in [source.columns] (or use a CRM field that carries consent) so those who agreed "
            f"are subscribed")
