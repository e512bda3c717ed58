"""The order store's side of a webhook resync (:mod:`sync.serve.resync`): the batch merged, its affected customers
re-scored and read (:func:`store_step`), and read again under a destination's lock when another batch merged into
the store since (:func:`read_again`).

Two batches of one customer (an order, then its refund; two workers) are merged and read one after the other (the
store has one writer), but each applies under the destination's lock, which the batch that read first may take
last: it held the store's older state, and planned from it (or planned again from it, the ledger having moved), it
would push that state over the newer batch's (the refunded order's tags put back; a segment regressing), also when
the newer batch planned nothing and moved no revision (the customer already was where the refund leaves him). The
store's generation (:mod:`sync.store.generation`: every merge moves it, in its transaction) read with the rows says
which: under the lock, a generation moved on means a later merge, whose batch pushes after its own read, and the
rows are read again first. A batch that merges after that check pushes after this one (it needs the lock), from
its own later read. The check is one open of the store and a read of its generation (not a look at its files: the
same inode, size and modification time can follow writes).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Callable, Collection, Sequence

import duckdb

from connectors.email_phone import normalize_email
from connectors.identity import max_group_of
from connectors.records import Contact, Order
from connectors.source import PullResult
from connectors.tables import stage_records

from ..config import Config
from ..engine import ApplyReport
from ..ingest import load_last_full_run, save_cut_points
from ..ledger import Ledger
from ..pipeline import SegmentsRun, compute_segments, store_path
from ..planning.transitions import move_join
from ..settings import Settings
from ..store import STORE_LOCK, connect_store, ensure_lookup_indexes, lookup_by_key, merge_staged
from ..store.generation import generation
from ..store.ordering import Ages, Senders
from ..store.webhooks import add_late_withdrawals
from .readcount import CountingConnection
from .resync_staging import coalesce_webhook_contacts, prune_file_won_ages, pull_after_webhook_records, utcnow

log = logging.getLogger("sync.serve.resync")
__all__ = ["AFFECTED_TABLE", "Affected", "ResyncReport", "read_again", "store_step"]

AFFECTED_TABLE = "affected_customers"
CONTACTS_TABLE = "affected_contacts"  # their contacts' rows


@dataclass
class ResyncReport:
    """What one incremental resync did."""

    orders: int = 0
    contacts: int = 0
    customers: int = 0  # affected customers
    full_segmentation: bool = False  # no earlier full run: one was made and saved
    indexes_built: int = 0  # store lookup indexes (re)built first (after a bulk load), not in rows_read
    store_rows_read: int = 0  # rows DuckDB scanned in the order store for this resync
    ledger_rows_read: int = 0  # pushed-state rows read from the ledger
    reports: list[ApplyReport] = field(default_factory=list)
    seconds: float = 0.0
    #: versions left out as stale, per kind (``order``, ``contact``): the store (or the batch) held a newer version
    #: of the record, by the vendor's modification times or by acceptance (:func:`sync.store.merge.merge_staged`)
    stale: dict[str, int] = field(default_factory=dict)
    #: the affected customers' rows read again under a destination's lock: another batch merged after this one read
    #: them (:func:`read_again`)
    read_again: int = 0
    #: connections to the order store it opened: its merge and read, each read again, and per destination one for
    #: who else the store gives an address (:class:`sync.serve.resync_scope.StoreReads`), when it asked
    store_opens: int = 0

    @property
    def rows_read(self) -> int:
        """Store rows scanned plus ledger rows read: proportional to the affected customers."""
        return self.store_rows_read + self.ledger_rows_read

    @property
    def failed_items(self) -> int:
        return sum(r.counts.get("failed", 0) for r in self.reports)


@dataclass
class Affected:
    """The affected customers as the store gave them, at its generation ``generation`` (updated in place when they
    are read again: :func:`read_again`)."""

    rows: list[dict[str, Any]]  # customer rows (segment, metrics, email, consent) of the affected customers
    customer_ids: set[str]
    contact_keys: set[str]  # normalised emails of the affected customers' contacts
    store_wait: float = 60.0  # how long a later store read of this resync waits (resync's store_wait_seconds)
    collapse: Any = None  # the last full run's recency scores collapsed: the resync is refused (recency_scores)
    segments: Any = None  # their (customer_id, segment), recorded in the segment history once the resync applied
    generation: int = 0  # the store's generation they were read at
    as_of: date | None = None
    report: ResyncReport | None = None  # the resync's: its later store reads are counted there (:meth:`counted`)

    def counted(self, rows: int, opens: int = 0) -> None:
        """``rows`` more store rows read for them (who else the store gives an address: ``store_holders``), through
        ``opens`` more store connections."""
        if self.report is not None:
            self.report.store_rows_read += rows
            self.report.store_opens += opens


def store_step(cfg: Config, ledger: Ledger, settings: Settings, orders: Sequence[Order],
               contacts: Sequence[Contact], pull: bool, as_of: date, report: ResyncReport,
               wait_seconds: float, received_at: datetime | Ages | None = None,
               now: Callable[[], datetime] = utcnow, restored: Collection[str] = (),
               senders: Senders | None = None) -> Affected:
    with STORE_LOCK:
        con = connect_store(store_path(cfg), wait_seconds=wait_seconds)
        report.store_opens += 1
        try:
            report.indexes_built = ensure_lookup_indexes(con, phones=any(  # a phone-keyed record: linked by it
                r.customer_id.startswith("+") for r in (*orders, *contacts)))
            lookup_by_key(con)
            counted = CountingConnection(con)
            affected = _store_step_on(counted, cfg, ledger, settings, orders, contacts, pull, as_of,  # type: ignore[arg-type]
                                      report, received_at, now, restored, senders)
            report.store_rows_read = counted.rows()
            affected.store_wait, affected.report = wait_seconds, report
            return affected
        finally:
            con.close()


def read_again(cfg: Config, settings: Settings, affected: Affected, report: ResyncReport) -> bool:
    """Read the affected customers' rows again (``affected`` updated in place) when another merge moved the store's
    generation on since they were read; whether it did. Called under the destination's lock, before the apply. The
    generation is always read (a stat of the store's files would not do: the same inode, size and modification time
    can follow two small writes, and another host's write can hide behind a 1-second clock or an NFS attribute
    cache)."""
    if not affected.customer_ids or affected.as_of is None:
        return False
    path = store_path(cfg)
    with STORE_LOCK:
        con = connect_store(path, wait_seconds=affected.store_wait)
        report.store_opens += 1
        try:
            if generation(con) == affected.generation:
                return False
            lookup_by_key(con)
            counted = CountingConnection(con)
            counted.execute(f"CREATE OR REPLACE TEMP TABLE {AFFECTED_TABLE} AS SELECT unnest(?::VARCHAR[]) "
                            "AS customer_id", [sorted(affected.customer_ids)])
            again = _scored(counted, cfg, settings, affected.as_of, affected.customer_ids,  # type: ignore[arg-type]
                            report)
            report.store_rows_read += counted.rows()
        finally:
            con.close()
    log.info("webhook resync: the store moved on since its %d customers were read (generation %d → %d): read again "
             "before the apply", len(affected.customer_ids), affected.generation, again.generation)
    again.store_wait, again.report = affected.store_wait, affected.report
    vars(affected).update(vars(again))
    report.read_again += 1
    return True


def _store_step_on(con: duckdb.DuckDBPyConnection, cfg: Config, ledger: Ledger, settings: Settings,
                   orders: Sequence[Order], contacts: Sequence[Contact], pull: bool, as_of: date,
                   report: ResyncReport, received_at: datetime | Ages | None = None,
                   now: Callable[[], datetime] = utcnow, restored: Collection[str] = (),
                   senders: Senders | None = None) -> Affected:
    # one order's many versions in a batch (a storm of updates): the last only, or every version's items are kept
    stage_records(con, list({o.order_id: o for o in orders}.values()), contacts)
    # (each contact's last version given is merged) a deletion among them, or before them (``restored``): nothing of
    # the stored row is kept (its address must go; restored since, he is what the CRM says now)
    coalesce_webhook_contacts(con, sorted({c.customer_id for c in contacts if c.gone}.union(restored)))
    # the vendor's modification times of the versions staged (the last of each record's), where the payload says
    versions: dict[tuple[str, str], datetime] = {}
    for key, record in [*((("order", o.order_id), o) for o in orders), *((("contact", c.customer_id), c)
                                                                        for c in contacts)]:
        versions.pop(key, None)
        if record.updated_at is not None:
            versions[key] = record.updated_at
    pulled, cursor_source = (None, None)
    if pull:
        pulled, cursor_source, received_at, versions, senders = pull_after_webhook_records(  # type: ignore[assignment]
            cfg, ledger, con, settings, received_at, now, versions, senders)
    def affected(con: duckdb.DuckDBPyConnection) -> None:
        # after records keyed by an e-mail/phone joined their customer (inside the merge's transaction, which
        # notes both ids of every link), so that the affected set names that customer
        report.orders = con.execute("SELECT count(*) FROM staged_orders").fetchall()[0][0]
        con.execute(f"CREATE OR REPLACE TEMP TABLE {AFFECTED_TABLE} AS "
                    "SELECT customer_id FROM staged_orders WHERE customer_id <> '' UNION "
                    "SELECT customer_id FROM staged_contacts"
                    # a deleted order (tombstone) without its customer: the stored order says whose it was (joined
                    # to no order, DuckDB still reads a first chunk of the orders)
                    + (" UNION SELECT o.customer_id FROM orders o JOIN staged_orders s USING (order_id)"
                       if report.orders else ""))
        report.contacts = con.execute("SELECT count(*) FROM staged_contacts").fetchall()[0][0]

    # the merge notes whom it moved (sync.store.resynced): a full sync that read the store before leaves them out
    merged = merge_staged(con, PullResult(), origin="webhook", max_identity_group=max_group_of(cfg.source),
                          after_link=affected, received_at=received_at, versions=versions, senders=senders)
    for kind, name in (("order", "stale_orders"), ("contact", "stale_contacts")):
        report.stale[kind] = report.stale.get(kind, 0) + merged.get(name, 0)
    if pulled is not None and pulled.cursor is not None:
        ledger.set_cursor(cursor_source, "all", pulled.cursor)
    prune_file_won_ages(con, ledger, now)
    add_late_withdrawals(con, AFFECTED_TABLE)  # a stale version's withdrawal: pushed now, not at the next full sync
    ids = {r[0] for r in con.execute(f"SELECT customer_id FROM {AFFECTED_TABLE}").fetchall()}
    report.customers = len(ids)
    if not ids:
        return Affected([], set(), set())
    return _scored(con, cfg, settings, as_of, ids, report)


def _scored(con: duckdb.DuckDBPyConnection, cfg: Config, settings: Settings, as_of: date, ids: set[str],
            report: ResyncReport) -> Affected:
    """The customers of :data:`AFFECTED_TABLE` (``ids``) re-scored against the last full run's cut points (one
    full segmentation saved first when there is none), with their contacts and segments."""
    cut_points, collapse = load_last_full_run(con) or (None, None)
    if cut_points is None:
        log.info("resync: no full run yet: segmenting every customer once to fix the score cut points")
        full = compute_segments(cfg, as_of, con=con, settings=settings)
        save_cut_points(con, full)
        cut_points, collapse = full.result.cut_points, full.result.recency_collapse
        report.full_segmentation = True
    from segmentation import run_segmentation

    result = run_segmentation(con, cfg.segmentation, as_of, cfg.timezone, cut_points=cut_points,
                              customers=AFFECTED_TABLE, with_boundary=False)
    # their contacts by id alone (with ``email IS NOT NULL`` beside it, DuckDB scans every contact once some have none)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {CONTACTS_TABLE} AS SELECT customer_id, email, phone, marketing_consent "
                f"FROM contacts WHERE customer_id IN (SELECT customer_id FROM {AFFECTED_TABLE})")
    rows = _affected_rows(con, result.table, SegmentsRun(con=con, result=result, pull=None, config=cfg))
    emails = con.execute(f"SELECT email FROM {CONTACTS_TABLE} WHERE email IS NOT NULL").fetchall()
    keys = {k for (e,) in emails if (k := normalize_email(e))}
    segments = con.sql(f"SELECT customer_id, segment FROM {result.table}").to_arrow_table()
    return Affected(rows, ids, keys, collapse=collapse, segments=segments, generation=generation(con), as_of=as_of)


def _affected_rows(con: duckdb.DuckDBPyConnection, segments: str, run: SegmentsRun) -> list[dict[str, Any]]:
    """The planner's customer rows (:func:`sync.planning.rows.stage_segments`) of the re-scored customers, as
    mappings for the Python planner, with their contacts (:data:`CONTACTS_TABLE`, fetched by id first: joined to
    the whole ``contacts`` table, DuckDB would scan it), and their latest segment move (``moved_*`` columns)."""
    columns, join = move_join(run)
    rel = con.sql(f"""
        SELECT s.*, c.email, c.phone, c.marketing_consent{columns}
        FROM {segments} s JOIN {CONTACTS_TABLE} c USING (customer_id){join}
        WHERE c.email IS NOT NULL AND trim(c.email) <> ''
        ORDER BY s.monetary DESC, s.customer_id
    """)
    cols = rel.columns
    return [dict(zip(cols, row)) for row in rel.fetchall()]
