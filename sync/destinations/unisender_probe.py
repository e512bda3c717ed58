"""Which contacts new to the ledger Unisender may hold already, before an import puts them on a list.

An import names lists in ``email_list_ids`` (the lists the address "will be subscribed to"): for an address
Unisender holds off a list he left (unsubscribed, blocked, disabled) it would put him back, or, where the vendor
documents that it cannot (an unsubscribe's "active" "cannot be restored via API, only by the contact"), answer the
add done when it is not. So a contact rfmsync never pushed to is checked as a known one is (``getContact``, then
:func:`~sync.destinations.unisender_rows._hold_unconfirmed`: his own choice kept out) — but only when he may be
held: an e-mail-only import first (it creates an unknown address as ``new``, what the import that follows would
do for these consenting contacts, and changes nothing on a held one). When its ``new_emails`` (and ``inserted``)
count every row, none was held and its rows are imported without reads: 2 calls per 500 contacts instead of 1
(10 000 new contacts: 40 calls, not 20 + 10 000 reads); the rows its log refuses (an invalid address) are read,
the others not. Any other answer (a held address, an error, counts missing or unreadable, rows not taken that its
log does not name) reads every row of that check, contact by contact.

A check cannot be repeated on fewer rows once it found some held (it created the others: a second one counts
them held too), so its size is chosen before it is sent (:func:`check_size`): a whole batch while no check found
a held address, then, from the share the last batch's checks found held, the size that costs fewest calls a
contact (a check per ``size`` rows, and a read of each row of a check that finds one): 1 % held, checks of 11;
10 %, of 4; from about a third, one a batch (every contact read). The checks go batch by batch with the imports
(:meth:`~sync.destinations.unisender.UnisenderDestination.apply`): a run stopped in between leaves at most one
batch created by its check and not imported (the next run reads those, as held).
"""

from __future__ import annotations

from typing import Sequence

from ..model import OnResults
from .answers import BadAnswer
from .base import Dispatching, dispatch
from .unisender_api import ImportResult, UnisenderApi, UnisenderError, _count
from .unisender_rows import _Row


def check_size(held: int, checked: int, limit: int) -> int:
    """Rows per e-mail-only check when ``held`` of the last ``checked`` rows checked were held: the size that
    minimises ``1/size + P(a check of size rows holds one)``, the calls a contact (a read each: 1). No check found
    one: ``limit``; most held: ``limit`` too (one check a batch, its rows read: 0.2 % more than reading them)."""
    if held <= 0 or checked <= 0:
        return limit
    share = min(held / checked, 1.0)
    return min(range(2, limit + 1), key=lambda size: (1 / size + 1 - (1 - share) ** size, -size), default=limit)


class HeldCheck:
    """The e-mail-only checks of one apply, batch by batch; what the last batch's found sizes the next one's."""

    def __init__(self, api: UnisenderApi, key: str, name: str, batch_size: int,
                 dispatching: Dispatching | None = None) -> None:
        self._api, self._key, self._name, self._limit = api, key, name, batch_size
        self._dispatching = dispatching  # each check reported before it goes out: it creates its unknown rows
        self._found = (0, 0)  # (held, checked) by the last batch's checks whose answer was believed

    def maybe_held(self, rows: Sequence[_Row], on_results: OnResults) -> list[_Row]:
        """Of ``rows`` (one batch's new contacts put on a list), those Unisender may have held before: to be read
        first."""
        size = check_size(*self._found, self._limit)
        out: list[_Row] = []
        held = checked = 0
        for start in range(0, len(rows), size):
            read, found = self._check(rows[start:start + size], on_results)
            out += read
            if found is not None:
                held, checked = held + found[0], checked + found[1]
        if checked:  # the last batch's share, not the apply's: one batch held whole (what a stopped run's check
            self._found = (held, checked)  # created) does not make the checks of the next ones small
        return out

    def _check(self, part: Sequence[_Row], on_results: OnResults) -> tuple[list[_Row], tuple[int, int] | None]:
        """The rows of ``part`` to read, and (held, checked) when the answer says."""
        on_results([])  # the caller's check that it may go on (its lock still held)
        params = [("field_names[0]", "email"), *((f"data[{i}][0]", r.change.email) for i, r in enumerate(part)),
                  ("overwrite_tags", 0), ("overwrite_lists", 0)]
        try:
            dispatch(self._dispatching, [r.change for r in part], "upsert")  # no list named: no add carried
            raw = self._api.call("importContacts", params)
            result = self._api.result("importContacts", ImportResult, raw)
            errors, named = result.judged(len(part), raw, (self._key,), self._name)
            counts = [_count(k, getattr(result, k)) for k in ("new_emails", "inserted")]
        except UnisenderError as exc:
            if exc.fatal:  # about the whole account: stop, as the import would
                raise
            return list(part), None
        except (BadAnswer, ValueError):
            return list(part), None
        known = [n for n in counts if n is not None]
        taken = len(part) - len(named)
        if set(errors) != named or not known or not 0 <= min(known) <= taken:
            return list(part), None  # an answer that does not say: every row read
        if min(known) != taken:  # one held at least, which is unknown: every row read
            return list(part), (taken - min(known), taken)
        return [part[i] for i in sorted(named)], (0, taken)  # all new; those its log refuses (invalid) are read
