"""The desired tags and fields spelled, in SQL, as the ledger writes the pushed ones.

The ledger stores a contact's tags as a sorted JSON list (compact, ASCII) and its fields as a JSON object with
sorted keys, compact and UTF-8 (``json.dumps(…, sort_keys=True, separators=(",", ":"), ensure_ascii=False)``,
:func:`sync.ledger.state_rows.fields_json`). A contact that exists and whose pushed tags and fields are the very texts
its desired ones would be written as has nothing to change: the diff (:mod:`sync.planning.columnar`) leaves it out
by comparing two strings, without parsing the pushed JSON. Most contacts of a plan are such contacts.

One text parses to one value, so the test can only err one way: a value spelled otherwise is not recognised, and
that contact takes the full comparison, which decides as before. The texts are also what the ledger stores for a
contact whose every field was written (``ContactChange.fields_text``: the ledger does not encode them again),
so the rule for every expression here is stricter: it gives the very text Python writes (byte for byte) for the
value :func:`sync.planning.plan.normalise_value` makes of the column's value, or NULL (not sure: the full
comparison, and the ledger encodes the fields itself). So a string with a control character (DuckDB writes some
of them as ``\\u001B`` where Python writes ``\\u001b``; every other character from U+0020 to U+10FFFF is spelled
alike, checked one by one), a decimal of more than 15 significant digits or below 1e-4 (Python writes the
shortest text of its double: ``12345678901234.568``, ``5e-05``) have no text here. A ledger written before
2026-12 escaped every non-ASCII character of the fields: those rows take the full comparison until rewritten.
"""

from __future__ import annotations

import json
import re
from typing import Iterable, Mapping, Sequence

from connectors.normalize import lit

INT_TYPES = {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT",
         "UHUGEINT"}


def tags_text(tags: Iterable[str]) -> str:
    """A tag set as the ledger writes it (sorted, compact, ASCII JSON)."""
    return json.dumps(sorted(set(tags)), separators=(",", ":"))


def segment_tags_text_sql(segment: str, tags_for: Mapping[str, Sequence[str]]) -> str:
    """The ledger's text of each segment's tags (``segment``: the SQL of the row's segment); ``'[]'`` for another."""
    if not tags_for:
        return "'[]'"
    whens = " ".join(f"WHEN {lit(seg)} THEN {lit(tags_text(tags))}" for seg, tags in tags_for.items())
    return f"CASE {segment} {whens} ELSE '[]' END"


def fields_text_sql(fields: Sequence[tuple[str, str, str]]) -> str:
    """The JSON object of the fields ``(esp name, SQL of the value, its DuckDB type)``, keys sorted, or NULL
    where a value has no sure spelling here (a type not handled, a double too near a rounding tie...)."""
    parts = []
    for esp, expr, dtype in sorted(fields, key=lambda f: f[0]):
        value = value_text_sql(expr, dtype.upper())
        if value is None:
            return "NULL::VARCHAR"
        parts.append(f"{lit(json.dumps(esp, ensure_ascii=False) + ':')} || {value}")  # (keys: as values, UTF-8)
    if not parts:
        return "'{}'"
    return "'{' || " + " || ',' || ".join(parts) + " || '}'"


def value_text_sql(v: str, dtype: str) -> str | None:
    """SQL giving a JSON text of ``normalise_value`` of ``v`` (DuckDB type ``dtype``), NULL where unsure; None
    for a type without a sure spelling in SQL."""
    if dtype == "NULL":
        return "'null'"
    if dtype == "VARCHAR":  # DuckDB's own JSON writer: Python's UTF-8 text of a string without control characters
        return (f"CASE WHEN {v} IS NULL THEN 'null' WHEN NOT regexp_matches({v}, '[\\x00-\\x1f]') "
                f"THEN CAST(to_json({v}) AS VARCHAR) END")
    if dtype == "BOOLEAN":
        return f"CASE WHEN {v} IS NULL THEN 'null' WHEN {v} THEN 'true' ELSE 'false' END"
    if dtype in INT_TYPES:
        return f"coalesce(CAST({v} AS VARCHAR), 'null')"
    if dtype.startswith("DECIMAL"):  # whole: the integer; else its exact digits, which read as float(Decimal)
        # and are that double's shortest text (repr) when there are at most 15 of them (the length bound also
        # counts a leading "0." and zeros: stricter below 1) and Python writes it without an exponent (≥ 1e-4)
        # (a DECIMAL(p, p) prints no leading zero, ".0001": the same scale with room for it)
        m = re.fullmatch(r"DECIMAL\((\d+),\s*(\d+)\)", dtype)
        if m is None or int(m.group(2)) >= 38:
            return None
        wide = f"CAST({v} AS DECIMAL(38, {m.group(2)}))" if m.group(1) == m.group(2) else v
        digits = f"rtrim(CAST({wide} AS VARCHAR), '0')"
        return (f"CASE WHEN {v} IS NULL THEN 'null' WHEN {v} = trunc({v}) THEN CAST(CAST({v} AS HUGEINT) AS VARCHAR) "
                f"WHEN abs({v}) >= 0.0001 AND length(ltrim({digits}, '-')) <= 16 THEN {digits} END")
    if dtype in ("DOUBLE", "FLOAT", "REAL"):  # round(v, 6) as Python rounds it: only away from a tie
        return (f"CASE WHEN {v} IS NULL THEN 'null' WHEN {double_round_sure(v)} "
                f"THEN CAST(round(CAST({v} AS DOUBLE), 6) AS VARCHAR) END")
    if dtype in ("DATE", "TIMESTAMP"):  # a naive timestamp's date, as datetime.date() gives it
        day = v if dtype == "DATE" else f"CAST({v} AS DATE)"
        return (f"CASE WHEN {v} IS NULL THEN 'null' WHEN isfinite({v}) AND year({day}) BETWEEN 1000 AND 9999 "
                f"THEN '\"' || strftime({day}, '%Y-%m-%d') || '\"' END")
    return None  # timestamps with a time zone, lists, structs...: the full comparison


def double_round_sure(v: str) -> str:
    """TRUE where DuckDB's ``round(v, 6)`` is surely Python's ``round(v, 6)``: finite, below 1e9 in size, and
    ``v * 1e6`` far enough from a half that the product's rounding error cannot move it across (DuckDB rounds
    that product, Python the exact value; they may differ at a tie)."""
    x = f"(CAST({v} AS DOUBLE) * 1e6)"
    return (f"(isfinite(CAST({v} AS DOUBLE)) AND abs(CAST({v} AS DOUBLE)) < 1e9 "
            f"AND abs(abs({x} - trunc({x})) - 0.5) > abs({x}) * 1e-15 + 1e-9)")


__all__ = ["INT_TYPES", "double_round_sure", "fields_text_sql", "segment_tags_text_sql", "tags_text", "value_text_sql"]
