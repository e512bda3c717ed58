"""Which contacts new to the ledger Unisender may hold already, before an import puts them on a list.

An import names lists in ``email_list_ids`` (the lists the address "will be subscribed to"): for an address
Unisender holds off a list he left (unsubscribed, blocked, disabled) it would put him back, or, where the vendor
documents that it cannot (an unsubscribe's "active" "cannot be restored via API, only by the contact"), answer the
add done when it is not. So a contact rfmsync never pushed to is checked as a known one is (``getContact``, then
:func:`~sync.destinations.unisender_rows._hold_unconfirmed`: his own choice kept out) — but only when he may be
held: one e-mail-only import per batch first (it creates an unknown address as ``new``, what the import that
follows would do for these consenting contacts, and changes nothing on a held one). When its ``new_emails`` (and
``inserted``) count every row, none was held and the batch is imported without reads: 2 calls per 500 contacts
instead of 1 (10 000 new contacts: 40 calls, not 20 + 10 000 reads); the rows its log refuses (an invalid
address) are read, the others not. Any other answer (a held address, an error, counts missing or unreadable, rows
not taken that its log does not name) reads the whole batch, contact by contact.
"""

from __future__ import annotations

from typing import Sequence

from ..model import OnResults
from .answers import BadAnswer
from .unisender_api import ImportResult, UnisenderApi, UnisenderError, _count
from .unisender_rows import _Row


def maybe_held(api: UnisenderApi, key: str, name: str, rows: Sequence[_Row], batch_size: int,
               on_results: OnResults) -> list[_Row]:
    """Of ``rows`` (new contacts put on a list), those Unisender may have held before: to be read first."""
    out: list[_Row] = []
    for start in range(0, len(rows), batch_size):
        part = rows[start:start + batch_size]
        on_results([])  # the caller's check that it may go on (its lock still held)
        params = [("field_names[0]", "email"), *((f"data[{i}][0]", r.change.email) for i, r in enumerate(part)),
                  ("overwrite_tags", 0), ("overwrite_lists", 0)]
        try:
            raw = api.call("importContacts", params)
            result = api.result("importContacts", ImportResult, raw)
            errors, named = result.judged(len(part), raw, (key,), name)
            counts = [_count(k, getattr(result, k)) for k in ("new_emails", "inserted")]
        except UnisenderError as exc:
            if exc.fatal:  # about the whole account: stop, as the import would
                raise
            errors, named, counts = {0: str(exc)}, set(), []
        except (BadAnswer, ValueError):
            errors, named, counts = {0: "not believed"}, set(), []
        known = [n for n in counts if n is not None]
        if set(errors) != named or not known or min(known) != len(part) - len(named):
            out += part  # one held, or an answer that does not say: every row read
        else:  # every row it took was new; those its log refuses (an invalid address) are read, as few
            out += [part[i] for i in sorted(named)]
    return out
