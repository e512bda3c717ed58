"""Merging staged rows into the order store, in one transaction (see :mod:`sync.store` for the rules)."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Iterator, Mapping, Union

import duckdb

from connectors.identity import DEFAULT_MAX_GROUP, link_staged
from connectors.source import PullResult
from connectors.tables import STAGED_TOMBSTONES, STAGED_VERSIONS, TABLES

from .appends import NOTED_ROWS, note_merged
from .deletes import (UNSTORED, create_deleted_table, forget_deleted, leave_out_deleted,
                      leave_out_unstored_tombstones, note_deleted)
from .facts import DAY_HASH, RFM_HASH
from .generation import bump_generation, generation
from .links import LINKS_TABLE, apply_links, create_links_table, forget_gone_links, hold_guests, note_stored_links
from .lookup import BULK_ROWS, drop_lookup_indexes
from .pulled import (PULLED_STAGED, drop_older_pulled, forget_replaced, forget_superseded, note_pulled,
                     pulled_for, settle_staged, timed_pull)
from .ordering import (Ages, Senders, Versions, drop_older_versions, forget_withdrawals, keep_withdrawals, lenders,
                       note_versions, note_withdrawn, stored_newer)
from .resynced import before_write, moved_by, note_moved
from .returns import create_returns_table, delete_returns, note_returns, returns_of, stamp_returns
from .webhooks import (FILE_WON_TABLE, KEY_OF, KIND, WEBHOOK_TABLE, create_webhook_table, later_vendor_time,
                       plausible_versions)

log = logging.getLogger(__name__)

KEYS = {**KEY_OF, "line_items": "order_id"}  # store table → its records' key (webhooks.KEY_OF's and line items)
#: what a noted merge reads of each order it deletes or inserts (:class:`_Note`)
_RETURNING = f" RETURNING customer_id, {RFM_HASH}, {DAY_HASH}"


@dataclass
class _Note:
    """What an incremental merge changed of the orders, for :func:`.appends.note_merged`: the customers of the
    orders it deleted (replaced) and inserted, both ids of every customer identity resolution moved orders
    between, and the orders' count and checksums it added (the inserted orders' minus the deleted ones')."""

    customers: set[str]
    change: list[int] = field(default_factory=lambda: [0, 0, 0])

    def add(self, rows: list[tuple[str, int, int]], sign: int) -> None:
        for customer, rfm, day in rows:
            self.customers.add(customer)
            self.change[0] += sign
            self.change[1] += sign * int(rfm)
            self.change[2] += sign * int(day)


@dataclass(frozen=True)
class FileReads:
    """When the files of a file source's full refresh were read: ``catalogue`` names the table of the files read
    before this run (``file_id``, ``read_at``; a staged file id not in it is read now) and ``contact_files`` are the
    ids of its contacts files (a contact's file is then its staged row's, else its orders' files). A webhook record
    yields to the file's version only when a file that holds it was read after the record was merged (see
    :mod:`sync.store`)."""

    catalogue: str
    contact_files: tuple[int, ...] = ()
    #: when this run began reading (before the files were fingerprinted): the read time of the files read now,
    #: which the catalogue notes too. Not the merge's time: a webhook accepted while the files were read (it waits
    #: for the store the run holds) is newer than their version.
    read_started: datetime | None = None


def merge_staged(con: duckdb.DuckDBPyConnection, pull: PullResult, *, origin: str = "pull",
                 max_identity_group: int = DEFAULT_MAX_GROUP,
                 before_commit: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
                 after_link: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
                 files: FileReads | None = None, received_at: Union[datetime, Ages, None] = None,
                 pulled_at: datetime | None = None, versions: Versions | None = None,
                 senders: Senders | None = None) -> dict[str, int]:
    """Move the ``staged_*`` rows into the main tables in one transaction; returns rows per table.

    ``pull.full_refresh``: the staged rows replace the store, except webhook records the file does not
    contain yet (see :mod:`sync.store`). ``origin="webhook"``: the merged order and customer ids are
    noted as webhook records. An incremental merge first links records keyed by an e-mail or phone to the
    customer with that e-mail/phone (:func:`connectors.identity.link_staged`); ``pull.identity`` says what it did.
    Every link made is noted (:mod:`.links`), and a full refresh applies them to the rows it wrote, in the same
    transaction: the export keys a linked guest by its e-mail/phone again, and it must stay its customer's.
    ``before_commit`` writes more in the same transaction (a file source's fingerprints, :mod:`sync.store.files`).
    ``after_link`` reads the staged rows as linked, before anything is merged, in the same transaction (the
    webhook server's affected customers): linking re-keys stored orders too, so it happens only here, inside the
    transaction that moves the generation on and notes both ids of every link.
    ``files``: when a file source's files were read (:class:`FileReads`); without it, a file's version of a webhook
    record always wins.
    ``received_at`` (``origin="webhook"``): when the ledger accepted the records, noted as their age, the later of
    it and the age already noted; not the merge time (default: now): a batch merged again (re-claimed after waiting
    for a busy destination) after a file that holds a newer version was read must not pass for newer than that file.
    One time for all, or each record's own (:data:`Ages`, the event it came in; a record not in it, e.g. a contact
    linked under another id: the newest), so a newer event a re-claimed batch took along does not age the others.
    A webhook record older than the webhook version the store holds (a batch merged after a newer one: two workers,
    or a batch retried after a newer one was merged) is left out, with its line items: a record is replaced only by
    a version at least as new (:func:`.ordering.drop_older_versions`).
    ``versions`` (``origin="webhook"``): when the vendor modified the records that say (:data:`Versions`). When the
    stored webhook version and the staged one both have a vendor time, that time orders them (an older delivery
    retried after a newer one is left out however late it was accepted; equal times: by acceptance, but a contact's
    withdrawal is the newer), else their acceptance does. The records left out are counted in the returned
    ``stale_orders`` / ``stale_contacts``. A vendor time later than the record's acceptance by more than
    :data:`connectors.webhooks.FUTURE_MARGIN` is ignored (logged): the version is ordered by acceptance.
    ``senders`` (``origin="webhook"``): who sent each record (:data:`.ordering.Senders`; not given: one sender),
    noted with its vendor time: a stored guest's version and his contact's staged one are ordered by their vendor
    times only when one sender dated both (:func:`.ordering.stored_newer`).
    ``pulled_at`` (an API source's pull): when the pull started, the bound its cursor uses; the webhook records it
    brings are noted as that new (default: now) by the ledger's clock, and their vendor time is cleared (the host's
    clock is never compared with the vendor's), so a webhook batch accepted after it (it waited for the store the
    pull holds) still wins, whatever its vendor time. A pull that staged its records' vendor times (Shopify,
    amoCRM: :data:`connectors.tables.STAGED_VERSIONS`) has them noted (:mod:`.pulled`): a later webhook version
    older than its version is left out, and its own versions older than the webhook version held are left out of it
    (``stale_pulled_orders`` / ``stale_pulled_contacts``). A later version of an order the vendor deleted for good
    (a final tombstone: Shopify's) is left out of any incremental merge, whatever its time (:mod:`.deletes`), counted
    with the stale ones. A file's full refresh notes the webhook records whose
    file version won as new as the file's read (``files``), so the same or an older webhook batch merged again after
    it is left out.
    """
    if origin not in ("pull", "webhook"):
        raise ValueError(f"merge_staged: origin must be 'pull' or 'webhook', not {origin!r}")
    counts = {}
    versions = plausible_versions(versions or {}, received_at)  # a vendor time in the future: ignored, logged
    staged = _staged_rows(con)
    # nothing new (none staged, or only a lookback's re-reads held alike): the generation stays (sync.store_moved)
    empty = not pull.full_refresh and not _staged_rows(con, STAGED_TOMBSTONES) and (
        not staged and not _staged_rows(con, STAGED_VERSIONS) or _all_unchanged(con, pull))
    if pull.full_refresh or staged > BULK_ROWS:
        drop_lookup_indexes(con)  # DuckDB maintains them row by row: a bulk write is far faster without
    con.execute("BEGIN TRANSACTION")
    try:
        create_webhook_table(con)
        create_deleted_table(con)
        create_links_table(con)
        create_returns_table(con)
        present = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE table_name LIKE "
                                             "'staged_%'").fetchall()}
        noted = con.execute(f"SELECT count(*) FROM {WEBHOOK_TABLE}").fetchall()[0][0] > 0
        if pull.full_refresh and "staged_orders" in present:
            note_stored_links(con, noted)  # links an earlier merge made before they were noted (in its orders only)
        if pull.full_refresh:
            hold_guests(con)  # the guest contacts of a linked e-mail/phone held now: they stay (apply_links)
        if "staged_orders" in present and not pull.full_refresh and con.execute(
                "SELECT count(*) FROM staged_orders WHERE customer_id = ''").fetchall()[0][0]:
            # a deleted order's tombstone often no longer says whose it was: it stays the same customer's
            con.execute("UPDATE staged_orders AS s SET customer_id = o.customer_id FROM orders AS o "
                        "WHERE s.customer_id = '' AND o.order_id = s.order_id")
        if not pull.full_refresh:  # a later version of an order deleted for good (files have no deletes): left out
            left = leave_out_deleted(con, present, origin)  # before linking: nothing of it is merged
            _add(counts, {"stale_pulled_orders" if origin == "pull" else "stale_orders": left})
            # (a file export was resolved when it was read; the links learned are applied to it below)
            pull.identity = link_staged(con, max_identity_group, learned=LINKS_TABLE, stored_newer=lambda: (
                stored_newer(con, origin, present, received_at, versions, senders)))  # a guest's "no" over his yes
        moved = pull.identity.moved if pull.identity is not None else []
        links = dict(zip(moved[::2], moved[1::2]))  # identifier → customer id, as link_staged re-keyed them
        if links:  # a guest record lends his time only to a customer with no version of his own here
            links = lenders(links, received_at, versions or {})
        pulled = origin == "webhook" and pulled_for(con, present)  # a staged record has a pulled time
        if origin == "webhook" and not pull.full_refresh and (noted or pulled or con.execute(
                f"SELECT count(*) FROM {FILE_WON_TABLE}").fetchall()[0][0]):
            _add(counts, drop_older_versions(con, present, received_at, links, versions or {}, senders))
        if origin == "webhook" and not pull.full_refresh:  # a version of his older than a guest's "no" folded in
            keep_withdrawals(con, present, received_at, versions or {}, senders)
        timed = origin == "pull" and not pull.full_refresh and timed_pull(con)  # the pull staged vendor times
        if timed:
            settle_staged(con)  # one row per record: its last page's
        if timed and noted:  # a version older than the webhook version held (a backfill's page read before it)
            _add(counts, drop_older_pulled(con, present))
        # a tombstone of an order never stored: nothing to retire, nothing merged (its version is noted, below)
        unstored = not pull.full_refresh and leave_out_unstored_tombstones(con, present)
        if after_link is not None:
            after_link(con)
        if pull.full_refresh and noted:
            _keep_webhook_rows(con, present, files)
        if pull.full_refresh:
            forget_replaced(con, noted)
            forget_deleted(con, noted)
        note_deleted(con, present)  # a final tombstone: noted, and stored cancelled
        forget_gone_links(con, present)  # a customer deleted in the CRM: his links erased
        # an incremental merge notes whose orders it changed and by how much (a full refresh or a large merge: not)
        note = None if pull.full_refresh or ("staged_orders" in present and con.execute(
            "SELECT count(*) FROM staged_orders").fetchall()[0][0] > NOTED_ROWS) else _Note(
            set(pull.identity.moved if pull.identity is not None else ()))
        before_write(con, present, pull.full_refresh, empty)  # whom a full refresh or a large merge moves
        for name in TABLES:
            if f"staged_{name}" in present:
                counts[name] = _merge_table(con, name, full_refresh=pull.full_refresh, origin=origin, noted=noted,
                                            note=note, received_at=received_at, links=links, files=files,
                                            pulled_at=pulled_at, versions=versions or {}, senders=senders)
        note_withdrawn(con, origin, received_at, links, versions or {}, senders)  # a guest's "no" folded into him
        if unstored:  # noted as versions of the orders (not stored): an older copy merged later is stale
            note_versions(con, "orders", UNSTORED, origin=origin, noted=noted, received_at=received_at,
                          links=links, pulled_at=pulled_at, versions=versions or {}, senders=senders)
        if pull.full_refresh:  # the export keys a linked guest by its e-mail/phone again: it stays linked
            apply_links(con, max_identity_group)
            if "staged_orders" in present:
                note_returns(con, pull)  # the returns it stored (ID~return …): an incremental merge deletes them
        if timed:
            note_pulled(con)
        if pulled:  # a timed webhook version now orders them alone
            forget_superseded(con)
        # and whom it moved, for a full sync that read the store before (.resynced): its contacts' customers too
        moved = None if empty else moved_by(con, present, note.customers if note else None, moved)
        for name in TABLES:
            con.execute(f"DROP TABLE IF EXISTS staged_{name}")
            con.execute(f"DROP TABLE IF EXISTS _kept_{name}")
        con.execute(f"DROP TABLE IF EXISTS {STAGED_VERSIONS}")
        con.execute(f"DROP TABLE IF EXISTS {STAGED_TOMBSTONES}")
        con.execute(f"DROP TABLE IF EXISTS {UNSTORED}")
        con.execute(f"DROP TABLE IF EXISTS {PULLED_STAGED}")
        if not empty:
            bump_generation(con)  # what the store keeps of its orders (the purchase-day cache) may be stale now
            stamp_returns(con)  # the returns' notes are true at it (an older rfmsync's write next is told by it)
        if note is not None and not empty:
            note_merged(con, generation(con), sorted(note.customers), tuple(note.change))
        if moved is not None and not empty:
            note_moved(con, moved)
        if before_commit is not None:
            before_commit(con)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return counts


@contextmanager
def unordered(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Let the bulk inserts inside write their rows in any order (``preserve_insertion_order = false``): their
    threads then write full row groups, so the checkpoint at close does not have to merge and compress them all
    again (no reader of the store depends on the rows' physical order). Not inside a transaction."""
    con.execute("SET preserve_insertion_order = false")
    try:
        yield
    finally:
        con.execute("RESET preserve_insertion_order")


def _add(counts: dict[str, int], more: dict[str, int]) -> None:
    """Add ``more``'s counts to ``counts`` (none of 0: a count left out is absent)."""
    for key, n in more.items():
        if n:
            counts[key] = counts.get(key, 0) + n


def _all_unchanged(con: duckdb.DuckDBPyConnection, pull: PullResult) -> bool:
    """Every staged order and contact is one the store holds alike (connectors.tables.unchanged_staged's counts)."""
    counts = (pull.unchanged_orders, pull.unchanged_contacts)
    return any(counts) and (_staged_rows(con, "staged_orders"), _staged_rows(con, "staged_contacts")) == counts


def _staged_rows(con: duckdb.DuckDBPyConnection, *tables: str) -> int:
    """The rows of the ``staged_*`` tables (or of ``tables``, those present)."""
    present = [r[0] for r in (con.execute("SELECT table_name FROM duckdb_tables() WHERE table_name IN "
                                          f"({', '.join('?' for _ in tables)})", list(tables)) if tables else
                              con.execute("SELECT table_name FROM duckdb_tables() WHERE table_name LIKE "
                                          "'staged_%'")).fetchall()]
    return sum(con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in present)


def _merge_table(con: duckdb.DuckDBPyConnection, name: str, *, full_refresh: bool, origin: str,
                 noted: bool, note: _Note | None = None, received_at: Union[datetime, Ages, None] = None,
                 links: Mapping[str, str] | None = None, files: FileReads | None = None,
                 pulled_at: datetime | None = None, versions: Versions | None = None,
                 senders: Senders | None = None) -> int:
    """Replace (full refresh) or upsert table ``name`` from ``staged_<name>``; returns the staged row count.
    ``note``: the orders deleted and inserted are added to it (read as they are written: no scan more)."""
    staged = f"staged_{name}"
    key = KEYS[name]
    returning = _RETURNING if name == "orders" and note is not None and not full_refresh else ""
    rows = con.execute(f"SELECT count(*) FROM {staged}").fetchall()[0][0]
    # nothing to upsert (e.g. a webhook batch of orders only): leave the big table alone; line items are
    # replaced per staged order even when the new version has none
    keyed_by = "staged_orders" if name == "line_items" else staged
    if not full_refresh and not (rows if keyed_by == staged else
                                 con.execute(f"SELECT count(*) FROM {keyed_by}").fetchall()[0][0]):
        return 0
    if full_refresh:
        kept = "_kept_orders" if name == "line_items" else f"_kept_{name}"
        con.execute(f"DELETE FROM {name} WHERE {key} NOT IN (SELECT id FROM {kept})" if noted
                    else f"DELETE FROM {name}")
    elif name == "line_items":
        con.execute("DELETE FROM line_items WHERE order_id IN (SELECT order_id FROM staged_orders)")
    else:
        deleted = con.execute(f"DELETE FROM {name} WHERE {key} IN (SELECT {key} FROM {staged}){returning}")
        if returning:
            note.add(deleted.fetchall(), -1)
        if name == "orders":  # a record of an order is the whole order: a file's returns under its id go with it
            gone = delete_returns(con, returning)  # (those noted: none in an API source's store)
            if returning:
                note.add(gone, -1)
    kept_out = ""  # a full refresh: the file's rows of the webhook records kept over them stay out
    if full_refresh and noted:
        kept_out = f" WHERE {key} NOT IN (SELECT id FROM {'_kept_orders' if name == 'line_items' else f'_kept_{name}'})"
    if name == "line_items" or full_refresh:  # a file export's staged rows are one per key already
        only = " EXCLUDE (file_id)" if name == "contacts" and _has_file_id(con, staged) else ""  # orders keep theirs
        con.execute(f"INSERT INTO {name} BY NAME SELECT *{only} FROM {staged}{kept_out}")
    else:
        # latest version wins inside the batch too
        inserted = con.execute(f"INSERT INTO {name} BY NAME SELECT * EXCLUDE (_rn) FROM "
                               f"(SELECT *, row_number() OVER (PARTITION BY {key} ORDER BY rowid DESC) AS _rn "
                               f"FROM {staged}) WHERE _rn = 1{returning}")
        if returning:
            note.add(inserted.fetchall(), 1)
    if name == "line_items":
        return rows
    if origin != "webhook" and name == "contacts":  # a pull's or a file's read of him: the newest word
        forget_withdrawals(con, f"SELECT {key} FROM {staged}{kept_out}")
    if origin != "webhook" and full_refresh:
        if noted:  # the export's version wins from now on
            if files is not None:  # as new as the file's read (the latest of its files): the same or an older
                # webhook batch merged again after it is left out (ordering.drop_older_versions)
                _note_file_won(con, name, files)
            con.execute(f"DELETE FROM {WEBHOOK_TABLE} WHERE kind = '{KIND[name]}' AND id IN "
                        f"(SELECT {key} FROM {staged}{kept_out})")
    else:
        note_versions(con, name, staged, origin=origin, noted=noted, received_at=received_at, links=links,
                      pulled_at=pulled_at, versions=versions or {}, senders=senders)
    return rows


def _keep_webhook_rows(con: duckdb.DuckDBPyConnection, present: set[str], files: FileReads | None) -> None:
    """``_kept_orders`` / ``_kept_contacts``: the webhook ids a full refresh keeps (small): those the staged (file)
    rows do not contain, and, with ``files``, those whose staged rows all come from files read before the webhook
    record was merged (an unchanged file is older than the webhook: a refund or a withdrawn consent must not be
    undone by it). An order's file is its row's; a contact's is its staged row's (``staged_contacts.file_id``, see
    :func:`connectors.file_staging.stage_files`) when the shop has contacts files, else its orders' files."""
    for name in ("orders", "contacts"):
        staged = f"staged_{name}"
        unless = ""
        if staged in present:
            unless = f"AND id NOT IN (SELECT {KEYS[name]} FROM {staged})"
        rows = _file_rows(con, name, files) if files is not None else None
        if unless and rows in present and _has_file_id(con, rows):
            # kept unless one of its rows is in a file read after it (a file not in the catalogue is read now)
            unless = (f"AND NOT EXISTS (SELECT 1 FROM {rows} s LEFT JOIN {files.catalogue} f "
                      f"ON f.file_id = s.file_id WHERE s.{KEYS[name]} = w.id "
                      "AND coalesce(f.read_at, ?::TIMESTAMPTZ, now()) > w.received_at)")
        con.execute(f"CREATE OR REPLACE TEMP TABLE _kept_{name} AS SELECT id FROM {WEBHOOK_TABLE} w "
                    f"WHERE kind = '{KIND[name]}' {unless}", [files.read_started] if "?" in unless else [])
        if name == "orders" and staged in present:  # a kept webhook order is the whole order: the file's
            # returns under its id (ID~return…, connectors.file_repeats) stay out with the file's row of it
            con.execute(f"INSERT INTO _kept_orders SELECT order_id FROM staged_orders WHERE "
                        f"{returns_of('(SELECT id AS order_id FROM _kept_orders)')}")


def _file_rows(con: duckdb.DuckDBPyConnection, name: str, files: FileReads) -> str:
    """The staged rows that carry ``name``'s records' files (``file_id``; keyed by ``name``'s key, which the orders
    hold too): its own, or, for contacts staged without theirs (no contacts file: consent on the order rows), their
    orders'."""
    if name == "orders" or (files.contact_files and _has_file_id(con, "staged_contacts")):
        return f"staged_{name}"
    return "staged_orders"


def _note_file_won(con: duckdb.DuckDBPyConnection, name: str, files: FileReads) -> None:
    """Note in ``file_won_records`` the webhook records of ``name`` whose file version this full refresh takes over,
    as new as the latest read of a file that holds them (a file read this run: the run's read start), and with the
    vendor time of the webhook version it replaces (the file's version is at least as new: an older delivery retried
    after the read is left out by it, as it would have been by that webhook version)."""
    kind, key, rows = KIND[name], KEYS[name], _file_rows(con, name, files)
    if not _has_file_id(con, rows):  # (no file is known: read now)
        rows = f"(SELECT {key}, NULL::BIGINT AS file_id FROM staged_{name})"
    con.execute(f"INSERT INTO {FILE_WON_TABLE} (kind, id, read_at, updated_at, sender) SELECT '{kind}', s.{key}, "
                f"max(coalesce(f.read_at, ?::TIMESTAMPTZ, now())), any_value(w.updated_at), any_value(w.sender) "
                f"FROM {rows} s LEFT JOIN {files.catalogue} f ON f.file_id = s.file_id "
                f"JOIN {WEBHOOK_TABLE} w ON w.kind = '{kind}' AND w.id = s.{key} "
                f"WHERE s.{key} NOT IN (SELECT id FROM _kept_{name}) GROUP BY s.{key} "
                f"ON CONFLICT DO UPDATE SET read_at = greatest({FILE_WON_TABLE}.read_at, excluded.read_at), "
                f"{later_vendor_time(FILE_WON_TABLE)}", [files.read_started])


def _has_file_id(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    """Whether the staged table carries each row's file (``file_id``: a file source's full refresh)."""
    return bool(con.execute("SELECT count(*) FROM duckdb_columns() WHERE table_name = ? AND column_name = 'file_id'",
                            [table]).fetchall()[0][0])
