"""Normalising expressions for file exports, as DuckDB SQL (plus two distinct-value passes).

Every function named ``*_sql`` takes a SQL expression (usually a quoted VARCHAR column) and returns
a SQL expression; nothing here loops over rows in Python. Emails and phones are validated on
DISTINCT values only (:func:`email_map`, :func:`phone_map`), each with a fast path:

* emails: a conservative SQL regex accepts the plain-ASCII common case; everything else goes through
  ``email-validator`` (``check_deliverability=False``). The regex accepts a strict subset of what
  email-validator accepts (checked against a corpus in the tests).
* phones: values are reduced to ``[+]digits``; values sharing a *shape* (leading ``+``, length, first
  four digits) are parsed the same way by ``phonenumbers``, so two representatives of each shape are
  parsed and, when both agree, the rest of the shape is rewritten in SQL. Shapes that disagree, and
  small shapes, are parsed value by value.
"""

from __future__ import annotations

import functools
import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo
from dataclasses import dataclass
from typing import Iterable, Literal

import duckdb

# phonenumbers, email_validator and pyarrow are imported where used: a file export without emails or
# phones never loads them (together about 0.1 s of every command's start-up).

Decimal_ = Literal[",", "."]

# Currency words and symbols found in CIS exports, longest first; matched case-insensitively.
CURRENCY_TOKENS: dict[str, str] = {
    "so'm": "UZS", "soʻm": "UZS", "so‘m": "UZS", "so’m": "UZS", "сўм": "UZS", "сум": "UZS", "sum": "UZS",
    "uzs": "UZS", "тенге": "KZT", "тг": "KZT", "₸": "KZT", "kzt": "KZT", "руб.": "RUB", "руб": "RUB",
    "р.": "RUB", "₽": "RUB", "rub": "RUB", "usd": "USD", "$": "USD", "eur": "EUR", "€": "EUR",
}
_CURRENCY_RE = "|".join(re.escape(t) for t in sorted(CURRENCY_TOKENS, key=len, reverse=True))
_SPACES_RE = r"[\s\x{00A0}\x{202F}\x{2009}\x{0027}]"

DATE_FORMATS = (
    "%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%d.%m.%Y",
    "%d.%m.%y %H:%M:%S", "%d.%m.%y %H:%M", "%d.%m.%y",
    "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d",
)

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
CONSENT_YES = ("yes", "y", "да", "д", "1", "true", "t", "on", "subscribed", "согласен", "согласна", "ha", "+")
CONSENT_NO = ("no", "n", "нет", "н", "0", "false", "f", "off", "unsubscribed", "не согласен", "yo'q", "yoq", "-")


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
    column allocates 10 M new strings (``col`` is repeated: pass a column reference)."""
    spaces = ", ".join(map(str, TRIMMED_SPACES))
    return (f"CASE WHEN {col} = '' OR ord({col}) IN ({spaces}) OR ord(right({col}, 1)) IN ({spaces})"
            f" THEN NULLIF(trim({col}), '') ELSE {col} END")


# Expressions below take *column references* and may repeat them; compose them over nested
# SELECTs (one level per step) so each step runs once per row. The ``*_sql(col)`` one-liners
# compose the steps textually, for small inputs and tests.

def amount_strip_sql(t: str) -> str:
    """Step 1: lower-case, drop currency words/symbols and spaces (incl. U+00A0, U+202F)."""
    return (f"regexp_replace(regexp_replace(lower({t}), '{_CURRENCY_RE.replace(chr(39), chr(39) * 2)}', '', 'g'),"
            f" '{_SPACES_RE}', '', 'g')")


def amount_number_sql(s: str, decimal: Decimal_ = ".") -> str:
    """Step 2: one decimal mark, as ``.``. A value holding both ``,`` and ``.`` uses the last one
    as its decimal mark; a single separator not followed by exactly three digits is a decimal
    mark; only the ambiguous rest (``1,234`` / ``1.234``) follows ``decimal``, the column's mark."""
    other = "." if decimal == "," else ","
    return (f"CASE WHEN contains({s}, ',') AND contains({s}, '.') THEN"
            f" CASE WHEN strpos({s}, ',') > strpos({s}, '.') AND NOT contains(substr({s}, strpos({s}, ',') + 1), '.')"
            f" THEN replace(replace({s}, '.', ''), ',', '.') ELSE replace({s}, ',', '') END"
            f" WHEN regexp_full_match({s}, '[-+]?[0-9]*[.,]([0-9]{{1,2}}|[0-9]{{4,}})') THEN replace({s}, ',', '.')"
            f" ELSE replace(replace({s}, {lit(other)}, ''), ',', '.') END")


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
    return f"CASE WHEN {plain_number_sql(col, decimal)} THEN TRY_CAST({col} AS DECIMAL(18,{scale})) ELSE {slow} END"


def currency_sql(col: str) -> str:
    """ISO 4217 code guessed from a currency word/symbol inside an amount text, else NULL."""
    low = f"lower({col})"
    cases = " ".join(f"WHEN contains({low}, {lit(tok)}) THEN {lit(code)}"
                     for tok, code in sorted(CURRENCY_TOKENS.items(), key=lambda kv: -len(kv[0])))
    return f"CASE {cases} END"


def currency_of(value: str | None) -> str | None:
    """Python twin of :func:`currency_sql` for one value."""
    low = (value or "").lower()
    return next((code for tok, code in sorted(CURRENCY_TOKENS.items(), key=lambda kv: -len(kv[0])) if tok in low), None)


def sniff_decimal(values: Iterable[str | None]) -> Decimal_:
    """The decimal mark of a number column from sample values: ``,`` when comma decimals dominate."""
    comma = dot = 0
    for v in values:
        if not v:
            continue
        v = re.sub(r"[\s\u00a0\u202f\u2009']", "", v)
        if re.search(r",\d{1,2}$", v) or re.search(r",\d+$", v) and "." in v.split(",")[0]:
            comma += 1
        elif re.search(r"\.\d{1,2}$", v) or re.search(r"\.\d+$", v) and "," in v.split(".")[0]:
            dot += 1
        elif re.search(r"^[-+]?\d+,\d+$", v):
            comma += 0.5  # "1,234": thousands or decimal; weak evidence for a decimal comma
    return "," if comma > dot else "."


_OFFSET_RE = r"[T ]\d\d:\d\d(:\d\d(\.\d+)?)?\s*(Z|[+-]\d\d(:?\d\d)?)$"


def naive_timestamp_sql(t: str, formats: Iterable[str] = DATE_FORMATS, excel_serial: bool = False,
                        date_format: str | None = None) -> str:
    """Step 1 for dates: trimmed text → naive TIMESTAMP (ISO, dd.mm.yyyy[ HH:MM[:SS]], …)."""
    fmts = [date_format] if date_format else list(formats)
    naive = f"try_strptime({t}, [{', '.join(lit(f) for f in fmts)}])"
    if not date_format:
        naive = f"COALESCE(TRY_CAST({t} AS TIMESTAMP), {naive})"
    if excel_serial:
        naive = (f"COALESCE({naive}, CASE WHEN regexp_full_match({t}, '[0-9]{{1,6}}(\\.[0-9]+)?') THEN "
                 f"TIMESTAMP '1899-12-30' + to_microseconds(round(TRY_CAST({t} AS DOUBLE) * 86400000000)::BIGINT) END)")
    return naive


def zoned_timestamp_sql(t: str, n: str, tz: str) -> str:
    """Step 2: TIMESTAMPTZ from the text ``t`` (when it carries an offset) or else the naive ``n``
    read as local time in ``tz``."""
    return (f"CASE WHEN length({t}) > 19 AND regexp_matches({t}, '{_OFFSET_RE}') THEN TRY_CAST({t} AS TIMESTAMPTZ)"
            f" ELSE {local_to_utc_sql(n, tz)} END")


def timestamp_sql(col: str, tz: str, formats: Iterable[str] = DATE_FORMATS, excel_serial: bool = False,
                  date_format: str | None = None) -> str:
    """Date/time text → TIMESTAMPTZ (steps composed). Naive values are local times in ``tz``."""
    t = f"({text_sql(col)})"
    return zoned_timestamp_sql(t, f"({naive_timestamp_sql(t, formats, excel_serial, date_format)})", tz)


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
    """TIMESTAMP (local wall time in ``tz``) → TIMESTAMPTZ. Since the zone's last offset change a
    constant shift is exact and ~15× faster than ``timezone()``; earlier times use ``timezone()``."""
    fixed = fixed_offset_since(tz)
    if fixed is None:
        return f"timezone({lit(tz)}, {naive})"
    since, offset = fixed
    n = naive
    return (f"CASE WHEN {n} >= TIMESTAMP '{since:%Y-%m-%d}' THEN make_timestamptz(epoch_us({n}) - {offset * 1_000_000})"
            f" ELSE timezone({lit(tz)}, {n}) END")


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


def consent_sql(col: str) -> str:
    """yes/no/да/нет/1/0/true/false… → 'yes' | 'no' | 'unknown'."""
    s = f"lower(trim({col}))"
    return (f"CASE WHEN {s} IN ({', '.join(lit(v) for v in CONSENT_YES)}) THEN 'yes'"
            f" WHEN {s} IN ({', '.join(lit(v) for v in CONSENT_NO)}) THEN 'no' ELSE 'unknown' END")


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


# ---------------------------------------------------------------------------------------------- emails

_EMAIL_FAST_RE = (r"[a-z0-9]+([._+-][a-z0-9]+)*@([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,24}")
_SPECIAL_TLDS = ("arpa", "invalid", "local", "localhost", "onion", "test")


def email_fast_sql(col: str) -> str:
    """TRUE when the (already lower-cased, trimmed) value is a plain-ASCII address email-validator accepts."""
    tlds = ", ".join(lit(t) for t in _SPECIAL_TLDS)
    return (f"(regexp_full_match({col}, '{_EMAIL_FAST_RE}') AND length({col}) <= 254"
            f" AND strpos({col}, '@') <= 65 AND NOT contains({col}, '--')"
            f" AND NOT list_contains([{tlds}], split_part({col}, '.', -1)))")


_EMAIL_FAST_PY = re.compile(_EMAIL_FAST_RE)


def is_plain_email(value: str) -> bool:
    """Python twin of :func:`email_fast_sql`: the plain-ASCII case email-validator accepts unchanged."""
    return (_EMAIL_FAST_PY.fullmatch(value) is not None and len(value) <= 254 and value.find("@") < 64
            and "--" not in value and value.rsplit(".", 1)[-1] not in _SPECIAL_TLDS)


def validate_email_value(value: str) -> str | None:
    """email-validator's normalised, lower-cased address, or None when invalid."""
    from email_validator import EmailNotValidError, validate_email

    try:
        return validate_email(value, check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        return None


@dataclass(frozen=True)
class ValueMap:
    """Name of a temp table ``(raw VARCHAR, norm VARCHAR)`` and how many distinct raws were invalid."""

    table: str
    invalid: int


def _new_values(con: duckdb.DuckDBPyConnection, values_sql: str, table: str) -> str:
    """Create ``table`` (raw, norm) if needed; return a query of the distinct raws not in it yet."""
    con.execute(f"CREATE TEMP TABLE IF NOT EXISTS {table} (raw VARCHAR, norm VARCHAR)")
    return (f"SELECT DISTINCT raw FROM ({values_sql}) v WHERE NULLIF(trim(raw), '') IS NOT NULL"
            f" AND NOT EXISTS (SELECT 1 FROM {table} m WHERE m.raw = v.raw)")


def _invalid(con: duckdb.DuckDBPyConnection, table: str) -> ValueMap:
    return ValueMap(table, con.execute(f"SELECT count(*) FROM {table} WHERE norm IS NULL").fetchall()[0][0])


def email_map(con: duckdb.DuckDBPyConnection, values_sql: str, table: str) -> ValueMap:
    """Add each distinct raw email of ``values_sql`` (a query with one column ``raw``) to the temp
    table ``table`` (raw, norm) with its normalised form (NULL when invalid). Safe to call again
    with more values: only new ones are validated."""
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _email_new AS
        SELECT raw, e, CASE WHEN {email_fast_sql('e')} THEN e END AS norm
        FROM (SELECT raw, lower(trim(raw)) AS e FROM ({_new_values(con, values_sql, table)}))""")
    slow = con.execute("SELECT raw, e FROM _email_new WHERE norm IS NULL").fetchall()
    if slow:
        import pyarrow as pa

        con.register("_email_fixed", pa.table({"raw": [r for r, _ in slow],
                                               "norm": [validate_email_value(e) for _, e in slow]}))
        con.execute("UPDATE _email_new t SET norm = f.norm FROM _email_fixed f WHERE t.raw = f.raw")
        con.unregister("_email_fixed")
    con.execute(f"INSERT INTO {table} SELECT raw, norm FROM _email_new")
    con.execute("DROP TABLE _email_new")
    return _invalid(con, table)


# ---------------------------------------------------------------------------------------------- phones

def phone_e164(value: str, region: str | None) -> str | None:
    """E.164 form of a phone number, or None when it cannot be parsed or is not a possible number."""
    import phonenumbers

    try:
        num = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(num):
        return None
    return phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)


_SHAPE_MIN = 8  # shapes with fewer distinct values are parsed value by value


def _template(digits: str, e164: str | None) -> tuple[str, int] | None:
    """(prefix, n): e164 == prefix + digits[n:] when the output keeps a suffix of the input."""
    if e164 is None:
        return None
    body = e164[1:]
    for n in range(len(digits) + 1):
        tail = digits[n:]
        if body.endswith(tail) and len(body) - len(tail) <= 4:
            return "+" + body[: len(body) - len(tail)], n
    return None


def phone_map(con: duckdb.DuckDBPyConnection, values_sql: str, table: str, region: str | None) -> ValueMap:
    """Like :func:`email_map` for phones: each new distinct raw → E.164 (NULL when invalid)."""
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _phone_new AS
        SELECT raw, d, CAST(NULL AS VARCHAR) AS norm,
               (starts_with(d, '+') OR starts_with(d, '00'))::INT || ':' || length(d) || ':' || left(ltrim(d, '+'), 4) AS shape
        FROM (SELECT raw, regexp_replace(trim(raw), '[\\s\\x{{00A0}}\\x{{202F}}().\\-/]', '', 'g') AS d
              FROM ({_new_values(con, values_sql, table)}))""")
    # Per shape, parse the smallest and largest value; when both follow the same template, apply it.
    shapes = con.execute("""SELECT shape, count(*), min(d), max(d) FROM _phone_new
                            WHERE regexp_full_match(d, '\\+?[0-9]{5,17}') GROUP BY shape""").fetchall()
    rules: list[tuple[str, str, int]] = []
    for shape, n, lo, hi in shapes:
        if n < _SHAPE_MIN:
            continue
        t_lo = _template(lo.lstrip("+"), phone_e164(lo, region))
        if t_lo is not None and t_lo == _template(hi.lstrip("+"), phone_e164(hi, region)):
            rules.append((shape, t_lo[0], t_lo[1]))
    import pyarrow as pa

    if rules:
        con.register("_phone_rules", pa.table({"shape": [r[0] for r in rules], "prefix": [r[1] for r in rules],
                                               "skip": [r[2] for r in rules]}))
        con.execute("""UPDATE _phone_new t SET norm = r.prefix || substr(ltrim(t.d, '+'), r.skip + 1)
                       FROM _phone_rules r WHERE t.shape = r.shape""")
        con.unregister("_phone_rules")
    slow = con.execute("SELECT raw FROM _phone_new WHERE norm IS NULL").fetchall()
    if slow:
        con.register("_phone_fixed", pa.table({"raw": [r for (r,) in slow],
                                               "norm": [phone_e164(r, region) for (r,) in slow]}))
        con.execute("UPDATE _phone_new t SET norm = f.norm FROM _phone_fixed f WHERE t.raw = f.raw")
        con.unregister("_phone_fixed")
    con.execute(f"INSERT INTO {table} SELECT raw, norm FROM _phone_new")
    con.execute("DROP TABLE _phone_new")
    return _invalid(con, table)


# ---------------------------------------------------------------------------------------------- one value

_TRIM = "".join(map(chr, TRIMMED_SPACES))


def normalize_email(value: str | None) -> str | None:
    """Python twin of :func:`email_map` for one value (API and webhook contacts): trimmed like SQL
    ``trim()``, lower-cased and validated; None when empty or invalid."""
    email = (value or "").strip(_TRIM).lower()
    if not email:
        return None
    return email if is_plain_email(email) else validate_email_value(email)


def normalize_phone(value: str | None, region: str | None) -> str | None:
    """Python twin of :func:`phone_map` for one value: E.164, None when empty or not a possible number."""
    if not (value or "").strip(_TRIM):
        return None
    return phone_e164(value, region)
