"""Tags rfmsync pushed that the config no longer maps: said in the plan, and taken off when the user says so.

A mapping removed or renamed (``"Best active" = "VIP"`` → ``"rfm:vip"``) leaves its old tag on every contact
rfmsync gave it: rfmsync manages only the mapped tags, so nothing takes it off, and a campaign aimed at ``VIP``
goes on reaching people who left the segment long ago. The ledger knows which contacts rfmsync put it on (their
pushed tags): :func:`left_behind` counts them per tag, and :func:`left_behind_warning` is the plan's warning.
``retire_tags = ["VIP"]`` in the destination makes the tag a managed one that no segment gives
(:func:`sync.planning.plan.all_managed`): both planners then take it off those contacts, and only those (never
a contact the ledger does not say rfmsync tagged; ``--reconcile`` does not read its members), the removals
counted by the plan guards (``max_removal_pct``) like any other.

A destination kept only to retire (:func:`retires_only`: a removed destination put back) gives no contact anything:
its plan (:func:`retiring`) only takes tags off (and clears retired fields of) contacts the ledger holds, never
creates anyone; once none holds one, it plans nothing and says it is finished (the ledger forgets it after an
apply: :func:`sync.takeover.end_retired`), whatever the next runs (no plan recreating its contacts in the ledger).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Callable, Iterable, Mapping, Protocol, Sequence

import duckdb

from connectors.normalize import lit

from ..config import Config, DestinationConfig
from ..destinations.overlap import audience_of
from ..ledger.cursors import Cursors
from ..ledger.moves import Kept
from ..model import PushedState, fold
from .columnar import LEDGER, TAGS
from .doubt import in_doubt
from .plan import Plan, all_managed
from .target import describe, known_target, target_of


class RemovedStates(Cursors, Protocol):
    """What :func:`removed_destinations` reads of the ledger."""

    def state_destinations(self) -> list[str]: ...

    def tag_sets_beside(self, destination: str, others: Sequence[str] = ()
                        ) -> dict[tuple[frozenset[str], ...], int]: ...

    def doubted_destinations(self) -> list[str]: ...

    def doubted_ops(self, destination: str, keys: Iterable[str] | None = None) -> list[tuple[str, str]]: ...

    def load_states(self, destination: str, keys: Iterable[str]) -> dict[str, PushedState]: ...

#: at most this many tags named in the warning (the rest counted)
SHOWN = 10


def left_behind(con: duckdb.DuckDBPyConnection, dest: DestinationConfig,
                doubt: Mapping[str, frozenset[str]] | None = None) -> list[tuple[str, int]]:
    """``(tag, contacts)`` of every tag/list the staged pushed state (:func:`~.columnar.stage_pushed`: the
    ledger's rows, before any ``--reconcile``) holds that ``dest`` no longer manages, by tag; a contact's tags in
    doubt (``doubt``, :func:`sync.planning.doubt.in_doubt`: an add whose outcome is unknown, a killed run's) are
    counted as his pushed ones: he may hold them, and a tag no mapping gives any more is never added again to
    settle it (a managed one is: those are left out first, usually all of them). The tag texts are grouped first: a
    ledger has few distinct tag sets, so its JSON is parsed once per set, not per contact, and so are the doubted
    contacts' (with their few distinct sets of doubted tags)."""
    managed = all_managed(dest)
    keep = f"NOT list_contains([{', '.join(lit(t) for t in managed)}], tag)" if managed else "TRUE"
    mine = frozenset(managed)
    gone = {key: rest for key, tags in (doubt or {}).items() if (rest := tags - mine)}
    if not gone:
        return [(tag, int(n)) for tag, n in con.execute(f"""
            WITH sets AS (SELECT tags_json, count(*) AS n FROM {LEDGER} GROUP BY tags_json),
                 tags AS (SELECT unnest({TAGS.format('tags_json')}) AS tag, n FROM sets)
            SELECT tag, sum(n) FROM tags WHERE tag IS NOT NULL AND {keep} GROUP BY tag ORDER BY tag""").fetchall()]
    import pyarrow as pa

    sets: dict[frozenset[str], int] = {}  # each distinct set of doubted tags once, by its number
    ids = [sets.setdefault(tags, len(sets)) for tags in gone.values()]
    con.register("_left_doubt", pa.table({"key": pa.array(list(gone), pa.string()), "sid": pa.array(ids, pa.int32())}))
    con.register("_left_sets", pa.table({"sid": pa.array(range(len(sets)), pa.int32()),
                                         "doubt": pa.array([sorted(t) for t in sets], pa.list_(pa.string()))}))
    try:
        return [(tag, int(n)) for tag, n in con.execute(f"""
            WITH sets AS (SELECT l.tags_json, q.sid, count(*) AS n
                          FROM {LEDGER} l FULL OUTER JOIN _left_doubt q ON q.key = l.key GROUP BY ALL),
                 tags AS (SELECT unnest(list_distinct(list_concat(coalesce({TAGS.format('s.tags_json')}, []::VARCHAR[]),
                                                                  coalesce(d.doubt, []::VARCHAR[])))) AS tag, n
                          FROM sets s LEFT JOIN _left_sets d ON d.sid = s.sid)
            SELECT tag, sum(n) FROM tags WHERE tag IS NOT NULL AND {keep} GROUP BY tag ORDER BY tag""").fetchall()]
    finally:
        con.unregister("_left_doubt")
        con.unregister("_left_sets")


def retired_as_held(dest: DestinationConfig, held: list[tuple[str, int]]
                    ) -> tuple[DestinationConfig, list[tuple[str, int]]]:
    """``dest`` with its ``retire_tags`` named as the ESP holds them, and what is left behind of ``held``
    (:func:`left_behind` of the tags it gives, :func:`given_tags`). An ESP taken to fold tag case
    (``spec.tags_fold_case``: Mailchimp) holds ``VIP`` and ``vip`` as one tag: a retired name stands for every
    spelling of it the ledger says rfmsync gave (those come off the contacts it gave them, and only those; no
    other spelling is made there), or for itself when the ledger holds none. Elsewhere names are taken as
    spelled: another spelling is another list, left alone until it is retired by its own name."""
    retire = list(dest.retire_tags)
    if dest.spec.tags_fold_case:
        retire = [t for name in retire for t in ([t for t, _ in held if fold(t) == fold(name)] or [name])]
    retire = list(dict.fromkeys(retire))
    planned = dest if retire == dest.retire_tags else dest.model_copy(update={"retire_tags": retire})
    return planned, [(t, n) for t, n in held if t not in set(retire)]


def left_behind_warning(dest: DestinationConfig, found: list[tuple[str, int]],
                        beside: Iterable[DestinationConfig] = ()) -> str | None:
    """The plan's warning for :func:`left_behind`'s tags, saying how to act; None when there is none. A tag that
    differs from a managed one only in case or spaces (a case-only rename, ``VIP`` → ``vip``) is not offered to
    ``retire_tags``, which refuses it (:func:`sync.destinations.overlap.check_retired`): an ESP that folds case
    holds both as one tag, the one the mapping gives. Nor is one another destination of ``beside`` (the config's)
    gives in the audience (:func:`owners_beside`; refused too): the warning names that destination for it."""
    if not found:
        return None
    key = dest.spec.tag_key  # case folded where the ESP folds it (Mailchimp)
    managed = {key(t): t for t in given_tags(dest)}  # a retired one's other spellings: :func:`retired_as_held`
    owners = owners_beside(beside, dest)[0]
    retire = [tag for tag, _ in found if key(tag) not in managed and key(tag) not in owners]
    renamed = [(tag, managed[key(tag)]) for tag, _ in found if key(tag) in managed]
    act = []
    if retire:
        names = ", ".join(toml_string(tag) for tag in retire)
        act.append(f"to have rfmsync take {'them' if len(retire) > 1 else 'it'} off the contacts it put "
                   f"{'them' if len(retire) > 1 else 'it'} on (and only those), add retire_tags = [{names}] to "
                   f"destination {dest.name!r} (the plan guards apply: max_change_pct where a contact keeps a "
                   f"managed tag, max_removal_pct where he is left none); or map "
                   f"{'them' if len(retire) > 1 else 'it'} again")
    if renamed:
        pairs = ", ".join(f"{old!r} is {new!r}" for old, new in renamed)
        act.append(f"{pairs} but for case or spaces: an ESP that folds case (Mailchimp's tags) holds them as one "
                   f"tag, so they cannot be retired; to have rfmsync manage such a tag again on every contact it "
                   f"put it on, map it under its old name, as the ESP has it")
    owned = [tag for tag, _ in found if key(tag) in owners and key(tag) not in managed]
    if owned:
        act.append(owned_by(owned, owners))
    return (f"tags/lists rfmsync pushed that no mapping of this destination gives any more stay on their "
            f"contacts: {counted(found)}; campaigns aimed at them still reach people who may have left those segments. "
            + "; ".join(a[0].upper() + a[1:] for a in act))


def owned_by(names: list[str], owners: dict[str, str], what: str = "manages", key: Callable[[str], str] = fold,
             why: str = "'rfmsync sync --destination {owner} --reconcile' takes such a tag off whoever holds it "
                        "outside its segments; retire_tags cannot name it in another destination there") -> str:
    """``destination 'B' of the same audience manages 'X', 'Y' (why)``, for each destination ``owners`` (a name as
    ``key`` gives it → the destination) names for the tags or fields ``names``, joined by ``; ``."""
    return "; ".join(f"destination {owner!r} of the same audience {what} "
                     + ", ".join(repr(n) for n in names if owners.get(key(n)) == owner)
                     + f" ({why.format(owner=owner)})"
                     for owner in sorted({owners[key(n)] for n in names}))


def retires_only(dest: DestinationConfig) -> bool:
    """``dest`` gives no contact anything (no segment, tag, transition or field mapped) and retires tags or fields
    (``retire_tags``, ``retire_fields``): a removed destination put back to take its tags off or clear its fields
    (docs/sync.md#removed-destination)."""
    return bool(dest.retire_tags or dest.retire_fields) and not (dest.segments or dest.tags or dest.transitions
                                                                 or dest.fields)


def retired_what(dest: DestinationConfig) -> str:
    """What a :func:`retires_only` destination retires, in words: its notes and info lines."""
    return " and ".join(w for w, on in (("tags", dest.retire_tags), ("fields", dest.retire_fields)) if on)


def given_tags(dest: DestinationConfig) -> list[str]:
    """The tags/lists ``dest`` gives contacts (its segments', tags' and transitions'): :func:`all_managed` but
    the retired, which it only takes off the contacts its own ledger rows say it gave them."""
    retired = set(dest.retire_tags)
    return [t for t in all_managed(dest) if t not in retired]


def owners_beside(destinations: Iterable[DestinationConfig], dest: DestinationConfig
                  ) -> tuple[dict[str, str], dict[str, str]]:
    """What the other destinations of ``dest``'s audience (:func:`~sync.destinations.overlap.audience_of`, as the
    config's checks compare them) give now, and which: ``(tag as dest.spec.tag_key names it → destination, field as
    dest.spec.field_key names it → destination)``. A tag another destination only retires is not there: it takes
    it off only the contacts its own rows say it gave it, so nothing else takes it off ``dest``'s (and both may
    retire it)."""
    others = [d for d in destinations if d.name != dest.name and audience_of(d) == audience_of(dest)]
    key, tag_key = dest.spec.field_key, dest.spec.tag_key
    return ({tag_key(t): d.name for d in others for t in given_tags(d)},
            {key(f): d.name for d in others for f in d.fields})


def managed_beside(destinations: Iterable[DestinationConfig], dest: DestinationConfig) -> Kept:
    """What the other destinations of ``dest``'s audience give now (:func:`owners_beside`): their tags/lists and
    their fields. A retire-only destination's rows that hold them do not keep it from being finished
    (:func:`retiring`, :func:`sync.takeover.end_retired`): they are that destination's, and its
    ``retire_tags``/``retire_fields`` could not name them (the config refuses a destination retiring a tag
    another of its audience gives, or a field another maps). A tag another destination only retires keeps it
    until it is off its contacts."""
    tags, fields = owners_beside(destinations, dest)
    return Kept(frozenset(tags), frozenset(fields), dest.spec.field_key, dest.spec.tag_key)


def retiring(con: duckdb.DuckDBPyConnection, dest: DestinationConfig, plan: Plan,
             fields: Sequence[tuple[str, int]] = (), kept: Kept = Kept(),
             doubt: Mapping[str, frozenset[str]] | None = None) -> Plan:
    """``plan`` of a destination that only retires (:func:`retires_only`) with its creates and skips left out: a
    contact the ledger does not say is in the destination holds no tag rfmsync put there, and such a destination
    gives no one anything, so it creates no one (once the ledger forgot it, every exported contact would be
    planned as new, run after run). With no change left, a note says whether it is finished: no row of the staged
    ledger state holds a tag or a field value any more (a retired one, or one it does not retire: :func:`left_behind`,
    ``fields``: :func:`~.retired_fields.left_fields`, which keep the ledger from forgetting it,
    :func:`sync.takeover.end_retired`), so it can be removed from the config; or what is left and what to add to
    the config. A tag whose add is in doubt (``doubt``: :func:`sync.planning.doubt.in_doubt`) is left as a held one
    (the ledger keeps it: :func:`sync.takeover.end_retired`). Tags and fields another destination of the audience
    manages (``kept``: :func:`managed_beside`) are that one's: neither left nor named. Any other plan is returned as
    it is."""
    if not retires_only(dest):
        return plan
    changes = tuple(c for c in plan.changes if not c.create)
    notes = plan.notes
    retired = ", ".join(lit(t) for t in dest.retire_tags)
    # a retired field's value held is a change of its own (:func:`~.retired_fields.clear_retired`, run before)
    if not changes and not (retired and con.execute(
            f"SELECT count(*) FROM (SELECT DISTINCT tags_json FROM {LEDGER}) "
            f"WHERE len(list_intersect({TAGS.format('tags_json')}, [{retired}])) > 0").fetchall()[0][0]):
        left = left_behind(con, dest, doubt)  # (a tag in doubt counts: he may hold it)
        notes = (*notes, _finished_note(dest, [(t, n) for t, n in left if not kept.has_tag(t)],
                                        [(f, n) for f, n in fields if not kept.has_field(f)]))
    return replace(plan, changes=changes, skipped=(), notes=notes)


def holds_nothing(con: duckdb.DuckDBPyConnection, dest: DestinationConfig, plan: Plan) -> bool:
    """A retire-only destination (:func:`retires_only`) with nothing planned whose staged ledger state holds no row
    (finished and forgotten, :func:`sync.takeover.end_retired`, or never synced): its plan pushes nowhere
    (``pushed_to`` None), so that its apply records no target either. A target recorded for a name the ledger holds
    nothing else of would be listed by ``rfmsync forget`` and refuse the name used again for another audience as
    a move from one that holds nothing of it."""
    # fetchall, not fetchone: a result left unfinished on the connection the destinations share fails the next
    # destination's stage_pushed (DuckDB's "Resource In Use" on register)
    return retires_only(dest) and not plan.changes and not con.execute(
        f"SELECT count(*) FROM {LEDGER}").fetchall()[0][0]


def _finished_note(dest: DestinationConfig, tags: list[tuple[str, int]], fields: list[tuple[str, int]]) -> str:
    """The note of a retire-only destination with nothing left to change: finished, or, while its contacts hold
    tags/lists rfmsync gave them or values it wrote that it does not retire (``tags``, ``fields``), not yet, with
    what to add to the config."""
    done = f"destination {dest.name!r} only retires {retired_what(dest)}"
    if not tags and not fields:
        return (f"{done} and none is left on the contacts rfmsync put it on: it has nothing more to do; remove it "
                f"from the config")
    held, add = [], []
    for what, key, left, retired in (("tags/lists rfmsync gave them there", "retire_tags", tags, dest.retire_tags),
                                     ("values rfmsync wrote there in fields", "retire_fields", fields,
                                      dest.retire_fields)):
        if left:
            held.append(f"{what} that it does not retire: {counted(left)}")
            names = ", ".join(toml_string(n) for n in [*retired, *(n for n, _ in left)])
            add.append(f"{key} = [{names}]")
    return (f"{done}, but the ledger says its contacts still hold {'; and '.join(held)}; it is not finished while "
            f"they do: to have rfmsync take them off (and only from those contacts), set {' and '.join(add)} in "
            f"destination {dest.name!r} and sync (the plan guards apply); to leave them in the ESP, remove the "
            f"destination from the config and run 'rfmsync forget --destination {dest.name} --yes' (the ledger then "
            f"no longer knows rfmsync put them there)")


def removed_destinations(cfg: Config, ledger: "RemovedStates") -> list[str]:
    """A warning for each destination the ledger holds pushed state of that the config no longer has (its
    ``[[destinations]]`` table removed, or renamed): the tags/lists rfmsync gave its contacts stay on them, and no
    plan of the config says so (:func:`left_behind` reads a configured destination's rows). A contact's tag is not
    left behind when a configured destination of the same recorded audience holds it for him in its own ledger
    rows (as that ESP compares names: whatever its case on Mailchimp only, :attr:`~sync.destinations.base.
    DestinationSpec.tags_fold_case`; a destination renamed with its mapping, once synced): that one takes it off
    him when he leaves its segment. With no audience recorded (a ledger older than that), nothing is excused. A tag
    whose add to a contact is in doubt there (:func:`sync.planning.doubt.in_doubt`: a killed run's, an answer lost)
    counts as one pushed to him: he may hold it."""
    names = {d.name for d in cfg.destinations}
    out = []
    for name in sorted(set(ledger.state_destinations()) | set(ledger.doubted_destinations())):
        if name in names:
            continue
        target = known_target(ledger, name)
        same = [d for d in cfg.destinations if target is not None and target_of(d) == target]
        beside = [d.name for d in same]
        key = same[0].spec.tag_key if same else fold  # one target, one ESP: its own rule (case folded on Mailchimp)
        counts: dict[str, int] = {}
        for (tags, *theirs), n in ledger.tag_sets_beside(name, beside).items():
            held = {key(t) for other in theirs for t in other}
            for tag in tags:
                if key(tag) not in held:
                    counts[tag] = counts.get(tag, 0) + n
        _count_doubted(ledger, name, beside, key, counts)
        if counts:
            managed = {key(t): d.name for d in same for t in given_tags(d)}  # one another only retires: retired too
            heir = len(beside) == 1 and same[0].renamed_from == name
            out.append(_removed_warning(name, target, sorted(counts.items()), beside, managed, heir, key))
    return out


def _count_doubted(ledger: "RemovedStates", name: str, beside: Sequence[str], key: Callable[[str], str],
                   counts: dict[str, int]) -> None:
    """Add to ``counts`` (tag → contacts) the tags in doubt on the contacts of destination ``name`` that neither its
    rows say he holds nor any of ``beside`` holds for him, all as ``key`` compares names (the ESP's rule: ``VIP`` in
    doubt beside ``vip`` pushed is one tag on Mailchimp): read only when some are (usually none: a keyed look)."""
    doubt = in_doubt(ledger.doubted_ops(name))
    if not doubt:
        return
    own = ledger.load_states(name, doubt)
    theirs = [ledger.load_states(other, doubt) for other in beside]
    for k, tags in doubt.items():
        held = {key(t) for states in [own, *theirs] if k in states for t in states[k].tags}  # counted, or excused
        for tag in sorted(tags):
            if key(tag) not in held:
                held.add(key(tag))  # one tag there, however many spellings are in doubt
                counts[tag] = counts.get(tag, 0) + 1


def _removed_warning(name: str, target: str | None, found: list[tuple[str, int]], beside: list[str],
                     managed: dict[str, str], heir: bool = False, key: Callable[[str], str] = fold) -> str:
    """The warning of a removed destination ``name``: with one configured destination of its target (``beside``:
    a rename?), that one takes its rows over once it synced if its ``renamed_from`` names ``name`` (``heir``;
    :mod:`sync.takeover`), which the warning asks for otherwise; else the remedy, putting the
    destination back to retire its tags, offered for the tags no destination of the same target manages (the
    config check refuses two destinations managing one tag of an audience: ``managed``, by tag as ``key``, the
    ESP's :meth:`~sync.destinations.base.DestinationSpec.tag_key`, names it)."""
    where = f" of {describe(target)}" if target is not None else ""
    said = (f"destination {name!r} is no longer in the config, but the tags/lists rfmsync gave the contacts{where} "
            f"stay on them: {counted(found)}; campaigns aimed at them still reach people who may have left those "
            f"segments. ")
    if len(beside) == 1:
        ask = "" if heir else f"if it is this destination renamed, add renamed_from = {toml_string(name)} to it: "
        return said + (f"Destination {beside[0]!r} pushes there too: {ask}once it has synced successfully, "
                       f"it takes over what the ledger holds under {toml_string(name)} (the tags it manages come "
                       f"off those who left its segments; its own warning names the others) and this warning goes")
    retire = [tag for tag, _ in found if key(tag) not in managed]
    held = owned_by([t for t, _ in found if t not in retire], managed, key=key)
    forget = (f"; once they are off, 'rfmsync forget --destination {name} --yes' makes the ledger forget {name!r} "
              f"and this warning goes")
    if not retire:
        return said + held[0].upper() + held[1:] + forget
    names = ", ".join(toml_string(tag) for tag in retire)
    return said + (f"To have rfmsync take them off the contacts it put them on (and only those), put the "
                   f"destination back under the name {toml_string(name)}, with its type and audience, no "
                   f"[destinations.segments] and retire_tags = [{names}], and sync once (the plan guards apply: "
                   f"max_removal_pct, 'rfmsync sync --allow-mass-change'); then remove it: this warning goes with "
                   f"the tags" + (f". {held[0].upper()}{held[1:]}" if held else ""))


def counted(found: list[tuple[str, int]]) -> str:
    """``'A' (3 contacts), 'B' (1 contact)``: the first :data:`SHOWN` names with their contacts, the rest counted."""
    shown = ", ".join(f"{name!r} ({n} contact{'s' if n != 1 else ''})" for name, n in found[:SHOWN])
    return shown + (f" and {len(found) - SHOWN} more" if len(found) > SHOWN else "")


def toml_string(text: str) -> str:
    """``text`` as a TOML basic string, to be pasted into the config: JSON's escapes (``\\"``, ``\\\\``, ``\\n``,
    ``\\uXXXX``) are TOML's, and DEL, which JSON leaves as it is and TOML does not, is escaped too."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


__all__ = ["RemovedStates", "counted", "given_tags", "holds_nothing", "left_behind", "left_behind_warning",
           "managed_beside", "owned_by", "owners_beside", "retired_as_held",
           "removed_destinations", "retired_what", "retires_only", "retiring", "toml_string"]
