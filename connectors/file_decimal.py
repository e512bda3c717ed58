"""The decimal mark of each number column of an export file, decided over the whole column.

A first guess comes from the column's first 2 000 values (:func:`connectors.normalize.sniff_decimal`). One query
over the whole column then counts the values that can be read one way only (:func:`connectors.normalize.decimal_vote`),
classifying only the few values that might contradict the guess, so a clean column costs one scan of the file:

* the majority of those values decides, so a stray value or a first 2 000 values that are all ambiguous
  (``1.234``) do not decide the reading of the rest;
* when neither reading is a stray (the smaller side holds :data:`CONFLICT_SHARE` of them and :data:`MIN_SIDE`
  values or more) and the column holds ambiguous values whose number depends on the mark, the read stops with an
  error naming the file, the column, one value of each reading and one ambiguous value, and ``[source] decimal``;
* a majority that would read ambiguous values against the column's default (money: ``1.234`` is a thousand;
  a quantity: a decimal) must weigh: :data:`WEIGHT_SHARE` of those ambiguous values and :data:`MIN_SIDE` values
  (or as many as those, when fewer) or more, else the same error. :data:`WEIGHT_CAP` values are enough, however
  many the ambiguous ones, once :data:`MIN_SIDE` of them show the reading they give them (*shaped*): in money,
  three digits after the mark (8 000 prices below 1 such as ``0.523``, or ``1037.000``, make a million ``12.345``
  read as prices); in a quantity, the other mark grouping thousands (``1.234,5``). A value such as ``12.5`` says
  only which mark is the decimal one, not that ``150.000`` has three decimals: 50 of them alone among 100 000
  ``150.000`` stop the read;
* a column without such values keeps the first guess (money: ``1,234`` groups thousands; a quantity takes the
  mark most deciding money columns read, :func:`_deciding`, else reads it as a decimal), unless its ambiguous
  values go against the other columns (:func:`_unsettled`): a quantity's or a money column's when as many money
  columns read each mark, a money column's ``1,500`` when most read ``,`` as the decimal mark: an error naming the
  file, the column, a value and the other columns' marks.
"""

from __future__ import annotations

import logging
import re

import duckdb

from . import normalize as nz
from .counts import agrees, counted
from .errors import BadFileError

log = logging.getLogger(__name__)

#: the smaller side's share of the values read one way only from which two readings conflict (below: strays)
CONFLICT_SHARE = 0.05
#: the fewest values read one way only that make a side of a column: a conflict, or a mark deciding ambiguous values
MIN_SIDE = 3
#: the least share of the ambiguous values it reads against the default that a deciding side must have
WEIGHT_SHARE = 0.02
#: the most *shaped* values (:func:`_shaped`) a deciding side needs, however many ambiguous values it reads
WEIGHT_CAP = 50
SAMPLE = 2000
#: how many times over the deciding values of the slices the typed fast path reads must clear the weight rule
#: for it to read their column without the whole column's vote (:func:`typed_reads_as_text`)
MARGIN = 5


def column_decimals(con: duckdb.DuckDBPyConnection, path: str, src: str, col: dict[str, str],
                    headers: dict[str, str], fields: list[str]) -> dict[str, nz.Decimal_]:
    """field → decimal mark for the number ``fields`` read as text from ``src`` (``col``: field → its VARCHAR
    SQL, ``headers``: field → the file's header); BadFileError when a column's readings truly conflict."""
    if not fields:
        return {}
    samples = {f: [v for (v,) in con.execute(f"SELECT {col[f]} FROM {src} WHERE {col[f]} IS NOT NULL"
                                             f" LIMIT {SAMPLE}").fetchall()] for f in fields}
    guess = {f: nz.sniff_decimal(samples[f], money=f != "quantity") for f in fields}
    votes = _whole_column(con, src, col, guess)
    money = _deciding(votes, fields)
    settled = _settled(money)  # a quantity of 1,000 only: the money's mark decides (1,299.99 → a thousand units),
    # not the quantity rule (1.000 units)
    out: dict[str, nz.Decimal_] = {}
    for f in fields:
        v = votes[f]
        if not (v[","] or v["."]):
            if unsettled := _unsettled(v, money, f != "quantity"):
                raise BadFileError(_unsettled_error(con, path, src, col[f], headers[f], v, unsettled,
                                                    {headers[m]: mark for m, mark in money.items()
                                                     if settled in (None, mark)}))
            out[f] = nz.sniff_decimal(samples[f], money=f != "quantity", settled=settled if f == "quantity" else None)
            continue
        out[f] = _majority(v)
        if _stops(v, out[f], money=f != "quantity"):
            raise BadFileError(_conflict(con, path, src, col[f], headers[f], guess[f], v, f != "quantity",
                                         not _conflicts(v)))
        if out[f] != guess[f]:
            log.debug("%s: column %r: the whole column reads %r as the decimal mark, its first values %r",
                      path, headers[f], out[f], guess[f])
    return out


def _deciding(votes: dict[str, dict[str, int]], fields: list[str]) -> dict[str, nz.Decimal_]:
    """field → mark of the money columns that decide the file's decimal mark: those whose values read one way only
    with their mark number :data:`MIN_SIDE` or more (in a file where none has that many, the most any has), so a
    stray ``0.5`` discount among ``0`` ones beside ``1 500,00`` amounts decides nothing, as within a column."""
    sides = {f: max(votes[f][","], votes[f]["."]) for f in fields if f != "quantity"}
    least = min(MIN_SIDE, max(sides.values(), default=0))
    return {f: _majority(votes[f]) for f, n in sides.items() if n and n >= least}


def _settled(money: dict[str, nz.Decimal_]) -> nz.Decimal_ | None:
    """The mark most of the deciding money columns (:func:`_deciding`) read, None when as many read each mark (or
    none decides): ``1 500,00`` amounts and ``150,00`` prices settle ``,`` beside a percent discount ``7.5``."""
    marks = list(money.values())
    return None if marks.count(",") == marks.count(".") else max(",.", key=marks.count)  # type: ignore[return-value]


def _unsettled(votes: dict[str, int], money: dict[str, nz.Decimal_], is_money: bool) -> nz.Decimal_ | None:
    """The mark a column without a value read one way only (``votes``) reads its ambiguous values against, given
    the marks the money columns that decide (``money``: field → mark, :func:`_deciding`), or None. A quantity's
    ``1,000`` follows the mark most of them read (:func:`_settled`). A money column's ``1,500`` groups thousands,
    unless its mark is the file's decimal mark (the one most deciding money columns read): then it is 1.5 (three
    decimals) or 1 500 against the file's marks. When as many read each mark, which is meant nothing says, for a
    quantity's values as for a money column's (``45,990`` beside ``1 500,00`` amounts and ``7.5`` percent
    discounts: 45.99 or 45 990): the mark returned is ``,`` when some of its ambiguous values hold it, else ``.``."""
    mark = _settled(money)
    if money and mark is None:
        return ("," if votes["w,"] else ".") if votes["w"] else None
    return mark if is_money and mark and votes["w" + mark] else None


def _unsettled_error(con: duckdb.DuckDBPyConnection, path: str, src: str, v: str, header: str, votes: dict[str, int],
                     mark: nz.Decimal_, money: dict[str, nz.Decimal_]) -> str:
    """The error of a column none of whose values says its decimal mark, whose ambiguous values (``1,500``: with
    ``mark``) the file's other number columns (``money``: header → mark) do not settle (:func:`_unsettled`)."""
    (example,) = con.execute(f"SELECT min(v) FROM {voted_sql(src, v, mark, True)} WHERE vote = 'w{mark}'"
                             ).fetchone() or (None,)
    others = ", ".join(f"{h!r} reads {m!r} as the decimal mark" for h, m in money.items())
    n = votes["w" + mark]
    why = (f"the file's other number columns disagree ({others})" if len(set(money.values())) > 1 else
           f"the file's other number columns ({', '.join(map(repr, money))}) read {mark!r} as the decimal mark, which "
           f"gives it three decimals, where in money {example!r} alone groups thousands")
    return (f"{path}: column {header!r} has {n} {'values' if n != 1 else 'value'} such as {example!r}, which mean a "
            f"different number with each decimal mark, and none that says which it uses: {why}; set [source] "
            f"decimal = \",\" or \".\" to say which the file uses")


def typed_reads_as_text(con: duckdb.DuckDBPyConnection, src: str, field: str, v: str, values: list[str],
                        spread: list[str], mark: nz.Decimal_) -> bool:
    """Whether the typed fast path, reading ``field`` (``v``: its VARCHAR SQL over ``src``) with ``mark`` as the
    decimal mark, reads its ambiguous values as :func:`column_decimals` (the text path) would, not stopping.
    ``values``: the column's first :data:`SAMPLE` values; ``spread``: values from slices across the file
    (:func:`connectors.file_lines.spread_cells`). Decided without a scan when the first values are the whole
    column; when neither they nor the slices (some that stand for the file: ``[]`` else) hold an ambiguous value
    read against the default; when they show the capped weight (:func:`_outweighed`: counts in a part are at most
    the whole column's); or when the slices' deciding values clear :data:`WEIGHT_SHARE` of the ambiguous ones in
    the slices or the first values (the more) :data:`MARGIN` times over. Else the whole column is voted on as the
    text path votes (a ratio in the first values says little: 2 000 ``979.17`` then 200 000 ``150.000``)."""
    money = field != "quantity"
    first = _counts(values, money, mark)
    if len(values) < SAMPLE:
        return not _outweighed(first, mark, money)
    sliced = _counts(spread, money, mark)
    against_first, against_sliced = _against(first, mark, money), _against(sliced, mark, money)
    if spread and not (against_first or against_sliced):
        return True  # spread is [] when no slices stand for the file (Сумма_1 renamed, too few values)
    if max(first["s" + mark], sliced["s" + mark]) >= MIN_SIDE and max(first[mark], sliced[mark]) >= WEIGHT_CAP:
        return True
    against = max(against_first, against_sliced)  # the first values' block too
    if sliced[mark] >= max(MIN_SIDE, MARGIN * WEIGHT_SHARE * against):
        return True
    votes = _whole_column(con, src, {field: v}, {field: mark})[field]
    return _majority(votes) == mark and not _stops(votes, mark, money)


def _counts(values: list[str], money: bool, mark: nz.Decimal_ | None = None) -> dict[str, int]:
    """:func:`_totals` of ``values`` counted in Python (:func:`vote_key`; with ``mark``, a value of its usual shape,
    :func:`_clean_re`, is counted without classifying it, as the whole column's vote does)."""
    keys = {",": 0, "s,": 0, "w,": 0, ".": 0, "s.": 0, "w.": 0}
    clean = re.compile(_clean_re(mark, money), re.ASCII).fullmatch if mark else None
    for v in values:
        if clean is not None and clean(v):
            keys[mark] += 1  # type: ignore[index]
        elif (key := vote_key(v, money)) is not None:
            keys[key] += 1
    return _totals(keys)


def _against(votes: dict[str, int], mark: nz.Decimal_, money: bool) -> int:
    """The ambiguous values ``mark`` reads against the column's default (:func:`_outweighed`)."""
    return votes["w" + mark] if money else votes["w"] - votes["w" + mark]


def vote_key(value: str | None, money: bool) -> str | None:
    """What one value says of its column (:func:`_vote_sql` is its SQL twin): ``','`` / ``'.'`` read one way only,
    ``'s,'`` / ``'s.'`` read one way only and *shaped* (:func:`_shaped`), ``'w,'`` / ``'w.'`` ambiguous, or None."""
    if (vote := nz.decimal_vote(value)) is None:
        return None
    mark, sure = vote
    if not sure:
        return "w" + mark
    n = re.sub(r"[^0-9,.]", "", value or "").strip(",.")
    return "s" + mark if _shaped(n, mark, money) else mark


def _shaped(n: str, mark: nz.Decimal_, money: bool) -> bool:
    """Whether ``n`` (a value's digits and marks), read one way only with ``mark``, shows the reading ``mark``
    gives the column's ambiguous values: in money, its mark followed by three digits (``0.523``, ``1037.000``: the
    column prints three decimals); in a quantity, the other mark grouping thousands (``1.234,5``, ``1.234.567``)."""
    return bool(re.fullmatch(rf".*[{mark}][0-9]{{3}}", n)) if money else ("." if mark == "," else ",") in n


def _totals(keys: dict[str, int]) -> dict[str, int]:
    """The counts the rules read from the counts by :func:`vote_key`: ``','`` and ``'.'`` (shaped ones included),
    ``'s,'``, ``'s.'``, ``'w,'``, ``'w.'`` and ``'w'`` (every ambiguous value)."""
    return {**keys, ",": keys[","] + keys["s,"], ".": keys["."] + keys["s."], "w": keys["w,"] + keys["w."]}


def _majority(votes: dict[str, int]) -> nz.Decimal_:
    return "," if votes[","] > votes["."] else "."


def _stops(votes: dict[str, int], mark: nz.Decimal_, money: bool) -> bool:
    """Whether the column's ambiguous values cannot be read with ``mark`` (its majority): the readings conflict,
    the majority is too light (:func:`_outweighed`), or there is none: as many values read each mark (one
    ``12,50`` and one ``7.25``: ``1,234`` and ``1.234`` would be read as different numbers on a coin's toss)."""
    tied = votes[","] == votes["."]
    return bool(votes["w"]) and (tied or _conflicts(votes) or _outweighed(votes, mark, money))


def _conflicts(votes: dict[str, int]) -> bool:
    """Both readings have real weight: the smaller side is no stray."""
    side = min(votes[","], votes["."])
    return side >= MIN_SIDE and side >= CONFLICT_SHARE * (votes[","] + votes["."])


def _outweighed(votes: dict[str, int], mark: nz.Decimal_, money: bool) -> bool:
    """The values that decide ``mark`` are too few for the ambiguous values it reads against the default (money:
    those with ``mark`` itself become decimals; a quantity: those with the other mark become thousands): fewer
    than :data:`WEIGHT_SHARE` of them, or, once :data:`MIN_SIDE` of them are shaped, fewer than that share capped
    at :data:`WEIGHT_CAP` (30 ``1 105,000`` and 120 ``12,5`` read 10 000 ``99,900`` as prices; 50 ``12.5`` alone
    do not read 20 000 ``150.000`` as 150)."""
    against = _against(votes, mark, money)
    least = min(MIN_SIDE, against)
    need = WEIGHT_SHARE * against if votes["s" + mark] < MIN_SIDE else min(WEIGHT_SHARE * against, WEIGHT_CAP)
    return bool(against) and votes[mark] < max(least, need)


def _clean_re(mark: nz.Decimal_, money: bool) -> str:
    """A value :func:`vote_key` reads as decisive for ``mark`` and not shaped without classifying it: one ``mark``,
    a digit before it (in money the other mark grouping thousands may be there too: ``1.234,50 сум``, not ``0.,5``
    nor ``1.2.3,50``, which no documented form fits; in a quantity, where the other mark makes it shaped, other
    characters only) and one, two or four and more digits after it (and other characters, no mark). Between digits
    a space (or ``'``) only groups thousands: ``1 234,50``, not ``1 23,50`` nor ``1234 567,00`` (bad rows:
    :func:`connectors.amounts.bad_spaces`)."""
    after, other = "[^0-9,.]*", "." if mark == "," else ","
    inner = f"[^0-9,.{_SPACES}]*"  # between digits: no space
    spaced = f"|{after}[0-9]{{1,3}}([{_SPACES}]+[0-9]{{3}})+{inner}"
    grouped = f"|{after}[0-9]{{1,3}}([{other}][0-9]{{3}})+{inner}" if money else ""
    return (f"({after}([0-9]{inner})+{spaced}{grouped})[{mark}]{inner}(([0-9]{inner}){{1,2}}|([0-9]{inner}){{4,}})"
            f"{after}")


#: the thousands spaces of :mod:`connectors.amounts` as characters, for both Python's ``re`` and RE2 (``\\s`` spelled
#: out: RE2's is ASCII, Python's Unicode)
_SPACES = "\\t\\n\\f\\r \u00a0\u202f\u2009'"


def _raw_vote_sql(v: str, mark: nz.Decimal_, money: bool) -> str:
    """The first step of :func:`vote_key` in SQL: ``mark`` for a value of the first guess's usual shape (one regular
    expression: :func:`_clean_re`), else ``'k'`` and what :func:`connectors.normalize.decimal_vote_sql` says
    (``'k,'``, ``'kw.'``, …), NULL without a mark."""
    return (f"CASE WHEN regexp_full_match({v}, {nz.lit(_clean_re(mark, money))}) THEN '{mark}'"
            f" WHEN contains({v}, ',') OR contains({v}, '.') THEN 'k' || {nz.decimal_vote_sql(v)} END")


def _vote_sql(r: str, v: str, money: bool) -> str:
    """:func:`vote_key` in SQL from ``r``, the :func:`_raw_vote_sql` of the value ``v`` (computed once, in an inner
    query): only a classified value read one way only is looked at again (:func:`_shaped`)."""
    n = f"trim(regexp_replace({v}, '[^0-9,.]', '', 'g'), ',.')"
    shaped = {m: f"regexp_full_match({n}, '.*[{m}][0-9]{{3}}')" if money else f"contains({n}, '{o}')"
              for m, o in ((",", "."), (".", ","))}
    return ("CASE" + "".join(f" WHEN {r} = 'k{m}' THEN CASE WHEN {shaped[m]} THEN 's{m}' ELSE '{m}' END"
                             for m in ",.") + f" WHEN starts_with({r}, 'k') THEN substr({r}, 2) ELSE {r} END")


def voted_sql(src: str, v: str, mark: nz.Decimal_, money: bool) -> str:
    """``(SELECT v, vote FROM …)``: each value ``v`` of ``src`` (an SQL expression over it), its :func:`vote_key`."""
    return (f"(SELECT v, {_vote_sql('r', 'v', money)} AS vote FROM"
            f" (SELECT v, {_raw_vote_sql('v', mark, money)} AS r FROM (SELECT {v} AS v FROM {src})))")


def _whole_column(con: duckdb.DuckDBPyConnection, src: str, col: dict[str, str],
                  guess: dict[str, nz.Decimal_]) -> dict[str, dict[str, int]]:
    """field → {',': n, '.': n, 'w': n, 'w,': n, 'w.': n}: the values of the column read one way only with each
    mark, and the ambiguous ones (all, and those with each mark), in one scan of ``src``."""
    text = ", ".join(f"{col[f]} AS c{i}" for i, f in enumerate(guess))
    raw = ", ".join(f"c{i}, {_raw_vote_sql(f'c{i}', mark, f != 'quantity')} AS r{i}"
                    for i, (f, mark) in enumerate(guess.items()))
    votes = ", ".join(f"{_vote_sql(f'r{i}', f'c{i}', f != 'quantity')} AS vote{i}" for i, f in enumerate(guess))
    keys = (",", "s,", "w,", ".", "s.", "w.")
    aggs = ", ".join(f"count(*) FILTER (WHERE vote{i} = '{m}')" for i in range(len(guess)) for m in keys)
    row = con.execute(f"SELECT {aggs} FROM (SELECT {votes} FROM (SELECT {raw} FROM (SELECT {text} FROM {src})))"
                      ).fetchall()[0]
    return {f: _totals(dict(zip(keys, row[6 * i:6 * i + 6]))) for i, f in enumerate(guess)}


def _conflict(con: duckdb.DuckDBPyConnection, path: str, src: str, v: str, header: str, guess: nz.Decimal_,
              votes: dict[str, int], money: bool, few: bool = False) -> str:
    """The error of a column whose readings conflict, naming the smallest value of each kind."""
    first = dict(con.execute(f"SELECT CASE WHEN vote LIKE 'w%' THEN 'w' ELSE right(vote, 1) END, min(v) FROM"
                             f" {voted_sql(src, v, guess, money)} WHERE vote IS NOT NULL GROUP BY 1").fetchall())
    sides = " and ".join(f"{counted(votes[m], 'value')} read with {m!r} as the decimal mark"
                         f" only (e.g. {first.get(m)!r})" for m in (",", ".") if votes[m])
    return (f"{path}: column {header!r} mixes decimal marks: {sides}, and {counted(votes['w'], 'value')} such as "
            f"{first.get('w')!r} {agrees(votes['w'], 'means', 'mean')} a different number with each"
            f"{' (too few values decide it)' if few else ''}; "
            f"set [source] decimal = \",\" or \".\" to say which the file uses")
