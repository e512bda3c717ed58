"""The columnar planner: the desired state and the pushed state meet in one DuckDB join.

Same rules as :func:`sync.planning.plan.plan_destination` (the pure-Python form, kept for small inputs and as
the reference the property tests compare against), computed over whole columns:

1. the desired contacts (:mod:`sync.planning.rows`) get their managed tags from the segment → tags mapping
   (and any extra desired ``(customer_id, tag)`` rows, e.g. transition tags);
2. they are joined to the pushed state (:func:`stage_pushed`: the ledger's rows, read in bulk) on the key;
   SQL decides who exists, who is created with which status, who is skipped for want of consent, the tags to
   add and remove, each field's verdict (written, unchanged, or not sure: SQL is exact both ways only for
   text, booleans and integers; for other types it is sure only of "unchanged"), and who left the customer base;
3. only the contacts that change come back to Python, built from whole columns (:mod:`.changeset`), which
   compares the "not sure" fields with the exact rules (values normalised by ``normalise_value``, compared
   as JSON).

So a run where nothing moved reads the ledger, joins and returns nothing: its time grows with the audience
only through DuckDB's scan, and the Python work grows with the change.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping, Sequence

import duckdb

from connectors.email_phone import lower_like_sql
from connectors.normalize import ident, lit

from ..config import DestinationConfig
from ..guards import PlanStats, plan_stats, waiting_only
from ..model import ContactChange, OwnerChange, PushedState, Skip
from .consent import consent_warning, no_consent_reason, refused_consent, status_for_new
from .plan import Plan, all_managed, managed_tags, owner_changes
from .canonical import INT_TYPES, double_round_sure, fields_text_sql, segment_tags_text_sql
from .changeset import OUT, build_changes, value_columns
from .rows import DESIRED, INVALID, SHARED, CustomerRows
from .values import column_of

LEDGER, PUSHED = "_plan_ledger", "_plan_pushed"
#: the pushed state's tags are kept as the ledger's JSON text (``tags_json``) and parsed only where read
TAGS = "CAST(from_json({}, '[\"VARCHAR\"]') AS VARCHAR[])"
CONSENT = "coalesce(NULLIF(CAST(d.marketing_consent AS VARCHAR), ''), 'unknown')"
#: the ledger names another customer for a desired contact (``{p}customer_id`` the pushed, ``{d}`` the desired)
OWNER_MOVED = "({p}customer_id IS NOT NULL AND {p}customer_id IS DISTINCT FROM CAST({d}customer_id AS VARCHAR))"


def stage_pushed(con: duckdb.DuckDBPyConnection, state: Any, changed: Any = None) -> None:
    """Load a destination's pushed state (an Arrow table: key, customer_id, tags JSON, fields JSON,
    in_destination, as :meth:`sync.ledger.state.PushedStates.state_table` reads it) as ``_plan_ledger`` and
    ``_plan_pushed`` (the state planned against; :func:`reconcile_pushed` replaces it). ``changed``: rows of
    the same shape that replace ``state``'s rows of their keys (a cached copy and the rows written since,
    :meth:`~sync.ledger.state.PushedStates.state_parts`), merged where they are read."""
    # not copied: DuckDB reads the Arrow columns where they are (a cached copy: memory-mapped from its file); the
    # connection keeps them registered until the next destination's state replaces them
    con.register("_plan_state_base", state)
    source = "SELECT * FROM _plan_state_base"
    if changed is not None and changed.num_rows:
        con.register("_plan_state_changed", changed)
        source = ("SELECT * FROM _plan_state_base ANTI JOIN _plan_state_changed USING (key) "
                  "UNION ALL SELECT * FROM _plan_state_changed")
    con.execute(f"""CREATE OR REPLACE TEMP VIEW {LEDGER} AS
        SELECT key, customer_id, tags AS tags_json, fields, CAST(in_destination AS BOOLEAN) AS present
        FROM ({source})""")
    con.execute(f"CREATE OR REPLACE TEMP VIEW {PUSHED} AS SELECT * FROM {LEDGER}")


def reconcile_pushed(con: duckdb.DuckDBPyConnection, actual: Mapping[str, Iterable[str]], managed: Sequence[str]
                     ) -> None:
    """Plan against what the ESP holds (``--reconcile``): the managed tags of every contact are replaced by
    the members ``actual`` lists (tag → emails); unmanaged tags and fields stay as the ledger has them; every
    contact seen either way exists. Same as :func:`sync.planning.planner.reconciled`."""
    import pyarrow as pa

    pairs = [(lower_like_sql(e), tag) for tag, emails in actual.items() for e in emails]
    con.register("_plan_members_arrow", pa.table({"key": pa.array([p[0] for p in pairs], pa.string()),
                                                  "tag": pa.array([p[1] for p in pairs], pa.string())}))
    try:
        con.execute(f"""CREATE OR REPLACE TEMP TABLE _plan_reconciled AS
            WITH m AS (SELECT key, list(DISTINCT tag) AS tags FROM _plan_members_arrow GROUP BY key)
            SELECT coalesce(l.key, m.key) AS key, l.customer_id,
                   CAST(to_json(list_distinct(list_concat(
                       list_filter(coalesce({TAGS.format('l.tags_json')}, []::VARCHAR[]),
                                   lambda t: NOT list_contains({_list(managed)}, t)),
                       coalesce(m.tags, []::VARCHAR[])))) AS VARCHAR) AS tags_json,
                   coalesce(l.fields, '{{}}') AS fields, TRUE AS present
            FROM {LEDGER} l FULL OUTER JOIN m ON m.key = l.key""")
    finally:
        con.unregister("_plan_members_arrow")
    con.execute(f"CREATE OR REPLACE TEMP VIEW {PUSHED} AS SELECT * FROM _plan_reconciled")


def plan_columnar(rows: CustomerRows, dest: DestinationConfig, *, revision: int = 0,
                  existing: Mapping[str, str] | None = None, full_refresh: bool = False,
                  remote_checked: bool = False, notes: Iterable[str] = (), extra_tags: str | None = None,
                  doubt: Mapping[str, frozenset[str]] | None = None) -> Plan:
    """The change set that takes ``dest`` from the staged pushed state (:func:`stage_pushed`) to the staged
    rows. ``extra_tags``: a query of extra desired ``(customer_id, tag)`` rows (tags besides the segment's,
    e.g. transition tags; they must be managed tags, see ``all_managed``). ``existing``, ``full_refresh`` and
    ``doubt`` as for :func:`sync.planning.plan.plan_destination`."""
    con = rows.con
    managed = all_managed(dest)
    fields = list(dest.fields.items())
    exists = _stage_existing(con, existing)
    pushed = _stage_doubt(con, doubt)
    # nobody can have left an empty pushed state (a first sync), nor be unchanged: a left join then, which holds
    # less memory, and no texts to compare
    departed = con.execute(f"SELECT EXISTS (SELECT 1 FROM {pushed})").fetchall()[0][0]
    diff = _diff_sql(rows, dest, managed, exists, full_refresh, extra_tags, "FULL OUTER" if departed else "LEFT",
                     pushed)
    con.execute(f"CREATE OR REPLACE TEMP TABLE _plan_diff AS {diff}")
    skips = [Skip(str(raw), cid, seg, "invalid email") for raw, cid, seg in con.execute(
        f"SELECT email, customer_id, segment FROM {INVALID} ORDER BY _rn").fetchall()]
    skips += [Skip(key, cid, seg, no_consent_reason(other)) for key, cid, seg, other in con.execute(  # whose no
        f"SELECT p.key, p.customer_id, p.segment, CASE WHEN s.refused_by <> p.customer_id THEN s.refused_by END "
        f"FROM _plan_diff p LEFT JOIN {SHARED} s ON s._key = p.key WHERE p.skip ORDER BY p.rn").fetchall()]
    consents = {c for (c,) in con.execute(f"SELECT DISTINCT {CONSENT} FROM {DESIRED} d").fetchall()}
    dtypes = [(rows.columns.get(column_of(value)) or "NULL").upper() for _, value in fields]
    candidates = [OwnerChange(key, cid, was) for key, cid, was in con.execute(
        "SELECT key, customer_id, prev_customer_id FROM _plan_diff "
        f"WHERE NOT departed AND {OWNER_MOVED.format(p='prev_', d='')}").fetchall()]
    withdrawn = tuple(k for (k,) in con.execute("SELECT key FROM _plan_diff WHERE withdrawn ORDER BY key").fetchall())
    changes = _changes(con, [esp for esp, _ in fields], dtypes)
    creates = sum(c.create for c in changes)
    warning = consent_warning(dest, consents, creates)
    owners, note = owner_changes(candidates, changes)
    return Plan(destination=dest.name, type=dest.type, changes=tuple(changes), skipped=tuple(skips),
                managed_tags=tuple(sorted(set(managed))), fields=dict(dest.fields), ledger_revision=revision,
                remote_checked=remote_checked, notes=(*notes, *note),
                warnings=(warning,) if warning else (), owners=owners, withdrawn=withdrawn)


def columnar_plan_stats(con: duckdb.DuckDBPyConnection, plan: Plan,
                        lost: Mapping[str, frozenset[str]] | None = None) -> PlanStats:
    """:func:`sync.guards.plan_stats` of ``plan`` against the staged ledger state (``_plan_ledger``) and the tags
    the ESP lost its contacts wait for (``lost``: :meth:`~sync.ledger.state.PushedStates.lost_tags`), reading
    only the changed and waiting contacts' rows into Python."""
    import pyarrow as pa

    managed = _list(plan.managed_tags)  # the holders of a managed tag; and of any tag rfmsync pushed (old names too)
    count, tagged = con.execute(f"""SELECT coalesce(sum(n) FILTER (WHERE len(list_intersect(tags, {managed})) > 0), 0),
        coalesce(sum(n) FILTER (WHERE len(tags) > 0), 0)
        FROM (SELECT {TAGS.format('tags_json')} AS tags, n FROM (SELECT tags_json, count(*) AS n FROM {LEDGER}
                                                                  GROUP BY 1))""").fetchall()[0]
    lost = lost or {}
    if not lost and (not tagged or not plan.changes):  # no removal or change to count (no contact holds a tag)
        return PlanStats(count, 0, 0)
    keys = dict.fromkeys([*(c.key for c in plan.changes), *lost])
    con.register("_plan_changed_keys", pa.table({"key": pa.array(list(keys), pa.string())}))
    try:
        found = con.execute(f"SELECT l.key, l.customer_id, {TAGS.format('l.tags_json')}, l.fields, l.present "
                            f"FROM {LEDGER} l "
                            "SEMI JOIN _plan_changed_keys k ON k.key = l.key").fetchall()
    finally:
        con.unregister("_plan_changed_keys")
    state = {k: PushedState(k, cid, frozenset(tags), json.loads(f), bool(p)) for k, cid, tags, f, p in found}
    return plan_stats(plan, state, lost, managed=count + waiting_only(lost, state, frozenset(plan.managed_tags)))


# --------------------------------------------------------------------------- SQL

def _list(values: Iterable[str]) -> str:
    items = [lit(v) for v in values]
    return f"[{', '.join(items)}]" if items else "[]::VARCHAR[]"


def _stage_existing(con: duckdb.DuckDBPyConnection, existing: Mapping[str, str] | None) -> bool:
    if existing is None:
        return False
    import pyarrow as pa

    con.register("_plan_existing_arrow", pa.table({"key": pa.array(list(existing), pa.string())}))
    try:
        con.execute("CREATE OR REPLACE TEMP TABLE _plan_existing AS SELECT DISTINCT key FROM _plan_existing_arrow")
    finally:
        con.unregister("_plan_existing_arrow")
    return True


def _stage_doubt(con: duckdb.DuckDBPyConnection, doubt: Mapping[str, frozenset[str]] | None) -> str:
    """The pushed state planned against: ``_plan_pushed``, or (tags in doubt) the same with each contact's
    doubted tags (``doubt``, a column NULL where none) and a row for a doubted contact the ledger lacks."""
    if not doubt:
        return PUSHED
    import pyarrow as pa

    keys = list(doubt)
    con.register("_plan_doubt_arrow", pa.table({"key": pa.array(keys, pa.string()), "doubt": pa.array(
        [sorted(doubt[k]) for k in keys], pa.list_(pa.string()))}))
    try:
        con.execute("CREATE OR REPLACE TEMP TABLE _plan_doubt AS SELECT * FROM _plan_doubt_arrow")
    finally:
        con.unregister("_plan_doubt_arrow")
    con.execute(f"""CREATE OR REPLACE TEMP VIEW _plan_pushed_doubt AS
        SELECT coalesce(p.key, q.key) AS key, p.customer_id, coalesce(p.tags_json, '[]') AS tags_json,
               coalesce(p.fields, '{{}}') AS fields, coalesce(p.present, FALSE) AS present, q.doubt
        FROM {PUSHED} p FULL OUTER JOIN _plan_doubt q ON q.key = p.key""")
    return "_plan_pushed_doubt"


def _diff_sql(rows: CustomerRows, dest: DestinationConfig, managed: Sequence[str], have_existing: bool,
              full_refresh: bool, extra_tags: str | None, join: str, pushed: str = PUSHED) -> str:
    tags_for = managed_tags(dest)
    seg_tags = "CASE segment " + " ".join(f"WHEN {lit(seg)} THEN {_list(sorted(set(t)))}"
                                          for seg, t in tags_for.items()) + " ELSE []::VARCHAR[] END" \
        if tags_for else "[]::VARCHAR[]"
    extra_join = extra_sel = ""
    if extra_tags:
        extra_join = (f" LEFT JOIN (SELECT CAST(customer_id AS VARCHAR) AS customer_id, list(DISTINCT tag) AS xtags"
                      f" FROM ({extra_tags}) GROUP BY ALL) x ON x.customer_id = CAST(d.customer_id AS VARCHAR)")
        extra_sel = ", coalesce(x.xtags, []::VARCHAR[])"
    # the segment's tags are literal lists already sorted and distinct: list work only with extra tags
    tags_expr = f"list_sort(list_distinct(list_concat({seg_tags}{extra_sel})))" if extra_sel else seg_tags
    refused = f"{CONSENT} = 'no'" if refused_consent("no", dest.new_contacts) else None  # plan.refused_consent
    if refused:
        tags_expr = f"CASE WHEN {refused} THEN []::VARCHAR[] ELSE {tags_expr} END"
    field_cols, verdicts, texts = [], [], []
    exact = {"VARCHAR", "BOOLEAN", "NULL"} | INT_TYPES  # where SQL's "not the same" is as sure as its "the same"
    for i, (esp, value) in enumerate(dest.fields.items()):
        col = column_of(value)
        dtype = rows.columns.get(col)
        expr = f"d.{ident(col)}" if dtype is not None else "NULL"
        field_cols.append(f"{expr} AS _f{i}")
        texts.append((esp, expr, dtype or "NULL"))
        same = _same_sql(f"_f{i}", (dtype or "NULL").upper(), f"_pv[{i + 1}]")
        verdicts.append("TRUE" if full_refresh else
                        f"CASE WHEN NOT has_prev OR _pv[{i + 1}] IS NULL THEN TRUE WHEN {same} THEN FALSE "
                        f"{'ELSE TRUE ' if (dtype or 'NULL').upper() in exact else ''}END AS _c{i}")
    paths = _list("/" + esp.replace("~", "~0").replace("/", "~1") for esp in dest.fields)
    verdict_cols = "".join(f", {v}" if v != "TRUE" else f", TRUE AS _c{i}" for i, v in enumerate(verdicts))
    fields_same = " AND ".join(f"_c{i} IS FALSE" for i in range(len(verdicts))) or "TRUE"
    # only the contacts that change or are skipped stay, with what building their changes needs: the fields'
    # values, verdicts and (where SQL was unsure) the pushed JSON value
    out_cols = "".join(f", _f{i}, _c{i}, CASE WHEN _c{i} IS NULL THEN CAST(_pv[{i + 1}] AS VARCHAR) END AS _p{i}"
                       for i in range(len(verdicts)))
    exists_join = " LEFT JOIN _plan_existing e ON e.key = d._key" if have_existing else ""
    in_existing = "e.key IS NOT NULL" if have_existing else "FALSE"
    exists = in_existing if (full_refresh and have_existing) else f"(coalesce(p.present, FALSE) OR {in_existing})"
    yes, other = status_for_new("yes", dest.new_contacts), status_for_new("no", dest.new_contacts)
    status = f"CASE WHEN consent = 'yes' THEN {_opt(yes)} ELSE {_opt(other)} END"
    add = "tags" if full_refresh else "list_filter(tags, lambda t: NOT list_contains(prev_managed, t))"
    m = _list(managed)
    # the tags he may hold (sync.planning.plan.in_doubt): taken off like the pushed ones when no longer his
    doubted = f"list_filter(coalesce(p.doubt, []::VARCHAR[]), lambda t: list_contains({m}, t))" \
        if pushed != PUSHED else "[]::VARCHAR[]"
    held = "list_distinct(list_concat(prev_managed, doubted))" if pushed != PUSHED else "prev_managed"
    cols = ", ".join(field_cols)
    # a contact that exists and whose pushed tags and fields are the texts the ledger would write for its desired
    # ones has nothing to change: two string comparisons, no JSON parsed (:mod:`.canonical`); the others go on,
    # and so does one the ledger gives another customer (his new customer is recorded: OwnerChange)
    withdrawn = "consent = 'no'" if refused else "FALSE"  # Plan.withdrawn: tags off for a consent of no
    unchanged = ""
    if not full_refresh and join != "LEFT":  # (a left join: nothing was pushed, nobody is unchanged)
        tags_text = (f"CAST(to_json({tags_expr}) AS VARCHAR)" if extra_sel
                     else segment_tags_text_sql("d.segment", tags_for))
        if refused and not extra_sel:
            tags_text = f"CASE WHEN {refused} THEN '[]' ELSE {tags_text} END"
        unchanged = (f"\n            WHERE d._key IS NULL OR NOT coalesce(p.present AND p.tags_json = {tags_text} "
                     f"AND p.fields = {fields_text_sql(texts)}, FALSE) OR {OWNER_MOVED.format(p='p.', d='d.')}"
                     + (" OR p.doubt IS NOT NULL" if pushed != PUSHED else ""))
    return f"""
        WITH j AS (
            SELECT {'coalesce(d._key, p.key)' if join != 'LEFT' else 'd._key'} AS key, d._key IS NULL AS departed,
                   d._rn AS rn,
                   CAST(d.customer_id AS VARCHAR) AS customer_id,
                   {CONSENT} AS consent,
                   d.segment AS segment, {tags_expr} AS tags{', ' + cols if cols else ''},
                   p.key IS NOT NULL AS has_prev, p.fields AS prev_fields, p.customer_id AS prev_customer_id,
                   {exists} AS exists_,
                   list_filter(coalesce({TAGS.format('p.tags_json')}, []::VARCHAR[]), lambda t: list_contains({m}, t))
                       AS prev_managed,
                   CASE WHEN p.key IS NOT NULL AND json_valid(p.fields) THEN json_extract(p.fields, {paths}) END
                       AS _pv, {doubted} AS doubted
            FROM {DESIRED} d {join} JOIN {pushed} p ON p.key = d._key{exists_join}{extra_join}{unchanged}
        ), k0 AS (
            SELECT *, {status} AS status FROM j
        ), k1 AS (
            SELECT *, NOT departed AND NOT exists_ AND status IS NULL AS refused FROM k0
        ), k2 AS (  -- not to be created (no consent): only the doubted tags he may hold come off (bare)
            SELECT *, CASE WHEN refused THEN []::VARCHAR[] ELSE {add} END AS add_tags,
                   list_filter(CASE WHEN refused THEN doubted ELSE {held} END, lambda t: NOT list_contains(tags, t))
                       AS remove_tags{verdict_cols}
            FROM k1
        ), k AS (
            SELECT *, {fields_same} AS fields_same, refused AND len(remove_tags) = 0 AS skip,
                   departed OR refused AS bare FROM k2
        )
        SELECT key, departed, bare, rn, customer_id, prev_customer_id, segment, exists_, status, add_tags, remove_tags,
               skip, departed OR NOT exists_ OR len(add_tags) > 0 OR len(remove_tags) > 0 OR NOT fields_same AS esp,
               {withdrawn} AND NOT departed AND NOT skip AND len(remove_tags) > 0 AS withdrawn{out_cols}
        FROM k
        WHERE CASE WHEN departed THEN len(remove_tags) > 0
                   ELSE skip OR NOT exists_ OR len(add_tags) > 0 OR len(remove_tags) > 0 OR NOT fields_same
                        OR {OWNER_MOVED.format(p='prev_', d='')} END"""


def _opt(value: str | None) -> str:
    return "NULL::VARCHAR" if value is None else lit(value)


def _same_sql(v: str, dtype: str, x: str) -> str:
    """TRUE only when the JSON value ``x`` (the pushed field) is what ``normalise_value`` makes of ``v`` (a
    column of DuckDB type ``dtype``), compared as JSON; FALSE when unsure (Python then decides)."""
    t = f"json_type({x})"
    text = f"({x} ->> '$')"
    if dtype == "NULL":
        return f"coalesce({t} = 'NULL', FALSE)"
    if dtype == "VARCHAR":
        cmp = f"{t} = 'VARCHAR' AND {text} = {v}"
    elif dtype == "BOOLEAN":
        cmp = f"{t} = 'BOOLEAN' AND TRY_CAST({x} AS BOOLEAN) = {v}"
    elif dtype in INT_TYPES:
        cmp = f"{t} IN ('BIGINT', 'UBIGINT') AND TRY_CAST({x} AS HUGEINT) = {v}"
    elif dtype.startswith("DECIMAL"):
        cmp = (f"CASE WHEN {v} = trunc({v}) THEN {t} IN ('BIGINT', 'UBIGINT') "
               f"AND TRY_CAST({x} AS HUGEINT) = CAST({v} AS HUGEINT) "
               f"ELSE {t} = 'DOUBLE' AND TRY_CAST({x} AS DOUBLE) = CAST({v} AS DOUBLE) END")
    elif dtype in ("DOUBLE", "FLOAT", "REAL"):
        cmp = (f"{t} = 'DOUBLE' AND {double_round_sure(v)} "
               f"AND TRY_CAST({x} AS DOUBLE) = round(CAST({v} AS DOUBLE), 6)")
    elif dtype == "DATE":
        cmp = f"{t} = 'VARCHAR' AND {text} = strftime({v}, '%Y-%m-%d') AND year({v}) BETWEEN 1000 AND 9999"
    else:  # timestamps (their date in the session's time zone), lists, structs...: Python decides
        return "FALSE"
    return f"coalesce(CASE WHEN {v} IS NULL THEN {t} = 'NULL' ELSE ({cmp}) END, FALSE)"


# --------------------------------------------------------------------------- back to Python

def _changes(con: duckdb.DuckDBPyConnection, esp_fields: list[str], dtypes: list[str]
             ) -> list[ContactChange]:
    """The candidates (and the contacts that left) as ContactChanges, by key (:mod:`.changeset`)."""
    n = len(dtypes)
    values = ", ".join(c for i, dtype in enumerate(dtypes) for c in value_columns(i, f"_f{i}", dtype))
    # a contact that left writes no field (its values are NULL: it has no desired row)
    verdicts = "".join(f", CASE WHEN NOT bare THEN _c{i} ELSE FALSE END AS _c{i}, _p{i}" for i in range(n))
    fast = " AND ".join(f"coalesce(_c{i}, FALSE)" for i in range(n)) or "TRUE"
    # a contact whose every field is written: the ledger's text of its fields, which the ledger then stores as it
    # is (ContactChange.fields_text; NULL where SQL has no sure text: the ledger encodes them)
    text = fields_text_sql([(esp, f"_f{i}", dtype) for i, (esp, dtype) in enumerate(zip(esp_fields, dtypes))]) \
        if n else "NULL::VARCHAR"
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {OUT} AS
        SELECT key, CASE WHEN departed THEN coalesce(prev_customer_id, '') ELSE customer_id END AS customer_id,
               CASE WHEN departed THEN '' ELSE segment END AS segment, NOT bare AND NOT exists_ AS create_,
               CASE WHEN NOT departed THEN status END AS status,
               CASE WHEN bare THEN '[]' ELSE to_json(add_tags)::VARCHAR END AS add_json,
               to_json(remove_tags)::VARCHAR AS remove_json,
               NOT bare AND {fast} AS fast,
               CASE WHEN NOT bare AND {fast} THEN {text} END AS fields_text{', ' + values if values else ''}{verdicts}
        FROM _plan_diff WHERE NOT skip AND esp
        ORDER BY key""")
    con.execute("DROP TABLE _plan_diff")
    try:
        return build_changes(con, esp_fields, dtypes)
    finally:
        con.execute(f"DROP TABLE {OUT}")


__all__ = ["columnar_plan_stats", "plan_columnar", "reconcile_pushed", "stage_pushed"]
