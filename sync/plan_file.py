"""The saved plan: the JSON document of ``plan --format json`` / ``plan -o FILE``, read back by ``apply``."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from .errors import ConfigError
from .planning.plan import Plan

if TYPE_CHECKING:
    from .planning.planner import PlannedDestination

PLAN_FILE_VERSION = 1


def plan_document(planned: Sequence["PlannedDestination"], as_of: date, warnings: Sequence[str] = (),
                  data: Mapping[str, Any] | None = None, ledger_id: str | None = None) -> dict:
    """The plan as JSON (``plan --format json``, ``plan -o``). ``warnings``: the run's own (stale data, ...),
    followed by each destination plan's. ``data``: the input counts the data guards check again at apply.
    ``ledger_id``: the id of the ledger it was made against (``apply`` refuses it against another one)."""
    doc = {"version": PLAN_FILE_VERSION, "created_at": datetime.now(timezone.utc).isoformat(), "ledger_id": ledger_id,
           "as_of": as_of.isoformat(),
           "warnings": [*warnings, *(f"{p.plan.destination}: {w}" for p in planned for w in p.plan.warnings)],
           "plans": [p.plan.to_json() for p in planned]}
    if data is not None:
        doc["data"] = dict(data)
    return doc


@dataclass(frozen=True)
class SavedPlan:
    plans: list[Plan]
    data: dict  # orders, bad_rows, customers of the input it was made from ({} for older files)
    #: the id of the ledger it was made against (None: a plan file saved before plans recorded it)
    ledger_id: str | None = None
    #: when it was made (None: not said, or not a time)
    created_at: datetime | None = None
    #: the day it was computed as of (None: not said, or not a date): which cards count when apply reads the
    #: consent again (:mod:`sync.planning.consent_now`)
    as_of: date | None = None

    def consent_lines(self, now: datetime | None = None) -> list[str]:
        """What ``apply`` cannot see of the consent of those the plan creates ``subscribed``: it reads their consent
        again from the order store (:mod:`sync.planning.consent_now`), not from the source, so a consent withdrawn
        in the source and not yet pulled into the store is not seen, however old the plan. Counted: the new contacts
        it creates ``subscribed``, and the known ones it puts on a name whose add subscribes them
        (:attr:`~sync.destinations.base.DestinationSpec.subscribes_on_add`: a Unisender list's import)."""
        from .destinations.registry import destination_spec

        counts = {p.destination: _subscribed(p, destination_spec(p.type).subscribes_on_add) for p in self.plans}
        subscribed = {dest: " and ".join(part for part in (
            f"{new} new contact{'s' if new > 1 else ''}" if new else "",
            f"{known} known contact{'s' if known > 1 else ''} (put on a list: its import subscribes "
            f"{'them' if known > 1 else 'him'})" if known else "") if part)
            for dest, (new, known) in counts.items()}
        if not any(subscribed.values()):
            return []
        if self.created_at is None:
            age = "of unknown age"
        else:
            minutes = max(0, int(((now or datetime.now(timezone.utc)) - self.created_at).total_seconds() // 60))
            age = f"made {minutes // 60} h {minutes % 60} min ago" if minutes >= 60 else f"made {minutes} min ago"
        return [f"{dest}: this plan ({age}) subscribes {n}: apply reads their "
                f"consent again from the order store as it is now (a withdrawal since leaves the contact out), not "
                f"from the source: a change of the export or the CRM not yet pulled into the store (`rfmsync pull`, "
                f"the webhooks of `rfmsync serve`) is not seen"
                for dest, n in subscribed.items() if n]


def _subscribed(plan: Plan, on_add: Callable[[str], bool] | None) -> tuple[int, int]:
    """(new contacts created ``subscribed``, known contacts put ``subscribed`` on a name whose add subscribes)."""
    new = known = 0
    joins: dict[frozenset[str], bool] = {}  # by the set of names added (a few distinct sets: one test each)
    for c in plan.changes:
        if c.status_if_new != "subscribed":
            continue
        if c.create:
            new += 1
        elif on_add is not None and c.add_tags:
            join = joins.get(c.add_tags)
            if join is None:
                join = joins[c.add_tags] = any(on_add(name) for name in c.add_tags)
            known += join
    return new, known


def _made(value: Any) -> datetime | None:
    try:
        made = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return made if made is None or made.tzinfo is not None else made.replace(tzinfo=timezone.utc)


def _day(value: Any) -> date | None:
    try:
        return date.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def load_plan_file(path: str | os.PathLike) -> SavedPlan:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read plan file {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("version") != PLAN_FILE_VERSION:
        raise ConfigError(f"{path}: not an rfmsync plan file (version {PLAN_FILE_VERSION})")
    counts = data.get("data") or {}
    if not isinstance(counts, dict) or not all(isinstance(v, int) for v in counts.values()):
        raise ConfigError(f"{path}: not an rfmsync plan file (bad \"data\")")
    plans, ledger = data.get("plans", []), data.get("ledger_id")
    if not isinstance(plans, list) or not (ledger is None or isinstance(ledger, str)):
        raise ConfigError(f"{path}: not an rfmsync plan file (bad \"plans\" or \"ledger_id\")")
    try:
        return SavedPlan([Plan.from_json(p) for p in plans], counts, ledger, _made(data.get("created_at")),
                         _day(data.get("as_of")))
    except ConfigError as exc:  # (which file: apply may be given several over time)
        raise ConfigError(f"{path}: {exc}") from None
