"""Staging a pull's pages (STYLE.md §7): :class:`Stager` keeps the latest version of each record read, its bad rows
and the values dropped from it; :func:`map_page` maps a page of vendor rows under the shape net. The loops that read
the pages are :mod:`connectors.incremental` (which re-exports these names)."""

from __future__ import annotations

import itertools
import logging
from datetime import datetime
from typing import Any, Callable, Iterable, Mapping

import duckdb
import pyarrow as pa

from .contacts import clean_contact
from .counts import counted
from .http import FieldError
from .non_purchase import NoCustomer
from .records import BadRow, Contact, Order
from .shapes import SHAPE_SLIPS, shape_error
from .source import PullResult
from .tables import append_versions, create_staged_versions, create_staging, stage_records

log = logging.getLogger("connectors.incremental")  # (the pulls' log name: kept as it was before the split)
#: the staged vendor times appended at once (:meth:`Stager._version`): one insert per page cost ~1.5-4.5 ms
VERSIONS_BATCH = 50_000

#: called with the number of records of each staged page
Progress = Callable[[int], None] | None


class Stager:
    """Stages pages of records; a later version of the same id replaces the earlier one. A record's vendor time
    (``updated_at``, set by the sources whose webhooks carry one of the same clock: Shopify, amoCRM) is staged in
    :data:`connectors.tables.STAGED_VERSIONS` for the store to note (:mod:`sync.store`)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, source: str, progress: Progress = None,
                 max_bad_rows: int = 1000) -> None:
        self.con, self.source, self.progress, self.max_bad_rows = con, source, progress, max_bad_rows
        self.bad_row_count = 0
        create_staging(con)
        create_staged_versions(con)
        self.timed = False  # whether a page staged a vendor time
        self.newest: datetime | None = None  # the newest time the vendor stamped that this pull knows (:meth:`saw`)
        self._versions: list[tuple[str, str, datetime | None]] = []  # not appended yet (:meth:`_version`)
        # each record's bad rows from its last read, by (source, record id); a row naming no record by a number,
        # the first max_bad_rows of them only (the others are counted: a pull of 200 k id-less rows keeps 1000)
        self._bad: dict[tuple[str, str] | int, list[BadRow]] = {}
        self._unnamed = itertools.count()
        self._before: dict[tuple[str, str], list[BadRow]] = {}  # this page's records' rows of their earlier read
        # values dropped from kept records (:meth:`contact`), each record's from its last read, by (source, id)
        self._issues: dict[tuple[str, str], list[BadRow]] = {}
        self._anonymous: set[tuple[str, str] | int] = set()  # purchases of nobody (a walk-in sale), by (source, id)
        self.shape_slips = 0  # mapper slips on a JSON shape (connectors.shapes): the first one's traceback is logged
        self.dropped: list[FieldError] = []  # values the mapper of map_page's row dropped (issues once it is kept)

    def saw(self, stamped: datetime | None) -> None:
        """A time the vendor stamped (a bookmark, a modification time read): :class:`RunStart` judges Dates by it."""
        if stamped is not None and (self.newest is None or stamped > self.newest):
            self.newest = stamped

    @property
    def bad_rows(self) -> list[BadRow]:
        """The bad rows (the first ``max_bad_rows``), each record's from its last read."""
        out: list[BadRow] = []
        for rows in self._bad.values():
            out.extend(rows[:self.max_bad_rows - len(out)])
            if len(out) >= self.max_bad_rows:
                break
        return out

    @property
    def issues(self) -> list[BadRow]:
        """The values dropped from kept records (the first ``max_bad_rows``), each record's from its last read."""
        return list(itertools.islice(itertools.chain.from_iterable(self._issues.values()), self.max_bad_rows))

    @property
    def issue_count(self) -> int:
        return sum(map(len, self._issues.values()))

    def reading(self, source: str, record_id: Any) -> None:
        """``record_id`` is read (again): its bad rows of an earlier read are dropped, this read's replace them. A
        record fixed between two reads of one pull (the lookback, the pass after a backfill) leaves no stale bad row;
        one broken (or broken otherwise) by the later read is reported as that read saw it. Nothing is dropped yet."""
        self.dropped.clear()
        if record_id in (None, ""):
            return
        key = (source, str(record_id))
        self._anonymous.discard(key)
        earlier = self._bad.pop(key, None)
        if earlier:
            self.bad_row_count -= len(earlier)
        earlier = (earlier or []) + self._issues.pop(key, [])
        if earlier:
            self._before[key] = earlier

    def bad(self, row: BadRow) -> None:
        """Report ``row`` (logged once: a record read twice with the same fault is not logged again). A row naming
        its record replaces that record's rows of an earlier read (:meth:`reading`); rows naming none are each
        counted (the first ``max_bad_rows`` kept)."""
        unnamed = next(self._unnamed) if row.row is None else None
        if unnamed is not None and unnamed >= self.max_bad_rows:  # (not kept: counted, logged)
            self.bad_row_count += 1
            log.warning("%s: skipped %s", self.source, row)
            return
        key = (row.source, str(row.row)) if unnamed is None else unnamed
        rows = self._bad.setdefault(key, [])
        if row in rows:
            return
        rows.append(row)
        self.bad_row_count += 1
        if not isinstance(key, tuple) or row not in self._before.get(key, ()):
            log.warning("%s: skipped %s", self.source, row)

    def anonymous(self, source: str, record_id: Any) -> None:
        """``record_id`` is a purchase that names no customer, e-mail or phone (a walk-in sale: :class:`NoCustomer`):
        counted in the pull's ``anonymous_orders``, once per record, neither staged nor a bad row."""
        self._anonymous.add(next(self._unnamed) if record_id in (None, "") else (source, str(record_id)))

    def contact(self, contact: Contact, region: str | None) -> Contact:
        """The contact cleaned (:func:`connectors.contacts.clean_contact`); each dropped value (a mistyped e-mail or
        phone) is an issue naming the contact and the field, not a bad row: the contact is kept without it, as a file
        export's (docs/sources/files.md), and the data guard ``max_bad_rows_pct`` does not count it."""
        contact, issues = clean_contact(contact, region, f"{self.source}:contacts")
        for issue in issues:
            self.issue(issue)
        return contact

    def issue(self, row: BadRow) -> None:
        """``row``, a value dropped from a kept record (:meth:`contact`, :attr:`dropped`): logged once, as :meth:`bad`."""
        key = (row.source, str(row.row))
        rows = self._issues.setdefault(key, [])
        if row not in rows:
            rows.append(row)
            if row not in self._before.get(key, ()):
                log.warning("%s: %s", self.source, row)

    def stage(self, orders: Iterable[Order] = (), contacts: Iterable[Contact] = ()) -> None:
        orders_by_id = {o.order_id: o for o in orders}
        contacts_by_id = {c.customer_id: c for c in contacts}
        if orders_by_id:
            self._drop("order_id", list(orders_by_id), ("staged_orders", "staged_line_items"))
        if contacts_by_id:
            self._drop("customer_id", list(contacts_by_id), ("staged_contacts",))
        self._before.clear()  # (the page's records were read and reported: only a later read drops their rows)
        stage_records(self.con, orders_by_id.values(), contacts_by_id.values())
        self._version([("order", i, o.updated_at) for i, o in orders_by_id.items()]
                      + [("contact", i, c.updated_at) for i, c in contacts_by_id.items()])
        if self.progress is not None and (orders_by_id or contacts_by_id):
            self.progress(len(orders_by_id) + len(contacts_by_id))

    def _version(self, rows: list[tuple[str, str, datetime | None]]) -> None:
        """Stage the records' vendor times, appended (the store takes each record's last row), a batch of pages at
        a time (:data:`VERSIONS_BATCH` rows; the rest in :meth:`result`). Once a time was staged, the untimed
        versions too: a later page's version without one replaces the earlier page's time."""
        for row in rows:
            if row[2] is not None or self.timed:
                self.timed = True
                self._versions.append(row)
        if len(self._versions) >= VERSIONS_BATCH:
            self._flush()

    def _flush(self) -> None:
        append_versions(self.con, self._versions)
        self._versions = []

    def _drop(self, column: str, ids: list[str], tables: tuple[str, ...]) -> None:
        self.con.register("_stage_ids", pa.table({"id": ids}))
        try:
            for table in tables:
                self.con.execute(f"DELETE FROM {table} WHERE {column} IN (SELECT id FROM _stage_ids)")
        finally:
            self.con.unregister("_stage_ids")

    def result(self, cursor: str) -> PullResult:
        self._flush()
        (orders,) = self.con.execute("SELECT count(*) FROM staged_orders").fetchone()
        (contacts,) = self.con.execute("SELECT count(*) FROM staged_contacts").fetchone()
        log.info("%s: staged %s, %s, %s, %s", self.source, counted(orders, "order"), counted(contacts, "contact"),
                 counted(self.bad_row_count, "bad record"), counted(self.issue_count, "cleaned value"))
        return PullResult(orders=orders, contacts=contacts, bad_rows=self.bad_rows, bad_row_count=self.bad_row_count,
                          issues=self.issues, issue_count=self.issue_count, anonymous_orders=len(self._anonymous),
                          cursor=cursor)


def record_id(raw: Any) -> Any:
    """The ``id`` of a vendor row, for a bad-row report."""
    return raw.get("id") if isinstance(raw, Mapping) else None


def map_page(stager: Stager, what: str, rows: Iterable[Any], map_row: Callable[[Any], Order | Contact | None],
             id_of: Callable[[Any], Any] = record_id, *,
             keep: Callable[[Any, Any], Order | Contact | None] | None = None) -> tuple[list[Order], list[Contact]]:
    """``map_row`` over a page: (orders, contacts). A row that is not a JSON object, or that ``map_row`` cannot
    map (FieldError), is a bad row of ``what`` naming ``id_of(row)``; None (not a purchase) is dropped; a purchase
    of nobody (:class:`NoCustomer`) is counted (:meth:`Stager.anonymous`). A slip of ``map_row`` on an unexpected
    JSON shape is such a bad row too (:func:`connectors.shapes.shape_error`), never a traceback stopping the pull;
    ``keep(record, row)`` (a contact's normalisation, its version's time) is called outside that net: a slip there
    is rfmsync's bug. What ``map_row`` put in :attr:`Stager.dropped` (a guest's e-mail refused) is an issue."""
    orders: list[Order] = []
    contacts: list[Contact] = []
    for raw in rows:
        if not isinstance(raw, Mapping):
            stager.bad(BadRow(what, None, "the vendor sent a row that is not an object", value=str(raw)[:100]))
            continue
        stager.reading(what, id_of(raw))
        try:
            try:
                record = map_row(raw)
            except SHAPE_SLIPS as exc:
                stager.shape_slips += 1
                raise shape_error(exc, what, stager.shape_slips == 1) from None
            if record is not None and keep is not None:
                record = keep(record, raw)
        except NoCustomer:
            stager.anonymous(what, id_of(raw))
            continue
        except FieldError as exc:
            stager.bad(exc.bad_row(what, id_of(raw)))
            continue
        for exc in stager.dropped:
            stager.issue(exc.bad_row(what, id_of(raw)))
        if isinstance(record, Order):
            orders.append(record)
        elif record is not None:
            contacts.append(record)
    return orders, contacts
