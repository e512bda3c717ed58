"""Guards: the checks made before the first ESP write of a run (docs/safety.md, ``[guards]``).

The rules are functions over numbers, so each is a table test (``plan_stats`` and the saved-plan checks count a
plan's changes into those numbers). Three kinds:

* **data guards** (the input looks broken): too few valid orders (``min_orders``), too many bad rows
  (``max_bad_rows_pct``; in an incremental pull's window fewer than ``min_bad_rows`` trip it only when they
  outnumber the valid rows read: one bad order in a quiet window of three is not a broken input, four of four
  are), the customer count fell too far since the last successful run of a destination
  (``max_customer_drop_pct``). Nothing overrides them. They and the scoring guard live in :mod:`sync.data_guards`.
* **plan guards** (the change looks like a mass change): too many of a destination's managed contacts (ledger
  contacts holding at least one managed tag/list, or waiting to be given back one the ESP lost:
  :meth:`~sync.ledger.state.PushedStates.lost_tags`, or holding only tags rfmsync pushed under earlier names when
  the plan changes them: :func:`plan_stats`) would be left without any managed tag (``max_removal_pct``) or would
  change at all: their managed tags or field values (``max_change_pct``; a new contact is not one of them, nor is a
  tag or field the ledger already records, as ``--full-refresh`` re-sends, nor a field value the ledger records none
  of: filled in, nor a new value of a field mapped to a value that drifts for everyone by itself, day after day:
  ``recency_days`` and the models' numbers (:data:`~sync.planning.values.DRIFTING_VALUES`), unless it empties the
  field or jumps (:func:`_jumps`): a drift never does, a model that was not fitted or amounts exported in minor
  units do; a tag added always is, a lost one added back too: it fires the ESP's "tag added" automations).
  ``--allow-mass-change`` overrides them for one run. A destination with no managed contacts yet (its first sync) is
  never a mass change. A **withdrawal** (a managed contact whose tags come off because the source says his marketing
  consent is ``no``, under ``new_contacts = "skip"``: :attr:`sync.planning.plan.Plan.withdrawn`) is counted apart,
  by ``max_withdrawal_pct`` alone: the other two do not count it, so one person withdrawing never holds a sync back,
  while most of the list saying ``no`` at once (a mis-mapped consent column) is refused; the withdrawals and the
  other removals are also judged together (against the larger of the two limits), so that a plan emptying most of
  the list for both reasons at once is refused too. While neither of these two withdrawal rules trips (the second
  one counts as one only when the removals alone would not trip it: :class:`PlanVerdict`), a plan held by the other
  two still sends its withdrawals alone (:func:`sync.refusals.refuse_after_withdrawals`). Fewer contacts than
  ``min_mass_change`` (removed, withdrawn, both, or changed) never trip these; removed, withdrawn or both do when
  they are a majority of the managed contacts (:func:`mass_floor`): in a small shop one contact is a large share,
  but most of it is a broken input. A single withdrawal never trips (also of a list of one or two).
* the **scoring guard** ``recency_scores`` (quantile scores that put the newest buyers among the lost:
  :func:`~segmentation.scoring.recency_collapse`), also on a first sync; ``--allow-mass-change`` overrides it too.

Each tripped guard is one line with the numbers and the limit, e.g.
``guard max_removal_pct: 266 of 266 managed contacts (100 %) would lose their tags; limit 10 %``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Mapping

from connectors.counts import agrees

from .config import GuardsConfig
# the data and scoring guards live in .data_guards; imported from here by the runs, as every guard
from .data_guards import (RECENCY_ADVICE, DataStats, check_source_lines, customer_drop_line,  # noqa: F401
                          data_lines, fmt_pct, pct, recency_collapse_text, recency_scores_line, scoring_lines)
from .model import ContactChange, PushedState
from .planning.consent import refused_consent, status_for_new
from .planning.values import DRIFTING_VALUES


@dataclass(frozen=True)
class PlanStats:
    managed: int  # contacts holding a managed tag/list, waiting for one the ESP lost, or re-tagged from old names
    removed: int  # of those, the ones the plan leaves without any managed tag/list, but the withdrawn
    changed: int  # of those, the ones the plan really changes (managed tags or field values), but the withdrawn
    restored: int = 0  # of those changed, the ones it gives back a tag the ESP lost (the ledger remembers)
    restored_tags: tuple[str, ...] = ()  # and those tags, sorted
    #: of the managed, the ones whose managed tags come off for a consent withdrawn in the source (Plan.withdrawn):
    #: judged by max_withdrawal_pct alone, counted in neither ``removed`` nor ``changed``
    withdrawn: int = 0
    #: of the managed, the ones the plan gives a managed tag while they hold only tags rfmsync pushed under names no
    #: longer managed (a re-tag: they hold no managed tag yet, counted managed so that a rename is judged)
    retagged: int = 0

    def to_json(self) -> dict[str, int]:
        """What the plan guards judged (a plan's ``guard`` in ``plan --format json``)."""
        return {"managed": self.managed, "withdrawn": self.withdrawn, "removed": self.removed,
                "changed": self.changed, "restored": self.restored, "retagged": self.retagged}


def mass_floor(g: GuardsConfig, managed: int) -> int:
    """The fewest contacts losing their tags (removed; withdrawn or both, two at least: :func:`plan_lines`) before
    a percentage plan guard may trip: ``min_mass_change``, but never more than a majority of the ``managed``
    contacts, so that the floor lets a few contacts of a small shop through, never most of them (4 of 7 saying
    no, 4 of 4 losing every tag: a broken input however small the shop). Changes use ``min_mass_change`` alone."""
    return min(g.min_mass_change, managed // 2 + 1)


@dataclass(frozen=True)
class PlanVerdict:
    """The plan guards a plan trips (:func:`judge_plan`): ``lines`` (:func:`plan_lines`), and of them the
    ``withdrawal_lines``, the rules that judge the withdrawals: ``max_withdrawal_pct``, and the withdrawals and
    removals together when the withdrawals made the difference (the removals alone would not trip that line; a
    mass removal plus one withdrawal is the removals' matter). While none of them trips (anywhere in a run) the
    withdrawals go out alone when another plan guard holds the plan (:func:`sync.refusals.refuse_after_withdrawals`)."""

    lines: tuple[str, ...] = ()
    withdrawal_lines: tuple[str, ...] = ()


def judge_plan(g: GuardsConfig, stats: PlanStats) -> PlanVerdict:
    """The plan guards' lines and, of them, the withdrawal rules' (:class:`PlanVerdict`), judged once."""
    judged = _judged(g, stats)
    return PlanVerdict(tuple(line for line, _ in judged), tuple(line for line, withdrawals in judged if withdrawals))


def plan_lines(g: GuardsConfig, stats: PlanStats) -> list[str]:
    """The plan guards; none for a destination without managed contacts (its first sync), nor for fewer contacts
    (each guard its own count) than :func:`mass_floor` (removals), it and 2 (withdrawals, and withdrawals and
    removals together: one person withdrawing never trips) or ``min_mass_change`` (changes). The withdrawals and
    the other removals are also judged together (both leave contacts without any managed tag), against the
    larger of their two limits."""
    return list(judge_plan(g, stats).lines)


def _judged(g: GuardsConfig, stats: PlanStats) -> list[tuple[str, bool]]:
    """The tripped plan guards' lines, each with whether it judges the withdrawals."""
    if stats.managed <= 0:
        return []
    floor = mass_floor(g, stats.managed)
    # one person withdrawing never holds a sync back, even when he is the whole list (or half of it): the rules that
    # count withdrawals need two contacts at least; the change guard, whose contacts keep their tags, the plain floor
    alone, change_floor = max(2, floor), g.min_mass_change

    def over(count: int, limit: float, least: int = floor) -> str | None:  # the share, when it trips
        share = pct(count, stats.managed)
        return fmt_pct(share) if count >= least and share > limit else None

    lines = []
    if (share := over(stats.withdrawn, g.max_withdrawal_pct, alone)) is not None:
        lines.append((f"guard max_withdrawal_pct: {stats.withdrawn} of {stats.managed} managed contacts ({share} %) "
                      f"would lose their tags for a marketing consent the source says is no; limit "
                      f"{fmt_pct(g.max_withdrawal_pct)} %: is [source] marketing_consent mapped to the consent "
                      f"column?", True))
    if (share := over(stats.removed, g.max_removal_pct)) is not None:
        lines.append((f"guard max_removal_pct: {stats.removed} of {stats.managed} managed contacts "
                      f"({share} %) would lose their tags; limit {fmt_pct(g.max_removal_pct)} %", False))
    both = stats.withdrawn + stats.removed  # against the larger limit, named by its key (withdrawals' on a tie)
    limit, key = max((g.max_withdrawal_pct, "max_withdrawal_pct"), (g.max_removal_pct, "max_removal_pct"))
    if stats.withdrawn and stats.removed and (share := over(both, limit, alone)) is not None:
        # it holds the withdrawals only when they made the difference: as many as the withdrawal rule's own floor
        # (a few never hold a sync back, even when they tip a mass removal over the limit) and the removals alone
        # would not trip it (a mass removal with a withdrawal is the removals' line: the withdrawals go out alone)
        lines.append((f"guard {key} (withdrawals and removals together): {both} of {stats.managed} "
                      f"managed contacts ({share} %) would lose their tags, {stats.withdrawn} for a marketing "
                      f"consent the source says is no and {stats.removed} for other reasons; limit {fmt_pct(limit)} %",
                      stats.withdrawn >= alone and over(stats.removed, limit, alone) is None))
    if (share := over(stats.changed, g.max_change_pct, change_floor)) is not None:
        why = (f" ({stats.restored} would get back tags the ESP lost: {', '.join(stats.restored_tags)})"
               if stats.restored else "")
        lines.append((f"guard max_change_pct: {stats.changed} of {stats.managed} managed contacts "
                      f"({share} %) would change{why}; limit {fmt_pct(g.max_change_pct)} %", False))
    return [(line + _retagged(stats), withdrawals) for line, withdrawals in lines]


def _retagged(stats: PlanStats) -> str:
    """What the managed contacts of a line count besides the holders of a managed tag (or those waiting for one the
    ESP lost): the plan's re-tags from names no longer managed, told, so that "9 of 12" reads as the numbers are."""
    if not stats.retagged:
        return ""
    return (f"; of the {stats.managed} managed contacts, {stats.retagged} "
            f"{agrees(stats.retagged, 'is', 'are')} re-tagged from tags no longer managed (holding no managed tag "
            "yet)")


def _same(a: object, b: object) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _empty(value: object) -> bool:
    return value is None or value == ""


def _number(value: object) -> float | None:
    """A field's value as a number (``12.5``, ``"1 200,50"``, ``"1,200.50"``); None for text that is not one."""
    text = "".join(str(value).split())
    text = text.replace(",", "") if "." in text else text.replace(",", ".")
    try:
        return float(text)
    except ValueError:
        return None


#: how far a drifting value may move between two syncs before the move counts for max_change_pct (docs/safety.md):
#: a probability by more than half its range; a model's amount or count to over 3x or under 1/3 of what the ESP holds
PROBABILITIES = frozenset({"p_alive", "churn_probability"})
RATIO = 3.0


def _jumps(name: str, old: float, new: float) -> bool:
    """Whether a drifting value ``name`` moving from ``old`` to ``new`` is more than a drift: recency_days going
    down (a new order does that, for the few who ordered; every customer at once is a broken date), a probability
    moving by more than 0.5, an amount or count of the models (clv, expected_aov, expected_purchases) scaled by
    over 3 either way (amounts exported in minor units: x100 for everyone) or falling to zero; rising from zero is
    filled in (the model's first non-zero value for someone, as from empty)."""
    if name == "recency_days":
        return new < old
    if name in PROBABILITIES:
        return abs(new - old) > 0.5
    if old == 0:
        return False
    return new == 0 or not 1 / RATIO <= new / old <= RATIO


def _changes(recorded: Mapping[str, object], key: str, value: object, drifts: str | None) -> bool:
    """Whether setting field ``key`` to ``value`` changes what the ledger records (``recorded``). A value the
    ledger records none of is filled in, not changed. A field mapped to a drifting value (``drifts``: its name) is
    no change when it moves as that value drifts, but is when it empties (a failed or skipped model fit: no spend
    model, clv and expected_aov NULL for everyone) or jumps (:func:`_jumps`)."""
    if key not in recorded:
        return False
    old = recorded[key]
    if drifts is None:
        return not _same(old, value)
    if _empty(value) or _empty(old):
        return _empty(value) and not _empty(old)
    a, b = _number(old), _number(value)
    if a is None or b is None:
        return not _same(old, value)
    return _jumps(drifts, a, b)


def tagged(state: PushedState | None) -> bool:
    """Whether the ledger ``state`` holds a tag or list rfmsync pushed, managed now or not (the ledger keeps a tag's
    old name on the contacts rfmsync gave it after a ``tag_prefix`` set or a mapped tag renamed, until
    ``retire_tags`` takes it off)."""
    return state is not None and bool(state.tags)


def holds_managed(state: PushedState | None, managed_tags: frozenset[str]) -> bool:
    """Whether the ledger ``state`` holds a tag or list managed now."""
    return state is not None and bool(state.tags & managed_tags)


def waiting_only(lost: Mapping[str, frozenset[str]], state: Mapping[str, PushedState],
                 managed_tags: frozenset[str]) -> int:
    """The managed contacts only ``lost`` makes managed: waiting to be given back a managed tag the ESP lost
    (:meth:`~sync.ledger.state.PushedStates.lost_tags`) while ``state`` holds them no other (with one tag or
    list per segment, every holder of the lost one)."""
    return sum(1 for key, tags in lost.items() if tags & managed_tags and not holds_managed(state.get(key),
                                                                                           managed_tags))


def withdrawal_change(c: ContactChange, new_contacts: str) -> bool:
    """Whether change ``c`` is what the planners make for a contact whose source consent is ``no`` under
    ``new_contacts`` (:func:`~sync.planning.plan.refused_consent`), as far as the change alone can tell: an
    existing contact of the customer base (not created, not one who left it: segment ``""``) with the status a
    consent of ``no`` would get if created (none, under ``skip``), managed tags taken off and none added
    (:func:`plan_stats` adds: and none left). ``apply`` judges a saved plan's ``withdrawn`` by it
    (:func:`saved_withdrawals`): a key listed there by hand, or under a destination no longer ``skip``, is a
    removal."""
    return (refused_consent("no", new_contacts) and not c.create and c.segment != ""
            and c.status_if_new == status_for_new("no", new_contacts) and not c.add_tags and bool(c.remove_tags))


def saved_withdrawals(plan, new_contacts: str) -> tuple[str, ...]:
    """The keys of a saved ``plan``'s ``withdrawn`` that :func:`withdrawal_change` believes under the
    destination's ``new_contacts`` now; the others count as removals."""
    listed = frozenset(plan.withdrawn)
    return tuple(sorted(c.key for c in plan.changes if c.key in listed and withdrawal_change(c, new_contacts)))


def believed_withdrawals(plan, new_contacts: str, state: Mapping[str, PushedState],
                         doubt: Mapping[str, frozenset[str]] | None = None) -> tuple[str, ...]:
    """The keys of a saved ``plan``'s ``withdrawn`` that ``apply`` judges and sends alone as withdrawals: those
    :func:`saved_withdrawals` believes under ``new_contacts`` now and :func:`plan_stats` counts as withdrawn against
    ``state`` (a listed key whose change keeps a managed tag is judged as a change, and held with it), or whose
    change takes off the tags he may hold (``doubt``, by key: :func:`sync.planning.doubt.in_doubt`), leaving none:
    the planners list those as withdrawn and a sync sends them alone too."""
    managed_tags, believed = frozenset(plan.managed_tags), frozenset(saved_withdrawals(plan, new_contacts))
    doubt = doubt or {}
    return tuple(c.key for c in plan.changes
                 if c.key in believed and _leaves_none(*_managed_tags_of(c, state.get(c.key), managed_tags,
                                                                         doubt.get(c.key, frozenset()))))


def _managed_tags_of(c: ContactChange, prev: PushedState | None, managed_tags: frozenset[str],
                     doubted: frozenset[str] = frozenset()) -> tuple[frozenset[str], frozenset[str]]:
    """A contact's managed tags before change ``c`` (``prev``: his ledger row; ``doubted``: those he may hold too)
    and after it."""
    before = ((prev.tags if prev else frozenset()) | doubted) & managed_tags
    return before, (before - c.remove_tags) | c.add_tags


def _leaves_none(before: frozenset[str], after: frozenset[str]) -> bool:  # held managed tags, holds none
    return bool(before and not after)


def plan_stats(plan, state: Mapping[str, PushedState], lost: Mapping[str, frozenset[str]] | None = None,
               managed: int | None = None) -> PlanStats:
    """Measure ``plan`` (a :class:`sync.planning.plan.Plan`) against the ledger ``state`` of its destination and
    the managed tags the ESP lost that its contacts wait to be given back (``lost``, by key:
    :meth:`~sync.ledger.state.PushedStates.lost_tags`; for the contacts of ``state`` at least). ``managed``: the
    destination's contacts holding a managed tag or waiting for a lost one, when counted elsewhere (``state`` then
    holds the plan's contacts at least); None: counted in ``state``. The managed contacts are those, plus the ones
    the plan gives a managed tag while they hold only tags rfmsync pushed under names no longer managed (re-tagged
    after a ``tag_prefix`` set or a tag renamed: not a first sync). Old tags the plan leaves alone count for
    nothing: a removal of the managed tags is judged against those who hold them, not against every contact
    rfmsync ever tagged."""
    managed_tags = frozenset(plan.managed_tags)
    lost = lost or {}
    if managed is None:
        managed = sum(holds_managed(s, managed_tags) for s in state.values()) + waiting_only(lost, state, managed_tags)
    removed = changed = restored = withdrawn = renamed = 0
    withdrawals = frozenset(plan.withdrawn)  # (a plan saved by an rfmsync that did not tell them apart: none)
    restored_tags: set[str] = set()
    # a field whose value moves by itself (recency_days grows by one a day for everyone; the models' numbers move
    # with the day and each refit): its new value says nothing of the input, and counted it would trip
    # max_change_pct on every daily sync once the destination has managed contacts; emptying it or a jump counts
    drifting = {esp: value for esp, value in plan.fields.items() if value in DRIFTING_VALUES}
    for c in plan.changes:
        prev = state.get(c.key)
        before, after = _managed_tags_of(c, prev, managed_tags)
        waits = lost[c.key] & managed_tags if c.key in lost else frozenset()  # for a tag the ESP lost
        back = (c.add_tags & waits) - before
        if _leaves_none(before, after):
            if c.key in withdrawals:  # his consent, not the input: judged apart (max_withdrawal_pct)
                withdrawn += 1
                continue
            removed += 1
        retag = not before and tagged(prev) and bool(after)  # holds old tags only, given a managed one: a re-tag
        if not before and not waits and not retag:  # a new contact, or one without managed tags: not one of them
            continue
        if back:  # the ESP lost it, the ledger forgot it: adding it back fires the ESP's "tag added" automations
            restored += 1
            restored_tags |= back
        # a field value the ledger records none of (a new field mapping, or a field the ESP lost and the ledger
        # forgot: sync.engine.lost_in_destination) is filled in, not changed: re-sending it needs no person. A
        # tag added is a change even then: it fires the ESP's "tag added" automations (a lost tag's repair over
        # the limit needs --allow-mass-change)
        if before != after or (prev is not None and any(_changes(prev.fields, k, v, drifting.get(k))
                                                         for k, v in c.set_fields.items())):
            changed += 1
            renamed += retag and not waits  # managed by this change (a waiting one is counted: waiting_only)
    return PlanStats(managed=managed + renamed, removed=removed, changed=changed, restored=restored,
                     restored_tags=tuple(sorted(restored_tags)), withdrawn=withdrawn, retagged=renamed)
