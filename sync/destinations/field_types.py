"""A mapped field that already exists in the ESP with a type that cannot take rfmsync's values: refused at
``prepare``, before any write (and by ``rfmsync check`` when it can read the ESP).

rfmsync creates each field with the type of its value's kind (:data:`sync.destinations.base.DestinationSpec.
field_types`); a field that exists keeps its type. Where that type takes the values (a text field takes any; a
SendGrid Number field a boolean as 1/0: the migration rule of fields an older rfmsync made), the values go as it
takes them. Where it does not (a Mailchimp number merge field for a segment name: the member's upsert, and every
tag sent with it, fails for each contact at every run; a SendGrid Date or Number field for text: SendGrid answers
error 19042, data type mismatch), the run stops before its first write, naming the destination, the field, its
type and what rfmsync would write. Unisender stores every value as text (its type is for its web UI only): no
check there.
"""

from __future__ import annotations

from typing import AbstractSet, Mapping

from ..errors import DestinationConfigError
from ..planning.values import BOOL, DATE, KINDS, NUMBER, kind_of

#: text values that are always digits (the RFM code, "545"): a number field takes them
DIGITS = frozenset({"rfm"})
#: Mailchimp merge field type → the value kinds it takes (a date merge field: rfmsync's dates are ISO text, which
#: it reads; any other type, e.g. phone, address, url, refuses them)
MAILCHIMP_TAKES: Mapping[str, AbstractSet[str]] = {"text": frozenset(KINDS), "number": frozenset({NUMBER}),
                                                  "date": frozenset({DATE}),
                                                  **{t: frozenset() for t in ("phone", "address", "zip", "url",
                                                                              "imageurl", "birthday")}}
#: (a dropdown or radio merge field takes the values among its choices, which may be the segment names: not
#: judged here, left to ``prepare``'s warning as before)
#: SendGrid custom field type → the value kinds it takes (a boolean is 1/0 in a Number field)
SENDGRID_TAKES: Mapping[str, AbstractSet[str]] = {"Text": frozenset(KINDS), "Number": frozenset({NUMBER, BOOL}),
                                                 "Date": frozenset({DATE})}


def check_field_type(vendor: str, destination: str, field: str, have: str | None, value_name: str,
                     creates: str, takes: Mapping[str, AbstractSet[str]]) -> None:
    """DestinationConfigError when ``field`` exists in the ESP with a type (``have``) that does not take the values
    of ``value_name`` (``takes``); ``creates``: the type rfmsync gives the field it creates. A type ``takes`` does
    not know (a Mailchimp dropdown or radio field whose choices may be the segment names) is left to the caller's
    warning, as before: refusing it would stop a sync that works."""
    kind = kind_of(value_name)
    if have is None or have not in takes or kind in takes[have] or (value_name in DIGITS and NUMBER in takes.get(have, ())):
        return
    raise DestinationConfigError(
        f"{vendor} destination {destination!r}: field {field!r} exists in {vendor} as a {have} field, and rfmsync "
        f"would write {value_name!r} there ({kind} values, a {creates} field when rfmsync creates it): {vendor} "
        f"refuses them, so every contact's update would fail at every run; map {value_name!r} to another field "
        f"name (rfmsync creates it), or change the field's type in {vendor}")


__all__ = ["DIGITS", "MAILCHIMP_TAKES", "SENDGRID_TAKES", "check_field_type"]
