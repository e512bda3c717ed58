"""One normaliser for the contacts of every record-based source (API pulls and webhooks).

File exports normalise in DuckDB (:func:`connectors.email_phone.email_map` / ``phone_map``); API and webhook
contacts go through :func:`clean_contact`, built on the Python twins of the same rules, so one person
gets one e-mail and one E.164 phone whichever source spoke of them:

* e-mail: trimmed, lower-cased, validated (``email-validator``, no DNS);
* phone: E.164 with the source's ``phone_region`` (the default country for numbers written without
  one, e.g. ``8 902 001 58 38`` with ``RU``); kept when it is a possible number.

An invalid value is dropped from the contact (the contact is kept) and reported as a
:class:`~connectors.records.BadRow` naming the field and the value, never silently.

:func:`gone_contact` is every CRM's contact deleted (or merged away) there: emptied, so it leaves the store's
addresses and the destinations' managed state (docs/sources/common.md#deleted-contacts).
"""

from __future__ import annotations

import dataclasses
from typing import Annotated

from pydantic import AfterValidator

from .email_phone import normalize_email, normalize_phone
from .records import BadRow, Consent, Contact


def _region(value: str | None) -> str | None:
    import phonenumbers

    if value is not None and value.upper() not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"unknown phone region {value!r} (use a two-letter country code such as 'UZ')")
    return value.upper() if value else None


#: ``phone_region`` of a source config: a two-letter country code, upper-cased, or None.
PhoneRegion = Annotated[str | None, AfterValidator(_region)]


def clean_contact(contact: Contact, region: str | None, source: str) -> tuple[Contact, list[BadRow]]:
    """The contact with its e-mail and phone normalised; an invalid value is dropped and reported."""
    issues: list[BadRow] = []
    values = {}
    for fld, norm in (("email", normalize_email), ("phone", lambda v: normalize_phone(v, region))):
        raw = getattr(contact, fld)
        value = norm(raw) if raw is not None else None
        if raw is not None and value is None and raw.strip():
            issues.append(BadRow(source, contact.customer_id, f"invalid {fld}; the contact is kept without it",
                                 field=fld, value=raw))
        values[fld] = value
    return dataclasses.replace(contact, **values), issues


def gone_contact(customer_id: str, combined_to: str | None = None) -> Contact:
    """A contact deleted in the CRM (or the loser of a merge, ``combined_to`` its survivor) as an emptied contact
    that can never be mailed: no e-mail, phone or name (no destination can match or create it, and its managed tags
    come off at the next sync, as any contact's without an address), ``marketing_consent = no``, attributes
    ``deleted`` (and ``combined_to``). Its orders stay in the history under its id."""
    attrs = {"deleted": "true", **({"combined_to": combined_to} if combined_to else {})}
    return Contact(customer_id=customer_id, marketing_consent=Consent.NO, attributes=attrs, gone=True)


__all__ = ["PhoneRegion", "clean_contact", "gone_contact"]
