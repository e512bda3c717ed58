"""RetailCRM orders an older rfmsync keyed otherwise (docs/sources/retailcrm.md, "Upgrading").

Before, a B2B order (``customer.type = customer_corporate``) was stored under the private customer with the
corporate customer's number, and a guest order under its e-mail as typed (``Guest@Example.com``); now they are their
contact person's and the lower-cased e-mail's (:func:`~connectors.retailcrm_mapping.customer_key`). An incremental
pull reads only what changed, so the orders stored before keep their keys, and the customers stay split, until a
``rfmsync pull --full`` reads them all again. :func:`rekeyed` tells so on every incremental pull until then.

Which stores were keyed the new way is told by a mark in the source's cursor (:data:`MARK`), not by the store: a
pull that reads everything (no cursor: the first pull, ``--full``) sets it, and the cursor is saved only with a
store merge that succeeded, so a refused or failed ``--full`` pull never marks the store keyed anew. A B2B order
under the wrong customer looks like any other in the store; the guest e-mails in capitals are counted, one query
while the mark is missing, none after.
"""

from __future__ import annotations

import json

import duckdb

from .incremental import load_cursor
from .source import PullResult

NAME = "retailcrm"
#: the cursor's mark: every stored order was keyed by this rfmsync's rules (B2B, guest e-mails)
MARK = "keys"
KEYS_VERSION = "2"


def rekeyed(con: duckdb.DuckDBPyConnection, cursor: str | None, result: PullResult) -> PullResult:
    """``result`` with the mark carried into its cursor, or, for an incremental pull of a store keyed by an older
    rfmsync, a warning that says what is split and to run ``rfmsync pull --full`` once."""
    if cursor is None or load_cursor(cursor, NAME).get(MARK) == KEYS_VERSION:
        if result.cursor is not None:
            result.cursor = json.dumps({**json.loads(result.cursor), MARK: KEYS_VERSION}, sort_keys=True)
        return result
    capitals = con.execute("SELECT count(*) FROM orders WHERE contains(customer_id, '@') "
                           "AND customer_id <> lower(customer_id)").fetchall()[0][0]
    guests = (f", and {capitals} {'order is' if capitals == 1 else 'orders are'} keyed by a guest's e-mail in "
              f"capitals, apart from that guest's new orders (keyed by the lower-cased e-mail)") if capitals else ""
    result.warnings.append(
        "retailcrm: the order store was pulled by an older rfmsync, which keyed the orders otherwise: any B2B order "
        "(customer_corporate) it stored is under the private customer with the corporate customer's number, not "
        f"under its contact person{guests}; run `rfmsync pull --full` once to key every order anew (this "
        "warning stops then)")
    return result
