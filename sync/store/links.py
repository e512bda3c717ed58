"""The links the store learned: an order keyed by a guest's e-mail or phone → the customer id it joined.

An incremental merge (a webhook batch, a CRM pull) links records keyed by an e-mail or phone to the customer who
carries that e-mail/phone and re-keys the stored ones (:func:`connectors.identity.link_staged`); each order it
re-keys is noted in ``identity_links`` (with the e-mail/phone it went by). They are facts about whose orders these
are, not rows of a source: a file source's full refresh replaces its rows with the export's, where the guest is
keyed by its e-mail/phone again, so the same transaction applies the learned links to the rows it wrote
(:func:`apply_links`). A store written before the links were noted has them only in its orders (a file's guest
order stored under a customer id): a full refresh notes those first (:func:`note_stored_links`).

The links are kept by order, not by address: an address changes hands (Anna changes her e-mail, Beth now has her
old one). An order linked once stays its customer's while that customer has a contact in the store (a customer
gone since links nobody, nor one deleted in the CRM: his contact stays, emptied, and his links are erased with him,
:func:`forget_gone_links`) and while its e-mail/phone is not carried by more than ``max_identity_group`` customers
(the rule that keeps a shop's own phone from linking its buyers): then it stays under the guest's key, as a fresh
read leaves it. The export's other guest rows of an e-mail/phone linked before (a new guest order) join whoever
carries it now (rule 2, as a merge would), and a guest's e-mail, phone and consent fill only a customer who carries
that e-mail/phone now.
"""

from __future__ import annotations

import logging

import duckdb

from connectors.guest_merge import DELETED, fill_contact, idlike, rekey

from .connection import store_tables
from .webhooks import WEBHOOK_TABLE

log = logging.getLogger(__name__)

LINKS_TABLE = "identity_links"
_NOTED = "links noted from the orders"  # the table's comment once a store's earlier links were noted


def create_links_table(con: duckdb.DuckDBPyConnection) -> None:
    """The links table (a new store's, or one written before links were noted: its orders not looked at yet)."""
    if store_tables(con, LINKS_TABLE):
        if not con.execute("SELECT count(*) FROM duckdb_columns() WHERE database_name = current_database() AND "
                           f"table_name = '{LINKS_TABLE}' AND column_name = 'guest'").fetchall()[0][0]:
            # a store written before the guest key was noted: its links hold, and link nobody by their guest
            con.execute(f"ALTER TABLE {LINKS_TABLE} ADD COLUMN guest VARCHAR")
        return
    con.execute(f"CREATE TABLE {LINKS_TABLE} (order_id VARCHAR PRIMARY KEY, identifier VARCHAR NOT NULL, "
                "customer_id VARCHAR NOT NULL, linked_at TIMESTAMPTZ NOT NULL DEFAULT now(), "
                "guest VARCHAR)")  # (guest: the key the order had, lower-cased: connectors.identity.recall)
    if not con.execute("SELECT count(*) FROM (SELECT 1 FROM orders LIMIT 1)").fetchall()[0][0]:
        _mark_noted(con)  # a new store: no link was made before


def note_stored_links(con: duckdb.DuckDBPyConnection, noted: bool) -> None:
    """Before the first full refresh of a store written before links were noted replaces its orders: a staged
    (file) order keyed by an e-mail/phone that the store holds under the id of a customer who came by webhook
    (``noted``: the store has webhook records) and whose contact carries that e-mail/phone was linked by an
    earlier merge: note the order's link (a link noted already is left as it is). Once: the table's comment says so."""
    if con.execute("SELECT comment FROM duckdb_tables() WHERE database_name = current_database() AND schema_name = "
                   "'main' AND table_name = ?", [LINKS_TABLE]).fetchall()[0][0] == _NOTED:
        return
    if noted:
        con.execute(f"""INSERT INTO {LINKS_TABLE} (order_id, identifier, customer_id)
            SELECT s.order_id, any_value(s.customer_id), min(o.customer_id) FROM staged_orders s
            JOIN (SELECT order_id, customer_id FROM orders
                  WHERE customer_id IN (SELECT id FROM {WEBHOOK_TABLE} WHERE kind = 'contact')) o USING (order_id)
            JOIN contacts c ON c.customer_id = o.customer_id
            WHERE {idlike('s.customer_id')} AND s.customer_id IN (lower(trim(c.email)), c.phone)
            GROUP BY s.order_id HAVING count(DISTINCT o.customer_id) = 1
            ON CONFLICT DO NOTHING""")
    _mark_noted(con)


def hold_guests(con: duckdb.DuckDBPyConnection) -> None:
    """Before a full refresh replaces the contacts: ``_lk_held``, the guest contacts of a linked e-mail/phone the
    store holds (a webhook's record without a customer id): :func:`apply_links` leaves them as they were."""
    if not con.execute(f"SELECT count(*) FROM {LINKS_TABLE}").fetchall()[0][0]:
        return  # no link: apply_links has nothing to do either
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _lk_held AS SELECT customer_id FROM contacts
        WHERE {idlike('customer_id')} AND (customer_id IN (SELECT identifier FROM {LINKS_TABLE})
              OR lower(trim(customer_id)) IN (SELECT identifier FROM {LINKS_TABLE}))""")


def forget_gone_links(con: duckdb.DuckDBPyConnection, present: set[str]) -> None:
    """A merge that deletes customers (staged deleted in the CRM: an erasure) erases their links: the orders stay
    theirs, but no later guest order joins them through an e-mail or phone they once went by."""
    if "staged_contacts" in present:
        con.execute(f"DELETE FROM {LINKS_TABLE} WHERE customer_id IN (SELECT customer_id FROM staged_contacts "
                    f"WHERE {DELETED})")


def _mark_noted(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"COMMENT ON TABLE {LINKS_TABLE} IS '{_NOTED}'")


def apply_links(con: duckdb.DuckDBPyConnection, max_group: int) -> int:
    """After a full refresh wrote its rows: each stored order a merge linked, keyed by a guest's e-mail/phone again,
    joins the customer it joined; the other guests keyed by (or carrying) an e-mail/phone linked before join the
    customer who carries it now (rule 2: the smallest id), as a merge re-keys them
    (:func:`connectors.identity.rekey`). A guest left without orders becomes one with the customer its orders
    joined, its e-mail, phone and consent only when that customer carries its address. Returns the rows re-keyed."""
    if not con.execute(f"SELECT count(*) FROM {LINKS_TABLE}").fetchall()[0][0]:
        con.execute("DROP TABLE IF EXISTS _lk_held")
        return 0
    real = f"NOT {idlike('customer_id')}"
    # who carries each e-mail/phone linked before now; one carried by more than max_group links nobody (rule 4)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _lk_carriers AS
        WITH ids AS (SELECT DISTINCT identifier FROM {LINKS_TABLE}),
             c AS (SELECT customer_id, lower(trim(email)) AS e, phone AS p FROM contacts
                   WHERE {real} AND NOT {DELETED})
        SELECT i.identifier, c.customer_id FROM ids i JOIN c ON c.e = i.identifier
        UNION SELECT i.identifier, c.customer_id FROM ids i JOIN c ON c.p = i.identifier""")
    # (counted as link_staged counts: the registered carriers, the guests keyed by another value that carry it and
    # those joined by it before, so a shop's phone on many guests' orders stays refused however few customers
    # registered with it, and whether its guests came at once or one batch at a time)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _lk_shared AS
        WITH ids AS (SELECT DISTINCT identifier FROM {LINKS_TABLE}),
             g AS (SELECT customer_id, lower(trim(email)) AS e, phone AS p FROM contacts WHERE {idlike('customer_id')}),
             anchors AS (SELECT identifier, customer_id FROM _lk_carriers
                         UNION SELECT i.identifier, lower(trim(g.customer_id)) FROM ids i JOIN g ON g.e = i.identifier
                               AND lower(trim(g.customer_id)) <> i.identifier
                         UNION SELECT i.identifier, lower(trim(g.customer_id)) FROM ids i JOIN g ON g.p = i.identifier
                               AND g.customer_id <> i.identifier
                         UNION SELECT identifier, guest FROM {LINKS_TABLE} WHERE guest <> identifier
                               AND regexp_replace(guest, '[^0-9+]', '', 'g') <> identifier)
        SELECT identifier FROM anchors GROUP BY identifier HAVING count(DISTINCT customer_id) > {int(max_group)}""")
    # the guests of a linked e-mail/phone (their key, else their contact's e-mail, else its phone): rule 2
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _lk_map AS
        WITH guests AS (SELECT customer_id AS raw, lower(trim(email)) AS e, phone AS p FROM contacts
                        WHERE {idlike('customer_id')}),
             found AS (SELECT g.raw, g.raw AS v, 0 AS how FROM guests g UNION ALL SELECT g.raw, g.e, 1 FROM guests g
                       UNION ALL SELECT g.raw, g.p, 2 FROM guests g),
             cand AS (SELECT f.raw, f.how, c.identifier, c.customer_id FROM found f
                      JOIN _lk_carriers c ON c.identifier = f.v
                      WHERE c.identifier NOT IN (SELECT identifier FROM _lk_shared)),
             best AS (SELECT raw, min(how) AS how FROM cand GROUP BY raw)
        SELECT c.raw, any_value(c.identifier) AS norm, min(c.customer_id) AS key FROM cand c
        JOIN best b ON b.raw = c.raw AND b.how = c.how GROUP BY c.raw""")
    # the orders linked before, keyed by a guest again, to customers still in the store (but for those the guest's
    # carrier, below, takes anyway)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _lk_orders AS
        SELECT o.order_id, o.customer_id AS raw, l.identifier AS norm, l.customer_id AS key
        FROM (SELECT order_id, customer_id FROM orders WHERE {idlike('customer_id')}) o
        JOIN {LINKS_TABLE} l ON l.order_id = o.order_id
             -- only while the export still keys the order by the address it was linked by (an order the shop
             -- gave another address, or another source's order of the same id, is not that customer's)
             AND l.identifier IN (o.customer_id, lower(trim(o.customer_id)))
        WHERE l.customer_id IN (SELECT customer_id FROM contacts WHERE NOT {DELETED})
          AND l.identifier NOT IN (SELECT identifier FROM _lk_shared)
          AND NOT EXISTS (SELECT 1 FROM _lk_map m WHERE m.raw = o.customer_id AND m.key = l.customer_id)""")
    rows = linked = con.execute("SELECT count(*) FROM _lk_orders").fetchall()[0][0]
    if linked:
        con.execute("UPDATE orders AS t SET customer_id = m.key FROM _lk_orders m WHERE t.order_id = m.order_id")
    if con.execute("SELECT count(*) FROM _lk_map").fetchall()[0][0]:
        rows += rekey(con, staged=False)  # its carrier carries the address: the guest's values fill its gaps
    # the export's guest whose orders all joined their linked customers (nobody carries its address now): one with
    # that customer, as the merge that linked them made it (a guest contact the store held before stays)
    if linked and _left(con):
        fill_contact(con, "contacts", "key", "contacts", "raw", links="_lk_left",
                     carried="m.norm IN (lower(trim(t.email)), t.phone)")
        con.execute("DELETE FROM contacts WHERE customer_id IN (SELECT raw FROM _lk_left)")
    for name in ("carriers", "shared", "orders", "map", "left", "held"):
        con.execute(f"DROP TABLE IF EXISTS _lk_{name}")
    if rows:
        log.info("identity: %d rows of the export joined the customers linked to their e-mail or phone", rows)
    return rows


def _left(con: duckdb.DuckDBPyConnection) -> int:
    """``_lk_left``: the guests whose orders all joined their linked customers by :func:`apply_links` (nobody carries
    their address now), but for those the store held before (``_lk_held``); returns how many."""
    con.execute("""CREATE OR REPLACE TEMP TABLE _lk_left AS
        SELECT raw, min(key) AS key, any_value(norm) AS norm FROM _lk_orders
        WHERE raw NOT IN (SELECT raw FROM _lk_map) AND raw NOT IN (SELECT customer_id FROM _lk_held)
          AND raw NOT IN (SELECT DISTINCT customer_id FROM orders WHERE customer_id IN (SELECT raw FROM _lk_orders))
        GROUP BY raw""")
    return con.execute("SELECT count(*) FROM _lk_left").fetchall()[0][0]
