"""Segment rules: patterns on R/F/M scores (and other per-customer fields), compiled to one SQL CASE.

Pattern forms (a rule matches when any of its patterns matches; first matching rule wins):

* digit codes with wildcards, one character per R, F, M: ``444``, ``4XX``, ``1**``, ``3?4``;
* letter codes, omitted letters match anything: ``R3F3M3``, ``R2F3``, ``R1``, ``FM5`` (FM = round half up of
  (F+M)/2, the classic R × FM map), with ranges ``F1-F2`` or ``R2-4``;
* a condition on a per-customer field: ``reorder_due``, ``not discount_hunter``, ``churn_risk = high``,
  ``recency_days > 90``; join several with ``&`` (all must hold), e.g. ``R1 & discount_hunter``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from itertools import product

from .errors import RuleError

WILDCARDS = set("Xx*?")
_DIGIT_CODE = re.compile(r"^[0-9Xx*?]{3}$")
_LETTER_TOKEN = re.compile(r"(FM|R|F|M)(\d)(?:-(?:FM|R|F|M)?(\d))?")
_CONDITION = re.compile(r"^(not\s+)?([a-z_][a-z0-9_]*)\s*(?:(=|==|!=|<>|<=|>=|<|>)\s*(.+))?$", re.I)
FM_SQL = "CAST(floor((f + m) / 2.0 + 0.5) AS INTEGER)"
_SCORE_SQL = {"R": "r", "F": "f", "M": "m", "FM": FM_SQL}


@dataclass(frozen=True)
class Preset:
    levels: int
    rules: tuple[tuple[str, tuple[str, ...]], ...]
    default: str = "Other"
    description: str = ""


def _rfm(rows: dict[str, str]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple((name, tuple(p.strip() for p in pats.split(","))) for name, pats in rows.items())


PRESETS: dict[str, Preset] = {
    "tracks": Preset(3, _rfm({
        "Best active": "R3F3M3, R2F3M3",
        "Falling asleep": "R2F3, R2F2",
        "Churn": "R1",
        "Beginners": "F1-F2",
    }), description="the four engagement tracks on 3 levels"),
    "crm-4": Preset(4, _rfm({
        "VIP": "444, 443, 434",
        "Newcomers with potential": "414, 424",
        "Loyal": "4XX",
        "Sleeping whales": "144, 143, 134",
        "Lost": "111, 112, 121",
        "Need attention": "2XX, 3XX",
    }), description="CRM-style 4-level map"),
    "classic-5": Preset(5, _rfm({
        "Champions": "R5FM5, R5FM4, R4FM5",
        "Loyal customers": "R5FM3, R4FM4, R3FM5, R3FM4",
        "Potential loyalist": "R5FM2, R4FM2, R3FM3, R4FM3",
        "New customers": "R5FM1",
        "Promising": "R4FM1, R3FM1",
        "Need attention": "R3FM2, R2FM3, R2FM2",
        "About to sleep": "R2FM1",
        "At risk": "R2FM5, R2FM4, R1FM3",
        "Can't lose them": "R1FM5, R1FM4",
        "Hibernating": "R1FM2",
        "Lost": "R1FM1",
    }), description="the widely used 11-segment R × FM map, FM = round((F+M)/2)"),
    "none": Preset(5, (), description="no built-in rules: only [[segmentation.rules]]"),
}


def _sql_literal(raw: str) -> str:
    raw = raw.strip()
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        raw = raw[1:-1]
    elif raw.lower() in ("true", "false"):
        return raw.upper()
    else:
        try:
            return repr(float(raw)) if not raw.lstrip("-").isdigit() else str(int(raw))
        except ValueError:
            pass
    return "'" + raw.replace("'", "''") + "'"


def compile_pattern(pattern: str, levels: int, fields: set[str], where: str = "rule") -> str:
    """One pattern (possibly ``a & b``) → a SQL boolean expression over r, f, m and ``fields``."""
    parts = [p.strip() for p in pattern.split("&")]
    if not all(parts):
        raise RuleError(f"{where}: empty pattern in {pattern!r}")
    return " AND ".join(f"({_compile_one(p, levels, fields, where)})" for p in parts)


def _score_ranges(p: str, levels: int, where: str) -> dict[str, tuple[int, int]] | None:
    """A score pattern (``444``, ``4XX``, ``R3F3M3``, ``F1-F2``, ``R5FM4``) as {letter: (low, high)}; None when
    ``p`` is not one (a field condition)."""
    if _DIGIT_CODE.match(p):
        for ch in p:
            if ch not in WILDCARDS and not 1 <= int(ch) <= levels:
                raise RuleError(f"{where}: score {ch} is outside 1..{levels}")
        return {letter: (int(ch), int(ch)) for letter, ch in zip("RFM", p) if ch not in WILDCARDS}
    up = p.upper()
    pos, ranges = 0, {}
    for m in _LETTER_TOKEN.finditer(up):
        if m.start() != pos:
            break
        letter, lo, hi = m.group(1), int(m.group(2)), int(m.group(3) or m.group(2))
        if letter in ranges:
            raise RuleError(f"{where}: {letter} appears twice")
        for v in (lo, hi):
            if not 1 <= v <= levels:
                raise RuleError(f"{where}: score {v} is outside 1..{levels}")
        if lo > hi:
            raise RuleError(f"{where}: range {lo}-{hi} is reversed")
        ranges[letter] = (lo, hi)
        pos = m.end()
    return ranges if ranges and pos == len(up) else None


def _compile_one(p: str, levels: int, fields: set[str], where: str) -> str:
    where = f"{where}, pattern {p!r}"
    ranges = _score_ranges(p, levels, where)
    if ranges is not None:
        return " AND ".join(f"{_SCORE_SQL[k]} = {lo}" if lo == hi else f"{_SCORE_SQL[k]} BETWEEN {lo} AND {hi}"
                            for k, (lo, hi) in ranges.items()) or "TRUE"
    m = _CONDITION.match(p)
    if not m:
        raise RuleError(f"{where}: not an RFM code (444, 4XX, R3F3M3, F1-F2) nor a field condition")
    negate, field, op, value = m.groups()
    field = field.lower()
    if field not in fields:
        raise RuleError(f"{where}: unknown field {field!r}; known: {', '.join(sorted(fields))}")
    if op is None:
        expr = f"coalesce(CAST({field} AS BOOLEAN), FALSE)"
    else:
        op = {"==": "=", "<>": "!="}.get(op, op)
        expr = f"coalesce({field} {op} {_sql_literal(value)}, FALSE)"
    return f"NOT {expr}" if negate else expr


@dataclass(frozen=True)
class CompiledRules:
    levels: int
    names: tuple[str, ...]  # rule names in order, then the default
    case_sql: str


def compile_rules(rules: list[tuple[str, tuple[str, ...]]], default: str, levels: int,
                  fields: set[str] = frozenset()) -> CompiledRules:
    whens, names = [], []
    for name, patterns in rules:
        if not patterns:
            raise RuleError(f"segment {name!r} has no patterns")
        cond = " OR ".join(f"({compile_pattern(p, levels, set(fields), f'segment {name!r}')})" for p in patterns)
        whens.append(f"WHEN {cond} THEN '{name.replace(chr(39), chr(39) * 2)}'")
        if name not in names:
            names.append(name)
    if default not in names:
        names.append(default)
    case = "CASE " + " ".join(whens) + f" ELSE '{default.replace(chr(39), chr(39) * 2)}' END" if whens \
        else f"'{default.replace(chr(39), chr(39) * 2)}'"
    return CompiledRules(levels, tuple(names), case)


def check_rules(rules: list[tuple[str, tuple[str, ...]]], default: str, levels: int, custom: int) -> None:
    """Raise RuleError for rules that would put customers in a wrong segment without a word: an empty segment
    name or one with spaces around it, two names that differ only in case (``"churn"`` meant to add to the
    preset's ``"Churn"`` is a segment of its own that no mapping names), or a custom rule (the first ``custom``
    of ``rules``) no customer can reach (:func:`unreachable`). A preset's segment that custom rules take over
    wholly is a choice (a renamed segment), unless a destination maps it (``sync.config`` checks that)."""
    seen: dict[str, str] = {}
    for name in [n for n, _ in rules] + [default]:
        if not name.strip() or name != name.strip():
            raise RuleError(f"segment name {name!r} is empty or has spaces around it")
        twin = seen.setdefault(name.casefold(), name)
        if twin != name:
            raise RuleError(f"segment names {twin!r} and {name!r} differ only in case: they are two segments (and "
                            f"two tags or field values in the ESP); spell them the same to make one segment")
    own = {name for name, _ in rules[:custom]}
    for name, takers in unreachable(rules, levels).items():
        if name not in own:
            continue
        raise RuleError(unreachable_message(name, takers))


def unreachable_message(name: str, takers: list[str]) -> str:
    """Why segment ``name`` is never given, and what to do (``takers`` empty: its patterns match no score at all)."""
    if not takers:
        return (f"segment {name!r} can never be given: its patterns match no score (R, F, M) at all; fix "
                f"its patterns or drop it")
    return (f"segment {name!r} can never be given: every score its patterns match is taken first by "
            f"{', '.join(map(repr, takers))} (the first matching rule wins); put its rule before theirs, narrow "
            f"theirs, or drop it")


def unreachable(rules: list[tuple[str, tuple[str, ...]]], levels: int) -> dict[str, list[str]]:
    """Segment → the earlier segments that take every score it matches, for each segment no customer can reach:
    every score (R, F, M) its patterns match is taken first by earlier rules (``"XXX"`` before it, ``"R1"`` before
    ``"R1F3"``). Only a score pattern takes a score for sure; one with a field condition may not match."""
    return {name: list(by) for name, by in _unreachable(tuple(rules), levels)}


@functools.lru_cache(maxsize=32)
def _unreachable(rules: tuple[tuple[str, tuple[str, ...]], ...],
                 levels: int) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """:func:`unreachable` of a hashable rule list, kept: the config's load and each run ask for the same rules."""
    cells = [{"R": r, "F": f, "M": m, "FM": int((f + m) / 2 + 0.5)}
             for r, f, m in product(range(1, levels + 1), repeat=3)]
    taken: dict[int, str] = {}  # a cell's index → the segment that takes it for sure
    reached: set[str] = set()
    takers: dict[str, dict[str, None]] = {}
    for name, patterns in rules:
        sure = []
        for p in patterns:
            parts = [_score_ranges(part.strip(), levels, f"segment {name!r}, pattern {p!r}") for part in p.split("&")]
            ranges = [r for r in parts if r is not None]
            matched = [i for i, score in enumerate(cells)
                       if all(lo <= score[k] <= hi for r in ranges for k, (lo, hi) in r.items())]
            reached.update(name for c in matched if c not in taken)
            takers.setdefault(name, {}).update(dict.fromkeys(taken[c] for c in matched if c in taken))
            if len(ranges) == len(parts):
                sure += matched
        taken.update((c, name) for c in sure if c not in taken)
    return tuple((name, tuple(by)) for name, by in takers.items() if name not in reached)


@dataclass(frozen=True)
class RuleCheck:
    """One pattern of one segment rule as a SQL condition (``rfmsync explain``)."""

    segment: str
    pattern: str
    sql: str


def explain_rules(rules: list[tuple[str, tuple[str, ...]]], levels: int,
                  fields: set[str] = frozenset()) -> list[RuleCheck]:
    """Every pattern of every rule, in the order the segment CASE tries them, as SQL conditions over the same
    columns (pure: nothing is run). Evaluated on one customer's row they say which rule matched and which earlier
    ones did not; the first segment with a true pattern is the customer's, none means the default segment."""
    return [RuleCheck(name, p, compile_pattern(p, levels, set(fields), f"segment {name!r}"))
            for name, patterns in rules for p in patterns]
