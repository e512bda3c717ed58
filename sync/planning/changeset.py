"""The columnar planner's changes, back in Python: one :class:`~sync.model.ContactChange` per changed contact,
built from whole columns (no per-field Python work on the common path).

The diff (:func:`sync.planning.columnar.plan_columnar`) leaves, per candidate contact and mapped field ``i``:

* the field's value, already in the form ``normalise_value`` gives it where SQL can do that exactly (text,
  booleans, integers as themselves; a ``DECIMAL`` as an integer when whole, else as its exact text, which
  ``float()`` reads to the same double as ``float(Decimal)``); other types come as DuckDB gives them and go
  through ``normalise_value``;
* a verdict ``_c{i}``: TRUE (the field is written: no pushed value, ``--full-refresh``, or surely another
  value), FALSE (surely the pushed value) or NULL (SQL is not sure: Python compares the pushed JSON value
  ``_p{i}`` with ``same_value``, as the pure planner does).

Rows whose verdicts are all TRUE (every contact of a first sync) take a fast path: their ``set_fields`` is the
row's values, with the ledger's text of them where SQL spelled it (``ContactChange.fields_text``, :mod:`.canonical`:
the ledger stores it without encoding the fields again). Equal small values (segments, statuses, tag sets, text
field values) are shared, not copied.
"""

from __future__ import annotations

import json
from itertools import compress
from typing import Any, Callable, Sequence

import duckdb

from ..model import ContactChange
from .plan import normalise_value, same_value

OUT = "_plan_out"
BATCH = 50_000
#: DuckDB types whose values Arrow hands to Python as ``normalise_value`` would make them (or, for floats and
#: dates, as the objects DuckDB itself would give); anything else is fetched through DuckDB's own conversion
_ARROW_PLAIN = {"VARCHAR", "BOOLEAN", "TINYINT", "SMALLINT", "INTEGER", "BIGINT", "UTINYINT", "USMALLINT",
                "UINTEGER"}
_ARROW_NORMALISED = {"DOUBLE", "FLOAT", "REAL", "DATE"}


def decimal_width(dtype: str) -> int | None:
    """The width of ``DECIMAL(w,s)`` (None for another type)."""
    if not dtype.startswith("DECIMAL("):
        return None
    return int(dtype[len("DECIMAL("):].split(",")[0])


def value_columns(i: int, expr: str, dtype: str) -> list[str]:
    """The SELECT items that carry field ``i``'s value (``expr``, of DuckDB type ``dtype``) to Python."""
    width = decimal_width(dtype)
    if width is not None and width <= 18:
        return [f"CASE WHEN {expr} = trunc({expr}) THEN CAST({expr} AS BIGINT) END AS _fi{i}",
                f"CASE WHEN {expr} <> trunc({expr}) THEN CAST({expr} AS VARCHAR) END AS _fs{i}"]
    return [f"{expr} AS _f{i}"]


def build_changes(con: duckdb.DuckDBPyConnection, esp_fields: Sequence[str], dtypes: Sequence[str]
                  ) -> list[ContactChange]:
    """The ContactChanges of the rows of ``_plan_out`` (see the module docstring; stored by key), by key:
    streamed in batches, so only one batch of Arrow columns and Python lists is alive beside the changes."""
    # values of types Arrow does not hand over as DuckDB does (timestamps...): DuckDB's own objects, first
    other = {i: [normalise_value(v) for (v,) in con.execute(f"SELECT _f{i} FROM {OUT}").fetchall()]
             for i, dtype in enumerate(dtypes) if _by_duckdb(dtype)}
    reader = con.sql(f"SELECT * FROM {OUT}").to_arrow_reader(BATCH)  # stored by key: read in its order
    tag_sets: dict[str, frozenset[str]] = {}
    out: list[ContactChange] = []
    offset = 0
    for batch in reader:
        values = [other[i][offset:offset + batch.num_rows] if i in other else _values(batch, i, dtype)
                  for i, dtype in enumerate(dtypes)]
        out += _batch_changes(batch, values, esp_fields, tag_sets)
        offset += batch.num_rows
    return out


def _batch_changes(table: Any, values: list[list[Any]], esp_fields: Sequence[str],
                   tag_sets: dict[str, frozenset[str]]) -> list[ContactChange]:
    n = table.num_rows
    if not n:
        return []
    keys = table.column("key").to_pylist()
    cids = table.column("customer_id").to_pylist()
    segments = _shared(table.column("segment"))
    creates = table.column("create_").to_pylist()
    statuses = _shared(table.column("status"))
    adds = _shared(table.column("add_json"), lambda s: _tags(tag_sets, s))
    removes = _shared(table.column("remove_json"), lambda s: _tags(tag_sets, s))
    fast = table.column("fast").to_pylist() if esp_fields else [True] * n
    # the ledger's text of a fast row's fields where SQL spelled it (NULL for every other row: plan_columnar)
    texts = table.column("fields_text").to_pylist() if esp_fields else [None] * n
    if all(fast):
        set_fields = [dict(zip(esp_fields, row)) for row in zip(*values)] if esp_fields else [{} for _ in keys]
    else:
        verdicts = [table.column(f"_c{i}").to_pylist() for i in range(len(esp_fields))]
        pushed = [table.column(f"_p{i}").to_pylist() for i in range(len(esp_fields))]
        set_fields = [dict(zip(esp_fields, row)) if quick else
                      _changed_fields(esp_fields, [v[r] for v in values], [c[r] for c in verdicts],
                                      [p[r] for p in pushed])
                      for r, (quick, row) in enumerate(zip(fast, zip(*values) if esp_fields else [()] * n))]
    changes = list(map(ContactChange, keys, keys, cids, segments, creates, statuses, adds, removes, set_fields,
                       texts))
    if all(fast):
        return changes
    # a candidate SQL was unsure of (a field it cannot compare) that had not changed after all: not a change
    return list(compress(changes, [c.create or bool(c.add_tags) or bool(c.remove_tags) or bool(c.set_fields)
                                   for c in changes]))


def _tags(cache: dict[str, frozenset[str]], text: str | None) -> frozenset[str]:
    found = cache.get(text or "[]")
    if found is None:
        found = cache[text or "[]"] = frozenset(json.loads(text or "[]"))
    return found


def _shared(column: Any, convert: Callable[[Any], Any] | None = None) -> list[Any]:
    """A low-cardinality column as Python values, each distinct value one object (converted once)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(column)
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    distinct = encoded.dictionary.to_pylist()
    if convert is not None:
        distinct = [convert(v) for v in distinct]
    distinct.append(convert(None) if convert is not None else None)  # the index nulls point at
    indices = encoded.indices.fill_null(len(distinct) - 1).to_pylist()
    return list(map(distinct.__getitem__, indices))


def _by_duckdb(dtype: str) -> bool:
    width = decimal_width(dtype)
    return (width is None or width > 18) and dtype not in _ARROW_PLAIN and dtype not in _ARROW_NORMALISED


def _values(table: Any, i: int, dtype: str) -> list[Any]:
    """Field ``i``'s values of a batch (of a type Arrow hands over as DuckDB would), normalised, in key order."""
    width = decimal_width(dtype)
    if width is not None and width <= 18:
        whole = table.column(f"_fi{i}").to_pylist()
        text = table.column(f"_fs{i}").to_pylist()
        return [w if w is not None else (float(t) if t is not None else None) for w, t in zip(whole, text)]
    if dtype in _ARROW_PLAIN:
        return _shared(table.column(f"_f{i}")) if dtype == "VARCHAR" else table.column(f"_f{i}").to_pylist()
    return [normalise_value(v) for v in table.column(f"_f{i}").to_pylist()]


def _changed_fields(esp_fields: Sequence[str], values: list[Any], verdicts: list[bool | None],
                    pushed: list[str | None]) -> dict[str, Any]:
    out = {}
    for esp, value, verdict, prev in zip(esp_fields, values, verdicts, pushed):
        if verdict is None:  # SQL was unsure: compare as the pure planner does (prev is the pushed JSON value)
            verdict = prev is None or not same_value(json.loads(prev), value)
        if verdict:
            out[esp] = value
    return out


__all__ = ["OUT", "build_changes", "decimal_width", "value_columns"]
