"""The vendor's time of the version a CRM pull stored of each record (``pulled_versions``).

Shopify's and amoCRM's pulls read each record's ``updated_at``, the clock their webhooks' versions are dated by
(:class:`connectors.incremental.Stager` stages it). The merge of a pull notes it per record, a later pull's
overwriting it (a pull without a time for the record leaves the last one: its version is at least that new). A
webhook version older than it by the vendor's times (a delivery the vendor retried after the pull, made before the
change the pull read: an order before its refund, a consent before its withdrawal) is then left out as a stale
webhook version is (:func:`sync.store.ordering.drop_older_versions`); a newer one wins; equal times: applied, except
that a contact's withdrawal is kept. The host's clock is never compared with these times: an untimed delivery is
applied (by its acceptance, after the pull) as before. And the other way: a pull's version older than the webhook
version the store holds (a backfill's page read before the edit the webhook brought) is left out of the pull
(:func:`drop_older_pulled`), so the webhook's newer version stays.

Its size: one row per record the store holds, at most (``tests/test_store_bounds.py``), plus one per order whose
tombstone a pull read but did not store (never stored: :func:`sync.store.deletes.leave_out_unstored_tombstones`):
its time still orders a later, older copy of the order. A pull's contacts are keyed
by the vendor's own ids, which identity linking never re-keys (it re-keys e-mail and phone keys only), so a contact
linked to a pulled customer leaves no row under an old key."""

from __future__ import annotations

from datetime import datetime

import duckdb

from connectors.tables import STAGED_VERSIONS

from .webhooks import CONSENTS, EQUAL_CONSENT, KEY_OF, KIND, PULLED_TABLE, WEBHOOK_TABLE, leave_out


def timed_pull(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the staged pull carries vendor times of its records (:data:`connectors.tables.STAGED_VERSIONS` has a
    row: every API pull's stager makes the table, a RetailCRM or Bitrix24 pull leaves it empty, nothing to note)."""
    return bool(con.execute("SELECT 1 FROM duckdb_tables() WHERE table_name = ? AND temporary",
                            [STAGED_VERSIONS]).fetchall()) and bool(
        con.execute(f"SELECT 1 FROM {STAGED_VERSIONS} LIMIT 1").fetchall())


def settle_staged(con: duckdb.DuckDBPyConnection) -> None:
    """Keep of :data:`~connectors.tables.STAGED_VERSIONS` (appended page by page) each record's last row, and only
    when it has a time (a later page's version without one has none)."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE _settled_versions AS SELECT kind, id, updated_at FROM (SELECT kind, "
                f"id, arg_max_null(updated_at, rowid) AS updated_at FROM {STAGED_VERSIONS} GROUP BY kind, id) "
                "WHERE updated_at IS NOT NULL")
    con.execute(f"DROP TABLE {STAGED_VERSIONS}")
    con.execute(f"ALTER TABLE _settled_versions RENAME TO {STAGED_VERSIONS}")


def staged_times(con: duckdb.DuckDBPyConnection) -> dict[tuple[str, str], datetime]:
    """The vendor times the last pull staged, by ``(kind, id)`` (none when it staged none)."""
    if not timed_pull(con):
        return {}
    settle_staged(con)
    return {(k, i): t for k, i, t in con.execute(f"SELECT kind, id, updated_at FROM {STAGED_VERSIONS}").fetchall()}


#: the pulled times of a webhook merge's staged records (``rid``: the row in ``pulled_versions``), read once
PULLED_STAGED = "_pulled_staged"


def pulled_for(con: duckdb.DuckDBPyConnection, present: set[str]) -> bool:
    """Whether the store notes a pulled version's time of a staged record (a webhook merge then compares its
    versions with them; nothing to compare: no work). Reads them into :data:`PULLED_STAGED` (one scan)."""
    staged = [f"SELECT rowid AS rid, kind, id, updated_at FROM {PULLED_TABLE} WHERE kind = '{kind}' AND id IN "
              f"(SELECT {KEY_OF[name]} FROM staged_{name})"
              for name, kind in KIND.items() if f"staged_{name}" in present]
    # a UNION, not an OR of the two (that made DuckDB test each row against both: ~10x slower)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {PULLED_STAGED} AS "
                + (" UNION ALL ".join(staged) or f"SELECT rowid AS rid, * FROM {PULLED_TABLE} LIMIT 0"))
    return bool(con.execute(f"SELECT 1 FROM {PULLED_STAGED} LIMIT 1").fetchall())


def forget_superseded(con: duckdb.DuckDBPyConnection) -> None:
    """After a webhook merge: drop the pulled times of the staged records whose webhook version now has a vendor
    time. It is at least as new as the pulled one (an older delivery was left out), so it orders what comes next
    alone; a deleted Shopify order's tombstone, for one, keeps no pulled row."""
    con.execute(f"DELETE FROM {PULLED_TABLE} WHERE rowid IN (SELECT p.rid FROM {PULLED_STAGED} p JOIN "
                f"{WEBHOOK_TABLE} w ON w.kind = p.kind AND w.id = p.id WHERE w.updated_at IS NOT NULL)")


def forget_replaced(con: duckdb.DuckDBPyConnection, kept: bool) -> None:
    """A full refresh (a file source's): drop the pulled times of the records it replaced (all but the webhook
    records it keeps, ``_kept_*`` when ``kept``): the store no longer holds those versions, and a later delivery
    must not be left out against one of them."""
    for name, kind in KIND.items():
        con.execute(f"DELETE FROM {PULLED_TABLE} WHERE kind = '{kind}'"
                    + (f" AND id NOT IN (SELECT id FROM _kept_{name})" if kept else ""))


def drop_older_pulled(con: duckdb.DuckDBPyConnection, present: set[str]) -> dict[str, int]:
    """Leave out of a pull's merge the staged orders (with their line items) and contacts whose vendor time is older
    than the one of the webhook version the store holds (equal, a contact's: the withdrawal is kept, as between
    webhook versions): the page was read before the change that webhook brought (a backfill paging while the record
    was edited). A stale pulled contact that withdraws consent still withdraws it. Returns ``stale_pulled_orders``
    / ``stale_pulled_contacts``."""
    dropped: dict[str, int] = {}
    for name, kind in KIND.items():
        staged = f"staged_{name}"
        if staged not in present:
            continue
        joined = (f"JOIN (SELECT kind, id, updated_at AS vt FROM {STAGED_VERSIONS}) a "
                  "ON a.kind = w.kind AND a.id = w.id" + (CONSENTS if name == "contacts" else ""))
        newer = ("CASE WHEN w.vt > a.vt THEN true "
                 + (EQUAL_CONSENT if name == "contacts" else "") + "ELSE false END")
        con.execute(f"CREATE OR REPLACE TEMP TABLE _older_{name} AS SELECT DISTINCT w.id FROM (SELECT kind, id, "
                    f"updated_at AS vt FROM {WEBHOOK_TABLE} WHERE kind = '{kind}' AND updated_at IS NOT NULL) w "
                    f"{joined} WHERE w.id IN (SELECT {KEY_OF[name]} FROM {staged}) AND {newer}")
        con.execute(f"DELETE FROM {STAGED_VERSIONS} WHERE kind = '{kind}' AND id IN (SELECT id FROM _older_{name})")
        count = leave_out(con, name, present, f"_older_{name}", "pull")
        if count:
            dropped[f"stale_pulled_{name}"] = count
    return dropped


def note_pulled(con: duckdb.DuckDBPyConnection) -> None:
    """Note the vendor times of the records the pull merged (those it left out are no longer staged with theirs:
    :func:`drop_older_pulled`), replacing the ones noted: one row per record (:func:`settle_staged` keeps one per
    record of the pull's)."""
    con.execute(f"DELETE FROM {PULLED_TABLE} p WHERE EXISTS (SELECT 1 FROM {STAGED_VERSIONS} v "
                "WHERE v.kind = p.kind AND v.id = p.id)")
    con.execute(f"INSERT INTO {PULLED_TABLE} SELECT kind, id, updated_at FROM {STAGED_VERSIONS}")
