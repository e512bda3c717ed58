"""Unisender rows: a change as one row of an ``importContacts`` call, and what a ``getContact`` answer says of its
contact (its e-mail status, lists, tags), for the checks that keep an import from creating, or putting on a list,
a contact without consent (:mod:`sync.destinations.unisender`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import DestinationConfigError, DestinationError
from ..model import ContactChange, ItemResult, OnResults
from .answers import excerpt
from .base import Action
from .unisender_api import UnisenderError, action_for


def split_name(name: str) -> tuple[str, str]:
    """``"list:Winback"`` → ("list", "Winback"); ``"tag:vip"`` → ("tag", "vip"); no prefix = a list."""
    kind, sep, rest = name.partition(":")
    if sep and kind in ("list", "tag"):
        return kind, rest
    return "list", name


@dataclass
class _Row:
    change: ContactChange
    add_lists: list[str] = field(default_factory=list)  # list ids, in the order of their tag+ ops in ``ops``
    excluded: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)  # tags to add (or the full set when replacing)
    replace_tags: bool = False
    results: list[ItemResult] = field(default_factory=list)  # decided before the call (ok or not)
    ops: list[str] = field(default_factory=list)  # ops whose outcome is the import's


def _ops(ch: ContactChange, removes: bool = True) -> list[str]:
    ops = ["upsert"] if ch.needs_upsert else []
    ops += [f"tag+{n}" for n in sorted(ch.add_tags)]
    return ops + ([f"tag-{n}" for n in sorted(ch.remove_tags)] if removes else [])


def _grouped(rows: list[_Row], on_results: OnResults) -> dict[tuple[bool, tuple[str, ...]], list[_Row]]:
    """Rows with ops by what one import shares (``overwrite_tags``, the field columns); the others' results are
    reported."""
    groups: dict[tuple[bool, tuple[str, ...]], list[_Row]] = {}
    for row in rows:
        if row.ops:
            groups.setdefault((row.replace_tags, tuple(sorted(row.change.set_fields))), []).append(row)
        elif row.results:
            on_results(row.results)
    return groups


def _must_exist(row: _Row) -> bool:
    """A row that may be imported only if its contact is still in Unisender (an import creates an unknown address
    as ``new``, the status of consenting contacts): one that only removes (a removal never creates), and any row
    of a known contact who would not be created ``subscribed`` now (``status_if_new`` pending, transactional or
    None: an invitation or nothing, never an import). One ``getContact`` each."""
    if not row.ops:
        return False
    return _only_removes(row) or (not row.change.create and row.change.status_if_new != "subscribed")


def _only_removes(row: _Row) -> bool:
    return all(op.startswith("tag-") for op in row.ops)


def _row_error(exc: DestinationError) -> str:
    """The failure of one contact's call, as his ops' error; errors that concern the whole account (a rejected
    key, ``not_enough_money``, ``unknown_method``, an answer without an envelope that is not retryable: a wrong
    URL) are raised instead, stopping the apply, and so is a temporary error that outlasted the retries (Unisender
    unreachable: going on would spend the whole retry budget again on every contact, for hours). A temporary
    error of a call that is not retried (``subscribe``: it may have been done) fails that contact only."""
    if isinstance(exc, DestinationConfigError) or (isinstance(exc, UnisenderError) and exc.fatal) or \
            getattr(exc, "exhausted", False) or (type(exc) is DestinationError and not exc.transient):
        raise exc
    return f"{exc} (temporary: the next run tries again)" if exc.transient else str(exc)


def _names_contact(exc: DestinationError, email: str) -> bool:
    """A per-contact refusal by name: an envelope error about this call's content (not the account, not a
    temporary one: those are raised or retried) whose message names the contact's address (``Email "x" is
    invalid``, ``Contact "x" is unsubscribed``), as a whole address: not inside another one (``info@shop.ru``
    does not name ``o@shop.ru``, nor ``aa@x.ru`` ``a@x.ru``, nor ``o'neil@x.ru`` ``neil@x.ru``: :func:`_whole_address`).
    Anything else (an unreadable answer, a list that does not exist, no answer at all) says nothing about him: a lost tag's holder keeps waiting (fix25's rule)."""
    return (isinstance(exc, UnisenderError) and not exc.transient and action_for(exc.code) is Action.RECORD
            and re.search(_whole_address(email), exc.text, re.I) is not None)


#: a character of an address's local part (RFC 5322 ``atext`` and the dot): one before his address makes it
#: the end of another address (``o'neil@x.ru``, ``a=b@x.ru``), not his
_LOCAL = r"[\w.!#$%&'*+/=?^`{|}~-]"


def _whole_address(email: str) -> str:
    """The pattern of ``email`` as a whole address: no local-part character before it (but an opening quote,
    ``'a@x.ru'``, when the address is closed by one), no more of a domain after it."""
    e = re.escape(email)
    return rf"(?:(?<!{_LOCAL})|(?<=(?<!{_LOCAL})')(?={e}')){e}(?![\w-]|\.\w)"


def _email_status(info: Any) -> str | None:
    """The e-mail status a getContact answer shows (``email.status``: new, invited, active, unsubscribed, …)."""
    holder = info.get("email") if isinstance(info, dict) else None
    status = holder.get("status") if isinstance(holder, dict) else None
    return str(status) if status else None


#: e-mail statuses a known contact without consent in rfmsync may be put on a list by import with (as
#: ``subscribe`` with ``double_optin=4`` adds them without an invitation)
CONSENTING = ("active", "new")


def _joins_known(row: _Row) -> bool:
    """A row that puts a contact the ledger knows on a list new to him there (a segment move, a retried add, a full
    refresh's list the ledger does not show him on): read first (one ``getContact``), whatever his consent. A place
    he unsubscribed from an import cannot restore (its "active" "cannot be restored via API, only by the contact"),
    but the import would answer the add done and the ledger would record him on a list he is not on: the read is
    what tells (kept out). For a place ``blocked``, ``inactive`` or one he is invited to, nothing is documented
    (``email_list_ids`` are lists the address "will be subscribed to"): the read keeps the import from naming it,
    a defensible choice on the worst reading (an invitation could be confirmed without his click)."""
    return bool(row.add_lists) and not row.change.create


def _hold_unconfirmed(row: _Row, info: Any) -> None:
    """The lists a getContact answer allows a contact's import row to name (the others' adds leave the row).

    Never a list he left, nor any with an address that may not be mailed (:func:`_barred`, as a pending create is
    not invited to it): kept out. A list he is invited to (``invited``, ``activation_requested``: double opt-in
    pending) is left as Unisender has it, and the add is done as for a pending create invited already (he is on
    it once he clicks; naming it in an import could put him there without his click). A contact without consent
    now (``status_if_new`` not subscribed) is put on lists only when Unisender shows him ``active`` (he confirmed)
    or ``new`` (the account asserted his consent: what ``subscribe`` with ``double_optin=4``, the way rfmsync
    invites, also takes as consent): an import would add anyone else without an invitation (the adds fail,
    awaiting his confirmation). His field updates, tags and removals go on."""
    status = _email_status(info)
    if row.change.status_if_new == "subscribed" or status in CONSENTING or status in BARRED:
        held = _barred(info, row.add_lists)
    else:
        msg = (f"awaiting confirmation (Unisender status {status or 'not shown'}): not put on a list until he "
               "confirms")
        held = {lid: (msg, True, False) for lid in row.add_lists}
    places = _places(info) or {}
    invited = {lid for lid in row.add_lists if lid not in held and places.get(lid) in INVITED}
    adds = list(zip(row.add_lists, [op for op in row.ops if op.startswith("tag+") and
                                    split_name(op[4:])[0] == "list"]))
    row.results += [ItemResult(row.change.key, op, False, held[lid][0], refused=held[lid][1], kept_out=held[lid][2])
                    if lid in held else ItemResult(row.change.key, op, True)
                    for lid, op in adds if lid in held or lid in invited]
    row.ops = [op for op in row.ops if op not in {op for lid, op in adds if lid in held or lid in invited}]
    row.add_lists = [lid for lid in row.add_lists if lid not in held and lid not in invited]


def _merged(held: _Row, removals: _Row) -> _Row:
    """The held path's row (fields, tag adds) and the same change's removals as one import row."""
    held.ops += removals.ops
    held.results += removals.results
    held.excluded, held.replace_tags = removals.excluded, removals.replace_tags
    return held


#: statuses (getContact's, of an address and of its place on a list) that mean he is there or invited to it:
#: ``subscribe`` would invite him again (``new``, ``active``: on it; ``invited``, ``activation_requested``: waiting)
ON_LIST = ("new", "active", "invited", "activation_requested")
#: of :data:`ON_LIST`, the places of a double opt-in not confirmed yet: never named in an import (it might confirm him)
INVITED = ("invited", "activation_requested")
#: statuses that mean he may not be put on a list by rfmsync, nor invited to it (status → whose doing, and what
#: is left to do): he unsubscribed, the service blocked him, or the account disabled him (``inactive``). Consent
#: first: his list add is not done, and kept out (:attr:`~sync.model.ItemResult.kept_out`: not a failure; the ledger
#: records it and the next plans leave it out, not read nor sent again). ``excluded`` (taken off by the sender) is
#: none of them: he is invited as anyone not on the list.
BARRED = {"unsubscribed": "he unsubscribed: his choice, nothing to do",
          "blocked": "Unisender blocked him: nothing rfmsync may do",
          "inactive": "disabled in Unisender: kept out until a --full-refresh, or his re-entry into the segment, "
                      "reads him again"}


def _places(info: Any) -> dict[str, str] | None:
    """List id → his place's status on it as a getContact answer shows it (``lists[].status``; a place without
    one, null or empty, is one he holds: ``active``); None: not held or no lists shown. The one reader of it."""
    if not isinstance(info, dict) or not isinstance(info.get("lists"), list):
        return None
    return {str(x.get("id")): str(x.get("status") or "active") for x in info["lists"] if isinstance(x, dict)}


def _list_ids_of(info: Any) -> set[str] | None:
    """Ids of the lists a getContact answer shows the contact on or invited to; None: not held or not shown."""
    places = _places(info)
    return None if places is None else {lid for lid, status in places.items() if status in ON_LIST}


def _barred(info: Any, list_ids: list[str]) -> dict[str, tuple[str, bool, bool]]:
    """Of ``list_ids``, those a contact must not be invited to nor put on (list id → (why, refused, kept out)):
    all of them when his address is :data:`BARRED`, else each whose place on it is: kept out by his own choice
    (:attr:`~sync.model.ItemResult.kept_out`: recorded, not a failure, not asked again). A status rfmsync does not
    know fails the add too, not as his refusal (what it means is unknown: he is not invited, the next run reads him
    again). Unisender's text is quoted masked and cut (:func:`excerpt`)."""
    status = _email_status(info)
    if status in BARRED:
        why = f"Unisender shows his address {status} ({BARRED[status]}): not put on a list nor invited"
        return {lid: (why, True, True) for lid in list_ids}
    shown = _places(info) or {}
    out: dict[str, tuple[str, bool, bool]] = {}
    for lid in list_ids:
        got = shown.get(lid)
        if got in BARRED:
            out[lid] = (f"Unisender shows him {got} on the list ({BARRED[got]}): not put on it nor invited", True, True)
        elif got is not None and got not in ON_LIST and got != "excluded":
            out[lid] = (f"Unisender shows him on the list with status '{excerpt(got, limit=40)}', which rfmsync "
                        "does not know: not put on it nor invited", False, False)
    return out


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _tags_of(info: Any) -> list[str] | None:
    """Tags from a getContact answer (``fields.tags`` or ``email.tags``, comma list); None when absent."""
    if not isinstance(info, dict):
        return None
    for holder in (info.get("fields"), info.get("email")):
        if isinstance(holder, dict) and "tags" in holder:
            raw = holder["tags"]
            items = raw if isinstance(raw, list) else str(raw or "").split(",")
            return [t.strip() for t in items if str(t).strip()]
    return None
