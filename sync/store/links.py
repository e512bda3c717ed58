"""The links the store learned: an e-mail or phone that keyed a guest's records → the customer id they joined.

An incremental merge (a webhook batch, a CRM pull) links records keyed by an e-mail or phone to the customer with
that e-mail/phone and re-keys the stored ones (:func:`connectors.identity.link_staged`); each link it makes is
noted in ``identity_links``. They are facts about who is who, not rows of a source: a file source's full refresh
replaces its rows with the export's, where the guest is keyed by its e-mail/phone again, so the same transaction
applies the learned links to the rows it wrote (:func:`apply_links`). A store written before the links were
noted has them only in its orders (a file's guest order stored under a customer id): a full refresh notes those
first (:func:`note_stored_links`).

A link is applied while its customer has a contact in the store (as when it was made; a customer gone since links
nobody, and the next link of that e-mail/phone replaces it) and while
its e-mail/phone is not shared by more than ``max_identity_group`` customers (the rule that keeps a shop's own
phone from linking its buyers): then the guest's rows stay under the guest's key, as a fresh read leaves them.
"""

from __future__ import annotations

import logging

import duckdb

from connectors.identity import rekey

from .connection import store_tables
from .webhooks import WEBHOOK_TABLE

log = logging.getLogger(__name__)

LINKS_TABLE = "identity_links"
_NOTED = "links noted from the orders"  # the table's comment once a store's earlier links were noted
_GUEST = "(contains({c}, '@') OR starts_with({c}, '+'))"  # a key that is an e-mail or a phone: no customer id


def create_links_table(con: duckdb.DuckDBPyConnection) -> None:
    """The links table (a new store's, or one written before links were noted: its orders not looked at yet)."""
    if store_tables(con, LINKS_TABLE):
        return
    con.execute(f"CREATE TABLE {LINKS_TABLE} (identifier VARCHAR PRIMARY KEY, "
                "customer_id VARCHAR NOT NULL, linked_at TIMESTAMPTZ NOT NULL DEFAULT now())")
    if not con.execute("SELECT count(*) FROM (SELECT 1 FROM orders LIMIT 1)").fetchall()[0][0]:
        _mark_noted(con)  # a new store: no link was made before


def note_stored_links(con: duckdb.DuckDBPyConnection, noted: bool) -> None:
    """Before the first full refresh of a store written before links were noted replaces its orders: a staged
    (file) order keyed by an e-mail/phone that the store holds under the id of a customer who came by webhook
    (``noted``: the store has webhook records) and whose contact carries that e-mail/phone was linked by an
    earlier merge: note the link (a link noted already is left as it is). Once: the table's comment says so."""
    if con.execute("SELECT comment FROM duckdb_tables() WHERE database_name = current_database() AND schema_name = "
                   "'main' AND table_name = ?", [LINKS_TABLE]).fetchall()[0][0] == _NOTED:
        return
    if noted:
        con.execute(f"""INSERT INTO {LINKS_TABLE} (identifier, customer_id)
            SELECT s.customer_id, min(o.customer_id) FROM staged_orders s
            JOIN (SELECT order_id, customer_id FROM orders
                  WHERE customer_id IN (SELECT id FROM {WEBHOOK_TABLE} WHERE kind = 'contact')) o USING (order_id)
            JOIN contacts c ON c.customer_id = o.customer_id
            WHERE {_GUEST.format(c='s.customer_id')} AND s.customer_id IN (lower(trim(c.email)), c.phone)
            GROUP BY s.customer_id HAVING count(DISTINCT o.customer_id) = 1
            ON CONFLICT DO NOTHING""")
    _mark_noted(con)


def _mark_noted(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"COMMENT ON TABLE {LINKS_TABLE} IS '{_NOTED}'")


def apply_links(con: duckdb.DuckDBPyConnection, max_group: int) -> int:
    """After a full refresh wrote its rows: the stored customers keyed by a learned identifier (their key, else
    their contact's e-mail, else its phone) join the linked customer, as the merge that learned the link re-keyed
    them (:func:`connectors.identity.rekey`: the customer's contact values win, the guest's fill its gaps).
    Returns the rows re-keyed."""
    if not con.execute(f"SELECT count(*) FROM {LINKS_TABLE}").fetchall()[0][0]:
        return 0
    # the stored guests keyed by a learned identifier, to customers still in the store: the export stages a contact
    # for each guest (it has an e-mail or a phone), with its key, e-mail and phone
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _lk_found AS
        WITH links AS (SELECT * FROM {LINKS_TABLE} WHERE customer_id IN (SELECT customer_id FROM contacts)),
             guests AS (SELECT customer_id AS raw, lower(trim(email)) AS e, phone AS p FROM contacts
                        WHERE {_GUEST.format(c='customer_id')})
        SELECT g.raw, l.identifier, l.customer_id AS key, 0 AS how FROM guests g JOIN links l ON l.identifier = g.raw
        UNION ALL SELECT g.raw, l.identifier, l.customer_id, 1 FROM guests g JOIN links l ON l.identifier = g.e
        UNION ALL SELECT g.raw, l.identifier, l.customer_id, 2 FROM guests g JOIN links l ON l.identifier = g.p""")
    # an identifier carried by more customers than max_group links nobody (connectors.identity, rule 4)
    real = f"NOT {_GUEST.format(c='customer_id')}"
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _lk_map AS
        WITH ids AS (SELECT DISTINCT identifier FROM _lk_found),
             carriers AS (SELECT i.identifier, c.customer_id FROM ids i
                          JOIN contacts c ON lower(trim(c.email)) = i.identifier WHERE {real}
                          UNION SELECT i.identifier, c.customer_id FROM ids i JOIN contacts c ON c.phone = i.identifier
                          WHERE {real}),
             shared AS (SELECT identifier FROM carriers GROUP BY identifier
                        HAVING count(DISTINCT customer_id) > {int(max_group)})
        SELECT raw, arg_min(key, (how, key)) AS key FROM _lk_found
        WHERE raw <> key AND identifier NOT IN (SELECT identifier FROM shared) GROUP BY raw""")
    rows = rekey(con, staged=False) if con.execute("SELECT count(*) FROM _lk_map").fetchall()[0][0] else 0
    for name in ("found", "map"):
        con.execute(f"DROP TABLE IF EXISTS _lk_{name}")
    if rows:
        log.info("identity: %d rows of the export joined the customers linked to their e-mail or phone", rows)
    return rows
