"""Webhook records: the order and customer ids that came by webhook, kept across a file's full refresh until
a pull brings the source's own version of them (see :mod:`sync.store`)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Mapping, Union

import duckdb

from connectors.guest_merge import DELETED
from connectors.webhooks import too_far_ahead

log = logging.getLogger(__name__)

#: (kind 'order' | 'contact', id): rows that came by webhook, not by a pull; ``received_at``: when the ledger
#: accepted the stored version (the latest of the versions merged, or the start of a pull that read it since),
#: ``updated_at``: when the vendor modified it (the latest vendor time merged; NULL: none known, or a pull read it since),
#: ``sender``: whose clock that time is (the event's source, :data:`sync.store.ordering.Senders`; NULL: not said, or
#: noted by an older rfmsync)
WEBHOOK_TABLE = "webhook_records"
#: (kind, id, read_at, updated_at, sender): records a file's full refresh took over from their webhook version (the
#: note dropped), as new as that file's read, and at least as new as the vendor time of the webhook version it
#: replaced (NULL: none; ``sender``: its): the same or an older webhook batch merged again after it is left out
FILE_WON_TABLE = "file_won_records"
#: (kind, id, updated_at): the vendor's modification time of the version a CRM pull stored of a record (Shopify,
#: amoCRM: the clock of their webhooks' times; the last pull that had one), whether or not it came by webhook too: a
#: later delivery older than it is left out (:mod:`sync.store.pulled`)
PULLED_TABLE = "pulled_versions"
#: (customer_id, received_at, updated_at, sender): a guest's "no" (a record keyed by his e-mail or phone) that
#: withdrew a customer's consent, folded into his stored contact or landed on his staged one: its acceptance, vendor
#: time and sender. A later webhook version of his not newer than it keeps "no"; a newer one, or a pull's or a
#: file's read of him, drops the row (:func:`sync.store.ordering.keep_withdrawals`). One row per such customer.
GUEST_WITHDRAWALS = "guest_withdrawals"
KIND = {"orders": "order", "contacts": "contact"}  # store table → webhook record kind
KEY_OF = {"orders": "order_id", "contacts": "customer_id"}  # store table → its records' key


def create_webhook_table(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"CREATE TABLE IF NOT EXISTS {WEBHOOK_TABLE} (kind VARCHAR NOT NULL, id VARCHAR NOT NULL, "
                "received_at TIMESTAMPTZ DEFAULT now(), updated_at TIMESTAMPTZ, PRIMARY KEY (kind, id))")
    # a store written before the vendor's times were kept: its versions have none (ordered by acceptance)
    con.execute(f"ALTER TABLE {WEBHOOK_TABLE} ADD COLUMN IF NOT EXISTS updated_at TIMESTAMPTZ")
    # nor their senders (a store written before they were: not said, one sender's as far as they tell)
    con.execute(f"ALTER TABLE {WEBHOOK_TABLE} ADD COLUMN IF NOT EXISTS sender VARCHAR")
    con.execute(f"CREATE TABLE IF NOT EXISTS {FILE_WON_TABLE} (kind VARCHAR NOT NULL, id VARCHAR NOT NULL, "
                "read_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ, PRIMARY KEY (kind, id))")
    con.execute(f"ALTER TABLE {FILE_WON_TABLE} ADD COLUMN IF NOT EXISTS updated_at TIMESTAMPTZ")
    con.execute(f"ALTER TABLE {FILE_WON_TABLE} ADD COLUMN IF NOT EXISTS sender VARCHAR")
    con.execute(f"CREATE TABLE IF NOT EXISTS {GUEST_WITHDRAWALS} (customer_id VARCHAR PRIMARY KEY, received_at "
                "TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ, sender VARCHAR)")  # (a store written before: none)
    # a store written before pulls noted their vendor times has none: its pulled records are ordered as before
    con.execute(f"CREATE TABLE IF NOT EXISTS {PULLED_TABLE} (kind VARCHAR NOT NULL, id VARCHAR NOT NULL, "
                "updated_at TIMESTAMPTZ NOT NULL)")  # one row per record (sync.store.pulled.note_pulled); no index:
    # an ART key on (kind, id) made a store with 1.3 M pulled rows 8 MB -> 77 MB, and no merge looks one up


def later_vendor_time(table: str) -> str:
    """SQL for ``table``'s (:data:`WEBHOOK_TABLE`, :data:`FILE_WON_TABLE`) ``ON CONFLICT DO UPDATE SET``: the later
    of the stored and the new vendor time (``updated_at``), and the sender of the one kept (``sender``)."""
    return (f"sender = CASE WHEN excluded.updated_at >= coalesce({table}.updated_at, excluded.updated_at) THEN "
            f"excluded.sender ELSE {table}.sender END, updated_at = greatest({table}.updated_at, excluded.updated_at)")


def prune_file_won(con: duckdb.DuckDBPyConnection, oldest_possible: datetime) -> int:
    """Drop the ``file_won_records`` rows that can no longer leave anything out, returns how many: a row leaves out
    a webhook version older than its file's read (a newer webhook version of the record removes it when merged). It
    is useless once no webhook version older than it can come any more: ``oldest_possible`` is the age of the oldest one that still can (the ledger's oldest unsettled event, queued or
    failed included, less a margin for the hosts' clocks: :func:`sync.serve.resync_staging.prune_file_won_ages`)."""
    create_webhook_table(con)
    return len(con.execute(f"DELETE FROM {FILE_WON_TABLE} WHERE read_at <= ?::TIMESTAMPTZ RETURNING 1",
                           [oldest_possible]).fetchall())


def webhook_records(con: duckdb.DuckDBPyConnection) -> dict[str, set[str]]:
    """The ids kept across full refreshes because they came by webhook: {"order": {...}, "contact": {...}}."""
    create_webhook_table(con)
    out: dict[str, set[str]] = {"order": set(), "contact": set()}
    for kind, id_ in con.execute(f"SELECT kind, id FROM {WEBHOOK_TABLE}").fetchall():
        out.setdefault(kind, set()).add(id_)
    return out


def plausible_versions(versions: Mapping[tuple[str, str], datetime | None],
                       received_at: Union[datetime, Mapping[tuple[str, str], datetime], None]
                       ) -> dict[tuple[str, str], datetime | None]:
    """``versions`` without the vendor times later than their record's acceptance (its own in ``received_at``, else
    the latest there, else now) by more than :data:`connectors.webhooks.FUTURE_MARGIN`, each logged: a wrong clock
    or offset, not the version's time (kept, every later timed version of the record, a withdrawal included, would
    look older until that time came). Such a version is ordered by acceptance."""
    own = received_at if isinstance(received_at, Mapping) else {}
    default = max(own.values(), default=None) if own else received_at
    out: dict[tuple[str, str], datetime | None] = {}
    for key, at in versions.items():
        if at is not None and too_far_ahead(at, own.get(key) or default):  # type: ignore[arg-type]
            log.warning("webhook merge: %s %s's vendor time %s is later than its acceptance: ignored (ordered by "
                        "acceptance)", key[0], key[1] if key[0] == "order" else "(contact)", at.isoformat())
            continue
        out[key] = at
    return out


#: the customers whose consent a stale webhook version withdrew (:func:`withdraw_late`), for the resync to push
LATE_WITHDRAWALS = "_late_withdrawals"
#: a staged contact that is a CRM's deletion (:func:`connectors.contacts.gone_contact`: emptied, ``deleted``)
STAGED_GONE = f"(email IS NULL AND phone IS NULL AND {DELETED})"


def withdraw_late(con: duckdb.DuckDBPyConnection, older: str) -> None:
    """A contact's stale version (its id in the table ``older``) that withdraws consent still withdraws it, from
    the stored contact (consent only: a newer edit may have said nothing of consent, or given it again: never
    subscribe on a doubt); its customer is kept in :data:`LATE_WITHDRAWALS` (:func:`late_withdrawals`). A stale
    deletion (a CRM's delete retried after the contact was restored: :data:`STAGED_GONE`) withdraws nothing."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE {LATE_WITHDRAWALS} AS SELECT customer_id FROM contacts "
                f"WHERE marketing_consent <> 'no' AND customer_id IN (SELECT id FROM {older}) AND customer_id IN "
                "(SELECT customer_id FROM staged_contacts GROUP BY ALL "
                f"HAVING arg_max(marketing_consent, rowid) = 'no' AND NOT arg_max({STAGED_GONE}, rowid))")
    con.execute(f"UPDATE contacts SET marketing_consent = 'no' WHERE customer_id IN "
                f"(SELECT customer_id FROM {LATE_WITHDRAWALS})")


def add_late_withdrawals(con: duckdb.DuckDBPyConnection, customers: str) -> None:
    """Add to the table ``customers`` (one ``customer_id`` column) those the last merge on ``con`` withdrew consent
    of by a stale version (then forgotten): the resync plans them too, or the ESPs would hear of the withdrawal
    only at the next full sync."""
    if con.execute("SELECT 1 FROM duckdb_tables() WHERE table_name = ? AND temporary", [LATE_WITHDRAWALS]).fetchall():
        con.execute(f"INSERT INTO {customers} SELECT customer_id FROM {LATE_WITHDRAWALS} "
                    f"EXCEPT SELECT customer_id FROM {customers}")
        con.execute(f"DROP TABLE {LATE_WITHDRAWALS}")


#: a contact's stored and staged versions with equal vendor times (``w.vt``, ``a.vt``; two edits in one second), one
#: a withdrawal: the withdrawal is the newer one (the safe side), whichever was accepted first. ``c``: the stored
#: contact, ``s``: the staged one (:data:`CONSENTS`)
EQUAL_CONSENT = ("WHEN w.vt IS NOT NULL AND w.vt = a.vt AND (c.marketing_consent = 'no') <> "
                 "(s.marketing_consent = 'no') THEN c.marketing_consent = 'no' ")
#: the stored consent (``c``) and the staged one (``s``: its last row) of the contact ``w.id``
CONSENTS = (" LEFT JOIN contacts c ON c.customer_id = w.id LEFT JOIN (SELECT customer_id, "
            "arg_max(marketing_consent, rowid) AS marketing_consent FROM staged_contacts "
            "GROUP BY customer_id) s ON s.customer_id = w.id")


def leave_out(con: duckdb.DuckDBPyConnection, name: str, present: set[str], older: str, what: str, unless: str = "",
              why: str = "the store holds a newer version of them") -> int:
    """Leave out of the merge the staged ``name`` records (orders with their line items, contacts) whose ids are in
    the table ``older`` (dropped), logged (``why``); returns how many. ``unless``: a condition (``AND …``) on the
    staged rows that keeps them (a delete: :mod:`.deletes`). A stale contact version that withdraws consent still
    withdraws it (:func:`withdraw_late`: a newer edit may have said nothing of it)."""
    count = con.execute(f"SELECT count(*) FROM {older}").fetchall()[0][0]
    if count:
        # the orders' ids (not a contact's: it may be its e-mail)
        ids = [r[0] for r in con.execute(f"SELECT id FROM {older} ORDER BY id LIMIT 5").fetchall()
               ] if name == "orders" else []
        if name == "contacts":
            withdraw_late(con, older)
        con.execute(f"DELETE FROM staged_{name} WHERE {KEY_OF[name]} IN (SELECT id FROM {older}) {unless}")
        if name == "orders" and "staged_line_items" in present:  # (a kept delete has none)
            con.execute(f"DELETE FROM staged_line_items WHERE order_id IN (SELECT id FROM {older})")
        log.info("%s merge: %d %s left out as stale%s: %s",
                 what, count, name, f" (e.g. {', '.join(ids)})" if ids else "", why)
    con.execute(f"DROP TABLE {older}")
    return count
