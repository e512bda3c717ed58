"""How the files a :class:`~connectors.files.FileSource` read become staged rows, in DuckDB SQL.

* Bad rows (no customer, unreadable date or amount, unknown status, negative amount without a refund) are
  classified in the order of :data:`_BAD` and reported with their spreadsheet row numbers (at most
  :data:`MAX_BAD_ROWS` listed, all counted); an amount too long to store is listed as out of range.
* Orders: receipt lines grouped by order id (:mod:`connectors.file_receipts`), else one row per order (a repeated
  order id: :mod:`connectors.file_repeats`).
* Contacts: one per customer key, the latest non-empty value of each field; e-mails and phones normalised
  through :func:`connectors.email_phone.email_map` / ``phone_map``; invalid ones dropped and reported.
* What the user must hear of the data as staged (repeated order ids, a receipt total repeated on its lines, codes
  without their leading zeros, …): warning lines in the result's ``warnings``, which the order store keeps with the
  files' report, so that every run reading the files says them (:mod:`sync.store.file_report`).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from dataclasses import dataclass
from typing import TYPE_CHECKING

import duckdb

from . import amounts, normalize as nz
from .counts import agrees, counted
from .diagnose import EARLY_DATE, early_date, is_excel
from .email_phone import email_map, phone_map
from .file_consent import consent_issues, cut
from .file_heads import CLASH, follow_heads, line_reasons, row_key
from .file_merged import merged_reason
from .file_receipts import stage_receipts
from .file_repeats import stage_repeats
from .file_result import FilePullResult  # (what a staging returns; imported from here too)
from .identity import IdentityReport, resolve_rows
from .presets import reading
from .records import BadRow

if TYPE_CHECKING:
    from .file_paths import FileState
    from .files import FileSourceConfig

ORDER_FIELDS = ("order_id", "customer_id", "ordered_at", "amount", "currency", "status", "discount", "cancelled_at")
CONTACT_FIELDS = ("email", "phone", "first_name", "last_name", "name", "marketing_consent", "created_at")
LINE_FIELDS = ("sku", "product", "category", "brand", "quantity", "price")
FIELDS = ORDER_FIELDS + CONTACT_FIELDS + LINE_FIELDS
MAX_BAD_ROWS = 1000


@dataclass(frozen=True)
class LoadedFile:
    """A file read into a temp table (see :meth:`connectors.files.FileSource.pull`)."""

    path: str
    table: str
    row_sql: str  # spreadsheet row number of a table row
    cols: dict[str, str]  # canonical field (or attr:<name>) → header
    fast: bool = False  # read by the typed CSV fast path
    view: str = ""  # the view's columns over ``<table>_data`` after ``_srow`` (connectors.file_sql)
    first_line: int = 2  # the line of the first data row of a table numbered by rowid (title lines skipped: more)
    state: FileState | None = None  # the file as its read found it, before and after (FileSource.read_file)
    said: tuple[str, ...] = ()  # its encoding guesses, when its reader collected them (connectors.file_guesses)


_BAD = [  # (condition, field, reason, value) in the order they are checked
    ("key IS NULL AND _shared IS NOT NULL", "customer_id",
     "its only email/phone is shared by more customers than [source] max_identity_group", "_shared"),
    ("key IS NULL", "customer_id", "no customer id, valid email or phone", "NULL"),
    ("ordered_at IS NULL", "ordered_at", "unparseable or empty date", "ordered_at_raw"),
    ("ordered_at > {latest}", "ordered_at", "a date in the future (more than {days} after the file was read):"
     " a day and month swapped, or a mistyped year?", "strftime(timezone({tz}, ordered_at), '%Y-%m-%d %H:%M:%S')"),
    # (an XLSX amount cell merged over rows: the rows below the first, empty, named so: file_merged.merged_reason)
    ("amount IS NULL AND {merged} IS NOT NULL", "amount", "in a merged cell", "{merged}"),
    ("amount IS NULL", "amount", "unparseable or empty amount", "amount_raw"),
    ("status IS NULL", "status", "unknown status (map it under [source.statuses])", "status_raw"),
    ("amount < 0 AND status <> 'refunded'", "amount", "negative amount without a refund status", "amount_raw"),
    ("quantity_raw IS NOT NULL", "quantity", "unparseable quantity", "quantity_raw"),
    ("cancelled_raw IS NOT NULL", "cancelled_at", "not a date (empty or NULL: not cancelled)", "cancelled_raw"),
]


def future_tolerance(cfg: FileSourceConfig) -> timedelta:
    """How far past the time a file is read an order date may be (time zones, a clock set wrong; scheduled orders:
    ``[source] max_days_ahead``) before it is a bad row."""
    return timedelta(days=cfg.max_days_ahead)


#: a discount given but not a number ("5%", "n/a") keeps its order, without the discount: an issue, not a bad row
DISCOUNT_ISSUE = "unparseable discount; the order is kept without it"
_NO_AMOUNT = next(i for i, (c, *_) in enumerate(_BAD) if c == "amount IS NULL")
_MERGED = _NO_AMOUNT - 1
_NO_DATE = next(i for i, (c, *_) in enumerate(_BAD) if c == "ordered_at IS NULL")
_FUTURE = next(i for i, (c, *_) in enumerate(_BAD) if c.startswith("ordered_at >"))
#: the reason of a listed "amount IS NULL" row whose text is a number too long for DECIMAL(18,2) (an id or a phone
#: mapped as the amount), as the API sources word it: told apart among the listed rows only, so that classifying
#: every row costs nothing more
TOO_BIG_AMOUNT = "out of range (at most 16 digits before the point)"


def _rows_view(con: duckdb.DuckDBPyConnection, name: str, tables: list[LoadedFile], offset: int) -> None:
    parts = [f"SELECT {offset + i} AS _file, ({t.row_sql})::BIGINT AS _row,"
             f" * {'EXCLUDE (_srow)' if t.row_sql == '_srow' else ''} FROM {t.table}" for i, t in enumerate(tables)]
    con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {' UNION ALL BY NAME '.join(parts)}")


def _keyed(con: duckdb.DuckDBPyConnection, views: list[tuple[str, str]], cfg: FileSourceConfig) -> IdentityReport:
    """Each ``(rows, out)``: ``out`` = rows + ``key`` (the customer, see :mod:`connectors.identity`), ``_own``
    (the key the row alone gives) and ``_shared``. When every row has a customer id (the common case) the key
    is that id and nothing else is computed."""
    if not any(con.execute(f"SELECT count(*) FROM {rows} WHERE cust IS NULL").fetchall()[0][0] for rows, _ in views):
        for rows, out in views:
            con.execute(f"CREATE OR REPLACE TEMP VIEW {out} AS SELECT *, cust AS key, cust AS _own,"
                        f" CAST(NULL AS VARCHAR) AS _shared FROM {rows}")
        return IdentityReport()
    return resolve_rows(con, views, cfg.phone_region, cfg.max_identity_group, prefix="_fs_id")


def zeros_lost(con: duckdb.DuckDBPyConnection, views: list[str], paths: list[str]) -> list[str]:
    """The warning (a line, or none) when customer ids of digits match others only once their leading zeros are
    dropped (``000123`` in a clients CSV, ``123`` in an XLSX whose cell Excel formatted General): they are read as
    other customers, and a contact's e-mail never meets the orders. Names the files of the pair with the most such
    ids, and counts all. ``views``: relations of ``_file`` (an index into ``paths``) and ``cust``."""
    rows = " UNION ALL ".join(f"SELECT _file, cust FROM {v}" for v in views)
    zero, digit = "cust >= '0' AND cust < '1'", "cust >= '1' AND cust < ':'"  # led by a zero; by 1-9
    # one pass first, no DISTINCT: a code without its zeros is shorter than one with them, so most exports (no
    # code led by a zero, or codes of one width: 000123 and 123456) cannot hold such a pair
    if not con.execute(f"SELECT min(length(cust)) FILTER ({digit}) < max(length(cust)) FILTER ({zero}) "
                       f"FROM ({rows})").fetchall()[0][0]:
        return []
    # the codes led by a zero first (few, most often): the others are looked up by them, not all made distinct
    found = con.execute(f"""WITH zs AS (SELECT DISTINCT _file, cust AS id FROM ({rows})
                                        WHERE {zero} AND regexp_full_match(cust, '[0-9]+')),
        ps AS (SELECT DISTINCT _file, cust AS id FROM ({rows})
               WHERE {digit} AND cust IN (SELECT ltrim(id, '0') FROM zs)),
        pairs AS (SELECT z._file AS zf, p._file AS pf, z.id AS zid, p.id AS pid FROM zs z JOIN ps p
                  ON p.id = ltrim(z.id, '0'))
        SELECT zf, pf, count(DISTINCT zid) AS n, min(zid), arg_min(pid, zid),
               (SELECT count(DISTINCT zid) FROM pairs) FROM pairs GROUP BY zf, pf ORDER BY n DESC, zf, pf LIMIT 1
        """).fetchall()
    if not found:
        return []
    zf, pf, n, zid, pid, total = found[0]
    other = "other ids in it" if zf == pf else f"ids in {paths[pf]}"
    return [f"{counted(n, 'customer id')} in {paths[zf]} ({zid!r}, …) {agrees(n, 'matches', 'match')} {other} "
            f"({pid!r}, …) only once their leading zeros are dropped{f' ({total} in all files)' if total > n else ''}: "
            "they are read as other customers, whose e-mails and orders do not meet. A code that Excel turned into a "
            "number (cell format General) lost its zeros: format that column as text (or 000000) and export it "
            "again, or write the codes the same way in every file"]


def _status_case(con: duckdb.DuckDBPyConnection, cfg: FileSourceConfig, rows: str, cancelled: bool) -> str:
    """A CASE over the few distinct raw statuses (mapped once by :func:`nz.status_sql`, the preset's own statuses
    under ``[source.statuses]``); with ``cancelled_at`` mapped (``cancelled``), a row with a date there is cancelled."""
    statuses = {**reading(cfg.preset).statuses, **cfg.statuses}
    pairs = con.execute(f"SELECT raw, {nz.status_sql('raw', statuses)} FROM "
                        f"(SELECT DISTINCT status_raw AS raw FROM {rows}) WHERE raw IS NOT NULL").fetchall()
    arms = " ".join(f"WHEN {nz.lit(raw)} THEN {nz.lit(st) if st else 'NULL'}" for raw, st in pairs)
    known = f"(CASE status_raw {arms} END)" if arms else "NULL"
    case = f"CASE WHEN status_raw IS NULL THEN 'completed' ELSE {known} END"
    return f"CASE WHEN cancelled_at IS NOT NULL THEN 'cancelled' ELSE {case} END" if cancelled else case


def _repeated_ids(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether any order id may repeat (checked over every row read, bad ones too).

    Whole-number ids (receipt numbers, the usual case) within a dense range are counted in a bitmap:
    as many distinct bits as ids proves them unique. Other ids go through a parallel GROUP BY over
    their hashes: distinct hashes prove the ids unique. Either check may send a false alarm (``007``
    and ``7``, a hash collision, a bad row's id) down the caller's exact path, never miss a repeat."""
    rows, ints, lo, hi = con.execute("SELECT count(order_id), count(_oid_int), min(_oid_int), max(_oid_int)"
                                     " FROM _fs_orows").fetchall()[0]
    if rows and ints == rows and hi - lo < max(1 << 20, 16 * rows):
        distinct = con.execute(f"SELECT bit_count(bitstring_agg(_oid_int, {lo}, {hi})) FROM _fs_orows"
                               " WHERE _oid_int IS NOT NULL").fetchall()[0][0]
        return distinct < rows
    return bool(con.execute("SELECT count(*) FROM (SELECT 1 FROM _fs_orows WHERE order_id IS NOT NULL"
                            " GROUP BY hash(order_id) HAVING count(*) > 1)").fetchall()[0][0])


def _valid_order_rows(con: duckdb.DuckDBPyConnection, order_files: int) -> int:
    """Order rows read minus bad order rows: the rows of ``_fs_valid``, without re-running its classification."""
    return con.execute(f"SELECT (SELECT count(*) FROM _fs_orows) - (SELECT count(*) FROM _fs_bad"
                       f" WHERE _file < {order_files})").fetchall()[0][0]


def _bad_rules(cfg: FileSourceConfig, now: datetime, merged: bool = False) -> list[tuple[str, str, str, str]]:
    """:data:`_BAD` for a read at ``now``: an order date later than ``now`` + :func:`future_tolerance` is a bad row
    (its reason names the tolerance, not the time, so a warm run's report is the fresh one; its value is the date as
    read, in the source's time zone); ``merged``: the rows have ``amount_merged`` (a table read before it has not)."""
    latest = now.astimezone(timezone.utc) + future_tolerance(cfg)
    sql = {"latest": f"TIMESTAMPTZ '{latest:%Y-%m-%d %H:%M:%S.%f}+00'", "tz": nz.lit(cfg.timezone),
           "merged": "amount_merged" if merged else "CAST(NULL AS VARCHAR)"}
    days = "a day" if cfg.max_days_ahead == 1 else f"{cfg.max_days_ahead} days"
    return [(c.format(**sql), f, r.format(days=days) if "{days}" in r else r, v.format(**sql) if "{" in v else v)
            for c, f, r, v in _BAD]


def stage_files(con: duckdb.DuckDBPyConnection, cfg: FileSourceConfig, orders: list[LoadedFile],
                contacts: list[LoadedFile], in_place: bool = False, file_ids: list[int] | None = None,
                now: datetime | None = None, zeros: bool = True) -> FilePullResult:
    """Stage the files' rows (see above); ``file_ids``: one number per orders file, kept with each staged order
    as ``staged_orders.file_id`` (the file its row, or its receipt's last line, came from), then, optionally, one
    per contacts file: each staged contact then has ``staged_contacts.file_id``, the file of the row it is staged
    from (see :func:`_stage_contacts`). ``now`` (default: the current time) is the time the files are read: an
    order dated more than :func:`future_tolerance` after it is a bad row. ``zeros=False`` leaves out the warning of
    :func:`zeros_lost` (the order store's lean path decides it over every file's ids, not these files' alone)."""
    paths = [t.path for t in orders + contacts]
    cancelled = any("cancelled_at" in t.cols for t in orders)  # (a file read before the field has no such column)
    heads, replaced = reading(cfg.preset).line_rows, 0
    _rows_view(con, "_fs_oread" if heads else "_fs_orows", orders, 0)
    if heads:  # an order's further rows are its line items (Shopify's export)
        replaced = follow_heads(con, "_fs_oread", "_fs_orows", cancelled, paths)
    views = [("_fs_orows", "_fs_okeyed")]
    if contacts:
        _rows_view(con, "_fs_crows", contacts, len(orders))
        views.append(("_fs_crows", "_fs_ckeyed"))
    identity = _keyed(con, views, cfg)
    # the staging's warnings (PullResult.warnings)
    said = zeros_lost(con, [rows for rows, _ in views], paths) if zeros else []
    merged = "amount_merged" in con.table("_fs_orows").columns
    rules = _bad_rules(cfg, now or datetime.now(timezone.utc), merged) + (
        [("_clash IS NOT NULL", "order_id", CLASH, "_clash")] if heads else [])
    bad_case = " ".join(f"WHEN {c} THEN {i}" for i, (c, *_) in enumerate(rules))
    status = _status_case(con, cfg, "_fs_orows", cancelled)
    con.execute(f"CREATE OR REPLACE TEMP VIEW _fs_oclass AS SELECT *, CASE {bad_case} END AS _bad,"
                f" {row_key()} AS _ord FROM (SELECT *, {status} AS status FROM _fs_okeyed)")
    value = " ".join(f"WHEN {i} THEN {v}" for i, (_, _, _, v) in enumerate(rules))
    bad_sql = [f"SELECT _file, _row, _bad, CASE _bad {value} END AS value,"
               f" CASE WHEN _bad = {_FUTURE} THEN ordered_at END AS _fut FROM _fs_oclass WHERE _bad IS NOT NULL"]
    if contacts:
        bad_sql.append("SELECT _file, _row, CASE WHEN _shared IS NULL THEN 1 ELSE 0 END AS _bad, _shared AS value,"
                       " NULL AS _fut FROM _fs_ckeyed WHERE key IS NULL")
    con.execute(f"CREATE OR REPLACE TEMP TABLE _fs_bad AS {' UNION ALL '.join(bad_sql)}")
    bad_count = con.execute("SELECT count(*) FROM _fs_bad").fetchall()[0][0]
    # a file whose rows are bad as future until a date: read again once it has passed (sync.store.files)
    future = {paths[f]: at for f, at in con.execute("SELECT _file, min(_fut) FROM _fs_bad WHERE _fut IS NOT NULL"
                                                     " GROUP BY _file").fetchall()} if bad_count else {}
    listed = con.execute(f"SELECT * EXCLUDE (_fut), _bad = {_NO_AMOUNT} AND {amounts.too_big_amount_sql('value')} FROM"
                         f" (SELECT * FROM _fs_bad ORDER BY _file, _row LIMIT {MAX_BAD_ROWS}) ORDER BY _file, _row"
                         ).fetchall()
    bad_rows = [BadRow(source=paths[f], row=r, reason=merged_reason(v) if b == _MERGED else TOO_BIG_AMOUNT if big
                       else EARLY_DATE if b == _NO_DATE and v and early_date(v, cfg.date_format, is_excel(paths[f]))
                       else rules[b][2], field=rules[b][1], value=None if b == _MERGED else v)
                for f, r, b, v, big in listed]
    if heads and bad_rows:
        bad_rows = line_reasons(con, "_fs_orows", bad_rows, paths)

    # Orders: receipt lines grouped by order id, else one row per order (last duplicate wins).
    con.execute("""CREATE OR REPLACE TEMP VIEW _fs_valid AS
        SELECT * REPLACE (CASE WHEN status = 'refunded' THEN abs(amount) ELSE amount END AS amount),
               CASE WHEN order_id IS NOT NULL THEN order_id
                    ELSE 'h' || left(md5(concat_ws('|', _own, ordered_at, amount, _file, _row)), 16) END AS oid
        FROM _fs_oclass WHERE _bad IS NULL""" + (" AND NOT _gone" if heads else ""))
    items = any({"sku", "product", "quantity", "price"} & set(t.cols) for t in orders)
    lines = items or heads  # an order's rows are grouped by its id
    duplicates, n_orders = replaced, None
    if replaced:
        said.append(f"{counted(replaced, 'order appears again', 'orders appear again')} further on (in a later "
                    "export, or below in the same file); the last one of each was kept")
    fid = ""  # the extra select column: the row's file id
    if file_ids is not None:
        con.execute("ALTER TABLE staged_orders ADD COLUMN file_id BIGINT")
        fid = f", ([{', '.join(str(int(i)) for i in file_ids)}])[_file + 1]"
    contact_fid = fid if contacts and file_ids is not None and len(file_ids) == len(orders) + len(contacts) else ""
    if lines:  # receipt lines grouped by receipt number and customer
        totals = any({"amount", "price"} <= set(t.cols) for t in orders)  # a total repeated on lines: told
        over, over_count = stage_receipts(con, fid, paths, bool(items), MAX_BAD_ROWS, said, totals,
                                           len(orders))
        if over_count:
            bad_count += over_count
            bad_rows = sorted(bad_rows + over, key=lambda b: (paths.index(b.source), b.row))[:MAX_BAD_ROWS]
    elif _repeated_ids(con):  # another customer's order, a sale's return or the same order again
        n_orders, duplicates = stage_repeats(con, "_fs_valid", fid, paths, said)
    elif in_place:
        con.execute("DROP TABLE staged_orders")
        con.execute(f"""CREATE TEMP VIEW staged_orders AS SELECT oid AS order_id, key AS customer_id, ordered_at,
                        amount, currency, status, discount{fid and fid + ' AS file_id'} FROM _fs_valid""")
        n_orders = _valid_order_rows(con, len(orders))  # counting the view would re-run it
    else:
        con.execute(f"INSERT INTO staged_orders SELECT oid, key, ordered_at, amount, currency, status, discount{fid}"
                    " FROM _fs_valid")
    mapped = set().union(*(t.cols for t in orders + contacts))
    issues, issue_count, unread = _stage_contacts(con, cfg, paths, bool(contacts), mapped, contact_fid,
                                                  f"coalesce(_seq, {row_key()})" if heads else "", bad_count > 0)
    if "discount" in mapped:
        issues, issue_count = _discount_issues(con, paths, issues, issue_count, said)
    if n_orders is None:
        n_orders = con.execute("SELECT count(*) FROM staged_orders").fetchall()[0][0]
    n_contacts = con.execute("SELECT count(*) FROM staged_contacts").fetchall()[0][0]
    return FilePullResult(orders=n_orders, contacts=n_contacts, bad_rows=bad_rows, bad_row_count=bad_count,
                          full_refresh=True, issues=issues, issue_count=issue_count, duplicate_orders=duplicates,
                          identity=identity, future=future, consent_values=unread, warnings=said)


def _stage_contacts(con: duckdb.DuckDBPyConnection, cfg: FileSourceConfig, paths: list[str],
                    has_file: bool, mapped: set[str], fid: str = "", order: str = "", bad: bool = False
                    ) -> tuple[list[BadRow], int, int]:
    """One contact per customer key: latest non-empty value of each field; the contacts file's
    values win over those repeated on order rows. Only mapped fields are aggregated; with none
    mapped (an export of receipts alone) there is nothing to say about a customer: no contact rows.
    ``fid`` (``, <file ids>[_file + 1]``): ``staged_contacts.file_id`` is the file of the row whose consent wins,
    else (no consent given or mapped) of the contact's latest row, the contacts files' rows before the orders'
    (:mod:`sync.store.merge` keeps a webhook's contact unless that file was read after it). ``order``: how a
    file's rows are ordered for "latest" (default: file, then row; :func:`follow_heads`' ``_seq``: by order date).
    ``bad``: some order rows are bad rows (``_fs_bad``): they make no contact and give none a value (a second
    export's header row pasted below the first is no customer ``customer``), but a consent withdrawn on one still
    counts for a customer of other rows (read as the latest word, as on any row: never a subscription it voids)."""
    if not has_file and not (mapped & set(CONTACT_FIELDS)) and not any(f.startswith("attr:") for f in mapped):
        return [], 0, 0
    void = ("EXISTS (SELECT 1 FROM _fs_bad b WHERE b._file = o._file AND b._row = o._row)" if bad else "false")
    src = f"SELECT 0 AS _src, *, {void} AS _void FROM _fs_okeyed o WHERE key IS NOT NULL"
    if has_file:
        src += " UNION ALL BY NAME SELECT 1 AS _src, *, false AS _void FROM _fs_ckeyed WHERE key IS NOT NULL"
    wants = {"first_name": {"first_name", "name"}, "last_name": {"last_name", "name"}, "created_at": {"created_at"},
             "attributes": {f for f in mapped if f.startswith("attr:")}}
    aggs = [f"arg_max({c}, _ord) FILTER (WHERE {c} IS NOT NULL AND NOT _void) AS {c}" if wants[c] & mapped
            else f"NULL AS {c}" for c in ("first_name", "last_name", "created_at", "attributes")]
    said = "consent <> 'unknown' AND (NOT _void OR consent = 'no')"
    aggs.append(f"arg_max(consent, _ord) FILTER (WHERE {said}) AS consent"
                if "marketing_consent" in mapped else "NULL AS consent")
    if fid:  # the file of the row staged: a row of the contact's consent wins over its latest row
        latest = "arg_max(_file, _ord) FILTER (WHERE NOT _void)"
        aggs.append(f"coalesce(arg_max(_file, _ord) FILTER (WHERE {said}), {latest}) AS _file"
                    if "marketing_consent" in mapped else f"{latest} AS _file")
    for c in ("email", "phone"):
        aggs.append(f"arg_max({{'v': {c}_raw, 'f': _file, 'r': _row}}, _ord) FILTER (WHERE {c}_raw IS NOT NULL"
                    f" AND NOT _void) AS {c}" if c in mapped
                    else f"CAST(NULL AS STRUCT(v VARCHAR, f INTEGER, r BIGINT)) AS {c}")
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _fs_cagg AS
        SELECT key, {', '.join(aggs)}
        FROM (SELECT *, _src::BIGINT * 281474976710656 + {order or row_key()} AS _ord
              FROM ({src}))
        GROUP BY key{' HAVING bool_or(NOT _void)' if bad else ''}""")
    email_map(con, "SELECT email.v AS raw FROM _fs_cagg", "_fs_id_emails")
    phone_map(con, "SELECT phone.v AS raw FROM _fs_cagg", "_fs_id_phones", cfg.phone_region)
    if fid:
        con.execute("ALTER TABLE staged_contacts ADD COLUMN file_id BIGINT")
    con.execute(f"""INSERT INTO staged_contacts
        SELECT c.key, e.norm, p.norm, c.first_name, c.last_name, COALESCE(c.consent, 'unknown'), c.created_at,
               c.attributes{fid.replace('_file', 'c._file')} FROM _fs_cagg c
        LEFT JOIN _fs_id_emails e ON e.raw = c.email.v LEFT JOIN _fs_id_phones p ON p.raw = c.phone.v""")
    issue_sql = """SELECT c.{f}.f, c.{f}.r, c.{f}.v, '{f}' FROM _fs_cagg c JOIN {t} m ON m.raw = c.{f}.v
                   WHERE m.norm IS NULL"""
    both = (f"{issue_sql.format(f='email', t='_fs_id_emails')} UNION ALL "
            f"{issue_sql.format(f='phone', t='_fs_id_phones')}")
    count = con.execute(f"SELECT count(*) FROM ({both})").fetchall()[0][0]
    issues = [BadRow(source=paths[f], row=r, field=fld, value=v,
                     reason=f"invalid {fld}; the contact is kept without it")
              for f, r, v, fld in con.execute(f"{both} ORDER BY 1, 2 LIMIT {MAX_BAD_ROWS}").fetchall()]
    views = ["_fs_okeyed", "_fs_ckeyed"][:1 + has_file] if "marketing_consent" in mapped else []
    unread, n = consent_issues(con, views, paths, MAX_BAD_ROWS)  # each value read neither as yes nor no, once
    return cut(issues + unread, paths, MAX_BAD_ROWS), count + n, n


def _discount_issues(con: duckdb.DuckDBPyConnection, paths: list[str], issues: list[BadRow],
                     count: int, said: list[str]) -> tuple[list[BadRow], int]:
    """The good rows whose discount was given but is not a number, added to the issues (file and row order), and
    their warning line to ``said``."""
    bad = "FROM _fs_oclass WHERE _bad IS NULL AND discount_raw IS NOT NULL"
    if not (n := con.execute(f"SELECT count(*) {bad}").fetchall()[0][0]):  # (the common case)
        return issues, count
    rows = con.execute(f"SELECT _file, _row, discount_raw {bad} ORDER BY _file, _row LIMIT {MAX_BAD_ROWS}").fetchall()
    found = [BadRow(source=paths[f], row=r, field="discount", value=v, reason=DISCOUNT_ISSUE) for f, r, v in rows]
    said.append(f"{counted(n, 'row has', 'rows have')} no number as discount, kept without it (first: {found[0]})")
    return cut(issues + found, paths, MAX_BAD_ROWS), count + n


def drop_scratch(con: duckdb.DuckDBPyConnection) -> None:
    """Drop this module's scratch views/tables (names start with ``_fs_``) from the connection."""
    for name, kind in con.execute("""SELECT table_name, table_type FROM information_schema.tables
                                     WHERE table_name LIKE '\\_fs\\_%' ESCAPE '\\'""").fetchall():
        con.execute(f"DROP {'VIEW' if kind == 'VIEW' else 'TABLE'} IF EXISTS {nz.ident(name)}")
