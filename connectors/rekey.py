"""Orders an older rfmsync keyed otherwise (docs/sources/common.md, "Upgrading"): the warning until a full pull.

A CRM source whose keys changed (RetailCRM: a B2B order was the private customer's with the corporate customer's
number; RetailCRM and Shopify: a guest's e-mail or phone was the key as typed, now read by the contacts' rules,
:mod:`connectors.guests`) leaves the orders stored before under their old keys: an incremental pull reads only what
changed, so the customers stay split until a ``rfmsync pull --full`` reads them all again. :func:`rekeyed` tells so
on every incremental pull until then, for any source, from its :data:`VERSIONS` entry.

Which stores were keyed the new way is told by a mark in the source's cursor (:data:`MARK`, the version of the
source's keys), not by the store: a pull that reads everything (no cursor: the first pull, ``--full``) sets it, and
the cursor is saved only with a store merge that succeeded, so a refused or failed ``--full`` pull never marks the
store keyed anew. A B2B order under the wrong customer, or a guest phone typed without ``+`` (``998901234567``),
looks like a vendor's customer id in the store; the guest keys the rules now read otherwise are counted (one query
while the mark is missing, none after).
"""

from __future__ import annotations

import json

import duckdb

from .email_phone import normalize_email, normalize_phone
from .incremental import load_cursor
from .source import PullResult

#: the cursor's mark: every stored order was keyed by the rules of this version of the source's keys
MARK = "keys"
#: each source's keys version: RetailCRM "2" keyed B2B orders by their contact person, "3" guests by the contacts'
#: rules (an e-mail validated, a phone in E.164), "4" kept the phone of a guest keyed by its e-mail (its contact:
#: :func:`connectors.guests.guest_contact`); Shopify "1" guests by the contacts' rules, "2" their phones kept
VERSIONS = {"retailcrm": "4", "shopify": "2"}
#: the version before the guests' phones were kept: a store marked so is told only that (when it holds such guests)
PHONES_KEPT_AFTER = {"retailcrm": "3", "shopify": "1"}
_B2B = ("any B2B order (customer_corporate) it stored is under the private customer with the corporate customer's "
        "number, not under its contact person")


def rekeyed(con: duckdb.DuckDBPyConnection, source: str, cursor: str | None, result: PullResult,
            region: str | None) -> PullResult:
    """``result`` with the mark carried into its cursor, or, for an incremental pull of a store keyed by an older
    rfmsync, a warning that says what is split and to run ``rfmsync pull --full`` once (``region``: the source's
    ``phone_region``, which guest phones are read with)."""
    version = VERSIONS[source]
    marked = None if cursor is None else load_cursor(cursor, source).get(MARK)
    if cursor is None or marked == version or not _stored(con):  # (nothing stored: nothing keyed otherwise)
        if result.cursor is not None:
            result.cursor = json.dumps({**json.loads(result.cursor), MARK: version}, sort_keys=True)
        return result
    phoneless = email_guest_orders(con)
    if marked == PHONES_KEPT_AFTER[source] and not phoneless:  # (nothing the older keys split: marked anew)
        return rekeyed(con, source, None, result, region)
    told = []
    if marked != PHONES_KEPT_AFTER[source]:
        guests = stale_guest_keys(con, region)
        told += [_B2B] if source == "retailcrm" and marked is None else []
        told.append(f"{guests} {'order is' if guests == 1 else 'orders are'} keyed by a guest's e-mail or phone as "
                    "typed, apart from that guest's new orders (keyed by the contacts' rules: the e-mail validated "
                    "and lower-cased, the phone in E.164)" if guests else
                    "any guest order it stored under a phone typed without + is apart from that guest's new orders "
                    "(keyed by the phone in E.164)")
    if phoneless:
        told.append(f"{phoneless} {'order is' if phoneless == 1 else 'orders are'} keyed by a guest's e-mail, and the phone such a "
                    "guest gave was not kept: a customer who registered with that phone stays apart from them")
    result.warnings.append(
        f"{source}: the order store was pulled by an older rfmsync, which keyed the orders otherwise: "
        f"{'; '.join(told)}; run `rfmsync pull --full` once to key every order anew (this warning stops then)")
    return result


def stale_guest_keys(con: duckdb.DuckDBPyConnection, region: str | None) -> int:
    """The stored orders keyed by a guest's e-mail or phone that the contacts' rules now read otherwise
    (``Guest@Example.com``, ``anna@``, ``+998 93 555-11-22``); a key of digits alone cannot be told from a vendor's
    customer id and is not counted."""
    rows = con.execute("SELECT customer_id, count(*) FROM orders WHERE contains(customer_id, '@') OR ("
                       "regexp_matches(customer_id, '^[+0-9][0-9 ()./+-]*(;ext=[0-9]+)?$') "
                       "AND NOT regexp_matches(customer_id, '^[0-9]+$')) GROUP BY 1").fetchall()
    return sum(n for key, n in rows
               if (normalize_email(key) if "@" in key else normalize_phone(key, region)) != key)


def email_guest_orders(con: duckdb.DuckDBPyConnection) -> int:
    """The stored orders keyed by a guest's e-mail whose guest has no contact (an older rfmsync kept none: the phone
    the guest gave is not in the store)."""
    return con.execute("SELECT count(*) FROM orders WHERE contains(customer_id, '@') AND customer_id NOT IN "
                       "(SELECT customer_id FROM contacts WHERE contains(customer_id, '@'))").fetchone()[0]


def _stored(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the store holds any order (a pull into a bare connection, or an empty store, has none)."""
    tables = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'orders'").fetchone()
    return bool(tables[0]) and con.execute("SELECT EXISTS (SELECT 1 FROM orders)").fetchone()[0]
