"""File exports (CSV/TSV, XLSX, Parquet) as a source: column-mapped, normalised in DuckDB SQL.

``FileSource.pull`` reads every file matching ``orders`` (and ``contacts``), maps columns to
canonical fields, normalises amounts/dates/statuses (:mod:`connectors.normalize`) and
emails/phones (:mod:`connectors.email_phone`) and stages canonical rows (:mod:`connectors.file_staging`).
Rows it cannot use are reported as :class:`~connectors.records.BadRow` (spreadsheet row numbers:
header = 1, first data row = 2), never dropped silently. Each pull is a full refresh.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Literal

import duckdb
from pydantic import ConfigDict, Field, field_validator, model_validator

from . import normalize as nz
from .blank import BlankIsUnset
from .contacts import PhoneRegion
from .counts import counted
from .diagnose import check_orders
from .errors import BadFileError, ConfigError, ConnectorError
from .file_copying import QUIET_SECONDS, copy_under_way
from .file_encoding import csv_error, utf8_copy
from .file_header_map import Mapping, match_headers, repeated_headers
from .file_lines import header_cells, line_count, numbered_src, record_lines, title_lines, without_lines
from .file_paths import READ_ATTEMPTS, being_written, file_state, matching_files, unchanged, vanished
from .file_readers import (EXCEL_EPOCH, MERGED_COLUMN, XLSX_HEADER_SCAN, csv_src, needs_serial_read, read_xlsx,
                           sheets_hint, sniff_delimiter, typed_csv, xlsx_epoch, xlsx_headers)
from .file_sql import NUMBER_FIELDS, load_table
from .file_staging import CONTACT_FIELDS, FIELDS, FilePullResult, LoadedFile, drop_scratch, stage_files
from .identity import DEFAULT_MAX_GROUP
from .suggest import did_you_mean
from .source import Progress
from .tables import create_staging
from .zones import TimeZone

log = logging.getLogger(__name__)

#: the most days ``[source] max_days_ahead`` may allow (ten years: a larger one overflows the date arithmetic)
MAX_DAYS_AHEAD = 3660


class FileSourceConfig(BlankIsUnset):
    """``[source]`` for ``type = "file"``; paths are relative to the config file's folder."""

    model_config = ConfigDict(extra="forbid")
    blankable = frozenset({"contacts", "encoding", "currency", "preset", "date_format", "sheet", "decimal",
                           "timezone", "phone_region"})

    type: Literal["file"] = "file"  # the default source type: a [source] without type is a file source
    orders: str
    contacts: str | None = None
    encoding: str = "auto"
    timezone: TimeZone = "UTC"
    phone_region: PhoneRegion = None  # default country of phones written without one, e.g. "UZ"
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
    skip_lines: int | None = Field(None, ge=0)  # CSV lines above the header (a title); None: title lines detected
    max_days_ahead: int = Field(1, ge=0, le=MAX_DAYS_AHEAD)  # an order dated more days after the file is read: bad
    max_identity_group: int = Field(DEFAULT_MAX_GROUP, ge=1)
    # a CSV/TSV file whose last line has no line break is read once unchanged this long (a copy under way): 0 at once
    quiet_seconds: int = Field(QUIET_SECONDS, ge=0, le=3600)

    @field_validator("columns", "contact_columns")
    @classmethod
    def _known_fields(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        unknown = sorted(set(v or {}) - set(FIELDS))
        if unknown:
            named = ", ".join(f"{u!r}{did_you_mean(u, FIELDS)}" for u in unknown)
            raise ValueError(f"unknown canonical field(s) {named}; known: {', '.join(FIELDS)} "
                             "(put other columns under [source.attributes])")
        return v

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
            raise ValueError(f"unknown preset {self.preset!r}{did_you_mean(self.preset, PRESETS)}; "
                             f"choose one of {', '.join(PRESETS)}")
        return self


class FileSource:
    """Reads column-mapped export files into the ``staged_*`` tables (always a full refresh)."""

    name = "file"

    def __init__(self, cfg: FileSourceConfig, base_dir: Path, clock: Callable[[], datetime] | None = None) -> None:
        from .presets import PRESETS
        self.cfg = cfg
        # the time files are read: an order dated later is a bad row (tests inject a clock)
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.base_dir = Path(base_dir)
        preset = PRESETS.get(cfg.preset or "", {})
        optional = set(preset) - set(cfg.columns)
        if cfg.contacts and cfg.contact_columns is None:  # shared mapping: contact fields may live in either file
            optional |= set(CONTACT_FIELDS)
        self._orders_map = Mapping({**preset, **cfg.columns}, frozenset(optional))
        self._text_only = False  # tests set it to compare the typed CSV fast path with the text path
        # The contacts file uses [source.contact_columns], else the contact fields of [source.columns]
        # (then optional: a field the contacts file lacks is simply not read from it).
        keep = ("customer_id",) + CONTACT_FIELDS
        if cfg.contact_columns is not None:
            self._contacts_map = Mapping(dict(cfg.contact_columns), frozenset())
        else:
            shared = {k: v for k, v in self._orders_map.columns.items() if k in keep}
            self._contacts_map = Mapping(shared, frozenset(shared))
        cols = self._orders_map.columns
        if "ordered_at" not in cols or not ({"amount", "price"} & set(cols)):
            raise ConfigError("[source.columns] must map ordered_at and amount (or price for receipt lines)")
        if not ({"customer_id", "email", "phone"} & set(cols)):
            raise ConfigError("[source.columns] must map customer_id, email or phone to identify customers")

    @property
    def max_identity_group(self) -> int:
        return self.cfg.max_identity_group

    def __repr__(self) -> str:
        return f"FileSource(orders={self.cfg.orders!r}, contacts={self.cfg.contacts!r})"

    def mapped_fields(self) -> set[str]:
        """The canonical fields the ``[source]`` table maps for orders files (a preset's too) and ``attr:<name>``
        per attribute."""
        return set(self._orders_map.columns) | {f"attr:{a}" for a in self.cfg.attributes}

    def check(self) -> None:
        """A file export is checked by reading it (:meth:`pull`): nothing to ask an account."""
        return None

    def pull(self, con: duckdb.DuckDBPyConnection, cursor: str | None = None, *, progress: Progress = None,
             in_place: bool = False) -> FilePullResult:
        """Stage every matching file (a full refresh; ``cursor`` and ``progress`` are ignored).

        ``in_place=True`` is for a throw-away connection that is segmented right away: where no
        duplicate ids or receipt lines need rebuilding, ``staged_orders`` becomes a view over the rows
        as read instead of a copy of them, and the read tables stay until the connection closes.
        The order store reads files one by one instead (:func:`sync.store.files.ingest_files`):
        :meth:`files`, :meth:`read_file` and :meth:`stage` are the steps of this method.
        """
        order_files, contact_files = self.files()
        create_staging(con)
        drop_scratch(con)
        with tempfile.TemporaryDirectory(prefix="rfmsync-") as tmp:
            o_tables = [self.read_file(con, p, "orders", f"_fs_o{i}", Path(tmp)) for i, p in enumerate(order_files)]
            c_tables = [self.read_file(con, p, "contacts", f"_fs_c{i}", Path(tmp)) for i, p in enumerate(contact_files)]
            try:
                return self.stage(con, o_tables, c_tables, in_place=in_place)
            finally:
                if not in_place:
                    drop_scratch(con)

    def files(self) -> tuple[list[Path], list[Path]]:
        """The files matching ``orders`` and ``contacts``, each list sorted: the order their rows are read in
        (a later file's row wins a repeated order id or contact field)."""
        return (matching_files(self.cfg.orders, self.base_dir),
                matching_files(self.cfg.contacts, self.base_dir) if self.cfg.contacts else [])

    def read_file(self, con: duckdb.DuckDBPyConnection, path: Path, role: Literal["orders", "contacts"],
                  table: str, tmp: Path) -> LoadedFile:
        """Read and normalise one file into the temp view ``table`` over the temp table ``<table>_data``
        (:func:`connectors.file_sql.persist_loaded` copies it into the connection's database). A file that changed
        while it was read (a POS still writing it, a copy onto the share under way) is read again, and after
        :data:`~connectors.file_paths.READ_ATTEMPTS` such reads the run stops, a retry-later error naming it (so does
        a fresh text file ending mid-line, once read: :func:`~connectors.file_copying.copy_under_way`).
        The file as found before and after the read it returns is its ``state``."""
        mapping = self._orders_map if role == "orders" else self._contacts_map
        try:
            for _ in range(READ_ATTEMPTS):
                before = file_state(path)
                try:
                    loaded = self._load(con, path, mapping, table, tmp)
                except ConnectorError as e:  # a half-written XLSX or Parquet file, a truncated row's column...
                    if unchanged(path, before):
                        if isinstance(e, BadFileError):  # DuckDB's: a copy stalled in a quoted field, say
                            copy_under_way(path, before, self.cfg.quiet_seconds, e)
                        raise
                    continue
                if unchanged(path, before):
                    copy_under_way(path, before, self.cfg.quiet_seconds)  # after the read: its errors come first
                    return replace(loaded, state=before)
        except FileNotFoundError:  # moved into an archive folder, removed: before, during or right after a read
            raise vanished(path) from None
        raise being_written(path)

    def stage(self, con: duckdb.DuckDBPyConnection, orders: list[LoadedFile], contacts: list[LoadedFile],
              in_place: bool = False, file_ids: list[int] | None = None, zeros: bool = True) -> FilePullResult:
        """Stage the rows of the files read (every file, in :meth:`files` order) into fresh ``staged_*``;
        ``file_ids`` (one per orders file) adds ``staged_orders.file_id``: the file each order's row came from; one
        more per contacts file adds ``staged_contacts.file_id``; ``zeros=False``: without the warning of codes
        without their zeros (:func:`~connectors.file_staging.stage_files`)."""
        create_staging(con)
        check_orders(con, orders, self.cfg.orders, self.cfg.date_format, self.cfg.preset)  # no rows, bad dates: stop
        result = stage_files(con, self.cfg, orders, contacts, in_place=in_place, file_ids=file_ids, now=self.clock(),
                             zeros=zeros)
        result.fast_path = all(t.fast for t in orders)
        log.info("file source: %s", ", ".join(counted(n, what) for n, what in (
            (result.orders, "order"), (result.contacts, "contact"), (result.bad_row_count, "bad row"),
            (result.issue_count, "cleaned value"), (result.duplicate_orders, "duplicate order id"))))
        for line in result.warnings:  # (told by the run's warnings: sync.pipeline.pull_lines)
            log.info("file source: %s", line)
        return result

    # ------------------------------------------------------------------------------------------ reading

    def _load(self, con: duckdb.DuckDBPyConnection, path: Path, mapping: Mapping, table: str,
              tmp: Path) -> LoadedFile:
        suffix = path.suffix.lower()
        if path.stat().st_size == 0:
            raise BadFileError(f"{path}: the file is empty (0 bytes)")
        if self.cfg.skip_lines and suffix in (".xlsx", ".xlsm", ".parquet", ".pq"):
            why = (f"an XLSX file's header is found among its sheet's first {XLSX_HEADER_SCAN} rows, title rows "
                   f"above it skipped" if suffix in (".xlsx", ".xlsm") else "a Parquet file names its columns itself")
            raise ConfigError(f"{path}: [source] skip_lines = {self.cfg.skip_lines} applies to CSV files only "
                              f"({why}): remove it")
        if suffix in (".xlsx", ".xlsm"):
            arrow = read_xlsx(path, mapping.columns, self.cfg.sheet, NUMBER_FIELDS)
            headers = [c for c in arrow.column_names if c not in ("_srow", MERGED_COLUMN)]
            repeated_headers(path, xlsx_headers(arrow), headers, mapping, self.cfg.attributes)
            con.register(f"{table}_src", arrow)
            src, row_col, kind = f"{table}_src", "_srow", "xlsx"
        elif suffix in (".parquet", ".pq"):
            src = f"read_parquet({nz.lit(str(path))})"
            try:
                headers = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()]
            except duckdb.Error as e:
                raise BadFileError(f"{path}: not a readable Parquet file (truncated or another format): "
                                   f"{str(e).splitlines()[0]}") from None
            row_col, kind = None, "parquet"
        else:
            csv_path = utf8_copy(path, self.cfg.encoding, tmp)
            skip = self._title_lines(path, csv_path, mapping)
            if skip:
                csv_path = without_lines(csv_path, skip, tmp)
            delim = self.cfg.delimiter or sniff_delimiter(csv_path)
            src = csv_src(csv_path, delim)
            try:
                headers = [r[0] for r in con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()]
            except duckdb.Error as e:
                raise csv_error(path, csv_path, e, self.cfg.encoding.lower() == "auto", delim, skip) from None
            repeated_headers(path, header_cells(csv_path, delim), headers, mapping, self.cfg.attributes)
            row_col, kind = None, "csv"
        try:
            cols = match_headers(path, headers, mapping, self.cfg.attributes)
        except ConfigError as e:
            if kind == "xlsx":
                con.unregister(f"{table}_src")
                raise ConfigError(f"{e}{sheets_hint(arrow)}") from None
            raise
        if mapping is self._contacts_map and not ({"customer_id", "email", "phone"} & set(cols)):
            raise ConfigError(f"{path}: no customer_id, email or phone column found for contacts; "
                              f"map them under [source.contact_columns]. Columns in the file: "
                              f"{', '.join(repr(h) for h in headers)}")
        lf = LoadedFile(str(path), table, row_col or "rowid + 2", cols)
        if kind == "csv":  # rows numbered by their line in the file, below the lines left out (``skip``)
            return self._load_csv(con, replace(lf, first_line=2 + skip), path, csv_path, delim, skip)
        try:
            xlsx = kind == "xlsx"
            return load_table(con, lf, src, kind, self.cfg, excel_epoch=xlsx_epoch(arrow) if xlsx else EXCEL_EPOCH,
                              merged=xlsx and MERGED_COLUMN in arrow.column_names)
        except duckdb.Error as e:
            raise BadFileError(f"{path}: cannot read: {str(e).splitlines()[0]}") from None
        finally:
            if kind == "xlsx":
                con.unregister(f"{table}_src")

    def _title_lines(self, path: Path, csv_path: Path, mapping: Mapping) -> int:
        """The lines above a CSV's header: ``skip_lines``, else the title lines :func:`title_lines` finds (skipped
        with a warning); a line above the header holding more than a title stops the read, asking for
        ``skip_lines``."""
        if self.cfg.skip_lines is not None:
            return self.cfg.skip_lines
        k, above = title_lines(csv_path, [*mapping.columns.values(), *self.cfg.attributes.values()])
        if above is not None:
            raise ConfigError(f"{path}: the header is on line {k + 1}, and line {above[0]} above it is not a title "
                              f"({above[1][:80]!r}); set [source] skip_lines = {k} to skip the lines above the header")
        if k:
            log.warning("%s: %s above the header (line %d) skipped as a title; [source] skip_lines = %d says so",
                        path, "line 1" if k == 1 else f"lines 1-{k}", k + 1, k)
        return k

    def _load_csv(self, con: duckdb.DuckDBPyConnection, lf: LoadedFile, path: Path, csv_path: Path,
                  delim: str, offset: int = 0) -> LoadedFile:
        """Read a UTF-8 CSV with DuckDB's parallel scanner. When the file holds more lines than header + rows
        (blank lines, which DuckDB skips, or line breaks inside quoted fields) or the parallel scanner refuses
        it (a line break inside a quoted field), read it again single-threaded with each row numbered by its
        line in the file (:meth:`_load_numbered`); a clean file pays one newline count. ``offset``: the title
        lines above ``csv_path``'s first line (``lf.first_line`` counts them)."""
        auto = self.cfg.encoding.lower() == "auto"
        try:
            try:
                loaded = self._read_csv(con, lf, path, csv_path, delim, parallel=True)
            except duckdb.Error as e:
                if not needs_serial_read(e):
                    raise
                log.debug("%s: a line break inside a quoted field: reading the file single-threaded", path)
                return self._load_numbered(con, lf, path, csv_path, delim, offset)
            ((rows,),) = con.execute(f"SELECT count(*) FROM {loaded.table}").fetchall()
            if rows + 1 == line_count(csv_path):
                return loaded
            log.debug("%s: blank lines or quoted line breaks: numbering the rows by line", path)
            return self._load_numbered(con, lf, path, csv_path, delim, offset)
        except duckdb.Error as e:
            raise csv_error(path, csv_path, e, auto) from None

    def _load_numbered(self, con: duckdb.DuckDBPyConnection, lf: LoadedFile, path: Path, csv_path: Path,
                       delim: str, offset: int = 0) -> LoadedFile:
        """A single-threaded read whose rows carry their line in the file as ``_srow`` (:func:`record_lines`;
        ``offset``: the title lines above ``csv_path``'s first line)."""
        lines = record_lines(csv_path, delim, offset)
        if lines is None:
            return self._read_csv(con, lf, path, csv_path, delim, parallel=False)
        name = f"{lf.table}_lines"
        con.register(name, lines)
        try:
            return self._read_csv(con, replace(lf, row_sql="_srow"), path, csv_path, delim, parallel=False,
                                  lines=name)
        finally:
            con.unregister(name)

    def _read_csv(self, con: duckdb.DuckDBPyConnection, lf: LoadedFile, path: Path, csv_path: Path, delim: str,
                  parallel: bool, lines: str | None = None) -> LoadedFile:
        """The typed fast path when :func:`typed_csv` allows it and every value fits, else the text path;
        ``lines`` (a table from :func:`record_lines`) numbers the rows by their line in the file."""
        cols = lf.cols

        def numbered(src: str) -> str:
            return numbered_src(src, lines) if lines else src

        if not self.cfg.date_format and not self._text_only:
            typed = typed_csv(con, csv_path, delim, cols, [f for f in ("ordered_at", "created_at") if f in cols],
                              {f: s for f, s in NUMBER_FIELDS.items() if f in cols}, parallel, self.cfg.decimal)
            if typed is not None:
                try:  # any value the typed read rejects raises: then the text path reads the file again
                    loaded = load_table(con, lf, numbered(typed.src), "csv", self.cfg, typed.fields)
                    log.debug("%s: typed fast path", path)
                    return replace(loaded, fast=True)
                except duckdb.Error as e:
                    if needs_serial_read(e):
                        raise
                    log.debug("%s: typed read failed, using the text path: %s", path, str(e).splitlines()[0])
        return load_table(con, lf, numbered(csv_src(csv_path, delim, parallel=parallel)), "csv", self.cfg)

