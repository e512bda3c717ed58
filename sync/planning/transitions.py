"""Transition tags: a segment *move* becomes a tag/list for ``transition_days`` (issue 16 §2).

``[destinations.transitions]`` maps ``"FROM -> TO"`` to a tag name, ``*`` standing for any segment on one side::

    [destinations.transitions]
    "Best active -> Falling asleep" = "rfm-slipping"
    "* -> Churn" = "rfm-churned"

A contact whose latest move (from the segment history, :func:`sync.store.history.recent_moves_sql`) matches a
pattern and happened less than ``transition_days`` ago carries the tag; it goes at the next move or when the
days are up, whichever comes first, so an ESP automation on "tag added" starts once per move. The tags are named
like the destination's segment tags (Mailchimp tags with ``tag_prefix``, SendGrid lists with ``list_prefix``,
Unisender tags) and are managed tags: planned, applied, recorded and consent-checked like them.

The planner sees moves as three columns of each customer row (``moved_from``, ``moved_to``, ``moved_days``: days
since the move) and unions :func:`tags_for_row` into the desired tags; a columnar planner joins
:func:`transition_tags_sql` (customer_id, tag) instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from connectors.suggest import did_you_mean

if TYPE_CHECKING:
    from ..config import Config, DestinationConfig
    from ..pipeline import SegmentsRun

ANY = "*"
ARROW = "->"
MOVE_COLUMNS = ("moved_from", "moved_to", "moved_days")


@dataclass(frozen=True)
class Transition:
    source: str  # the segment moved from, or "*"
    target: str  # the segment moved to, or "*"
    tag: str  # the tag/list name as configured (before the destination's naming)

    def matches(self, moved_from: str, moved_to: str) -> bool:
        return self.source in (ANY, moved_from) and self.target in (ANY, moved_to)


def parse_pattern(pattern: str) -> tuple[str, str]:
    """``"Best active -> Falling asleep"`` → ("Best active", "Falling asleep"); ValueError saying what is wrong."""
    parts = pattern.split(ARROW)
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise ValueError(f"{pattern!r} is not \"FROM -> TO\" (a segment name or * on each side)")
    source, target = (p.strip() for p in parts)
    for side in (source, target):
        if ANY in side and side != ANY:
            raise ValueError(f"{pattern!r}: * stands alone for any segment (got {side!r})")
    if source == target and source != ANY:
        raise ValueError(f"{pattern!r}: a move goes to another segment, so this never happens")
    return source, target


def transitions(dest: "DestinationConfig") -> tuple[Transition, ...]:
    return tuple(Transition(*parse_pattern(p), tag) for p, tag in dest.transitions.items())


def check_transitions(dest: "DestinationConfig", segment_names: Iterable[str], segment_tags: Iterable[str]
                      ) -> None:
    """ValueError for a pattern naming an unknown segment (with "did you mean") or a tag that is also a segment
    tag of this destination (a segment tag stays while the customer is there; a move tag must not)."""
    names = list(segment_names)
    where = f"destination {dest.name!r}: [destinations.transitions]"
    for pattern, tag in dest.transitions.items():
        try:
            source, target = parse_pattern(pattern)
        except ValueError as exc:
            raise ValueError(f"{where} {exc}") from None
        for side in (source, target):
            if side != ANY and side not in names:
                raise _unknown(f"{where} {pattern!r}: unknown segment {side!r}", side, names)
        if not tag.strip():
            raise ValueError(f"{where} {pattern!r}: the tag name is empty")
    key = dest.spec.tag_key  # Mailchimp holds VIP and vip as one tag: compared as the ESP compares them
    moves = transition_managed(dest)
    one_spelling(dest, moves, where)
    given = {key(t) for t in segment_tags}
    clash = [t for t in moves if key(t) in given]
    if clash:
        raise ValueError(f"{where}: {', '.join(clash)} is also a segment tag of this destination"
                         f"{_fold_note(dest)}; give the move its own tag")


def check_segment_keys(dest: "DestinationConfig", segment_names: Iterable[str]) -> None:
    """ValueError for a ``[destinations.segments]`` or ``[destinations.tags]`` key that is no segment the rules
    give (with "did you mean"): nobody would ever be in it, so its tag would only ever be removed; and for a tag
    name that is empty or has spaces around it."""
    names = list(segment_names)
    for table, mapping in (("segments", dest.segments), ("tags", dest.tags)):
        for segment, tag in mapping.items():
            where = f"destination {dest.name!r}: [destinations.{table}] {segment!r}"
            if segment not in names:
                raise _unknown(f"{where}: unknown segment", segment, names)
            if not tag.strip() or tag != tag.strip():
                raise ValueError(f"{where}: the tag name {tag!r} is empty or has spaces around it (the ESPs "
                                 f"refuse or trim such names, and the contacts would never match the ledger)")
    one_spelling(dest, [t for tags in dest.spec.managed_tags(dest).values() for t in tags],
                 f"destination {dest.name!r}: [destinations.segments]")


def one_spelling(dest: "DestinationConfig", tags: Iterable[str], where: str) -> None:
    """ValueError for two spellings of one tag among the tags a destination gives (``VIP`` and ``vip`` on
    Mailchimp, which holds them as one tag): a contact moving from one to the other would be planned ``add vip,
    remove VIP`` in one change and left untagged while the ledger says ``vip`` (docs/sync.md#retired-tags). The
    same spelling twice is a union, not a fight."""
    seen: dict[str, str] = {}
    for tag in tags:
        first = seen.setdefault(dest.spec.tag_key(tag), tag)
        if first != tag:
            raise ValueError(f"{where}: {first!r} and {tag!r} differ only in case or spaces around them"
                             f"{_fold_note(dest)}; give them one spelling (one tag for both) or distinct names")


def _fold_note(dest: "DestinationConfig") -> str:
    return f" ({dest.spec.label} holds them as one tag)" if dest.spec.tags_fold_case else ""


def _unknown(message: str, segment: str, names: list[str]) -> ValueError:
    """A config key naming no segment the rules give: the message, "did you mean", and the segments there are."""
    return ValueError(f"{message}{did_you_mean(segment, names)}; the segments are {', '.join(names)}")


def tag_name(dest: "DestinationConfig", name: str) -> str:
    """A transition tag's name in the ESP: a tag where the vendor has tags besides its lists (Unisender), else
    named like a segment (Mailchimp tag with ``tag_prefix``, SendGrid list with ``list_prefix``)."""
    spec = dest.spec
    return spec.tag_name(name) if spec.tag_name is not None else spec.segment_name(dest, name)


def transition_managed(dest: "DestinationConfig") -> list[str]:
    """Every tag/list the destination's transitions can give (managed tags too)."""
    return sorted({tag_name(dest, tag) for tag in dest.transitions.values()})


def tags_for_row(dest: "DestinationConfig", row: Mapping[str, Any]) -> frozenset[str]:
    """The transition tags of one customer row (its ``moved_*`` columns), for this destination."""
    if not dest.transitions or row.get("moved_to") is None:
        return frozenset()
    if row["moved_days"] >= dest.transition_days:
        return frozenset()
    rules = transitions(dest)
    return frozenset(tag_name(dest, t.tag) for t in rules if t.matches(row["moved_from"], row["moved_to"]))


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def transition_tags_sql(dest: "DestinationConfig", moves_sql: str) -> str | None:
    """A SELECT of (customer_id, tag) for this destination from ``moves_sql`` (customer_id, from_segment,
    to_segment, moved_days), tags named for the ESP; None when the destination has no transitions."""
    rules = transitions(dest)
    if not rules:
        return None
    values = ", ".join(f"({_literal(t.source)}, {_literal(t.target)}, {_literal(tag_name(dest, t.tag))})"
                       for t in rules)
    return f"""SELECT DISTINCT m.customer_id, t.tag FROM ({moves_sql}) m
        JOIN (VALUES {values}) t(source, target, tag)
          ON (t.source = '*' OR t.source = m.from_segment) AND (t.target = '*' OR t.target = m.to_segment)
        WHERE m.moved_days < {int(dest.transition_days)}"""


def moves_sql(run: "SegmentsRun", destinations: Iterable["DestinationConfig"] | None = None) -> str | None:
    """A SELECT of (customer_id, from_segment, to_segment, moved_days) of the run's customers: their latest
    move, today's included before it is recorded, within the longest ``transition_days`` of the destinations.

    None when no destination maps transitions, there is no history, or the run's rules are not those of the
    current history line (the next record starts a new line: nobody has moved on it yet)."""
    from ..store import history
    from ..store.lookup import LOOKUP_KEYS

    dests = [d for d in (destinations if destinations is not None else run.config.destinations) if d.transitions]
    if not dests:
        return None
    con, seg = run.con, run.config.segmentation
    days = max(d.transition_days for d in dests)
    if not history.has_history(con):  # every run segments the order store, where the history is recorded
        return None
    line = history.current_line(con)
    if line is None or (line["preset"], line["rules_hash"]) != (seg.preset, history.rules_hash(seg)):
        return None
    as_of: date = run.result.as_of
    moves = history.recent_moves_sql(as_of, days, segments_table=run.result.table, line=line["line"],
                                     keyed=run.result.customers <= LOOKUP_KEYS)  # a webhook's few: by key
    return (f"SELECT customer_id, from_segment, to_segment, DATE '{as_of.isoformat()}' - moved_on AS moved_days "
            f"FROM ({moves})")


def move_join(run: "SegmentsRun") -> tuple[str, str]:
    """(extra select columns, LEFT JOIN clause) that give the customer rows of ``run`` (alias ``s``) the
    ``moved_*`` columns :func:`tags_for_row` reads; two empty strings when there are no moves to look at."""
    moves = moves_sql(run)
    if moves is None:
        return "", ""
    return (", m.from_segment AS moved_from, m.to_segment AS moved_to, m.moved_days",
            f" LEFT JOIN ({moves}) m ON m.customer_id = s.customer_id")


def segment_names(cfg: "Config") -> list[str]:
    """The segments the config's rules can give (custom rules, the preset's, the default segment)."""
    from segmentation.engine import configured_rules

    rules, default, _ = configured_rules(cfg.segmentation)
    return list(dict.fromkeys([name for name, _ in rules] + [default]))


__all__ = ["MOVE_COLUMNS", "Transition", "check_segment_keys", "check_transitions", "move_join", "moves_sql", "parse_pattern", "segment_names",
           "tag_name", "tags_for_row", "transition_managed", "transition_tags_sql", "transitions"]
