"""The pure-Python planner as it was before the columnar one (sync.planning.columnar): the reference the property
tests compare it with. Frozen on purpose: change it only together with a deliberate change of planning rules."""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping, Sequence

from connectors.email_phone import normalize_email
from sync.config import DestinationConfig
from sync.model import ContactChange, DesiredContact, PushedState, Skip
from sync.planning.plan import (NO_CONSENT_SKIP, Plan, all_managed, consent_warning, managed_tags, normalise_value,
                                status_for_new)
from sync.planning.values import column_of


def desired_contacts(rows: Iterable[Mapping[str, Any]], dest: DestinationConfig
                     ) -> tuple[list[DesiredContact], list[Skip]]:
    tags_for = managed_tags(dest)
    desired: dict[str, DesiredContact] = {}
    skipped: list[Skip] = []
    for row in rows:
        raw = row.get("email")
        if not raw:
            continue
        key = normalize_email(raw)
        if key is None:
            skipped.append(Skip(str(raw), str(row["customer_id"]), row["segment"], "invalid email"))
            continue
        fields = {esp: normalise_value(row.get(column_of(v))) for esp, v in dest.fields.items()}
        contact = DesiredContact(key=key, customer_id=str(row["customer_id"]), email=key,
                                 consent=str(row.get("marketing_consent") or "unknown"), segment=row["segment"],
                                 tags=frozenset(tags_for.get(row["segment"], ())), fields=fields)
        if key in desired:
            continue
        desired[key] = contact
    return list(desired.values()), skipped


def _same(a, b) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def plan_destination(dest: DestinationConfig, desired: Iterable[DesiredContact], last: Mapping[str, PushedState],
                     *, revision: int = 0, existing: Mapping[str, str] | None = None,
                     full_refresh: bool = False, skipped: Iterable[Skip] = (), remote_checked: bool = False,
                     notes: Iterable[str] = ()) -> Plan:
    managed = set(all_managed(dest))
    changes: list[ContactChange] = []
    skips = list(skipped)
    seen: set[str] = set()
    consents: set[str] = set()
    for d in desired:
        seen.add(d.key)
        consents.add(d.consent)
        prev = last.get(d.key)
        exists = (prev is not None and prev.exists) or (existing is not None and d.key in existing)
        if full_refresh and existing is not None:
            exists = d.key in existing
        prev_tags = prev.tags & managed if prev else frozenset()
        prev_fields = {} if (full_refresh or prev is None) else prev.fields
        status = None
        if not exists:
            status = status_for_new(d.consent, dest.new_contacts)
            if status is None:
                skips.append(Skip(d.key, d.customer_id, d.segment, NO_CONSENT_SKIP))
                continue
        add = d.tags if full_refresh else d.tags - prev_tags
        remove = prev_tags - d.tags
        set_fields = {k: v for k, v in d.fields.items() if k not in prev_fields or not _same(prev_fields[k], v)}
        if not exists or add or remove or set_fields:
            changes.append(ContactChange(key=d.key, email=d.email, customer_id=d.customer_id, segment=d.segment,
                                         create=not exists, status_if_new=status, add_tags=frozenset(add),
                                         remove_tags=frozenset(remove), set_fields=set_fields))
    for key, prev in last.items():
        if key in seen:
            continue
        remove = prev.tags & managed
        if remove:
            changes.append(ContactChange(key=key, email=key, customer_id=prev.customer_id or "", segment="",
                                         create=False, status_if_new=None, remove_tags=frozenset(remove)))
    changes.sort(key=lambda c: c.key)
    creates = sum(c.create for c in changes)
    warning = consent_warning(dest, consents, creates)
    return Plan(destination=dest.name, type=dest.type, changes=tuple(changes), skipped=tuple(skips),
                managed_tags=tuple(sorted(managed)), fields=dict(dest.fields), ledger_revision=revision,
                remote_checked=remote_checked, notes=tuple(notes), warnings=(warning,) if warning else ())


def reconciled(last: dict[str, PushedState], actual: dict[str, set[str]], managed: Sequence[str]
               ) -> dict[str, PushedState]:
    members: dict[str, set[str]] = {}
    for tag, emails in actual.items():
        for e in emails:
            members.setdefault(e.lower(), set()).add(tag)
    out = {}
    for key in set(last) | set(members):
        prev = last.get(key)
        unmanaged = (prev.tags - set(managed)) if prev else frozenset()
        out[key] = PushedState(key=key, customer_id=prev.customer_id if prev else None,
                               tags=frozenset(unmanaged | members.get(key, set())),
                               fields=prev.fields if prev else {}, exists=True)
    return out
