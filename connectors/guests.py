"""A guest's customer key: an order that names no customer of the vendor (a checkout without an account, a guest
sale in a CRM) is keyed by its e-mail, else its phone, read by the rules every contact's are read by
(:func:`connectors.contacts.clean_contact`: :func:`~connectors.email_phone.normalize_email`, and
:func:`~connectors.email_phone.normalize_phone` with the source's ``phone_region``), so that the guest joins the
customer whose contact has that e-mail or phone (:mod:`connectors.identity`), as a file export's guest does
(docs/sources/files.md). Shopify keyed guests by the raw phone (``+998 90 123-45-67`` and ``998901234567`` were two
customers, and one without ``+`` was taken for a vendor id, never joined) and RetailCRM by the e-mail lower-cased but
not validated (``anna@`` was a customer); one rule now, in one place:

* the e-mail, when the rules take it; else the phone in E.164;
* a value given that the rules refuse is dropped, as a contact's is: when the other keys the order, the order is
  kept and the value is an *issue* naming the record and field (``cleaned_values``: :meth:`Stager.issue
  <connectors.incremental.Stager.issue>`; a webhook logs it), never a bad row;
* neither usable but one given: a bad row naming the value (never a key of junk, never a walk-in: someone typed it);
* neither given: :class:`~connectors.non_purchase.NoCustomer` (a walk-in sale: counted, not segmented).
"""

from __future__ import annotations

from typing import Any, Mapping

from .email_phone import normalize_email, normalize_phone
from .http import FieldError, clean
from .non_purchase import NoCustomer
from .records import Contact, Order


def guest_key(email: Any, phone: Any, region: str | None, dropped: list[FieldError]) -> str:
    """The key of a guest order of ``email`` and ``phone`` (the vendor's fields, as sent; see the module doc). Each
    value dropped while the other keys the order is appended to ``dropped`` (a FieldError naming it: the caller's
    issue; required, so that no caller loses one without saying so). Raises a FieldError when neither is usable but
    one was given, NoCustomer when neither was given."""
    given = {"email": clean(email), "phone": clean(phone)}
    keys = {"email": normalize_email(given["email"]) if given["email"] else None,
            "phone": normalize_phone(given["phone"], region) if given["phone"] else None}
    key = keys["email"] or keys["phone"]
    refused = [fld for fld in ("email", "phone") if given[fld] and not keys[fld]]
    if key is None and not refused:
        raise NoCustomer()
    if key is None:
        other = {"email": "phone", "phone": "e-mail"}[refused[0]] if len(refused) == 1 else ""
        raise FieldError(refused[0], f"invalid {refused[0]} (a guest order is keyed by it"
                                     + (f"; no {other} either)" if other else "; the phone is invalid too)"),
                         given[refused[0]])
    by = "e-mail" if keys["email"] else "phone"
    for fld in refused:
        dropped.append(
            FieldError(fld, f"invalid {fld}; the guest order is kept, keyed by its {by}", given[fld]))
    return key


def guest_contact(order: Order | None, raw: Any, region: str | None) -> Contact | None:
    """The contact of a guest order keyed by its e-mail that gave a phone the rules take too: the guest's phone, kept
    so that the customer who registers later with that phone is found (:func:`connectors.identity.link_staged`: the
    guest bought first). No e-mail (the key says it) and no consent: a guest is sent to no destination, as before, and
    its phone never becomes a customer's (:mod:`connectors.guest_merge`). None for any other order."""
    if order is None or "@" not in order.customer_id or not isinstance(raw, Mapping):
        return None
    email, phone = clean(raw.get("email")), clean(raw.get("phone"))
    if not email or not phone or normalize_email(email) != order.customer_id:
        return None
    phone = normalize_phone(phone, region)
    return Contact(order.customer_id, phone=phone) if phone else None


def guest_contacts(orders: list[Order], rows: list[Any], region: str | None) -> list[Contact]:
    """:func:`guest_contact` of each order of a page (``rows``: the vendor's rows it was mapped from, by ``id``)."""
    raws = {str(r.get("id")): r for r in rows if isinstance(r, Mapping)}
    return [c for o in orders if (c := guest_contact(o, raws.get(o.order_id), region)) is not None]


__all__ = ["guest_contact", "guest_contacts", "guest_key"]
