"""The identity keys' rules an order store was written under, and the one-time notice of a store written before.

This release changed two keys (:mod:`connectors.email_phone`): an e-mail is NFKC-folded (``ａｎｎａ@x.com`` typed
with fullwidth letters is anna@x.com), and a phone keeps its extension (``+998 71 200 00 00 доб. 101`` is
``+998712000000;ext=101``, where it was the bare office line). A store written before keeps the keys it was given:
a CRM or webhook customer's phone without its extension, so a guest who now types that extension stays apart from
him (and two colleagues on one line stay one customer) until the source is read again. A file source reads every
file again once by itself (:data:`sync.store.files.FORMAT`); an API source's store cannot tell which stored phone
lost an extension, so the first run after the upgrade says once to run ``rfmsync pull --full``, and its stored
e-mails are normalised again at once (:func:`sync.store.lookup.normalise_emails`: a fullwidth one was kept).

The store remembers the rules in ``store_key_rules`` (one row, :data:`KEY_RULES`): written by a pull that reads
the whole source (a first pull, ``--full``) and by the notice itself.
"""

from __future__ import annotations

import logging
import unicodedata

import duckdb

from .connection import store_tables
from .lookup import normalise_emails

log = logging.getLogger(__name__)

TABLE = "store_key_rules"
#: 1: e-mails NFKC-folded, phones keep their extension (``;ext=``)
KEY_RULES = 1

NOTICE = ("this order store was pulled before rfmsync kept a phone's extension (+998 71 200 00 00 доб. 101 is "
          "+998712000000;ext=101, it was +998712000000) and folded fullwidth e-mails (ａｎｎａ@x.com is anna@x.com): "
          "its {what} keep the old keys, so a guest typing such a phone or address now can stay apart from the "
          "customer who has it; run `rfmsync pull --full` once to read them again (this notice is not repeated)")


def key_rules(con: duckdb.DuckDBPyConnection) -> int:
    """The rules the store's keys were written under (0: before this table, or a store never pulled whole)."""
    if not store_tables(con, TABLE):
        return 0
    rows = con.execute(f"SELECT max(rules) FROM {TABLE}").fetchall()
    return int(rows[0][0] or 0)


def mark_key_rules(con: duckdb.DuckDBPyConnection) -> None:
    """Record that the store's keys follow :data:`KEY_RULES` (the whole source read, or the notice given); a store
    that records them already is not written (a file source's every run comes here)."""
    if key_rules(con) >= KEY_RULES:
        return
    con.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (rules INTEGER NOT NULL)")
    con.execute(f"DELETE FROM {TABLE}")
    con.execute(f"INSERT INTO {TABLE} VALUES ({KEY_RULES})")


def key_rules_notice(con: duckdb.DuckDBPyConnection, file_source: bool) -> str | None:
    """Once per store written under older rules: its contacts' e-mails normalised again, and the notice when it
    holds keys the new rules may change: any phone (an extension dropped left no trace), or a customer keyed by an
    e-mail that NFKC changes (a guest's id is the address as typed). A file source's store is only marked (its
    files are read again: :data:`sync.store.files.FORMAT`). One scan of the contacts, then never again."""
    if key_rules(con) >= KEY_RULES:
        return None
    if file_source:
        mark_key_rules(con)
        return None
    fixed = normalise_emails(con, "contacts", plain_skipped=True)
    if fixed:
        log.info("store: %d e-mail value(s) of contacts NFKC-folded (stored before the rule)", fixed)
    phones, wide = con.execute("""SELECT count(phone) > 0, list(DISTINCT customer_id) FILTER (WHERE
        contains(customer_id, '@') AND strlen(customer_id) <> length(customer_id)) FROM contacts""").fetchall()[0]
    what = ["phones"] if phones else []
    if any(unicodedata.normalize("NFKC", c) != c for c in wide or []):
        what.append("guests keyed by an e-mail typed with fullwidth letters")
    mark_key_rules(con)
    return NOTICE.format(what=" and ".join(what)) if what else None
