"""What the CRM mappers say of a record that is not (or may not be) a purchase, written once:

* :func:`undecided`: the bad row of a record without the field that tells whether it is a purchase (taken for no
  purchase, it would take a stored purchase out of the history without a word);
* :func:`unmapped`: the tombstone of a non-purchase that cannot be mapped (its contact unlinked, its amount cleared):
  it still leaves the history (:func:`connectors.http.tombstone`), keeping its customer when known, dated by the
  record, else by the stored order it cancels (:data:`~connectors.records.UNDATED`), never now.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Mapping

from .http import FieldError, get_field, parse_dt, tombstone
from .records import UNDATED, Order


def undecided(field: str, what: str, also: str = "") -> FieldError:
    """``<field>: missing<also>: whether the <what> is a purchase cannot be told`` (``what``: lead, deal, order)."""
    return FieldError(field, f"missing{also}: whether the {what} is a purchase cannot be told")


def unmapped(order_id: str, raw: Mapping[str, Any], customer_id: str | None, dated_by: tuple[str, ...],
             parse: Callable[[Any], datetime] = parse_dt) -> Order:
    """The tombstone of a non-purchase that cannot be mapped, keeping ``customer_id`` when known, dated by the first
    of ``dated_by`` the record has (a FieldError naming it when it is not a date), else :data:`UNDATED` (staging
    dates it by the order it cancels: :func:`connectors.tables.stage_records`): no date is needed to be no
    purchase."""
    for name in dated_by:
        if raw.get(name) not in (None, ""):
            return tombstone(order_id, get_field(raw, name, parse), customer_id)
    return tombstone(order_id, UNDATED, customer_id)


__all__ = ["undecided", "unmapped"]
