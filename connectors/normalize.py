"""Normalising expressions for file exports, as DuckDB SQL.

Every function named ``*_sql`` takes a SQL expression (usually a quoted VARCHAR column) and returns
a SQL expression; nothing here loops over rows in Python. Emails and phones are validated on
DISTINCT values only, in :mod:`connectors.email_phone`.
"""

from __future__ import annotations

import functools
import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo
from typing import Iterable, Literal

Decimal_ = Literal[",", "."]

# Currency words and symbols found in CIS exports, longest first; matched case-insensitively.
CURRENCY_TOKENS: dict[str, str] = {
    "so'm": "UZS", "soʻm": "UZS", "so‘m": "UZS", "so’m": "UZS", "сўм": "UZS", "сум": "UZS", "sum": "UZS",
    "uzs": "UZS", "тенге": "KZT", "тг": "KZT", "₸": "KZT", "kzt": "KZT", "руб.": "RUB", "руб": "RUB",
    "р.": "RUB", "₽": "RUB", "rub": "RUB", "usd": "USD", "$": "USD", "eur": "EUR", "€": "EUR",
}

# Two-digit years first: DuckDB's %Y also reads "24" (as the year 24 AD), while %y does not read "2024".
DATE_FORMATS = (
    "%d.%m.%y %H:%M:%S", "%d.%m.%y %H:%M", "%d.%m.%y",
    "%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%d.%m.%Y",
    "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d",
)
# Dates before this are misread years (a "24" read as 24 AD, a serial day 0), never real orders: bad rows. So is
# 1970-01-01 itself: the Unix epoch's day is what a POS writes for a date it never set (time 0), and taken as an
# order it made its customer 20 000 days silent, his next order due decades ahead and moved every model's fit.
EARLIEST = "1970-01-02"

STATUS_SYNONYMS: dict[str, str] = {
    **dict.fromkeys(["completed", "complete", "paid", "sale", "sold", "done", "closed", "success", "fulfilled",
                     "продажа", "оплачен", "оплачено", "оплачена", "выполнен", "выполнено", "выполнена",
                     "завершен", "завершён", "завершено", "проведен", "проведён", "закрыт", "доставлен",
                     "sotildi", "sotuv"], "completed"),
    **dict.fromkeys(["refunded", "refund", "return", "returned", "возврат", "возвращен", "возвращён",
                     "qaytarildi", "qaytarish"], "refunded"),
    **dict.fromkeys(["cancelled", "canceled", "cancel", "void", "voided", "отменен", "отменён", "отменено",
                     "отмена", "аннулирован", "bekor qilindi"], "cancelled"),
}
# Stems matched as prefixes after the exact synonyms (e.g. "Отменён покупателем", "Возврат товара").
STATUS_STEMS: dict[str, str] = {"отмен": "cancelled", "cancel": "cancelled", "аннулир": "cancelled",
                                "возврат": "refunded", "refund": "refunded", "return": "refunded",
                                "оплач": "completed", "выполн": "completed"}
#: the apostrophes an Uzbek word (yo'q, so'm) is typed with: ', ‘, ’, the modifier letters ʻ and ʼ, and `
APOSTROPHES = ("'", "\u2018", "\u2019", "\u02bb", "\u02bc", "`")


def lit(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def ident(name: str) -> str:
    """A quoted SQL identifier (file headers may hold any character)."""
    return '"' + name.replace('"', '""') + '"'


# The characters DuckDB's trim() strips: the space, no-break space and the other Unicode space separators.
TRIMMED_SPACES = (32, 160, 5760, *range(8192, 8203), 8239, 8287, 12288)


def text_sql(col: str) -> str:
    """Trimmed text, empty → NULL: exactly ``NULLIF(trim(col), '')``. Most values start and end with
    neither a space nor a no-break space; those pass through untouched, as trimming every value of a 10 M-row
    column allocates 10 M new strings (``col`` is repeated: pass a column reference). The last character is
    decoded only in a value that is not plain ASCII (every trimmed space but ``' '`` is not): ``right()``
    counts the characters of every value, ``suffix()`` and the byte/character lengths are cheaper."""
    spaces = ", ".join(map(str, TRIMMED_SPACES))
    return (f"CASE WHEN {col} = '' OR ord({col}) IN ({spaces}) OR suffix({col}, ' ') OR"
            f" (strlen({col}) <> length({col}) AND ord(right({col}, 1)) IN ({spaces}))"
            f" THEN NULLIF(trim({col}), '') ELSE {col} END")


def currency_sql(col: str) -> str:
    """ISO 4217 code guessed from a currency word/symbol inside an amount text, else NULL."""
    low = f"lower({col})"
    cases = " ".join(f"WHEN contains({low}, {lit(tok)}) THEN {lit(code)}"
                     for tok, code in sorted(CURRENCY_TOKENS.items(), key=lambda kv: -len(kv[0])))
    return f"CASE {cases} END"


def currency_code_sql(col: str) -> str:
    """A currency column's value as one code per currency: a known spelling (``руб``, ``₽``, ``usd``, ``$``) its
    ISO 4217 code, any other value trimmed and upper-cased (``gbp`` → ``GBP``), an empty one NULL."""
    cases = " ".join(f"WHEN {lit(tok)} THEN {lit(code)}" for tok, code in CURRENCY_TOKENS.items())
    return f"CASE lower(trim({col})) {cases} ELSE NULLIF(upper(trim({col})), '') END"


def currency_code(value: str) -> str:
    """Python twin of :func:`currency_code_sql` for one value (``currency`` of a file source's config)."""
    return CURRENCY_TOKENS.get(value.strip().lower(), value.strip().upper())


def currency_of(value: str | None) -> str | None:
    """Python twin of :func:`currency_sql` for one value."""
    low = (value or "").lower()
    return next((code for tok, code in sorted(CURRENCY_TOKENS.items(), key=lambda kv: -len(kv[0])) if tok in low), None)


def sniff_decimal(values: Iterable[str | None], money: bool = True, settled: Decimal_ | None = None) -> Decimal_:
    """The decimal mark of a number column from sample values. Decisive values count first: one holding both
    marks (the last is the decimal mark), repeated groups (``1,234,567``: the other mark is the decimal mark),
    a mark followed by other than three digits (``12,5``) or after a lone ``0`` (``0,500``). Only when no value is
    decisive does ``settled`` (the mark the file's money columns settled, for a quantity) decide, and then the
    ambiguous ``1,234`` / ``1.234``: in a money column (``money``) they group thousands (amounts rarely have three
    decimals), in a quantity they are decimals. No evidence at all: ``.``."""
    decisive, weak = _decimal_votes(values, money)
    if not any(decisive.values()) and settled is not None:
        return settled
    votes = decisive if any(decisive.values()) else weak
    return "," if votes[","] > votes["."] else "."


def _decimal_votes(values: Iterable[str | None], money: bool) -> tuple[dict[str, int], dict[str, int]]:
    decisive = {",": 0, ".": 0}
    weak = {",": 0, ".": 0}
    for v in values:
        vote = decimal_vote(v)
        if vote is None:
            continue
        mark, sure = vote
        if sure:
            decisive[mark] += 1
        else:  # 1,234 / 1.234
            weak[("." if mark == "," else ",") if money else mark] += 1
    return decisive, weak


def decimal_vote(value: str | None) -> tuple[Decimal_, bool] | None:
    """What one number text says of its column's decimal mark: ``(mark, True)`` when it can be read one way only
    (both marks: the last one; repeated groups ``1,250,000``: the other one; a mark followed by other than three
    digits ``12,5``, after a lone ``0`` ``0,500`` or after more than three digits ``1037.000``: that one), ``(mark, False)`` for the ambiguous ``1,234`` /
    ``1.234``, None without a mark or for a value no documented form fits (``1.234.5``, a mark at an end ``12,5.``
    or ``,12,5``: a bad row, :mod:`connectors.amounts`, which says nothing of the column's mark; its currency words
    are dropped first, as there: ``12,50 р.``; thousands spaces not in threes, ``1 23,50``, ``12 3456,00``: a bad row
    too, :func:`connectors.amounts.bad_spaces`). :func:`decimal_vote_sql` is its SQL twin."""
    from .amounts import bad_spaces
    if value is not None and bad_spaces(value):
        return None
    v = re.sub(r"[^0-9,.]", "", re.sub(_ends_re(), "", (value or "").lower()))  # 12,50 р. → 12,50
    marks = [c for c in v if c in ",."]
    if not marks:
        return None
    if not re.fullmatch(_well_grouped() if len(marks) > 1 else _ONE_MARK_RE, v):
        return None  # 1.234.5, 1,2,3, 12,5., ,500: no documented form, a bad row (amounts.py), no say in the mark
    if len(set(marks)) == 2:
        return marks[-1], True  # type: ignore[return-value]
    if len(marks) > 1:  # 1,250,000: the mark groups thousands
        return ("." if marks[0] == "," else ","), True
    at = v.index(marks[0])
    return marks[0], len(v) - at - 1 != 3 or not v[:at].strip("0") or at > 3  # type: ignore[return-value]


#: a number of one mark (its digits and mark) that a documented form fits (:mod:`connectors.amounts`): ``12,5``,
#: ``,5``, ``0,500``, ``1037,000``, ``1,234``; not a mark at an end (``12,``) nor ``,500``
_ONE_MARK_RE = r"[0-9]*[.,]([0-9]{1,2}|[0-9]{4,})|[0-9]+[.,][0-9]{3}"


def _ends_re() -> str:
    """Currency words and other characters at a value's ends (``р.`` of ``12,50 р.`` is not a mark; the one of
    ``0р.5`` is, as the whole-column vote's shortcut counts it: :func:`connectors.file_decimal._clean_re`)."""
    from .amounts import _CURRENCY_RE
    return f"^({_CURRENCY_RE}|[^0-9,.])+|({_CURRENCY_RE}|[^0-9,.])+$"


def _well_grouped() -> str:
    """A number of several marks (its digits and marks) that a documented form fits (:mod:`connectors.amounts`:
    ``1,250,000``, ``12,34,567``, ``1,234,567.89``, ``1.234,5``)."""
    from .amounts import _GROUPED_COMMA_RE, _GROUPED_POINT_RE, _GROUPED_RE, _INDIAN
    return f"{_GROUPED_RE}|{_INDIAN}|{_GROUPED_POINT_RE}|{_GROUPED_COMMA_RE}"


def decimal_vote_sql(col: str) -> str:
    """:func:`decimal_vote` in SQL over a column reference: ``','`` / ``'.'`` for a value read one way only, ``'w,'``
    / ``'w.'`` for an ambiguous one (its mark), NULL without a mark (it costs a few regular expressions a value: run it on few rows)."""
    from .amounts import bad_spaces_sql
    n = f"regexp_replace(regexp_replace(lower({col}), {lit(_ends_re())}, '', 'g'), '[^0-9,.]', '', 'g')"
    marks = f"regexp_replace({n}, '[0-9]', '', 'g')"
    return (f"CASE WHEN {marks} = '' OR {bad_spaces_sql(col)} THEN NULL"
            f" WHEN length({marks}) > 1 AND NOT regexp_full_match({n}, {lit(_well_grouped())}) THEN NULL"
            f" WHEN length({marks}) = 1 AND NOT regexp_full_match({n}, {lit(_ONE_MARK_RE)}) THEN NULL"
            f" WHEN contains({marks}, ',') AND contains({marks}, '.') THEN right({marks}, 1)"
            f" WHEN length({marks}) > 1 THEN CASE WHEN starts_with({marks}, ',') THEN '.' ELSE ',' END"
            f" WHEN length({n}) <= 7 AND regexp_full_match({n}, '[0-9]*[1-9][0-9]*[.,][0-9]{{3}}') THEN 'w' || {marks}"
            f" ELSE {marks} END")


_OFFSET_RE = r"[T ]\d\d:\d\d(:\d\d(\.\d+)?)?\s*(Z|[+-]\d\d(:?\d\d)?)$"
SPACE_OFFSET_RE = r"\s+([+-]\d\d(:?\d\d)?|Z)$"  # "10:00:00 +0500" (Shopify): DuckDB casts only "10:00:00+0500"


def _has_offset(date_format: str | None) -> bool:
    """Whether the format reads each value's own offset (``%z``) or zone name (``%Z``: ``UTC``, ``Europe/Berlin``)."""
    return bool(date_format) and ("%z" in date_format or "%Z" in date_format)


def naive_timestamp_sql(t: str, formats: Iterable[str] = DATE_FORMATS, excel_serial: bool = False,
                        date_format: str | None = None, excel_epoch: str = "1899-12-30") -> str:
    """Step 1 for dates: trimmed text → naive TIMESTAMP (ISO, dd.mm.yyyy[ HH:MM[:SS]], …). A ``date_format``
    with ``%z`` or ``%Z`` gives the UTC time of each value (its own offset or zone applied; see :func:`zoned_timestamp_sql`)."""
    fmts = [date_format] if date_format else list(formats)
    naive = f"try_strptime({t}, [{', '.join(lit(f) for f in fmts)}])"
    if _has_offset(date_format):
        return f"timezone('UTC', {naive})"
    if not date_format:
        naive = f"COALESCE(TRY_CAST({t} AS TIMESTAMP), {naive})"
    if excel_serial:
        naive = (f"COALESCE({naive}, CASE WHEN regexp_full_match({t}, '[0-9]{{1,6}}(\\.[0-9]+)?') THEN "
                 f"TIMESTAMP '{excel_epoch}' + to_microseconds(round(TRY_CAST({t} AS DOUBLE) * 86400000000)::BIGINT) END)")
    return naive


def _own_time_sql(t: str, date_format: str) -> str:
    """The wall time of ``t`` in its own offset or zone (``date_format`` ending in ``%z`` / ``%Z``), as a naive
    TIMESTAMP: the offset read as ``+00:00``, the zone name as ``UTC``; NULL when the format ends otherwise."""
    if not date_format.rstrip().endswith(("%z", "%Z")):
        return "NULL::TIMESTAMP"
    pattern, zero = (r"[+-]\d\d(:?\d\d)?$", "+00:00") if date_format.rstrip().endswith("%z") else \
        (r"[A-Za-z][A-Za-z0-9_/+-]*$", "UTC")
    return f"timezone('UTC', try_strptime(regexp_replace({t}, {lit(pattern)}, {lit(zero)}), {lit(date_format)}))"


def zoned_timestamp_sql(t: str, n: str, tz: str, date_format: str | None = None) -> str:
    """Step 2: TIMESTAMPTZ from the text ``t`` (when it carries an offset, also after a space:
    ``10:00:00 +0500``) or else the naive ``n`` read as local time in ``tz``; NULL before :data:`EARLIEST`
    (a misread year, or the epoch's day). With a ``%z`` / ``%Z`` ``date_format``, ``n`` is already UTC, and the
    epoch's day is the value's own (:func:`_own_time_sql`), as with an offset in the text."""
    if _has_offset(date_format):  # near EARLIEST (offsets span -12 to +14 hours), the value's own day decides
        own = f"COALESCE({_own_time_sql(t, date_format or '')}, {n})"
        return (f"CASE WHEN {n} >= TIMESTAMP '{EARLIEST}' + INTERVAL 14 HOUR OR ({n} >= TIMESTAMP '{EARLIEST}'"
                f" - INTERVAL 14 HOUR AND {own} >= TIMESTAMP '{EARLIEST}') THEN timezone('UTC', {n}) END")
    spaced = f"TRY_CAST(regexp_replace({t}, {lit(SPACE_OFFSET_RE)}, '\\1') AS TIMESTAMPTZ)"
    return (f"CASE WHEN length({t}) > 19 AND regexp_matches({t}, '{_OFFSET_RE}') THEN"
            f" CASE WHEN substr({t}, 5, 1) = '-' AND {t} >= '{EARLIEST}'"  # a 4-digit year, from EARLIEST: the cast
            f" THEN COALESCE(TRY_CAST({t} AS TIMESTAMPTZ), {spaced}) END"  # reads "24-01-31" as 24 AD
            f" ELSE {local_to_utc_sql(n, tz)} END")


def timestamp_sql(col: str, tz: str, formats: Iterable[str] = DATE_FORMATS, excel_serial: bool = False,
                  date_format: str | None = None) -> str:
    """Date/time text → TIMESTAMPTZ (steps composed). Naive values are local times in ``tz``."""
    t = f"({text_sql(col)})"
    return zoned_timestamp_sql(t, f"({naive_timestamp_sql(t, formats, excel_serial, date_format)})", tz, date_format)


@functools.lru_cache(maxsize=64)
def fixed_offset_since(tz: str) -> tuple[datetime, int] | None:
    """(since, offset seconds) when ``tz`` keeps one UTC offset from ``since`` to 2100, else None."""
    zone = ZoneInfo(tz)
    day = datetime(2100, 1, 1)
    final = zone.utcoffset(day)
    while day > datetime(1900, 1, 1):
        prev = day - timedelta(days=1)
        if zone.utcoffset(prev) != final:
            break
        day = prev
    since = day + timedelta(days=2)  # margin for the transition day itself
    return (since, int(final.total_seconds())) if since < datetime(2100, 1, 1) else None


def local_to_utc_sql(naive: str, tz: str) -> str:  # ``naive``: a column reference
    """TIMESTAMP (local wall time in ``tz``) → TIMESTAMPTZ, NULL before :data:`EARLIEST`. Since the zone's last
    offset change a constant shift is exact and ~15× faster than ``timezone()``; earlier times use ``timezone()``."""
    fixed = fixed_offset_since(tz)
    old = f"CASE WHEN {naive} >= TIMESTAMP '{EARLIEST}' THEN timezone({lit(tz)}, {naive}) END"  # else misread
    if fixed is None:
        return old
    since, offset = fixed
    since = max(since, datetime.fromisoformat(EARLIEST))  # before it a shift would skip the EARLIEST check
    n = naive
    return (f"CASE WHEN {n} >= TIMESTAMP '{since:%Y-%m-%d}' THEN make_timestamptz(epoch_us({n}) - {offset * 1_000_000})"
            f" ELSE {old} END")


def status_sql(col: str, overrides: dict[str, str] | None = None) -> str:
    """Status text → completed | refunded | cancelled; empty → completed; unknown → NULL."""
    table = {**STATUS_SYNONYMS, **{k.strip().lower(): v for k, v in (overrides or {}).items()}}
    v = f"lower(trim({col}))"
    by_status: dict[str, list[str]] = {}
    for raw, status in table.items():
        by_status.setdefault(status, []).append(raw)
    exact = " ".join(f"WHEN {v} IN ({', '.join(lit(r) for r in raws)}) THEN {lit(st)}" for st, raws in by_status.items())
    stems = " ".join(f"WHEN starts_with({v}, {lit(stem)}) THEN {lit(st)}" for stem, st in STATUS_STEMS.items())
    return f"CASE WHEN {v} IS NULL OR {v} = '' THEN 'completed' {exact} {stems} END"


#: a cell's words for "no value" (an export's NULL written out), besides empty and a zero date (0000-00-00 …)
NO_VALUE = ("null", "none", "nil", "n/a", "na", "nan", "-", "—")


def no_value_sql(col: str) -> str:
    """TRUE when the text ``col`` holds no value: NULL (empty), a :data:`NO_VALUE` word or a zero date."""
    return (f"COALESCE(CASE lower({col}) {' '.join(f'WHEN {lit(v)} THEN true' for v in NO_VALUE)} END,"
            f" regexp_full_match({col}, '[0\\s:./T-]*'), true)")


_PATRONYMIC = r"(вич|вна|ович|евич|овна|евна|ична|кызы|угли|ўғли|оглы|o'g'li|qizi)$"


def name_words_sql(col: str) -> str:
    """Step 1 for full names: the words of the name as a list."""
    return f"string_split(regexp_replace(trim({col}), '\\s+', ' ', 'g'), ' ')"


def name_parts_from_words_sql(w: str) -> tuple[str, str]:
    """Step 2: words → (first_name, last_name). "Фамилия Имя Отчество" (a patronymic last) is
    read last-name-first; anything else as "First … Last"."""
    ru = f"(len({w}) >= 3 AND regexp_matches(lower({w}[-1]), {lit(_PATRONYMIC)}))"
    first = f"NULLIF(CASE WHEN {ru} THEN {w}[2] ELSE {w}[1] END, '')"
    last = f"NULLIF(CASE WHEN {ru} THEN {w}[1] WHEN len({w}) > 1 THEN array_to_string({w}[2:], ' ') END, '')"
    return first, last


def name_parts_sql(col: str) -> tuple[str, str]:
    """Full name → (first_name, last_name) SQL (steps composed)."""
    return name_parts_from_words_sql(f"({name_words_sql(col)})")


def __getattr__(name: str) -> object:
    """The consent words and their SQL, moved to :mod:`connectors.consent_words`, read here as before."""
    from . import consent_words

    if name in consent_words.__all__:
        return getattr(consent_words, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
