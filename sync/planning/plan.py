"""Planning is a pure function: desired state + last pushed state → the changes, with reasons.

No vendor branches here: tag/list naming comes from the destination type's spec
(:class:`sync.destinations.base.DestinationSpec`), field values from the vocabulary (:mod:`sync.planning.values`).

Desired state comes from the segments and the destination's mapping; the last pushed state from the ledger.
Only tags/lists rfmsync manages (the mapped ones) are ever added or removed, and only fields whose value changed
are written. Consent decides who may be created (see :func:`status_for_new`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from connectors.email_phone import normalize_email

from ..config import DestinationConfig
from ..errors import ConfigError
from ..model import ContactChange, DesiredContact, FieldValue, OwnerChange, PushedState, Skip
from .consent import (NEW_STATUSES, NO_CONSENT_SKIP, consent_skip, consent_warning, no_consent_reason,  # noqa: F401
                      refused_consent, shared_consent, status_for_new)
from .partial import Holders, leave_shared_to_full_sync  # noqa: F401 (the resync's, imported from here too)
from .plan_json import change_json, plan_from_json
from .transitions import tags_for_row, transition_managed
from .values import column_of

if TYPE_CHECKING:
    from ..guards import PlanStats
    from ..ledger.statecache import Counter


def managed_tags(dest: DestinationConfig) -> dict[str, list[str]]:
    """segment → the tags/lists this destination gives it (named by its type's spec, prefixes applied)."""
    return dest.spec.managed_tags(dest)


def all_managed(dest: DestinationConfig) -> list[str]:
    """Every tag/list rfmsync manages in this destination: the segments', the transitions' and the retired ones
    (``retire_tags``: given to nobody, so taken off every contact the ledger says rfmsync put them on)."""
    return sorted({t for tags in managed_tags(dest).values() for t in tags} | set(transition_managed(dest))
                  | set(dest.retire_tags))


def check_fields(dest: DestinationConfig) -> None:
    """ConfigError for a ``[destinations.fields]`` name or value the config's load refuses
    (:meth:`~sync.config.DestinationConfig.check_field_names`, in its words): a destination made by hand or copied
    with other fields (``model_copy`` validates nothing) is held to the same rule."""
    try:
        dest.check_field_names()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def normalise_value(value: Any) -> FieldValue:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, Decimal):
        return float(value) if value != value.to_integral_value() else int(value)
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def desired_contacts(rows: Iterable[Mapping[str, Any]], dest: DestinationConfig
                     ) -> tuple[list[DesiredContact], list[Skip]]:
    """Customer rows (customer_id, email, marketing_consent, segment, metric columns) → desired contacts."""
    tags_for = managed_tags(dest)
    desired: dict[str, DesiredContact] = {}
    skipped: list[Skip] = []
    for row in rows:
        raw = row.get("email")
        if not raw:
            continue  # no address: nothing to sync (counted by the caller)
        key = normalize_email(raw)
        if key is None:
            skipped.append(Skip(str(raw), str(row["customer_id"]), row["segment"], "invalid email"))
            continue
        consent = str(row.get("marketing_consent") or "unknown")
        if key in desired:  # two customers share an address: the more valuable row came first, and is the
            desired[key] = shared_consent(desired[key], consent, dest.new_contacts,  # contact; a "no" wins
                                          str(row["customer_id"]))
            continue
        fields = {esp: normalise_value(row.get(column_of(v))) for esp, v in dest.fields.items()}
        tags = frozenset() if refused_consent(consent, dest.new_contacts) else \
            frozenset(tags_for.get(row["segment"], ())) | tags_for_row(dest, row)
        desired[key] = DesiredContact(key=key, customer_id=str(row["customer_id"]), email=key, consent=consent,
                                      segment=row["segment"], tags=tags, fields=fields)
    return list(desired.values()), skipped


@dataclass(frozen=True)
class Plan:
    destination: str
    type: str
    changes: tuple[ContactChange, ...]
    skipped: tuple[Skip, ...]
    managed_tags: tuple[str, ...]
    fields: Mapping[str, str]
    ledger_revision: int
    remote_checked: bool = False
    notes: tuple[str, ...] = ()
    #: guard lines and other warnings about this destination's plan (printed, and in the JSON)
    warnings: tuple[str, ...] = ()
    #: contacts whose customer id changes (:class:`~sync.model.OwnerChange`), by key: the apply records each new
    #: customer in the ledger before any ESP call; those not also in ``changes`` have nothing else to write (no
    #: ESP call for them, ``ledger_only`` in the run's counts) and are not counted by the plan guards
    owners: tuple[OwnerChange, ...] = ()
    #: the contacts whose tags come off for a consent of ``no`` (:func:`refused_consent`), sorted: judged apart by
    #: the plan guards (``max_withdrawal_pct``); a saved plan's as :func:`sync.guards.saved_withdrawals` believes
    withdrawn: tuple[str, ...] = ()
    #: the contacts rfmsync created ``subscribed`` whose source consent is now ``no`` (sorted): their ESP status
    #: stays subscribed (rfmsync never changes an existing contact's status); said, not changed
    #: (:func:`sync.planning.withdrawn.withdrawn_subscribed`)
    withdrawn_subscribed: tuple[str, ...] = ()
    #: what the plan guards judged when it was made (None: not judged: no change, a saved plan, a webhook resync)
    guard: PlanStats | None = None
    #: the destination's target the plan was made for (:mod:`sync.planning.target`: ``mailchimp:aud1``); its apply
    #: records it in the ledger, and a saved plan is applied only while the config points there
    pushed_to: str | None = None
    #: the target a full refresh's plan moves the destination from (the ledger's when it was made; None: not a
    #: move): its apply forgets the ledger's state only while the ledger's target is still that one
    moves_from: str | None = None
    #: read from a plan file written before plans recorded ``moves_from`` (whether it is a move is not known)
    moves_unknown: bool = False
    #: the epoch of the destination's revision counter when the plan was made (new when the ledger is found
    #: restored, the destination forgotten or taken over); None: never written, or a plan file saved before
    #: plans recorded it (then the revision alone tells whether the ledger moved)
    ledger_epoch: str | None = None
    #: the random token of that revision in the ledger (``state_tokens``): a ledger restored from a backup and saved
    #: back up to the plan's revision holds another; None: not known (a revision an rfmsync before schema 11 wrote,
    #: or a plan file saved before plans recorded it: the revision and the epoch alone tell)
    ledger_token: str | None = None
    #: the runs whose operations left in flight (a killed run's: :mod:`sync.ledger.inflight`) the plan read as
    #: doubts; an apply finding another run's left re-plans under the lock (:func:`sync.planning.doubt.doubt_unread`).
    #: None: not known (a saved plan's, not written to its file; a plan built by hand): no re-plan on that account
    in_flight_read: frozenset[int] | None = None

    @property
    def is_empty(self) -> bool:
        return not self.changes

    def made_at(self, now: "Counter") -> bool:
        """Whether the ledger's counter of the destination ``now`` is still the one the plan was made at: the same
        revision, and the same epoch and that revision's token when the plan recorded them (no token: no proof)."""
        return (now.revision == self.ledger_revision and (self.ledger_epoch is None or now.epoch == self.ledger_epoch)
                and (self.ledger_token is None or now.token == self.ledger_token))

    def moved_how(self, now: "Counter") -> str:
        """How ``now``, not :meth:`made_at`, moved while at the plan's revision ("": it is at another)."""
        if now.revision != self.ledger_revision:
            return ""
        if self.ledger_epoch is not None and now.epoch != self.ledger_epoch:
            return "its counter under a new epoch: the ledger was found restored from a backup, or the destination " \
                   "forgotten"
        return "that revision written again since: the ledger was restored from a backup after the plan was made"

    def rows(self) -> list[dict]:
        """Per managed tag: +added −removed; then fields (~updated), new and skipped contacts."""
        out = []
        for tag in self.managed_tags:
            add = sum(tag in c.add_tags for c in self.changes)
            rem = sum(tag in c.remove_tags for c in self.changes)
            out.append({"destination": self.destination, "target": tag, "added": add, "removed": rem,
                        "updated": 0, "new": 0, "skipped": 0})
        out.append({"destination": self.destination, "target": "(fields)", "added": 0, "removed": 0, "new": 0,
                    "updated": sum(bool(c.set_fields) and not c.create for c in self.changes), "skipped": 0})
        out.append({"destination": self.destination, "target": "(contacts)", "added": 0, "removed": 0, "updated": 0,
                    "new": sum(c.create for c in self.changes), "skipped": len(self.skipped)})
        return out

    def totals(self) -> dict:
        rows = self.rows()
        return {k: sum(r[k] for r in rows) for k in ("added", "removed", "updated", "new", "skipped")}

    def new_by_status(self) -> dict[str, int]:
        """Contacts this plan creates, by the status they get; ``skipped``: new contacts left out for want of
        consent (``new_contacts = "skip"``). Invalid addresses are not new contacts and are not counted."""
        out = dict.fromkeys(NEW_STATUSES, 0)
        for c in self.changes:
            if c.create and c.status_if_new in out:
                out[c.status_if_new] += 1
        out["skipped"] = sum(consent_skip(s.reason) for s in self.skipped)
        return out

    def to_json(self) -> dict:
        return {
            "destination": self.destination, "type": self.type, "ledger_revision": self.ledger_revision,
            "ledger_epoch": self.ledger_epoch, "ledger_token": self.ledger_token,
            "remote_checked": self.remote_checked, "notes": list(self.notes), "warnings": list(self.warnings),
            "managed_tags": list(self.managed_tags), "fields": dict(self.fields),
            "summary": self.rows(), "totals": self.totals() | {"new_by_status": self.new_by_status()},
            "new_by_status": self.new_by_status(), "changes": [change_json(c) for c in self.changes],
            "skipped": [asdict(s) for s in self.skipped],
            "owners": [{"key": o.key, "customer_id": o.customer_id, "was": o.was} for o in self.owners],
            "withdrawn": list(self.withdrawn), "withdrawn_subscribed": list(self.withdrawn_subscribed),
            "guard": self.guard.to_json() if self.guard is not None else None,
            "pushed_to": self.pushed_to, "moves_from": self.moves_from,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Plan":
        """The plan read back from its JSON, every field checked (:func:`~sync.planning.plan_json.plan_from_json`)."""
        return plan_from_json(cls, data)


def same_value(a: FieldValue, b: FieldValue) -> bool:
    """Field values are compared as their JSON form (1 and 1.0 differ, so do "1" and 1)."""
    return a is b or json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def plan_destination(dest: DestinationConfig, desired: Iterable[DesiredContact], last: Mapping[str, PushedState],
                     *, revision: int = 0, existing: Mapping[str, str] | None = None,
                     full_refresh: bool = False, skipped: Iterable[Skip] = (), remote_checked: bool = False,
                     notes: Iterable[str] = (), doubt: Mapping[str, frozenset[str]] | None = None) -> Plan:
    """The change set that takes the destination from ``last`` to ``desired``.

    ``existing``: emails the ESP already holds (when it was read), so ``skip`` can tell who is new.
    ``full_refresh``: push every desired field and tag again, whatever the ledger says; with ``existing`` (the
    ESP was read), a contact the ledger believes exists but the ESP does not hold is created again.
    ``doubt``: the tags whose add's outcome is unknown, by key (:func:`sync.planning.doubt.in_doubt`): he may hold
    them, so one he no longer gets is taken off (an idempotent removal), and one he still gets is added again as
    when it failed; a contact that may not be created (no consent) gets only those removals, never an upsert that
    could create him.
    """
    managed = set(all_managed(dest))
    doubt = doubt or {}
    changes: list[ContactChange] = []
    skips = list(skipped)
    seen: set[str] = set()
    consents: set[str] = set()
    owners: list[OwnerChange] = []  # the contacts whose customer is another
    withdrawn: list[str] = []  # the contacts whose managed tags come off for a consent of no (Plan.withdrawn)
    for d in desired:
        seen.add(d.key)
        consents.add(d.consent)
        prev = last.get(d.key)
        if prev is not None and prev.customer_id is not None and prev.customer_id != d.customer_id:
            owners.append(OwnerChange(d.key, d.customer_id, prev.customer_id))
        exists = (prev is not None and prev.exists) or (existing is not None and d.key in existing)
        if full_refresh and existing is not None:  # the ESP was read: believe it over the ledger (drift repair)
            exists = d.key in existing
        prev_tags = prev.tags & managed if prev else frozenset()
        prev_fields = {} if (full_refresh or prev is None) else prev.fields
        # the status it gets if it has to be created: also for a contact the ledger knows, so a destination that
        # finds it deleted since can create it again under the consent rules (Unisender), or leave it out (None)
        status = status_for_new(d.consent, dest.new_contacts)
        doubted = doubt.get(d.key, frozenset()) & managed
        remove = (doubted if not exists and status is None else prev_tags | doubted) - d.tags
        if not exists and status is None:
            if not remove:
                skips.append(Skip(d.key, d.customer_id, d.segment, no_consent_reason(d.refused_by)))
                continue
            add, set_fields = frozenset(), {}  # only the doubted tags taken off: he is not created
        else:
            add = d.tags if full_refresh else d.tags - prev_tags
            set_fields = {k: v for k, v in d.fields.items()
                          if k not in prev_fields or not same_value(prev_fields[k], v)}
        if remove and refused_consent(d.consent, dest.new_contacts):
            withdrawn.append(d.key)
        if not exists or add or remove or set_fields:
            changes.append(ContactChange(key=d.key, email=d.email, customer_id=d.customer_id, segment=d.segment,
                                         create=not exists and status is not None, status_if_new=status,
                                         add_tags=frozenset(add),
                                         remove_tags=frozenset(remove), set_fields=set_fields))
    # contacts that left the customer base: take our managed tags off, nothing else
    # (and the doubted tags of those the ledger holds nothing of)
    gone = last.items() if not doubt else [*last.items(), *((k, None) for k in doubt if k not in last)]
    for key, prev in gone:
        if key in seen:
            continue
        remove = ((prev.tags if prev else frozenset()) | doubt.get(key, frozenset())) & managed
        if remove:
            changes.append(ContactChange(key=key, email=key, customer_id=(prev and prev.customer_id) or "",
                                         segment="", create=False, status_if_new=None, remove_tags=frozenset(remove)))
    changes.sort(key=lambda c: c.key)
    creates = sum(c.create for c in changes)
    warning = consent_warning(dest, consents, creates)
    owned, note = owner_changes(owners, changes)
    return Plan(destination=dest.name, type=dest.type, changes=tuple(changes), skipped=tuple(skips),
                managed_tags=tuple(sorted(managed)), fields=dict(dest.fields), ledger_revision=revision,
                remote_checked=remote_checked, notes=(*notes, *note),
                warnings=(warning,) if warning else (), owners=owned, withdrawn=tuple(sorted(withdrawn)))


def owner_changes(candidates: Iterable[OwnerChange], changes: Iterable[ContactChange]
                  ) -> tuple[tuple[OwnerChange, ...], tuple[str, ...]]:
    """The contacts whose customer id changes, by key (all of them: the apply records each one's new customer
    before any ESP call: :meth:`~sync.ledger.state.PushedStates.record_owners`), and the plan's note on those the
    ESP has nothing to do for (not among the changes, a skipped one too: recorded in the ledger only; none: no
    note)."""
    owners = tuple(sorted(candidates, key=lambda o: o.key))
    if not owners:
        return owners, ()
    changed = {c.key for c in changes}
    alone = [o for o in owners if o.key not in changed]
    if not alone:
        return owners, ()
    n, first = len(alone), alone[0]
    return owners, (f"{n} contact{'s are' if n > 1 else ' is'} now another customer's with nothing to write to the "
                    f"ESP (the contact's customer id changed: a shared address's new pick, or a merged or renumbered "
                    f"customer; {first.key}, customer {first.was} → {first.customer_id}{' and more' if n > 1 else ''})"
                    f": recorded in the ledger only when applied, no ESP call",)


def apply_results_to_state(state: dict[str, PushedState], changes: Mapping[str, ContactChange],
                           results: Iterable) -> set[str]:
    """Fold successful item results into the pushed state; returns the keys that changed."""
    touched = set()
    for r in results:
        if not r.ok and r.missing and r.key in state:
            # the ESP does not hold this contact: forget it, so the next plan creates it (consent applies)
            state[r.key] = replace(state[r.key], tags=frozenset(), fields={}, exists=False)
            touched.add(r.key)
        if not r.ok:
            continue
        c = changes.get(r.key)
        prev = state.get(r.key) or PushedState(key=r.key, customer_id=c.customer_id if c else None,
                                               tags=frozenset(), fields={}, exists=False)
        tags, fields, exists = set(prev.tags), dict(prev.fields), prev.exists
        if r.op == "upsert" and c is not None:
            fields.update(c.set_fields)
            exists = True
        elif r.op.startswith("tag+"):
            tags.add(r.op[4:])
            exists = True
        elif r.op.startswith("tag-"):
            tags.discard(r.op[4:])
        if r.missing:  # done, and the ESP does not hold it (a removal for a contact deleted there): forgotten
            tags, fields, exists = set(), {}, False
        state[r.key] = PushedState(key=r.key, customer_id=(c.customer_id if c else prev.customer_id) or None,
                                   tags=frozenset(tags), fields=fields, exists=exists)
        touched.add(r.key)
    return touched
