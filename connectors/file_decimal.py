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
  a quantity: a decimal) must weigh: :data:`WEIGHT_SHARE` of those ambiguous values (:data:`WEIGHT_CAP` values
  at most) and :data:`MIN_SIDE` values (or as many as those, when fewer) or more (one ``12.5`` does not make
  3 000 ``150.000`` read as 150; 8 000 prices below 1 such as ``0.523`` make a million ``12.345`` read as
  prices), else the same error;
* a column without such values keeps the first guess (money: ``1,234`` groups thousands; a quantity takes the
  mark the money columns settled, else reads it as a decimal).
"""

from __future__ import annotations

import logging

import duckdb

from . import normalize as nz
from .errors import BadFileError

log = logging.getLogger(__name__)

#: the smaller side's share of the values read one way only from which two readings conflict (below: strays)
CONFLICT_SHARE = 0.05
#: the fewest values read one way only that make a side of a column: a conflict, or a mark deciding ambiguous values
MIN_SIDE = 3
#: the least share of the ambiguous values it reads against the default that a deciding side must have
WEIGHT_SHARE = 0.02
#: the most values read one way only a deciding side needs, however many ambiguous values it reads
WEIGHT_CAP = 50
SAMPLE = 2000


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
    money = [_majority(votes[f]) for f in fields if f != "quantity" and (votes[f][","] or votes[f]["."])]
    settled = ("," if money.count(",") > money.count(".") else ".") if money else None  # a quantity of 1,000 only:
    # the money's mark decides (1,299.99 → a thousand units), not the quantity rule (1.000 units)
    out: dict[str, nz.Decimal_] = {}
    for f in fields:
        v = votes[f]
        if not (v[","] or v["."]):
            out[f] = nz.sniff_decimal(samples[f], money=f != "quantity", settled=settled if f == "quantity" else None)
            continue
        out[f] = _majority(v)
        if v["w"] and (_conflicts(v) or _outweighed(v, out[f], money=f != "quantity")):
            raise BadFileError(_conflict(con, path, src, col[f], headers[f], guess[f], v, not _conflicts(v)))
        if out[f] != guess[f]:
            log.debug("%s: column %r: the whole column reads %r as the decimal mark, its first values %r",
                      path, headers[f], out[f], guess[f])
    return out


def sample_outweighed(values: list[str], mark: nz.Decimal_, money: bool) -> bool:
    """Whether the decisive values of a column's sample are too few to read its ambiguous ones with ``mark``
    (:func:`_outweighed` over :func:`connectors.normalize.decimal_vote`): the typed fast path then leaves the
    column to :func:`column_decimals`, which decides over the whole column or stops with the conflict error."""
    votes = {",": 0, ".": 0, "w,": 0, "w.": 0}
    for v in values:
        if (vote := nz.decimal_vote(v)) is not None:
            votes[vote[0] if vote[1] else "w" + vote[0]] += 1
    votes["w"] = votes["w,"] + votes["w."]
    return _outweighed(votes, mark, money)


def _majority(votes: dict[str, int]) -> nz.Decimal_:
    return "," if votes[","] > votes["."] else "."


def _conflicts(votes: dict[str, int]) -> bool:
    """Both readings have real weight: the smaller side is no stray."""
    side = min(votes[","], votes["."])
    return side >= MIN_SIDE and side >= CONFLICT_SHARE * (votes[","] + votes["."])


def _outweighed(votes: dict[str, int], mark: nz.Decimal_, money: bool) -> bool:
    """The values that decide ``mark`` are too few for the ambiguous values it reads against the default (money:
    those with ``mark`` itself become decimals; a quantity: those with the other mark become thousands)."""
    against = votes["w" + mark] if money else votes["w"] - votes["w" + mark]
    return bool(against) and votes[mark] < max(min(MIN_SIDE, against), min(WEIGHT_SHARE * against, WEIGHT_CAP))


def _clean_re(mark: nz.Decimal_) -> str:
    """A value :func:`connectors.normalize.decimal_vote` reads as decisive for ``mark`` without classifying it:
    one ``mark``, a digit before it (the other mark and other characters may be there too: ``1.234,50 сум``) and
    one, two or four and more digits after it (and other characters, no mark)."""
    after = "[^0-9,.]*"
    return f"[^0-9{mark}]*[0-9][^{mark}]*[{mark}]{after}(([0-9]{after}){{1,2}}|([0-9]{after}){{4,}})"


def _vote_sql(v: str, mark: nz.Decimal_) -> str:
    """What the value ``v`` says of the column: ``','``, ``'.'``, ``'w,'``, ``'w.'`` (ambiguous) or NULL. Values of
    the first guess's usual shape (``mark``: :func:`_clean_re`) cost one regular expression; only the others are
    classified (:func:`connectors.normalize.decimal_vote_sql`)."""
    return (f"CASE WHEN regexp_full_match({v}, {nz.lit(_clean_re(mark))}) THEN '{mark}'"
            f" WHEN contains({v}, ',') OR contains({v}, '.') THEN {nz.decimal_vote_sql(v)} END")


def _whole_column(con: duckdb.DuckDBPyConnection, src: str, col: dict[str, str],
                  guess: dict[str, nz.Decimal_]) -> dict[str, dict[str, int]]:
    """field → {',': n, '.': n, 'w': n, 'w,': n, 'w.': n}: the values of the column read one way only with each
    mark, and the ambiguous ones (all, and those with each mark), in one scan of ``src``."""
    text = ", ".join(f"{col[f]} AS c{i}" for i, f in enumerate(guess))
    votes = ", ".join(f"{_vote_sql(f'c{i}', mark)} AS vote{i}" for i, mark in enumerate(guess.values()))
    keys = (",", "w,", ".", "w.")
    aggs = ", ".join(f"count(*) FILTER (WHERE vote{i} = '{m}')" for i in range(len(guess)) for m in keys)
    row = con.execute(f"SELECT {aggs} FROM (SELECT {votes} FROM (SELECT {text} FROM {src}))").fetchall()[0]
    out = {f: dict(zip(keys, row[4 * i:4 * i + 4])) for i, f in enumerate(guess)}
    return {f: {**v, "w": v["w,"] + v["w."]} for f, v in out.items()}


def _conflict(con: duckdb.DuckDBPyConnection, path: str, src: str, v: str, header: str, guess: nz.Decimal_,
              votes: dict[str, int], few: bool = False) -> str:
    """The error of a column whose readings conflict, naming the smallest value of each kind."""
    first = dict(con.execute(f"SELECT left(vote, 1), min(v) FROM (SELECT v, {_vote_sql('v', guess)} AS vote FROM"
                             f" (SELECT {v} AS v FROM {src})) WHERE vote IS NOT NULL GROUP BY 1").fetchall())
    sides = " and ".join(f"{votes[m]} {'values' if votes[m] != 1 else 'value'} read with {m!r} as the decimal mark"
                         f" only (e.g. {first.get(m)!r})" for m in (",", ".") if votes[m])
    return (f"{path}: column {header!r} mixes decimal marks: {sides}, and {votes['w']} values such as "
            f"{first.get('w')!r} mean a different number with each{' (too few values decide it)' if few else ''}; "
            f"set [source] decimal = \",\" or \".\" to say which the file uses")
