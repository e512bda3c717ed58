"""A CRM's contacts that its whole contact list no longer shows: staged emptied before a full pull's merge.

A contact deleted in the CRM (a GDPR erasure, the loser of a "merge duplicates") is only ever told by a webhook
(amoCRM ``contacts[delete]``, Bitrix24 ``ONCRMCONTACTDELETE``, Shopify ``customers/delete``, RetailCRM's history):
no incremental pull lists it. A pull that read the source's whole contact list (a first pull, ``pull --full``:
its cursor was None, and it ended, since a pull that stops half-way keeps nothing) knows every contact the CRM
holds, so each stored contact of that source it did not read is gone there: it is staged as the CRM's webhooks
stage a deleted one (:func:`connectors.contacts.gone_contact`: no address, consent no, attribute ``deleted``),
and merged with the pull. Its orders stay; its managed tags come off at the next sync.

"That source's" contacts are the ones keyed by a CRM's own id (digits): a guest keyed by an e-mail or a phone,
a company's ``company-<id>`` customer are never in a contact list and are left alone. A full list of no contact
at all empties nobody (a token that lost access to contacts may read an empty list): :func:`stage_gone_contacts`
then returns None and the pull warns.
"""

from __future__ import annotations

import json

import duckdb

from connectors.contacts import gone_contact
from connectors.counts import counted
from connectors.source import PullResult

#: a stored contact that nothing is left to empty of (a webhook's or an earlier sweep's emptied contact)
_EMPTY = ("c.email IS NULL AND c.phone IS NULL AND c.first_name IS NULL AND c.last_name IS NULL "
          "AND c.marketing_consent = 'no'")


def stage_gone_contacts(con: duckdb.DuckDBPyConnection) -> int | None:
    """Stage an emptied contact for each stored contact of the source (a CRM id) that the staged whole contact
    list does not hold; return how many (None: the list held no contact at all, so nobody was emptied)."""
    if not con.execute("SELECT 1 FROM staged_contacts LIMIT 1").fetchall():
        stored = con.execute("SELECT count(*) FROM contacts c WHERE regexp_full_match(c.customer_id, '[0-9]+') "
                             f"AND NOT ({_EMPTY})").fetchone()[0]
        return None if stored else 0
    gone = gone_contact("")
    attributes = json.dumps(dict(gone.attributes))
    return con.execute(f"""INSERT INTO staged_contacts (customer_id, marketing_consent, attributes)
        SELECT c.customer_id, ?, ?::JSON FROM contacts c
        WHERE regexp_full_match(c.customer_id, '[0-9]+') AND NOT ({_EMPTY})
          AND c.customer_id NOT IN (SELECT customer_id FROM staged_contacts)""",
                       [str(gone.marketing_consent), attributes]).fetchone()[0]


def empty_gone(con: duckdb.DuckDBPyConnection, result: PullResult, name: str) -> None:
    """Before the merge of a pull that read ``name``'s whole contact list (an API source's, cursor None): stage the
    stored contacts it did not show, emptied, and say how many in the pull's warnings."""
    gone = stage_gone_contacts(con)
    if gone is None:
        result.warnings.append(f"{name} listed no contact at all: the stored contacts were kept (check that the "
                               "token may read contacts)")
    elif gone:
        result.contacts += gone
        result.warnings.append(f"{counted(gone, 'stored contact')} no longer in {name}'s contact list (deleted or "
                               "merged away there): emptied, so no destination mails them (their orders stay)")


__all__ = ["empty_gone", "stage_gone_contacts"]
