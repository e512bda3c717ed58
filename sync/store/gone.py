"""A CRM's contacts that its whole contact list no longer shows: staged emptied before a full pull's merge.

A contact deleted in the CRM (a GDPR erasure, the loser of a "merge duplicates") is only ever told by a webhook
(amoCRM ``contacts[delete]``, Bitrix24 ``ONCRMCONTACTDELETE``, Shopify ``customers/delete``, RetailCRM's history):
no incremental pull lists it. A pull that read the source's whole contact list (``pull --full``, ``sync --full``:
its cursor was None, and it ended, since a pull that stops half-way keeps nothing) knows every contact the CRM
holds, so each stored contact of that source it did not read is gone there: it is staged as the CRM's webhooks
stage a deleted one (:func:`connectors.contacts.gone_contact`: no address, consent no, attribute ``deleted``),
and merged with the pull. Its orders stay; its managed tags come off at the next sync.

"That source's" contacts: the ones an earlier pull of this very source staged from its contact list (noted in
:data:`SOURCES_TABLE` by :func:`note_sources`, in the merge's transaction), keyed by a CRM id (digits). A source's
first pull (a store of another source, or written by a release that noted nothing) therefore empties nobody; a
guest keyed by an e-mail or a phone, a company's ``company-<id>`` customer, a contact only a webhook stored are
left alone. A row the list served counts as listed even when it was a bad row (its id); a bad contact row that
names no id, or more bad rows than the pull kept, empties nobody. A full list of no contact at all empties nobody
(a token that lost access to contacts may read an empty list). More gone than :class:`SweepLimit` allows (a list
read with narrower rights) empties nobody either, unless forced (``--allow-mass-change``): the pull warns.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import duckdb

from connectors.contacts import gone_contact
from connectors.counts import counted
from connectors.source import PullResult

#: customer id → the API source whose pull staged it from its contact list last (the sweep's provenance)
SOURCES_TABLE = "contact_sources"

#: a stored contact that nothing is left to empty of (a webhook's or an earlier sweep's emptied contact)
_EMPTY = ("c.email IS NULL AND c.phone IS NULL AND c.first_name IS NULL AND c.last_name IS NULL "
          "AND c.marketing_consent = 'no'")
#: a stored contact a CRM deleted (its emptied row, :func:`connectors.contacts.gone_contact`; alias ``c``): a later
#: version of it (the contact restored there) replaces it, keeping none of its values (``coalesce_webhook_contacts``)
STORED_GONE = f"({_EMPTY} AND c.attributes->>'deleted' = 'true')"
_MINE = (f"JOIN {SOURCES_TABLE} AS p ON p.customer_id = c.customer_id AND p.source = ? "
         "WHERE regexp_full_match(c.customer_id, '[0-9]+')")


@dataclass(frozen=True)
class SweepLimit:
    """At most ``max(floor, pct % of the source's stored contacts)`` are emptied by one pull (``[guards]
    min_mass_change``, ``max_removal_pct``: emptying takes managed tags off), unless ``force``."""

    floor: int = 5
    pct: float = 10.0
    force: bool = False

    def allows(self, gone: int, stored: int) -> bool:
        return self.force or gone <= max(self.floor, math.floor(stored * self.pct / 100))


def create_sources_table(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"CREATE TABLE IF NOT EXISTS {SOURCES_TABLE} (customer_id VARCHAR PRIMARY KEY,"
                " source VARCHAR NOT NULL)")


def note_sources(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """The staged contacts keyed by a CRM id are ``name``'s (a pull's merge, after linking, same transaction)."""
    create_sources_table(con)
    con.execute(f"""INSERT OR REPLACE INTO {SOURCES_TABLE}
        SELECT DISTINCT s.customer_id, ? FROM staged_contacts AS s LEFT JOIN {SOURCES_TABLE} AS p USING (customer_id)
        WHERE regexp_full_match(s.customer_id, '[0-9]+') AND p.source IS DISTINCT FROM ?""", [name, name])


def listed_bad(result: PullResult) -> list[str] | None:
    """The ids of the rows the pull read but could not use (listed all the same); None: a bad contact row named
    no id, or the pull kept fewer bad rows than it counted, so the list's ids are not all known."""
    if result.bad_row_count > len(result.bad_rows):
        return None
    ids = []
    for row in result.bad_rows:
        if row.row not in (None, ""):
            ids.append(str(row.row))
        elif not row.source.endswith(":orders"):
            return None
    return ids


def stage_gone_contacts(con: duckdb.DuckDBPyConnection, name: str, listed: list[str],
                        limit: SweepLimit = SweepLimit()) -> tuple[int, int] | None:
    """Stage an emptied contact for each stored contact of source ``name`` (noted, a CRM id) that the staged whole
    contact list does not hold, nor ``listed`` (its bad rows); return (gone, stored) with gone 0 when nobody was
    emptied because more than ``limit`` allows were gone (None: the list held no contact at all: nobody emptied)."""
    create_sources_table(con)
    mine = f"FROM contacts c {_MINE} AND NOT ({_EMPTY})"
    stored = con.execute(f"SELECT count(*) {mine}", [name]).fetchone()[0]
    # the list's own rows: a guest contact (an order's e-mail key with its phone) is no row of the contact list
    if not con.execute("SELECT 1 FROM staged_contacts WHERE regexp_full_match(customer_id, '[0-9]+') LIMIT 1"
                       ).fetchall():
        return None if stored else (0, 0)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE gone_contacts AS SELECT c.customer_id {mine}
        AND c.customer_id NOT IN (SELECT customer_id FROM staged_contacts)
        AND c.customer_id NOT IN (SELECT unnest(?::VARCHAR[]))""", [name, listed])
    try:
        gone = con.execute("SELECT count(*) FROM gone_contacts").fetchone()[0]
        if gone and limit.allows(gone, stored):
            emptied = gone_contact("")
            con.execute("INSERT INTO staged_contacts (customer_id, marketing_consent, attributes) "
                        "SELECT customer_id, ?, ?::JSON FROM gone_contacts",
                        [str(emptied.marketing_consent), json.dumps(dict(emptied.attributes))])
    finally:
        con.execute("DROP TABLE IF EXISTS gone_contacts")
    return gone, stored


def empty_gone(con: duckdb.DuckDBPyConnection, result: PullResult, name: str,
               limit: SweepLimit = SweepLimit()) -> None:
    """Before the merge of a pull that read ``name``'s whole contact list (an API source's, cursor None): stage the
    stored contacts it did not show, emptied, and say how many in the pull's warnings."""
    listed = listed_bad(result)
    if listed is None:
        result.warnings.append(f"{name}'s contact list had a bad row naming no contact: no stored contact was "
                               "emptied for missing from it")
        return
    swept = stage_gone_contacts(con, name, listed, limit)
    if swept is None:
        result.warnings.append(f"{name} listed no contact at all: the stored contacts were kept (check that the "
                               "token may read contacts)")
        return
    gone, stored = swept
    if gone and not limit.allows(gone, stored):
        result.warnings.append(f"{counted(gone, 'stored contact')} of {stored} no longer in {name}'s contact list: "
                               "more than the guards allow (min_mass_change, max_removal_pct), so none was emptied "
                               "(check the token's rights; if they were deleted there, pull or sync again with "
                               "--full --allow-mass-change)")
    elif gone:
        result.contacts += gone
        result.warnings.append(f"{counted(gone, 'stored contact')} no longer in {name}'s contact list (deleted or "
                               "merged away there): emptied, so their managed tags and lists come off at the next "
                               "sync (their status in the ESP is not changed; their orders stay)")


__all__ = ["SOURCES_TABLE", "STORED_GONE", "SweepLimit", "create_sources_table", "empty_gone", "listed_bad", "note_sources",
           "stage_gone_contacts"]
