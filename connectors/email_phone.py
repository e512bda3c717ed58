"""E-mails and phones: validated on DISTINCT values in DuckDB, plus one-value Python twins.

:func:`email_map` and :func:`phone_map` fill a temp table ``(raw, norm)`` for a file export's distinct values,
each with a fast path:

* emails: a conservative SQL regex accepts the plain-ASCII common case; everything else goes through
  ``email-validator`` (``check_deliverability=False``). The regex accepts a strict subset of what
  email-validator accepts (checked against a corpus in the tests).
* phones: values are reduced to ``[+]digits``; values sharing a *shape* (a lead: ``+``, the region's international
  prefix or ``00``; length; the first four digits after the lead: a whole country code) are parsed the same way by
  ``phonenumbers``, so two representatives of each shape are parsed and, when both agree, the rest of the shape is
  rewritten in SQL. Shapes that disagree, small shapes, shapes whose values phonenumbers does not all treat alike
  after the country code (a trunk prefix stripped from some, or the region's own country code typed with no lead
  taken for one in some: :func:`connectors.phone_shapes._mixed_shapes`), and ``00`` typed where ``00``
  is not the region's international prefix (:func:`phone_e164` decides those by validity) are parsed value by
  value.

:func:`normalize_email` and :func:`normalize_phone` do the same for one value (API and webhook contacts).
The other columns of a file export are normalised by the SQL builders of :mod:`connectors.normalize`.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

import duckdb

from .normalize import TRIMMED_SPACES, lit
from .phone_shapes import _SHAPE_MIN, _mixed_shapes

# phonenumbers, email_validator and pyarrow are imported where used: a file export without emails or
# phones never loads them (together about 0.1 s of every command's start-up).


# ---------------------------------------------------------------------------------------------- emails

_TRIM = "".join(map(chr, TRIMMED_SPACES))
#: what is trimmed around an address: SQL ``trim()``'s spaces, and the tab, line breaks, zero-width characters and
#: BOM an export's cell or a paste leaves there (never part of an address: with them it was invalid)
EMAIL_BLANKS = _TRIM + "\t\n\r\x0b\x0c\u200b\u200c\u200d\u2060\ufeff"

_EMAIL_FAST_RE = (r"[a-z0-9]+([._+-][a-z0-9]+)*@([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,24}")
#: RFC 5321's limit before the @ (email-validator enforces it only in its ``strict`` mode; the ESPs refuse longer)
LOCAL_PART_MAX = 64
_SPECIAL_TLDS = ("arpa", "invalid", "local", "localhost", "onion", "test")


def email_fast_sql(col: str) -> str:
    """TRUE when the (already lower-cased, trimmed) value is a plain-ASCII address email-validator accepts."""
    tlds = ", ".join(lit(t) for t in _SPECIAL_TLDS)
    return (f"(regexp_full_match({col}, '{_EMAIL_FAST_RE}') AND length({col}) <= 254"
            f" AND strpos({col}, '@') <= {LOCAL_PART_MAX + 1} AND NOT contains({col}, '--')"
            f" AND NOT list_contains([{tlds}], split_part({col}, '.', -1)))")


_EMAIL_FAST_PY = re.compile(_EMAIL_FAST_RE)


def is_plain_email(value: str) -> bool:
    """Python twin of :func:`email_fast_sql`: the plain-ASCII case email-validator accepts unchanged."""
    return (_EMAIL_FAST_PY.fullmatch(value) is not None and len(value) <= 254 and value.find("@") <= LOCAL_PART_MAX
            and "--" not in value and value.rsplit(".", 1)[-1] not in _SPECIAL_TLDS)


def lower_like_sql(value: str) -> str:
    """``value`` lower-cased as DuckDB's ``lower()`` does (one character → one character): Python's ``str.lower``
    differs only in turning İ (U+0130) into ``i`` + U+0307 and a word-final Σ into ς, so an address typed so would
    get one key from a file export and another from a CRM or webhook. A final ς typed in lower case stays ς: in a
    domain, ς and σ are two names (IDNA 2008), and the key is the address sent. The file exports' slow path
    (:func:`validate_email_value`) ends here too: the SQL and Python keys agree."""
    if value.isascii():
        return value.lower()
    return "".join("i" if ch == "\u0130" else ch.lower() for ch in value)


_LATIN = re.compile(r"[a-zA-Z\u00c0-\u024f]")
_CYRILLIC = re.compile(r"[\u0400-\u052f]")


def mixed_script(address: str) -> bool:
    """Whether a label of the address (a part between dots, on either side of the @) mixes Latin and Cyrillic
    letters: ``ivаn@mail.ru`` typed with a Cyrillic ``а`` is a typo that no mailbox answers to, while a fully
    Cyrillic ``иван@почта.рф`` is a real address."""
    return any(_LATIN.search(label) and _CYRILLIC.search(label) for label in re.split(r"[.@]", address))


def validate_email_value(value: str) -> str | None:
    """email-validator's normalised, lower-cased address, or None when invalid (also when more than
    :data:`LOCAL_PART_MAX` characters come before the @: the ESPs refuse it, so it would fail every run; and when
    a label mixes Latin and Cyrillic letters: :func:`mixed_script`). Every address that is not plain ASCII,
    from a file (:func:`email_map`) or one value (:func:`normalize_email`), is decided here, NFKC-folded first:
    ``ａｎｎａ@ｘ．ｃｏｍ`` typed with a Chinese or Japanese keyboard's fullwidth letters is anna@x.com (email-validator
    folds NFC only: it was a second customer beside anna@x.com), as are a ligature's letters (``ﬁ`` is ``fi``)."""
    from email_validator import EmailNotValidError, validate_email

    value = unicodedata.normalize("NFKC", value).strip(EMAIL_BLANKS)
    try:
        found = validate_email(value, check_deliverability=False)
    except EmailNotValidError:
        return None
    if len(found.local_part) > LOCAL_PART_MAX or mixed_script(found.normalized):
        return None
    return lower_like_sql(found.normalized)


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
                                               "norm": [validate_email_value(e.strip(EMAIL_BLANKS))
                                                        for _, e in slow]}))
        con.execute("UPDATE _email_new t SET norm = f.norm FROM _email_fixed f WHERE t.raw = f.raw")
        con.unregister("_email_fixed")
    con.execute(f"INSERT INTO {table} SELECT raw, norm FROM _email_new")
    con.execute("DROP TABLE _email_new")
    return _invalid(con, table)


# ---------------------------------------------------------------------------------------------- phones

#: the extension words phonenumbers does not know that Russian offices write (``доп.``, ``вн.``): read as its ``доб``
_EXTRA_EXT_WORDS = re.compile(r"(?i)(?<![^\W\d_])(?:доп|вн)\.?\s*(?=\d)")
#: the longest extension: office exchanges number their lines with 2 to 5 digits, rarely 6; seven digits and more
#: after ``доп.`` (additional) or ``доб.`` are a second number (a city number has 7 digits, a mobile 9 or 10), and
#: the value, two numbers in one field, is invalid (phonenumbers takes up to 20 digits after ``доб``/``ext``)
EXTENSION_MAX = 6


def phone_e164(value: str, region: str | None) -> str | None:
    """E.164 form of a phone number, or None when it cannot be parsed or is not a possible number, or is possible
    only with its country's trunk prefix kept (:func:`kept_trunk_prefix`) and not valid: under RU, ``8 (902)
    001-58-3``, a digit short, kept its 8 (a possible +78902001583, which no Russian number is). Other possible
    numbers phonenumbers does not know as valid are kept: new ranges (an operator's new prefix) appear before the
    library knows them. An extension
    (``доб. 101``, ``доп. 101``, ``вн. 101``, ``ext. 101``, ``x101``, ``#101``, ``;ext=101``) is kept, RFC 3966 style:
    ``+998712000000;ext=101``; two extensions of one office line are two people's phones. A number typed
    with ``00``, the international prefix of most of the world, where ``region`` dials out otherwise (Russia's and
    Kazakhstan's ``8 10``, the US ``011``; or no region) is the international number (``00998901234567`` under RU:
    +998901234567, not +700998901234567) when that is a possible number, unless ``region`` reads it as a valid
    number of its own (Japan's ``0077…``) or read it through its own international prefix, 00 and a carrier code
    (Colombia's ``005``: ``00556144572981`` is +56144572981)."""
    import phonenumbers

    num = possible_number(value, region)
    if num is None:
        return None
    e164 = phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)
    if e164.startswith(kept_trunk_prefix(num.country_code)) and not phonenumbers.is_valid_number(num):
        return None
    return f"{e164};ext={num.extension}" if num.extension else e164


@functools.cache
def kept_trunk_prefix(cc: int) -> tuple[str, ...]:
    """The E.164 beginnings of country code ``cc``'s numbers whose national part starts with the country's trunk
    (national) prefix: ``("+78",)`` for +7 (RU and KZ dial 8 before a national number), ``("+440",)``; none for +998
    (Uzbekistan dials none). phonenumbers strips the prefix only when the rest still fits the country's numbers, so
    one it kept is a digit missing (or a number the library knows: RU's 8 800 toll-free numbers are valid)."""
    import phonenumbers
    from phonenumbers import PhoneMetadata

    meta = PhoneMetadata.metadata_for_region_or_calling_code(cc, phonenumbers.region_code_for_country_code(cc))
    return (f"+{cc}{meta.national_prefix}",) if meta is not None and meta.national_prefix else ()


def possible_number(value: str, region: str | None):
    """The phonenumbers number of :func:`phone_e164`'s value when it is a possible one, else None."""
    import phonenumbers

    def parse(text: str, default: str | None):
        try:
            return phonenumbers.parse(text, default, keep_raw_input=True)
        except phonenumbers.NumberParseException:
            return None

    value = _EXTRA_EXT_WORDS.sub("доб ", value)
    num = parse(value, region)
    digits = re.sub(r"[^\d+]", "", value)
    if num is not None and num.extension and digits.endswith(num.extension):
        digits = digits[: -len(num.extension)]  # the number's own digits (00 read again below: without them)
    # only a number the library read as a national one: one it read through the region's own international prefix
    # (Colombia's 005, Korea's 001: 00 and a carrier digit) is already the international number
    if digits.startswith("00") and not dials_out_with_00(region) and (num is None or (
            num.country_code_source == phonenumbers.CountryCodeSource.FROM_DEFAULT_COUNTRY
            and not phonenumbers.is_valid_number(num))):
        # the text with its first two zeros read as +: an extension stays one (no region: num is None, and its
        # digits, still in ``digits``, would be taken for the number's)
        plus = parse(re.sub(r"^[^\d+]*0[^\d+]*0", "+", value, count=1), None)
        if plus is not None and phonenumbers.is_possible_number(plus):
            plus.extension = plus.extension or (num.extension if num is not None else None)
            num = plus
    if num is None or num.extension and len(num.extension) > EXTENSION_MAX:
        return None  # a second number after доп./доб.: two numbers in one value
    return num if phonenumbers.is_possible_number(num) else None


@functools.cache
def dials_out_with_00(region: str | None) -> bool:
    """Whether ``00`` is ``region``'s international prefix (phonenumbers then reads it so itself): UZ, KG, DE, …;
    not RU, KZ, BY, TJ (``8 10``), the US (``011``), JP (``010``)."""
    idd = international_prefix(region)
    return bool(idd and re.fullmatch(idd, "00"))


@functools.cache
def international_prefix(region: str | None) -> str | None:
    """The regular expression of ``region``'s international prefix in phonenumbers' metadata (``810``, ``011``,
    ``00(?:4(?:[14]4|56)|[579])``), or None."""
    from phonenumbers import PhoneMetadata

    meta = PhoneMetadata.metadata_for_region(region) if region else None
    return meta.international_prefix if meta and meta.international_prefix else None


def _possible_e164(value: str, region: str | None) -> str | None:
    """E.164 of :func:`possible_number` (valid or not): what a shape's template is read from."""
    import phonenumbers

    num = possible_number(value, region)
    return None if num is None else phonenumbers.format_number(num, phonenumbers.PhoneNumberFormat.E164)


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
    """Like :func:`email_map` for phones: each new distinct raw → E.164 (NULL when invalid). A shape's lead is
    ``+``; else the region's international prefix as phonenumbers strips it (the first match, when no ``0`` follows:
    ``810`` under RU, ``011`` under US, ``005`` under CO), so that the four digits after it hold a whole country
    code as after ``+``; else ``00`` (typed, not read as a prefix); else nothing."""
    idd = international_prefix(region)
    used = (f"nullif(regexp_extract(d, {lit('^(' + idd + ')')}, 1), '')" if idd else "NULL")
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _phone_new AS
        SELECT raw, d, norm, lead, lead || ':' || length(d) || ':' || left(substr(d, length(lead) + 1), 4) AS shape
        FROM (SELECT raw, d, CAST(NULL AS VARCHAR) AS norm,
                     CASE WHEN starts_with(d, '+') THEN '+'
                          WHEN substr(d, length({used}) + 1, 1) NOT IN ('', '0') THEN {used}
                          WHEN starts_with(d, '00') THEN '00' ELSE '' END AS lead
              FROM (SELECT raw, regexp_replace(trim(raw), '[\\s\\x{{00A0}}\\x{{202F}}().\\-/]', '', 'g') AS d
                    FROM ({_new_values(con, values_sql, table)})))""")
    # Per shape, parse the smallest and largest value; when both follow the same template, apply it.
    shapes, mixed = _mixed_shapes(con, region)
    rules: list[tuple[str, str, int]] = []
    kept: set[str] = set()
    for shape, n, lo, hi, _ in shapes:
        if n < _SHAPE_MIN or shape.startswith("00:") and not dials_out_with_00(region) or shape in mixed:
            continue  # few values; 00 typed and not read as a prefix; a trunk prefix not alike: value by value
        t_lo = _template(lo.lstrip("+"), _possible_e164(lo, region))
        if t_lo is not None and t_lo == _template(hi.lstrip("+"), _possible_e164(hi, region)):
            rules.append((shape, t_lo[0], t_lo[1]))
            kept.update(kept_trunk_prefix(possible_number(lo, region).country_code))
    import pyarrow as pa

    if rules:
        con.register("_phone_rules", pa.table({"shape": [r[0] for r in rules], "prefix": [r[1] for r in rules],
                                               "skip": [r[2] for r in rules]}))
        con.execute("""UPDATE _phone_new t SET norm = r.prefix || substr(ltrim(t.d, '+'), r.skip + 1)
                       FROM _phone_rules r WHERE t.shape = r.shape""")
        con.unregister("_phone_rules")
        if kept:  # a trunk prefix kept: valid or not, value by value (a template reads possible numbers alike)
            starts = " OR ".join(f"starts_with(norm, {lit(k)})" for k in sorted(kept))
            con.execute(f"UPDATE _phone_new SET norm = NULL WHERE {starts}")
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

def normalize_email(value: str | None) -> str | None:
    """Python twin of :func:`email_map` for one value (API and webhook contacts): trimmed of
    :data:`EMAIL_BLANKS`, lower-cased like SQL ``lower()`` and validated; None when empty or invalid."""
    email = lower_like_sql((value or "").strip(EMAIL_BLANKS))
    if not email:
        return None
    return email if is_plain_email(email) else validate_email_value(email)


def normalize_phone(value: str | None, region: str | None) -> str | None:
    """Python twin of :func:`phone_map` for one value: E.164, None when empty or not a possible number."""
    if not (value or "").strip(_TRIM):
        return None
    return phone_e164(value, region)
