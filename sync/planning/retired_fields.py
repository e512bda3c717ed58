"""Fields rfmsync wrote that the config no longer maps: said in the plan, and cleared when the user says so.

A field removed from ``[destinations.fields]`` (``CHURN = "churn_risk"`` deleted) keeps on every contact the last
value rfmsync wrote there: nothing writes it again, and an ESP automation reading it acts on a value that is months
old. The ledger knows which contacts hold a value rfmsync put there (their pushed fields, merged update after
update): :func:`left_fields` counts them per field and :func:`left_fields_warning` is the plan's warning, as
:mod:`.retired` does for tags. ``retire_fields = ["CHURN"]`` in the destination clears it (:func:`clear_retired`):
an empty value sent to those contacts, and only those (never a contact the ledger does not say rfmsync wrote it
for, never a field rfmsync never wrote); the ledger then holds the field empty and the warning goes. How each ESP
takes an empty value: Mailchimp ``""`` (clears the merge field), Unisender an empty cell, SendGrid ``""`` for a
Text field; SendGrid refuses an empty Number or Date custom field: its sync stops before any write
(:func:`sync.destinations.sendgrid_bodies.check_clearable`) until the field is deleted there (docs/sync.md).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable

import duckdb

from connectors.normalize import lit

from ..config import DestinationConfig
from ..model import ContactChange
from .columnar import CONSENT, LEDGER
from .consent import status_for_new
from .plan import Plan
from .retired import counted, owned_by, owners_beside, toml_string
from .rows import DESIRED

#: a JSON pointer to the field named by the SQL text ``{}`` (``~`` and ``/`` escaped, as the planner's paths)
_POINTER = "'/' || replace(replace({}, '~', '~0'), '/', '~1')"
#: the field named by ``{k}`` holds a value in the ledger row's fields ``{f}`` (not null, not cleared)
_HELD = "coalesce(json_extract_string({f}, " + _POINTER.format("{k}") + "), '') <> ''"


def field_names(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Every field name the staged pushed state holds for contacts in the destination, as the ledger spells it
    (one parse of each row's keys: 0.2 CPU s at 1 M rows, read once per plan and handed to :func:`left_fields`
    and :func:`clear_retired`): names are compared in Python, by ``spec.field_key`` alone (SQL's ``lower(trim())``
    is not Python's casefold and strip: ``Straße``, a tab)."""
    return [k for (k,) in con.execute(f"SELECT DISTINCT unnest(json_keys(fields)) FROM {LEDGER} "
                                      f"WHERE present AND fields <> '{{}}' AND json_valid(fields)").fetchall()]


def left_fields(con: duckdb.DuckDBPyConnection, dest: DestinationConfig, held: list[str]
                ) -> list[tuple[str, int]]:
    """``(field, contacts)`` of every field the staged pushed state (:func:`~.columnar.stage_pushed`) holds a value
    of for contacts in the destination that ``dest`` neither maps nor retires, by field name as the ESP compares
    them (``spec.field_key``: whatever the case on Mailchimp and SendGrid, which hold one field for both spellings
    and the mapping writes it; as spelled on Unisender, where ``RFM_CODE`` and ``rfm_code`` are two fields). The
    field names ``held`` (:func:`field_names`) are picked from first; the values read only of those unmapped."""
    skip = {dest.spec.field_key(n) for n in (*dest.fields, *dest.retire_fields)}
    names = [k for k in held if dest.spec.field_key(k) not in skip]
    if not names:
        return []
    names.sort()
    counts = ", ".join(f"count_if({_HELD.format(f='fields', k=lit(k))})" for k in names)
    found = con.execute(f"SELECT {counts} FROM {LEDGER} WHERE present AND json_valid(fields)").fetchall()[0]
    return [(k, int(n)) for k, n in zip(names, found) if n]


def left_fields_warning(dest: DestinationConfig, found: list[tuple[str, int]],
                        beside: Iterable[DestinationConfig] = ()) -> str | None:
    """The plan's warning for :func:`left_fields`' fields, saying how to act; None when there is none. A field
    another destination of ``beside`` (the config's) maps in the audience (:func:`~.retired.owners_beside`) is
    not offered to ``retire_fields``, which refuses it: the warning names that destination for it."""
    if not found:
        return None
    owners = owners_beside(beside, dest)[1]
    key = dest.spec.field_key
    retire = [f for f, _ in found if key(f) not in owners]
    act = []
    if retire:
        names = ", ".join(toml_string(f) for f in retire)
        them = "them" if len(retire) > 1 else "it"
        sendgrid = (" (SendGrid clears a Text custom field so; a Number or Date one it cannot: delete that field "
                    "in SendGrid, its values go with it, and sync once with retire_fields)"
                    if dest.type == "sendgrid" else "")
        act.append(f"to have rfmsync clear {them} on the contacts it wrote {them} for (and only those), add "
                   f"retire_fields = [{names}] to destination {dest.name!r}{sendgrid}; or map {them} again")
    owned = [f for f, _ in found if key(f) in owners]
    if owned:
        act.append(owned_by(owned, owners, "maps", key, "it writes such a field at every sync; retire_fields "
                                                        "cannot name it in another destination there"))
    return (f"fields rfmsync wrote that [destinations.fields] no longer maps keep their last values: "
            f"{counted(found)}; ESP automations and segments reading them act on values rfmsync no longer updates. "
            + "; ".join(a[0].upper() + a[1:] for a in act))


def clear_retired(con: duckdb.DuckDBPyConnection, dest: DestinationConfig, plan: Plan, held: list[str]) -> Plan:
    """``plan`` with every retired field (``retire_fields``) a contact in the destination holds a value of in the
    staged ledger state set to None (the ESP's empty value): added to the contact's change, or a change of its
    own (not a create, no tag touched: :attr:`ContactChange.clears_only`; no destination creates anyone without
    consent for it, Unisender re-creates a consenting contact deleted there, as any field update of his would).
    ``held``: the staged state's field names (:func:`field_names`), the retired ones picked from them."""
    retired = {dest.spec.field_key(n) for n in dest.retire_fields}
    spelled = [k for k in held if dest.spec.field_key(k) in retired]
    if not spelled:
        return plan
    wanted = f"[{', '.join(lit(k) for k in spelled)}]::VARCHAR[]"  # the ledger's spellings of the retired fields
    rows = con.execute(f"""
        WITH keyed AS (SELECT key, customer_id, unnest(json_keys(fields)) AS k, fields FROM {LEDGER}
                       WHERE present AND fields <> '{{}}' AND json_valid(fields)),
             held AS (SELECT key, any_value(customer_id) AS customer_id, list(k ORDER BY k) AS names FROM keyed
                      WHERE list_contains({wanted}, k) AND {_HELD.format(f='fields', k='k')}
                      GROUP BY key)
        SELECT h.key, h.customer_id, h.names, d.segment, d.consent FROM held h
        LEFT JOIN (SELECT d._key, any_value(d.segment) AS segment, any_value({CONSENT}) AS consent FROM {DESIRED} d
                   GROUP BY d._key) d ON d._key = h.key
        ORDER BY h.key""").fetchall()
    if not rows:
        return plan
    clears = {key: (cid, dict.fromkeys(names), segment, consent) for key, cid, names, segment, consent in rows}
    changes = [replace(c, set_fields={**c.set_fields, **clears.pop(c.key)[1]}, fields_text=None)
               if c.key in clears else c for c in plan.changes]
    # the status a field update of the contact carries (None: out of the export, or no consent under skip), so a
    # destination reads him first only where an upsert could create him without consent (Unisender's getContact)
    changes += [ContactChange(key, key, cid or "", str(segment or ""), False,
                              status_for_new(consent, dest.new_contacts) if consent else None, set_fields=fields)
                for key, (cid, fields, segment, consent) in clears.items()]
    return replace(plan, changes=tuple(changes))


__all__ = ["clear_retired", "field_names", "left_fields", "left_fields_warning"]
