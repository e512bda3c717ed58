"""File exports (CSV/TSV, XLSX, Parquet) as a source: column-mapped, normalised in DuckDB SQL.

``FileSource.pull`` reads every file matching ``orders`` (and ``contacts``), maps columns to
canonical fields, normalises amounts/dates/statuses/emails/phones (:mod:`connectors.normalize`)
and stages canonical rows. Rows it cannot use are reported as :class:`BadRow` (spreadsheet row
numbers: header = 1, first data row = 2), never dropped silently. Each pull is a full refresh.
"""

from __future__ import annotations

import codecs
import itertools
import csv
import glob
import logging
import os
import tempfile
from datetime import date, datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import duckdb
import openpyxl
import phonenumbers
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, field_validator, model_validator

from . import normalize as nz
from .errors import ConfigError
from .records import BadRow
from .source import PullResult
from .tables import create_staging

log = logging.getLogger(__name__)

ORDER_FIELDS = ("order_id", "customer_id", "ordered_at", "amount", "currency", "status", "discount")
CONTACT_FIELDS = ("email", "phone", "first_name", "last_name", "name", "marketing_consent", "created_at")
LINE_FIELDS = ("sku", "product", "category", "brand", "quantity", "price")
FIELDS = ORDER_FIELDS + CONTACT_FIELDS + LINE_FIELDS
MAX_BAD_ROWS = 1000


class FileSourceConfig(BaseModel):
    """``[source]`` for ``type = "file"``; paths are relative to the config file's folder."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["file"]
    orders: str
    contacts: str | None = None
    encoding: str = "auto"
    timezone: str = "UTC"
    phone_region: str | None = None
    currency: str | None = None
    preset: str | None = None
    columns: dict[str, str] = {}
    contact_columns: dict[str, str] | None = None
    attributes: dict[str, str] = {}
    statuses: dict[str, Literal["completed", "refunded", "cancelled"]] = {}
    delimiter: str | None = None
    decimal: Literal[",", "."] | None = None
    date_format: str | None = None
    sheet: str | None = None

    @field_validator("columns", "contact_columns")
    @classmethod
    def _known_fields(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        unknown = sorted(set(v or {}) - set(FIELDS))
        if unknown:
            raise ValueError(f"unknown canonical field(s) {unknown}; known: {', '.join(FIELDS)} "
                             "(put other columns under [source.attributes])")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (use an IANA name such as 'Asia/Tashkent')") from None
        return v

    @field_validator("phone_region")
    @classmethod
    def _region(cls, v: str | None) -> str | None:
        if v is not None and v.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"unknown phone region {v!r} (use a two-letter country code such as 'UZ')")
        return v.upper() if v else v

    @field_validator("delimiter")
    @classmethod
    def _delim(cls, v: str | None) -> str | None:
        v = {"tab": "\t", "\\t": "\t"}.get(v, v) if v else v
        if v is not None and len(v) != 1:
            raise ValueError(f"delimiter must be one character or 'tab', got {v!r}")
        return v

    @model_validator(mode="after")
    def _preset(self) -> "FileSourceConfig":
        from .presets import PRESETS
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {', '.join(PRESETS)}")
        return self


@dataclass
class FilePullResult(PullResult):
    """PullResult plus what was kept but cleaned: values dropped (invalid email/phone) and duplicates."""

    issues: list[BadRow] = field(default_factory=list)
    issue_count: int = 0
    duplicate_orders: int = 0


@dataclass(frozen=True)
class _Mapping:
    columns: dict[str, str]  # canonical field → header
    optional: frozenset[str]  # fields that came from a preset only (skipped when missing)


class FileSource:
    """Reads column-mapped export files into the ``staged_*`` tables (always a full refresh)."""

    name = "file"

    def __init__(self, cfg: FileSourceConfig, base_dir: Path) -> None:
        from .presets import PRESETS
        self.cfg = cfg
        self.base_dir = Path(base_dir)
        preset = PRESETS.get(cfg.preset or "", {})
        optional = set(preset) - set(cfg.columns)
        if cfg.contacts and cfg.contact_columns is None:  # shared mapping: contact fields may live in either file
            optional |= set(CONTACT_FIELDS)
        self._orders_map = _Mapping({**preset, **cfg.columns}, frozenset(optional))
        # The contacts file uses [source.contact_columns], else the contact fields of [source.columns]
        # (then optional: a field the contacts file lacks is simply not read from it).
        keep = ("customer_id",) + CONTACT_FIELDS
        if cfg.contact_columns is not None:
            self._contacts_map = _Mapping(dict(cfg.contact_columns), frozenset())
        else:
            shared = {k: v for k, v in self._orders_map.columns.items() if k in keep}
            self._contacts_map = _Mapping(shared, frozenset(shared))
        cols = self._orders_map.columns
        if "ordered_at" not in cols or not ({"amount", "price"} & set(cols)):
            raise ConfigError("[source.columns] must map ordered_at and amount (or price for receipt lines)")
        if not ({"customer_id", "email", "phone"} & set(cols)):
            raise ConfigError("[source.columns] must map customer_id, email or phone to identify customers")

    def __repr__(self) -> str:
        return f"FileSource(orders={self.cfg.orders!r}, contacts={self.cfg.contacts!r})"

    def check(self, con: duckdb.DuckDBPyConnection) -> PullResult:
        return self.pull(con)

    def pull(self, con: duckdb.DuckDBPyConnection, cursor: str | None = None) -> FilePullResult:
        order_files = self._resolve(self.cfg.orders)
        contact_files = self._resolve(self.cfg.contacts) if self.cfg.contacts else []
        create_staging(con)
        _drop_scratch(con)
        with tempfile.TemporaryDirectory(prefix="rfmsync-") as tmp:
            o_tables = [self._load(con, p, self._orders_map, f"_fs_o{i}", Path(tmp)) for i, p in enumerate(order_files)]
            c_tables = [self._load(con, p, self._contacts_map, f"_fs_c{i}", Path(tmp))
                        for i, p in enumerate(contact_files)]
            try:
                result = _stage(con, self.cfg, o_tables, c_tables)
            finally:
                _drop_scratch(con)
        log.info("file source: %d orders, %d contacts, %d bad rows, %d cleaned values, %d duplicate order ids",
                 result.orders, result.contacts, result.bad_row_count, result.issue_count, result.duplicate_orders)
        return result

    # ------------------------------------------------------------------------------------------ reading

    def _resolve(self, pattern: str) -> list[Path]:
        full = pattern if os.path.isabs(pattern) else str(self.base_dir / pattern)
        found = sorted(Path(p) for p in glob.glob(full) if os.path.isfile(p))
        if not found:
            raise ConfigError(f"no file matches {pattern!r} (looked in {self.base_dir})")
        return found

    def _load(self, con: duckdb.DuckDBPyConnection, path: Path, mapping: _Mapping, table: str, tmp: Path) -> "_Loaded":
        suffix = path.suffix.lower()
        if suffix in (".xlsx", ".xlsm"):
            arrow = read_xlsx(path, mapping.columns, self.cfg.sheet)
            con.register(f"{table}_src", arrow)
            headers = [c for c in arrow.column_names if c != "_srow"]
            src, row_col, kind = f"{table}_src", "_srow", "xlsx"
        elif suffix in (".parquet", ".pq"):
            src = f"read_parquet({nz.lit(str(path))})"
            headers = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()]
            row_col, kind = None, "parquet"
        else:
            csv_path = _utf8_copy(path, self.cfg.encoding, tmp)
            delim = self.cfg.delimiter or _sniff_delimiter(csv_path)
            src = (f"read_csv({nz.lit(str(csv_path))}, delim={nz.lit(delim)}, header=true, all_varchar=true,"
                   f" quote='\"', escape='\"', null_padding=true)")
            try:
                headers = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()]
            except duckdb.Error as e:
                raise ConfigError(f"{path}: cannot read as CSV: {str(e).splitlines()[0]}") from None
            row_col, kind = None, "csv"
        cols = _match_headers(path, headers, mapping, self.cfg.attributes)
        if mapping is self._contacts_map and not ({"customer_id", "email", "phone"} & set(cols)):
            raise ConfigError(f"{path}: no customer_id, email or phone column found for contacts; "
                              f"map them under [source.contact_columns]. Columns in the file: "
                              f"{', '.join(repr(h) for h in headers)}")
        try:
            return _load_table(con, _Loaded(str(path), table, row_col or "rowid + 2", cols), src, kind, self.cfg)
        except duckdb.Error as e:
            raise ConfigError(f"{path}: cannot read: {str(e).splitlines()[0]}") from None
        finally:
            if kind == "xlsx":
                con.unregister(f"{table}_src")


def _match_headers(path: Path, headers: list[str], mapping: _Mapping, attributes: dict[str, str]) -> dict[str, str]:
    """canonical field (or ``attr:<name>``) → the file's real header; ConfigError listing what is missing."""
    by_key = {h.strip().casefold(): h for h in headers}
    wanted = {**mapping.columns, **{f"attr:{k}": v for k, v in attributes.items()}}
    out, missing = {}, []
    for fld, header in wanted.items():
        real = by_key.get(header.strip().casefold())
        if real is not None:
            out[fld] = real
        elif fld not in mapping.optional and not fld.startswith("attr:"):
            missing.append(f"{fld} = {header!r}")
        elif fld in ("ordered_at", "amount") or (fld == "price" and "amount" not in mapping.columns):
            missing.append(f"{fld} = {header!r} (from the preset)")
    if missing:
        raise ConfigError(f"{path}: mapped column(s) not found: {'; '.join(missing)}. "
                          f"Columns in the file: {', '.join(repr(h) for h in headers)}")
    return out


def _detect_encoding(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(1 << 20)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        return "utf-8"
    except UnicodeDecodeError:
        return "cp1251"


def _utf8_copy(path: Path, encoding: str, tmp: Path) -> Path:
    """The file itself when it is UTF-8 (with or without BOM), else a UTF-8 copy written in chunks."""
    enc = _detect_encoding(path) if encoding.lower() == "auto" else encoding
    try:
        if codecs.lookup(enc).name in ("utf-8", "utf-8-sig", "ascii"):
            return path
    except LookupError:
        raise ConfigError(f"unknown encoding {encoding!r} for {path}") from None
    out = tmp / (path.stem + ".utf8.csv")
    try:
        with open(path, encoding=enc, newline="") as src, open(out, "w", encoding="utf-8", newline="") as dst:
            while chunk := src.read(1 << 22):
                dst.write(chunk)
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not valid {enc} (byte {e.start}); set [source] encoding") from None
    log.debug("transcoded %s from %s", path, enc)
    return out


def _sniff_delimiter(path: Path) -> str:
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as f:
        sample = f.read(1 << 16)
    # The header line decides: headers hold no decimal commas (which fool csv.Sniffer on ";" files).
    header = sample.splitlines()[0] if sample else ""
    counts = {d: header.count(d) for d in (";", "\t", ",", "|")}
    best = max(counts, key=counts.get)  # ties keep this order
    return best if counts[best] else ","


def read_xlsx(path: Path, columns: dict[str, str], sheet: str | None) -> pa.Table:
    """The first sheet (or ``sheet``) as an all-string Arrow table plus ``_srow`` (spreadsheet row).

    The header row is the first of the first 30 rows holding most of the mapped headers (1C puts
    titles above it). Dates become ISO text; numbers keep full precision; empty rows are skipped.
    """
    wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        if sheet is not None and sheet not in wb.sheetnames:
            raise ConfigError(f"{path}: no sheet {sheet!r}; sheets: {', '.join(wb.sheetnames)}")
        ws = wb[sheet] if sheet else wb.worksheets[0]
        wanted = {h.strip().casefold() for h in columns.values()}
        rows = ws.iter_rows(values_only=True)
        head: list[tuple] = []
        for _ in range(30):
            try:
                head.append(next(rows))
            except StopIteration:
                break
        scores = [sum(1 for c in r if isinstance(c, str) and c.strip().casefold() in wanted) for r in head]
        if not head or max(scores) == 0:
            at = next((i for i, r in enumerate(head) if any(c is not None for c in r)), 0)
        else:
            at = scores.index(max(scores))
        names = [str(c).strip() if c is not None else f"column{i}" for i, c in enumerate(head[at] if head else ())]
        data: list[list[str | None]] = [[] for _ in names]
        srow: list[int] = []
        for n, r in enumerate(itertools.chain(head[at + 1:], rows), start=at + 2):
            if not any(c is not None and c != "" for c in r):
                continue
            srow.append(n)
            for i in range(len(names)):
                data[i].append(_cell_text(r[i]) if i < len(r) else None)
    finally:
        wb.close()
    return pa.table({**{name: pa.array(col, pa.string()) for name, col in zip(_dedupe(names), data)},
                     "_srow": pa.array(srow, pa.int64())})


def _dedupe(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}_{seen[n]}")
    return out


def _cell_text(v: object) -> str | None:
    if v is None:
        return None
    if isinstance(v, datetime):
        return v.isoformat(sep=" ")
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else repr(v)
    return str(v)


# ---------------------------------------------------------------------------------------------- SQL

@dataclass(frozen=True)
class _Loaded:
    path: str
    table: str
    row_sql: str  # spreadsheet row number of a table row
    cols: dict[str, str]  # canonical field (or attr:<name>) → header


_NUMBER_FIELDS = {"amount": 2, "price": 2, "discount": 2, "quantity": 3}


def _load_table(con: duckdb.DuckDBPyConnection, lf: _Loaded, src: str, kind: str, cfg: FileSourceConfig) -> _Loaded:
    """One pass over the file: CREATE TEMP TABLE with every field normalised, and the raw text
    kept only where parsing failed (for the bad-row report). Each nested SELECT is one step."""
    col = {f: f"CAST({nz.ident(h)} AS VARCHAR)" for f, h in lf.cols.items()}
    has = set(col)
    dec = {f: cfg.decimal or nz.sniff_decimal(v for (v,) in con.execute(
        f"SELECT {col[f]} FROM {src} WHERE {col[f]} IS NOT NULL LIMIT 2000").fetchall())
        for f in _NUMBER_FIELDS if f in has}
    nums, dates = [f for f in _NUMBER_FIELDS if f in has], [f for f in ("ordered_at", "created_at") if f in has]
    attrs = [f for f in lf.cols if f.startswith("attr:")]
    a = {f: f"a{i}" for i, f in enumerate(attrs)}
    step0 = ", ".join([*(["_srow"] if lf.row_sql == "_srow" else []),
                       *(f"{nz.text_sql(col[f])} AS {a.get(f, 't_' + f)}" for f in col)])
    step1 = [f"{nz.amount_sql('t_' + f, dec[f], _NUMBER_FIELDS[f])} AS d_{f}" for f in nums]
    step1 += [f"{nz.naive_timestamp_sql('t_' + f, excel_serial=kind == 'xlsx', date_format=cfg.date_format)} AS n_{f}"
              for f in dates]
    step1 += [f"{nz.name_words_sql('t_name')} AS w_name"] if "name" in has else []
    step2 = [f"{nz.zoned_timestamp_sql('t_' + f, 'n_' + f, cfg.timezone)} AS z_{f}" for f in dates]
    sql = f"SELECT {step0} FROM {src}"
    for step in (step1, step2):
        if step:
            sql = f"SELECT *, {', '.join(step)} FROM ({sql})"

    def get(prefix: str, f: str, typ: str = "VARCHAR") -> str:
        return f"{prefix}_{f}" if f in has else f"CAST(NULL AS {typ})"

    amount, amount_raw = get("d", "amount", "DECIMAL(18,2)"), get("t", "amount")
    if "amount" not in has and "price" in has:  # receipt lines without a line total: price × quantity
        amount, amount_raw = "(d_price * COALESCE(d_quantity, 1))::DECIMAL(18,2)", "t_price"
    if "currency" in has:
        currency = "upper(t_currency)"
    elif cfg.currency:
        currency = nz.lit(cfg.currency.upper())
    elif "amount" in has and any(nz.currency_of(v) for (v,) in con.execute(
            f"SELECT {col['amount']} FROM {src} LIMIT 2000").fetchall()):
        currency = nz.currency_sql("t_amount")  # symbols/words in the amounts (₸, сум, $…)
    else:
        currency = "CAST(NULL AS VARCHAR)"
    first, last = get("t", "first_name"), get("t", "last_name")
    if "name" in has:
        nf, nl = nz.name_parts_from_words_sql("w_name")
        first, last = f"COALESCE({first}, {nf})", f"COALESCE({last}, {nl})"
    attr_sql = ("NULLIF(to_json(map_from_entries(list_filter([" +
                ", ".join(f"{{'k': {nz.lit(f[5:])}, 'v': {a[f]}}}" for f in attrs) +
                "], lambda x: x.v IS NOT NULL))), '{}')") if attrs else "CAST(NULL AS VARCHAR)"
    consent = nz.consent_sql("t_marketing_consent") if "marketing_consent" in has else "'unknown'"
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {lf.table} AS
        SELECT {'_srow, ' if lf.row_sql == '_srow' else ''}
            {get('t', 'order_id')} AS order_id, {get('t', 'customer_id')} AS cust,
            {get('t', 'email')} AS email_raw, {get('t', 'phone')} AS phone_raw,
            {get('z', 'ordered_at', 'TIMESTAMPTZ')} AS ordered_at,
            CASE WHEN {get('z', 'ordered_at', 'TIMESTAMPTZ')} IS NULL THEN {get('t', 'ordered_at')} END AS ordered_at_raw,
            {amount} AS amount, CASE WHEN {amount} IS NULL OR {amount} < 0 THEN {amount_raw} END AS amount_raw,
            {get('t', 'status')} AS status_raw,
            {currency} AS currency, {get('d', 'discount', 'DECIMAL(18,2)')} AS discount,
            {get('t', 'sku')} AS sku, {get('t', 'product')} AS product, {get('t', 'category')} AS category,
            {get('t', 'brand')} AS brand, {get('d', 'quantity', 'DECIMAL(18,3)')} AS quantity,
            {get('d', 'price', 'DECIMAL(18,2)')} AS price, {first} AS first_name, {last} AS last_name,
            {consent} AS consent, {get('z', 'created_at', 'TIMESTAMPTZ')} AS created_at, {attr_sql} AS attributes
        FROM ({sql})""")
    return lf


_BAD = [  # (condition, field, reason, value) in the order they are checked
    ("key IS NULL", "customer_id", "no customer id, valid email or phone", "NULL"),
    ("ordered_at IS NULL", "ordered_at", "unparseable or empty date", "ordered_at_raw"),
    ("amount IS NULL", "amount", "unparseable or empty amount", "amount_raw"),
    ("status IS NULL", "status", "unknown status (map it under [source.statuses])", "status_raw"),
    ("amount < 0 AND status <> 'refunded'", "amount", "negative amount without a refund status", "amount_raw"),
]


def _rows_view(con: duckdb.DuckDBPyConnection, name: str, tables: list[_Loaded], offset: int) -> None:
    parts = [f"SELECT {offset + i} AS _file, ({t.row_sql})::BIGINT AS _row,"
             f" * {'EXCLUDE (_srow)' if t.row_sql == '_srow' else ''} FROM {t.table}" for i, t in enumerate(tables)]
    con.execute(f"CREATE OR REPLACE TEMP VIEW {name} AS {' UNION ALL BY NAME '.join(parts)}")


def _keyed(con: duckdb.DuckDBPyConnection, rows: str, out: str, region: str | None) -> None:
    """``out`` = rows + ``key``: customer id, else normalised email, else E.164 phone."""
    if not con.execute(f"SELECT count(*) FROM {rows} WHERE cust IS NULL").fetchall()[0][0]:
        con.execute(f"CREATE OR REPLACE TEMP VIEW {out} AS SELECT *, cust AS key FROM {rows}")
        return
    nz.email_map(con, f"SELECT email_raw AS raw FROM {rows} WHERE cust IS NULL", "_fs_emails")
    nz.phone_map(con, f"SELECT phone_raw AS raw FROM {rows} WHERE cust IS NULL", "_fs_phones", region)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {out} AS
        SELECT r.*, COALESCE(r.cust, e.norm, p.norm) AS key FROM {rows} r
        LEFT JOIN _fs_emails e ON r.cust IS NULL AND e.raw = r.email_raw
        LEFT JOIN _fs_phones p ON r.cust IS NULL AND p.raw = r.phone_raw""")


def _status_case(con: duckdb.DuckDBPyConnection, cfg: FileSourceConfig, rows: str) -> str:
    """A CASE over the few distinct raw statuses (mapped once by :func:`nz.status_sql`)."""
    pairs = con.execute(f"SELECT raw, {nz.status_sql('raw', cfg.statuses)} FROM "
                        f"(SELECT DISTINCT status_raw AS raw FROM {rows}) WHERE raw IS NOT NULL").fetchall()
    arms = " ".join(f"WHEN {nz.lit(raw)} THEN {nz.lit(st) if st else 'NULL'}" for raw, st in pairs)
    known = f"(CASE status_raw {arms} END)" if arms else "NULL"
    return f"CASE WHEN status_raw IS NULL THEN 'completed' ELSE {known} END"


def _stage(con: duckdb.DuckDBPyConnection, cfg: FileSourceConfig, orders: list[_Loaded],
           contacts: list[_Loaded]) -> FilePullResult:
    paths = [t.path for t in orders + contacts]
    _rows_view(con, "_fs_orows", orders, 0)
    _keyed(con, "_fs_orows", "_fs_okeyed", cfg.phone_region)
    bad_case = " ".join(f"WHEN {c} THEN {i}" for i, (c, *_) in enumerate(_BAD))
    status = _status_case(con, cfg, "_fs_orows")
    con.execute(f"CREATE OR REPLACE TEMP VIEW _fs_oclass AS SELECT *, CASE {bad_case} END AS _bad,"
                f" _file::BIGINT * 4294967296 + _row AS _ord FROM (SELECT *, {status} AS status FROM _fs_okeyed)")
    value = " ".join(f"WHEN {i} THEN {v}" for i, (_, _, _, v) in enumerate(_BAD))
    bad_sql = [f"SELECT _file, _row, _bad, CASE _bad {value} END AS value FROM _fs_oclass WHERE _bad IS NOT NULL"]
    if contacts:
        _rows_view(con, "_fs_crows", contacts, len(orders))
        _keyed(con, "_fs_crows", "_fs_ckeyed", cfg.phone_region)
        bad_sql.append("SELECT _file, _row, 0 AS _bad, NULL AS value FROM _fs_ckeyed WHERE key IS NULL")
    con.execute(f"CREATE OR REPLACE TEMP TABLE _fs_bad AS {' UNION ALL '.join(bad_sql)}")
    bad_count = con.execute("SELECT count(*) FROM _fs_bad").fetchall()[0][0]
    bad_rows = [BadRow(source=paths[f], row=r, reason=_BAD[b][2], field=_BAD[b][1], value=v) for f, r, b, v in
                con.execute(f"SELECT * FROM _fs_bad ORDER BY _file, _row LIMIT {MAX_BAD_ROWS}").fetchall()]

    # Orders: receipt lines grouped by order id, else one row per order (last duplicate wins).
    con.execute(f"""CREATE OR REPLACE TEMP VIEW _fs_valid AS
        SELECT * REPLACE (CASE WHEN status = 'refunded' THEN abs(amount) ELSE amount END AS amount),
               CASE WHEN order_id IS NOT NULL THEN order_id
                    ELSE 'h' || left(md5(concat_ws('|', key, ordered_at, amount, _file, _row)), 16) END AS oid
        FROM _fs_oclass WHERE _bad IS NULL""")
    lines = any({"sku", "product", "quantity", "price"} & set(t.cols) for t in orders)
    duplicates = 0
    if lines:
        con.execute("""INSERT INTO staged_orders SELECT oid, arg_max(key, _ord), min(ordered_at), sum(amount),
                       arg_max(currency, _ord), arg_max(status, _ord), sum(discount) FROM _fs_valid GROUP BY oid""")
        con.execute("""INSERT INTO staged_line_items SELECT oid, row_number() OVER (PARTITION BY oid ORDER BY _ord),
                       sku, product, category, brand, quantity, price FROM _fs_valid""")
    else:
        con.execute("INSERT INTO staged_orders SELECT oid, key, ordered_at, amount, currency, status, discount"
                    " FROM _fs_valid")
        # Distinct hashes prove the ids unique (a parallel GROUP BY, cheaper than a string DISTINCT);
        # only when some hash repeats are the orders rebuilt, keeping the last row of each id.
        if con.execute("SELECT count(*) FROM (SELECT 1 FROM staged_orders GROUP BY hash(order_id)"
                       " HAVING count(*) > 1)").fetchall()[0][0]:
            n = con.execute("SELECT count(*) FROM staged_orders").fetchall()[0][0]
            con.execute("DELETE FROM staged_orders")
            con.execute("""INSERT INTO staged_orders SELECT oid, key, ordered_at, amount, currency, status, discount
                           FROM _fs_valid QUALIFY row_number() OVER (PARTITION BY oid ORDER BY _ord DESC) = 1""")
            duplicates = n - con.execute("SELECT count(*) FROM staged_orders").fetchall()[0][0]
            if duplicates:
                log.warning("%d rows repeat an earlier order id; the last row of each order id was kept", duplicates)
    mapped = set().union(*(t.cols for t in orders + contacts))
    issues, issue_count = _stage_contacts(con, cfg, paths, bool(contacts), mapped)
    n_orders = con.execute("SELECT count(*) FROM staged_orders").fetchall()[0][0]
    n_contacts = con.execute("SELECT count(*) FROM staged_contacts").fetchall()[0][0]
    return FilePullResult(orders=n_orders, contacts=n_contacts, bad_rows=bad_rows, bad_row_count=bad_count,
                          full_refresh=True, issues=issues, issue_count=issue_count, duplicate_orders=duplicates)


def _stage_contacts(con: duckdb.DuckDBPyConnection, cfg: FileSourceConfig, paths: list[str],
                    has_file: bool, mapped: set[str]) -> tuple[list[BadRow], int]:
    """One contact per customer key: latest non-empty value of each field; the contacts file's
    values win over those repeated on order rows. Only mapped fields are aggregated."""
    src = "SELECT 0 AS _src, * FROM _fs_okeyed WHERE key IS NOT NULL"
    if has_file:
        src += " UNION ALL BY NAME SELECT 1 AS _src, * FROM _fs_ckeyed WHERE key IS NOT NULL"
    wants = {"first_name": {"first_name", "name"}, "last_name": {"last_name", "name"}, "created_at": {"created_at"},
             "attributes": {f for f in mapped if f.startswith("attr:")}}
    aggs = [f"arg_max({c}, _ord) FILTER (WHERE {c} IS NOT NULL) AS {c}" if wants[c] & mapped else f"NULL AS {c}"
            for c in ("first_name", "last_name", "created_at", "attributes")]
    aggs.append("arg_max(consent, _ord) FILTER (WHERE consent <> 'unknown') AS consent"
                if "marketing_consent" in mapped else "NULL AS consent")
    for c in ("email", "phone"):
        aggs.append(f"arg_max({{'v': {c}_raw, 'f': _file, 'r': _row}}, _ord) FILTER (WHERE {c}_raw IS NOT NULL) AS {c}"
                    if c in mapped else f"CAST(NULL AS STRUCT(v VARCHAR, f INTEGER, r BIGINT)) AS {c}")
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _fs_cagg AS
        SELECT key, {', '.join(aggs)}
        FROM (SELECT *, _src::BIGINT * 281474976710656 + _file::BIGINT * 4294967296 + _row AS _ord FROM ({src}))
        GROUP BY key""")
    nz.email_map(con, "SELECT email.v AS raw FROM _fs_cagg", "_fs_emails")
    nz.phone_map(con, "SELECT phone.v AS raw FROM _fs_cagg", "_fs_phones", cfg.phone_region)
    con.execute("""INSERT INTO staged_contacts
        SELECT c.key, e.norm, p.norm, c.first_name, c.last_name, COALESCE(c.consent, 'unknown'), c.created_at,
               c.attributes FROM _fs_cagg c
        LEFT JOIN _fs_emails e ON e.raw = c.email.v LEFT JOIN _fs_phones p ON p.raw = c.phone.v""")
    issue_sql = """SELECT c.{f}.f, c.{f}.r, c.{f}.v, '{f}' FROM _fs_cagg c JOIN {t} m ON m.raw = c.{f}.v
                   WHERE m.norm IS NULL"""
    both = f"{issue_sql.format(f='email', t='_fs_emails')} UNION ALL {issue_sql.format(f='phone', t='_fs_phones')}"
    count = con.execute(f"SELECT count(*) FROM ({both})").fetchall()[0][0]
    issues = [BadRow(source=paths[f], row=r, field=fld, value=v,
                     reason=f"invalid {fld}; the contact is kept without it")
              for f, r, v, fld in con.execute(f"{both} ORDER BY 1, 2 LIMIT {MAX_BAD_ROWS}").fetchall()]
    return issues, count


def _drop_scratch(con: duckdb.DuckDBPyConnection) -> None:
    """Drop this module's scratch views/tables (names start with ``_fs_``) from the connection."""
    for name, kind in con.execute("""SELECT table_name, table_type FROM information_schema.tables
                                     WHERE table_name LIKE '\\_fs\\_%' ESCAPE '\\'""").fetchall():
        con.execute(f"DROP {'VIEW' if kind == 'VIEW' else 'TABLE'} IF EXISTS {nz.ident(name)}")
