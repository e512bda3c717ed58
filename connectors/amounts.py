"""Money text as DuckDB SQL: currency words and thousands separators dropped, one decimal mark, a DECIMAL.

The column's decimal mark, for the values that could be read either way, is decided elsewhere
(:mod:`connectors.file_decimal`); here a value is read with it. A value no documented form fits (``1.234.5``,
``1,2,3``, ``1 23``: thousands groups that are not three digits) is NULL, a bad row, never a number guessed
from its digits.
"""

from __future__ import annotations

import re

from .normalize import CURRENCY_TOKENS, Decimal_, lit

_CURRENCY_RE = "|".join(re.escape(t) for t in sorted(CURRENCY_TOKENS, key=len, reverse=True))
#: thousands spaces: RE2's ``\s`` (ASCII only: tab, line feed, form feed, carriage return, space, no vertical tab)
#: spelled out, as Python's ``\s`` is Unicode (U+2007, U+3000…): the SQL and Python twins read the same spaces
_SPACES_RE = r"[\t\n\f\r \x{00A0}\x{202F}\x{2009}\x{0027}]"


# Expressions below take *column references* and may repeat them; compose them over nested
# SELECTs (one level per step) so each step runs once per row. The ``*_sql(col)`` one-liners
# compose the steps textually, for small inputs and tests.

def amount_strip_sql(t: str) -> str:
    """Step 1: lower-case, drop currency words/symbols and spaces (incl. U+00A0, U+202F); the accounting
    negatives ``(1 234,50)``, ``1234,50-`` and ``−150`` (U+2212) become ``-1234,50`` / ``-150``."""
    bare = (f"regexp_replace(regexp_replace(lower({t}), '{_CURRENCY_RE.replace(chr(39), chr(39) * 2)}', '', 'g'),"
            f" '{_SPACES_RE}', '', 'g')")
    return rf"regexp_replace(replace({bare}, '−', '-'), '^\(([0-9.,]+)\)$|^([0-9.,]+)-$', '-\1\2')"


# a digit, thousands spaces, then a group of other than three digits: `1 23`, `1'2345`, `12 5,50`; or a first
# group of four digits or more before them: `1234 567,00`
_BAD_SPACE_RE = (rf"[0-9]{_SPACES_RE}+([0-9]{{1,2}}|[0-9]{{4,}})([^0-9]|$)"
                 rf"|(^|[^0-9])[0-9]{{4,}}{_SPACES_RE}+[0-9]")
#: :data:`_BAD_SPACE_RE` for Python's ``re`` (``\x{00A0}`` is RE2's spelling of ``\u00A0``)
_BAD_SPACE_PY = re.compile(re.sub(r"\\x\{([0-9A-F]{4})\}", r"\\u\1", _BAD_SPACE_RE), re.ASCII)


# A whole number grouped in thousands more than once (1,250,000 / 1.250.000): the mark groups thousands.
_GROUPED_RE = r"[-+]?[0-9]{1,3}(,[0-9]{3}){2,}|[-+]?[0-9]{1,3}(\.[0-9]{3}){2,}"
# Indian grouping: lakhs and crores in groups of two above the thousands (`12,34,567`, `1,23,456.78`)
_INDIAN = "[0-9]{1,2}(,[0-9]{2})+,[0-9]{3}"
# Both marks: thousands grouped by one, the last one the decimal mark (`1,234,567.89`, `1.234,5`); any other
# mix (`1.234.5,00`, `1,23.45`, `.5,250`) fits no form: NULL.
_GROUPED_POINT_RE = rf"[-+]?([0-9]{{1,3}}(,[0-9]{{3}})+|{_INDIAN})\.[0-9]+"
_GROUPED_COMMA_RE = r"[-+]?[0-9]{1,3}(\.[0-9]{3})+,[0-9]+"


def amount_number_sql(s: str, decimal: Decimal_ = ".") -> str:
    """Step 2: one decimal mark, as ``.``. A whole number with repeated groups (``1,250,000``) has none;
    a value holding both ``,`` and ``.`` uses the last one as its decimal mark; a single separator not
    followed by exactly three digits, or after a lone ``0`` (``0,500``: no thousands) or more than three digits
    (``1037.000``: a thousands group cannot follow four digits), is a decimal mark; only the ambiguous rest
    (``1,234`` / ``1.234``) follows ``decimal``, the column's mark. Both marks need thousands grouped by the first
    (``1,234,567.89``, or in Indian lakhs ``1,23,456.78`` / ``12,34,567``); any other value holding a mark
    (``1.234.5``, ``1,2,3``, ``1.234.5,00``) is NULL."""
    other = "." if decimal == "," else ","
    return (f"CASE WHEN regexp_full_match({s}, {lit(_GROUPED_RE)}) THEN replace(replace({s}, ',', ''), '.', '')"
            f" WHEN contains({s}, ',') AND contains({s}, '.') THEN"
            f" CASE WHEN regexp_full_match({s}, {lit(_GROUPED_POINT_RE)}) THEN replace({s}, ',', '')"
            f" WHEN regexp_full_match({s}, {lit(_GROUPED_COMMA_RE)}) THEN replace(replace({s}, '.', ''), ',', '.') END"
            f" WHEN regexp_full_match({s}, '[-+]?([0-9]*[.,]([0-9]{{1,2}}|[0-9]{{4,}})|0+[.,][0-9]+|[0-9]{{4,}}[.,][0-9]+)')"
            f" THEN replace({s}, ',', '.')"
            f" WHEN regexp_full_match({s}, '[-+]?[0-9]{{1,3}}[.,][0-9]{{3}}')"
            f" THEN replace(replace({s}, {lit(other)}, ''), ',', '.')"
            f" WHEN regexp_full_match({s}, {lit('[-+]?' + _INDIAN)}) THEN replace({s}, ',', '')"
            f" WHEN contains({s}, ',') OR contains({s}, '.') THEN NULL ELSE {s} END")


def decimal_sql(n: str, scale: int = 2) -> str:
    """Step 3: a plain ``-123.45`` string → DECIMAL(18, scale); anything else → NULL."""
    return f"CASE WHEN regexp_full_match({n}, '[-+]?[0-9]+(\\.[0-9]+)?') THEN TRY_CAST({n} AS DECIMAL(18,{scale})) END"


def plain_number_sql(t: str, decimal: Decimal_ = ".", scale: int = 2) -> str:
    """The fast path: TRUE for text that is already a plain ``-123.45`` number in this column
    (for a ``,`` column, ``1.234`` is not plain: the dot may be a thousands separator)."""
    frac = "[0-9]+" if decimal == "." else "([0-9]{1,2}|[0-9]{4,})"
    return f"regexp_full_match({t}, '[-+]?[0-9]+(\\.{frac})?')"


def amount_sql(col: str, decimal: Decimal_ = ".", scale: int = 2) -> str:
    """Money text → DECIMAL(18, scale), NULL when unparseable: plain numbers are cast directly,
    the rest goes through steps 1–3 (composed textually; they are rare)."""
    slow = decimal_sql(f"({amount_number_sql(f'({amount_strip_sql(col)})', decimal)})", scale)
    return (f"CASE WHEN {plain_number_sql(col, decimal)} THEN TRY_CAST({col} AS DECIMAL(18,{scale}))"
            f" WHEN {bad_spaces_sql(col)} THEN NULL ELSE {slow} END")


def bad_spaces_sql(col: str) -> str:
    """TRUE for money text whose thousands spaces (or ``'``) are not each followed by exactly three digits (``1 23``,
    ``1 2345``, ``12 5,50``) or follow four digits or more (``1234 567,00``): no number, whatever the marks
    (:func:`amount_strip_sql` drops the spaces), and no say in the column's decimal mark
    (:func:`connectors.normalize.decimal_vote`)."""
    return f"regexp_matches({col}, {lit(_BAD_SPACE_RE)})"


def bad_spaces(value: str) -> bool:
    """:func:`bad_spaces_sql` of one value, in Python."""
    return _BAD_SPACE_PY.search(value) is not None


def too_big_amount_sql(col: str) -> str:
    """TRUE for money text that is a number with more than 16 digits before the point (DECIMAL(18,2) cannot hold
    it, so :func:`amount_sql` gave NULL): an id or a phone mapped as the amount, reported as out of range like
    the API sources' (:func:`connectors.http.to_decimal`) rather than as unparseable. Read with ``.`` as the
    decimal mark (the column's mark is not known here; a ``,`` in a number this long groups thousands)."""
    n = amount_number_sql(f"({amount_strip_sql(col)})")
    return f"regexp_full_match({n}, '[-+]?0*[1-9][0-9]{{16,}}(\\.[0-9]+)?')"
