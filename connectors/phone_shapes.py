"""The shapes of phone values (:func:`connectors.email_phone.phone_map`'s fast path) whose values phonenumbers does
not all treat alike after the country code: a trunk prefix or carrier code stripped from some and kept in others, or
the region's own country code typed with no lead taken for one in some. Those shapes are parsed value by value.
"""

from __future__ import annotations

import duckdb

from .normalize import lit

_SHAPE_MIN = 8  # shapes with fewer distinct values are parsed value by value


def _shapes(con: duckdb.DuckDBPyConnection, key: str = "NULL", where: str = "TRUE") -> list[tuple]:
    """Each shape of ``_phone_new``'s well-formed values: (shape, count, smallest, largest, whether the values'
    ``key`` (SQL: :func:`_trunk_cases`) differ)."""
    return con.execute(f"""SELECT shape, count(*), min(d), max(d),
                                  min(k) IS DISTINCT FROM max(k) OR count(k) NOT IN (0, count(*))
                           FROM (SELECT shape, d, {key} AS k FROM _phone_new
                                 WHERE regexp_full_match(d, '\\+?[0-9]{{5,17}}') AND {where})
                           GROUP BY shape""").fetchall()


def _trunk_rule(meta) -> tuple[str, str] | None:
    """(the national prefix phonenumbers strips, as a regular expression; the national number pattern that decides
    whether it does) of a region's metadata, or None when it strips none."""
    if meta is None or not meta.national_prefix_for_parsing:
        return None
    general = meta.general_desc.national_number_pattern if meta.general_desc else None
    return meta.national_prefix_for_parsing, general or ".*"


def _country_rule(cc: int) -> tuple[str, str] | None:
    """:func:`_trunk_rule` of country code ``cc``'s main region: what is stripped after ``+cc``."""
    import phonenumbers
    from phonenumbers import PhoneMetadata

    return _trunk_rule(PhoneMetadata.metadata_for_region_or_calling_code(
        cc, phonenumbers.region_code_for_country_code(cc)))


def _country_code(shape: str) -> int | None:
    """The country code a shape's four digits begin with after its lead (``+``, an international prefix, ``00``)."""
    import phonenumbers

    lead, _, digits = shape.split(":")
    return next((int(digits[:k]) for k in (1, 2, 3) if int(digits[:k]) in phonenumbers.COUNTRY_CODE_TO_REGION_CODE),
                None) if lead else None


def _trunk_key(national: str, prefix: str, general: str) -> str:
    """SQL: the trunk prefix ``prefix`` matches at the start of ``national`` and whether ``national`` fits
    ``general`` with it and without it (1/0 each); NULL where it does not match."""
    starts = lit(f"^(?:{prefix})")
    fits = " || ".join(f"regexp_full_match({n}, {lit(general)})::INT" for n in (national, _after(national, prefix)))
    return f"CASE WHEN regexp_matches({national}, {starts}) THEN regexp_extract({national}, {starts}) || {fits} END"


def _after(national: str, prefix: str) -> str:
    """SQL: ``national`` without what ``prefix`` matches at its start."""
    return f"substr({national}, length(regexp_extract({national}, {lit(f'^(?:{prefix})')})) + 1)"


def _own_cc_key(meta) -> str | None:
    """SQL of a national value's (no lead) key when it begins with the region's own country code, which
    phonenumbers takes for one only when the number does not fit the region's pattern and the rest does (after a
    trunk prefix stripped), or the number is too long: whether each fits, and the trunk keys (:func:`_trunk_key`)
    of the two strips it then makes (``375 888…`` under BY loses ``8`` twice). NULL when it does not begin so (RU
    ``79…``: the same key for every value of a shape, so such shapes are not read value by value)."""
    general = meta.general_desc.national_number_pattern if meta is not None and meta.general_desc else None
    if not general:
        return None
    cc = str(meta.country_code)
    national = f"substr(d, {len(cc) + 1})"
    own, second = _trunk_rule(meta), _country_rule(meta.country_code)
    first, stripped = "NULL", national
    if own:
        match, fits, rest = lit(f"^(?:{own[0]})"), lit(general), _after(national, own[0])
        first = _trunk_key(national, own[0], general)
        stripped = (f"(CASE WHEN regexp_matches({national}, {match}) AND NOT (regexp_full_match({national}, {fits})"
                    f" AND NOT regexp_full_match({rest}, {fits})) THEN {rest} ELSE {national} END)")
    again = _trunk_key(stripped, *second) if second else "NULL"
    fit = " || ".join(f"regexp_full_match({n}, {lit(general)})::INT" for n in ("d", stripped))
    return (f"CASE WHEN starts_with(d, '{cc}') THEN {fit} || coalesce({first}, '-') || coalesce({again}, '-')"
            f" END")


def _trunk_cases(own: tuple[str, str] | None, by_cc: dict[int, tuple[str, str]], own_cc: str | None = None) -> str:
    """SQL of a value's trunk key: what decides phonenumbers' stripping of a national (trunk) prefix after the
    country code (``by_cc``; typed after a lead) or at the start of a national number (``own``, the region's): the
    prefix its pattern matches, and whether the national number fits the country's number pattern with it and
    without it (phonenumbers keeps a prefix whose removal would leave no valid-looking number, and that pattern sees
    every digit); NULL where no prefix matches (``+7 9…`` under RU) or no rule applies. A national value (no lead)
    that begins with the region's own country code adds ``own_cc`` (:func:`_own_cc_key`)."""
    after_lead = "substr(d, length(lead) + 1)"
    national = _trunk_key("d", *own) if own else None
    if own_cc:  # '-' and '/' stand for "no prefix matched", "not the country code": never a key's NULL
        national = f"coalesce({national or 'NULL'}, '-') || coalesce({own_cc}, '/')"
    cases = [f"WHEN lead = '' THEN {national}"] if national else []
    for cc, rule in sorted(by_cc.items()):
        national_cc = f"substr({after_lead}, {len(str(cc)) + 1})"
        cases.append(f"WHEN lead <> '' AND starts_with({after_lead}, '{cc}') THEN {_trunk_key(national_cc, *rule)}")
    return f"CASE {' '.join(cases)} END" if cases else "NULL"


def _mixed_shapes(con: duckdb.DuckDBPyConnection, region: str | None) -> tuple[list[tuple], set[str]]:
    """``_phone_new``'s shapes (:func:`_shapes`), and the large ones whose values phonenumbers does not all treat
    alike after the country code: a trunk prefix its pattern matches in some and not others, another one, or one
    it strips from some and keeps in others. ``+375 80 29…`` and ``+375 88…`` share the four digits ``3758``;
    ``80?`` takes ``80`` from the first and ``8`` from the second, and of ``+375 88…`` numbers some lose the ``8``
    and some keep it: a shape's two representatives could agree and the rest not (the value-by-value path is the
    reference). The region's own rules (its national numbers', its country code's) are checked in the shapes' one
    scan; another country code's large shapes, in a second scan of them alone."""
    from phonenumbers import PhoneMetadata

    meta = PhoneMetadata.metadata_for_region(region) if region else None
    home = {meta.country_code: rule} if meta is not None and (rule := _country_rule(meta.country_code)) else {}
    shapes = _shapes(con, _trunk_cases(_trunk_rule(meta), home, _own_cc_key(meta)))
    mixed = {shape for shape, n, _, _, differ in shapes if n >= _SHAPE_MIN and differ}
    others = {shape: cc for shape, n, _, _, _ in shapes
              if n >= _SHAPE_MIN and (cc := _country_code(shape)) and cc not in home and _country_rule(cc)}
    if others:
        listed = ", ".join(map(lit, others))
        again = _shapes(con, _trunk_cases(None, {cc: _country_rule(cc) for cc in set(others.values())}),
                        f"shape IN ({listed})")
        mixed |= {shape for shape, _, _, _, differ in again if differ}
    return shapes, mixed
