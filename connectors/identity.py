"""One customer per person: identity resolution over customer ids, e-mails and phones, in DuckDB SQL.

The rules (docs/sources/files.md, "One customer per person"):

1. rows with the same ``customer_id`` are one customer, and two different customer ids are never merged;
2. a row without a ``customer_id`` joins the customer that has the same normalised e-mail or E.164 phone
   (when several customers have it: the smallest customer id);
3. rows without a ``customer_id`` that share an e-mail or a phone, directly or through other rows, are one
   customer. Its key is the identifier of its earliest order (ties: e-mail before phone, then the smaller
   value), so it stays the same between runs and whatever the order of rows and files;
4. an e-mail or phone seen with more than ``max_identity_group`` customers (customer ids, or the other
   identifier of rows without one: a shop's own phone typed into receipts) links nobody and is reported.
   A row whose only identifier is such a value is a bad row; the value never becomes a contact's e-mail/phone.

Example (no ``customer_id`` column)::

    ordered_at  email         phone           →  key
    2024-01-02                +998901112233   →  +998901112233   (earliest order: its phone is the key)
    2024-02-10  aziz@mail.ru                  →  +998901112233   (linked through the row below)
    2024-03-05  aziz@mail.ru  +998901112233   →  +998901112233
    2024-03-06  bob@mail.ru   +998712000000   →  bob@mail.ru     (+998712000000 is on 50 receipts: ignored)

How: the distinct (customer id, e-mail, phone) tuples of the rows form a graph whose nodes are customer ids and
identifiers; min-label propagation (a SQL statement repeated until nothing changes, with pointer jumping) gives
each identifier its customer. Customer-id nodes keep their own label and never relay one, so rule 1 holds.
Nothing loops over rows in Python; the graph is as small as the number of distinct identifiers.

CRM and webhook records always carry a customer id; when the vendor record had none, the connector puts the
order's e-mail or phone there. :func:`link_staged` treats such an id (it contains ``@`` or starts with ``+``) as
"no customer id" and applies rule 2 to the staged batch and to the store rows it touches; given the store's table
of links it notes each order it re-keys (the store re-applies those to a file's full refresh).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import duckdb

from .counts import counted
from .email_phone import email_map, phone_map
from .errors import ConfigError
from .guest_merge import drop_gone, idlike, recall, rekey

log = logging.getLogger(__name__)

DEFAULT_MAX_GROUP = 5
MAX_ROUNDS = 64  # label propagation rounds (each at least halves the longest chain thanks to pointer jumping)
MAX_REPORTED = 100  # shared identifiers listed in a report (all are counted)


@dataclass(frozen=True)
class SharedIdentifier:
    value: str
    customers: int


@dataclass
class IdentityReport:
    """What identity resolution did: rows that joined another customer, customers merged, values ignored."""

    linked_rows: int = 0
    merged_customers: int = 0
    ignored_identifiers: list[SharedIdentifier] = field(default_factory=list)
    ignored_count: int = 0  # may exceed len(ignored_identifiers) when the list is capped
    #: both ids of every customer whose rows were re-keyed (the identifier and the customer it joined): a merge
    #: notes them as customers whose orders it changed (:mod:`sync.store.appends`)
    moved: list[str] = field(default_factory=list, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {"linked_rows": self.linked_rows, "merged_customers": self.merged_customers,
                "ignored_identifiers": [{"value": s.value, "customers": s.customers}
                                        for s in self.ignored_identifiers]}

    def __str__(self) -> str:
        text = (f"identity: {counted(self.linked_rows, 'row')} linked, {counted(self.merged_customers, 'customer')} "
                f"merged, {counted(self.ignored_count, 'shared identifier')} ignored")
        if self.ignored_identifiers:
            shown = ", ".join(f"{s.value} ({counted(s.customers, 'customer')})" for s in self.ignored_identifiers[:5])
            more = self.ignored_count - min(5, len(self.ignored_identifiers))
            text += f": {shown}" + (f" and {more} more" if more > 0 else "")
        return text


def max_group_of(section: Mapping[str, Any]) -> int:
    """``[source] max_identity_group`` (default 5), validated: a whole number ≥ 1."""
    value = section.get("max_identity_group", DEFAULT_MAX_GROUP)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"[source] max_identity_group must be a whole number ≥ 1, got {value!r}")
    return value


def _ignored(con: duckdb.DuckDBPyConnection, table: str, report: IdentityReport) -> None:
    report.ignored_count = con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
    report.ignored_identifiers = [SharedIdentifier(v, n) for v, n in con.execute(
        f"SELECT v, n FROM {table} ORDER BY n DESC, v LIMIT {MAX_REPORTED}").fetchall()]
    for s in report.ignored_identifiers[:20]:
        log.warning("%s is shared by %d customers (more than max_identity_group): it links nobody",
                    s.value, s.customers)


# ------------------------------------------------------------------------------------------ file rows

def resolve_rows(con: duckdb.DuckDBPyConnection, views: list[tuple[str, str]], region: str | None,
                 max_group: int, prefix: str = "_id") -> IdentityReport:
    """Key the rows of each ``(view, out)`` pair: ``out`` = the view's rows plus ``key`` (the customer),
    ``_own`` (the key the row alone gives: customer id, else e-mail, else phone) and ``_shared`` (the
    ignored identifier of a row left without a key). Views need ``cust``, ``email_raw``, ``phone_raw``
    and ``ordered_at``. ``email_raw``/``phone_raw`` are NULL in ``out`` where the value is ignored."""
    rows = " UNION ALL ".join(f"SELECT cust, email_raw, phone_raw, ordered_at FROM {v}" for v, _ in views)
    em, pm = f"{prefix}_emails", f"{prefix}_phones"
    email_map(con, f"SELECT email_raw AS raw FROM ({rows})", em)
    phone_map(con, f"SELECT phone_raw AS raw FROM ({rows})", pm, region)
    # the distinct (customer id, e-mail, phone) tuples: the graph's raw material (small next to the rows)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {prefix}_tuples AS
        SELECT r.cust, e.norm AS e, p.norm AS p, min(r.ordered_at) AS t, count(*) AS n
        FROM ({rows}) r LEFT JOIN {em} e ON e.raw = r.email_raw LEFT JOIN {pm} p ON p.raw = r.phone_raw
        WHERE r.cust IS NOT NULL OR e.norm IS NOT NULL OR p.norm IS NOT NULL GROUP BY ALL""")
    # identifiers: kind 0 = e-mail, 1 = phone; customers = distinct customer ids or other identifiers seen with it
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {prefix}_ids AS
        SELECT k, v, min(t) AS t, count(DISTINCT anchor) AS customers FROM (
            SELECT 0 AS k, e AS v, t, COALESCE(cust, p) AS anchor FROM {prefix}_tuples WHERE e IS NOT NULL
            UNION ALL
            SELECT 1, p, t, COALESCE(cust, e) FROM {prefix}_tuples WHERE p IS NOT NULL) GROUP BY k, v""")
    report = IdentityReport()
    con.execute(f"CREATE OR REPLACE TEMP TABLE {prefix}_shared AS SELECT v, customers AS n FROM {prefix}_ids"
                f" WHERE customers > {int(max_group)}")
    _ignored(con, f"{prefix}_shared", report)
    # nodes: customer ids first (by value), then identifiers by earliest order, e-mail before phone, value
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {prefix}_nodes AS
        SELECT row_number() OVER (ORDER BY c, t NULLS LAST, k, v) AS id, c, k, v FROM (
            SELECT DISTINCT 0 AS c, NULL::TIMESTAMPTZ AS t, 0 AS k, cust AS v FROM {prefix}_tuples
            WHERE cust IS NOT NULL
            UNION ALL SELECT 1, t, k, v FROM {prefix}_ids WHERE customers <= {int(max_group)})""")
    node = _identifier_nodes(prefix)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {prefix}_edges AS
        WITH t AS (SELECT c.id AS cn, e.id AS en, p.id AS pn FROM {prefix}_tuples x
                   LEFT JOIN (SELECT id, v FROM {prefix}_nodes WHERE c = 0) c ON c.v = x.cust
                   LEFT JOIN {node} e ON e.k = 0 AND e.v = x.e LEFT JOIN {node} p ON p.k = 1 AND p.v = x.p)
        SELECT DISTINCT cn AS src, en AS dst FROM t WHERE cn IS NOT NULL AND en IS NOT NULL
        UNION SELECT cn, pn FROM t WHERE cn IS NOT NULL AND pn IS NOT NULL
        UNION SELECT en, pn FROM t WHERE en IS NOT NULL AND pn IS NOT NULL
        UNION SELECT pn, en FROM t WHERE en IS NOT NULL AND pn IS NOT NULL""")
    _propagate(con, prefix)
    _write_keyed(con, views, prefix, em, pm)
    report.linked_rows, report.merged_customers = _link_counts(con, prefix)
    for name in ("tuples", "ids", "nodes", "edges", "labels", "shared"):
        con.execute(f"DROP TABLE IF EXISTS {prefix}_{name}")
    log.info("%s", report)
    return report


def _identifier_nodes(prefix: str) -> str:
    """The graph's e-mail and phone nodes (kind ``k``, value ``v``), as a subquery."""
    return f"(SELECT id, k, v FROM {prefix}_nodes WHERE c = 1)"


def _write_keyed(con: duckdb.DuckDBPyConnection, views: list[tuple[str, str]], prefix: str, em: str, pm: str) -> None:
    """Each ``(view, out)``: ``out`` = the view's rows with ``key``, ``_own`` and ``_shared`` (see resolve_rows)."""
    node = _identifier_nodes(prefix)
    # raw value → key (the label's value) for the output join; ignored values keep their norm for reporting
    for table, kind in ((em, 0), (pm, 1)):
        con.execute(f"""CREATE OR REPLACE TEMP TABLE {table}_keyed AS
            SELECT m.raw, m.norm, ln.v AS key, s.v IS NOT NULL AS ign FROM {table} m
            LEFT JOIN {node} n ON n.k = {kind} AND n.v = m.norm
            LEFT JOIN {prefix}_labels l ON l.n = n.id LEFT JOIN {prefix}_nodes ln ON ln.id = l.l
            LEFT JOIN {prefix}_shared s ON s.v = m.norm WHERE m.norm IS NOT NULL""")
    for view, out in views:
        con.execute(f"""CREATE OR REPLACE TEMP TABLE {out} AS
            SELECT r.* REPLACE (CASE WHEN e.ign THEN NULL ELSE r.email_raw END AS email_raw,
                                CASE WHEN p.ign THEN NULL ELSE r.phone_raw END AS phone_raw),
                   COALESCE(r.cust, e.key, p.key) AS key, COALESCE(r.cust, e.norm, p.norm) AS _own,
                   CASE WHEN r.cust IS NULL AND e.key IS NULL AND p.key IS NULL
                        THEN COALESCE(CASE WHEN e.ign THEN e.norm END, CASE WHEN p.ign THEN p.norm END) END AS _shared
            FROM {view} r LEFT JOIN {em}_keyed e ON e.raw = r.email_raw
            LEFT JOIN {pm}_keyed p ON p.raw = r.phone_raw""")


def _link_counts(con: duckdb.DuckDBPyConnection, prefix: str) -> tuple[int, int]:
    """(rows linked to a customer through an identifier, customers merged into another)."""
    node = _identifier_nodes(prefix)
    # the numbers, from the tuples (one row per distinct tuple with its row count)
    linked, merged = con.execute(f"""
        WITH k AS (SELECT x.n, COALESCE(x.cust, le.v, lp.v) AS key, COALESCE(x.cust, x.e, x.p) AS own
                   FROM {prefix}_tuples x
                   LEFT JOIN {node} ne ON ne.k = 0 AND ne.v = x.e LEFT JOIN {prefix}_labels a ON a.n = ne.id
                   LEFT JOIN {prefix}_nodes le ON le.id = a.l
                   LEFT JOIN {node} np ON np.k = 1 AND np.v = x.p LEFT JOIN {prefix}_labels b ON b.n = np.id
                   LEFT JOIN {prefix}_nodes lp ON lp.id = b.l)
        SELECT COALESCE(sum(n) FILTER (WHERE key <> own), 0),
               count(DISTINCT own) FILTER (WHERE key IS NOT NULL) - count(DISTINCT key) FROM k""").fetchall()[0]
    return int(linked), int(merged)


def _propagate(con: duckdb.DuckDBPyConnection, prefix: str) -> None:
    """``{prefix}_labels(n, l)``: each node's smallest reachable label (customer-id nodes keep their own)."""
    labels, edges = f"{prefix}_labels", f"{prefix}_edges"
    con.execute(f"CREATE OR REPLACE TEMP TABLE {labels} AS SELECT id AS n, id AS l FROM {prefix}_nodes")
    for _ in range(MAX_ROUNDS):
        # one min step over the edges, then a pointer jump (a node takes its label's label)
        con.execute(f"""CREATE OR REPLACE TEMP TABLE {labels}_next AS
            WITH step AS (SELECT x.n, least(x.l, min(s.l)) AS l FROM {labels} x
                          LEFT JOIN {edges} e ON e.dst = x.n LEFT JOIN {labels} s ON s.n = e.src GROUP BY x.n, x.l)
            SELECT a.n, least(a.l, b.l) AS l FROM step a JOIN step b ON b.n = a.l""")
        changed = con.execute(f"SELECT count(*) FROM {labels}_next a JOIN {labels} b USING (n) WHERE a.l <> b.l"
                              ).fetchall()[0][0]
        con.execute(f"DROP TABLE {labels}")
        con.execute(f"ALTER TABLE {labels}_next RENAME TO {labels.split('.')[-1]}")
        if not changed:
            return
    log.warning("identity resolution stopped after %d rounds without settling; some links may be missing",
                MAX_ROUNDS)


# ------------------------------------------------------------------------------------------ CRM and webhook records

#: the order store's lookup index on its contacts' e-mail (:data:`sync.store.lookup.LOOKUP_INDEXES`, built with the
#: webhook server's other lookup indexes). Every write path stores an e-mail normalised (trimmed, lower-cased,
#: validated), so an address is looked up by its normalised value
EMAIL_INDEX = "rfmsync_contacts_email"
#: up to this many e-mails are read through :data:`EMAIL_INDEX` (one ``IN`` list: DuckDB reads the matching rows
#: alone, up to the connection's ``dynamic_or_filter_threshold``: :func:`sync.store.lookup.lookup_by_key`); more:
#: one scan of the contacts, as without the index
EMAIL_LOOKUPS = 2_000


def _stored_people(con: duckdb.DuckDBPyConnection) -> str:
    """The stored contacts :func:`link_staged` may link to: those of the e-mails it looks up (``_lk_values``, and the
    values ``_lk_recall``'s guests were linked by: rule 4 counts their carriers), read through
    :data:`EMAIL_INDEX` into ``_lk_people`` (their rows alone), with those of the phones (a filter on the phone
    column, answered by the store's phone index when a batch with a phone-keyed record built it:
    :data:`sync.store.lookup.PHONE_INDEX`); else (no index, many values) the whole ``contacts`` table, scanned."""
    def values(email: bool) -> list[str]:
        return [r[0] for r in con.execute("SELECT norm FROM (SELECT norm FROM _lk_values UNION SELECT norm FROM "
                                          "_lk_recall) WHERE contains(norm, '@') = ?", [email]).fetchall()]

    emails, phones = values(True), values(False)
    if len(emails) + len(phones) > EMAIL_LOOKUPS or not con.execute(
            "SELECT count(*) FROM duckdb_indexes() WHERE database_name = current_database() AND table_name = "
            "'contacts' AND index_name = ?", [EMAIL_INDEX]).fetchall()[0][0]:
        return "contacts"
    # the phones by a filter on the column alone (through the phone index once built, else a scan of the column: 1 M
    # contacts, one phone, link_staged 5.6 → 1.2 s, → 0.7 s with the index, BENCHMARKS.md); none looked up: a scan
    parts = [(f"SELECT * FROM contacts WHERE {col} IN (SELECT unnest(?::VARCHAR[]))", [vals])
             for col, vals in (("email", emails), ("phone", phones)) if vals] or [("SELECT * FROM contacts LIMIT 0", [])]
    con.execute("CREATE OR REPLACE TEMP TABLE _lk_people AS " + " UNION ALL ".join(q for q, _ in parts),
                [v for _, p in parts for v in p])
    return "_lk_people"


def link_staged(con: duckdb.DuckDBPyConnection, max_group: int = DEFAULT_MAX_GROUP,
                learned: str | None = None,
                stored_newer: Callable[[], str | None] | None = None) -> IdentityReport:
    """Rule 2 for ``staged_orders``/``staged_contacts`` about to be merged into the store (``orders``/``contacts``).

    A record keyed by an e-mail or phone (no customer id of its own: a guest) joins the customer whose contact has
    that normalised e-mail/phone, in the batch or in the store, else the customer whose contact has the guest's
    other e-mail or phone (its contact's: a guest keyed by its e-mail who typed a phone too); and when a staged
    contact with a real id carries an e-mail/phone, store rows of guests keyed by it, or whose contact carries it,
    join that customer (the guest bought first and registered later). Only the identifiers the batch touches are
    looked up, so a merge stays cheap. A value carried by more than ``max_group`` customers (registered ones, guests
    keyed by another value: the shop's phone typed on many guests' orders, and those ``learned`` says it joined
    before, their contacts gone) links nobody (reported).
    Calling it again on the same batch changes nothing.

    ``learned``: the store's table of links (``order_id`` → ``customer_id``, with the ``identifier`` it went by and
    the ``guest`` key it had): every order re-keyed here is noted in it. A guest key nobody carries now that was
    linked before (by the phone its earlier order gave, say) joins that customer again while his contact is in the
    store and rule 4 allows that value (:func:`connectors.guest_merge` keeps a guest's e-mail and phone off the
    customer's contact, so the next order of that e-mail alone would otherwise split him again); a key someone
    carries joins whoever carries it now (rule 2), never the customer an earlier order of that e-mail/phone joined.

    ``stored_newer``: whether a stored guest's "no" is newer than the customer's staged version (:func:`rekey`)."""
    report = IdentityReport()
    con.execute("DROP TABLE IF EXISTS _lk_withdrawn")  # (an earlier call's, never noted: only this batch's are)
    present = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE table_name IN "
                                         "('staged_orders', 'staged_contacts', 'orders', 'contacts')").fetchall()}
    if not {"staged_orders", "staged_contacts", "orders", "contacts"} <= present:
        return report
    values = ("SELECT customer_id, lower(trim(email)) AS e, phone AS p FROM {t} WHERE {who}"
              " AND (email IS NOT NULL OR phone IS NOT NULL)")
    real = values.replace("{who}", f"NOT {idlike('customer_id')}")
    guest = values.replace("{who}", idlike("customer_id"))
    # the identifiers this batch touches: its identifier-keyed ids and their contacts' values, and the
    # e-mails/phones of its real contacts
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _lk_touch AS
        SELECT lower(trim(customer_id)) AS raw FROM staged_orders WHERE {idlike('customer_id')}
        UNION SELECT lower(trim(customer_id)) FROM staged_contacts WHERE {idlike('customer_id')}
        UNION SELECT regexp_replace(customer_id, '[^0-9+]', '', 'g') FROM staged_orders
              WHERE starts_with(customer_id, '+')
        UNION SELECT e FROM ({values.format(t='staged_contacts', who='true')}) WHERE e IS NOT NULL
        UNION SELECT p FROM ({values.format(t='staged_contacts', who='true')}) WHERE p IS NOT NULL
        UNION SELECT regexp_replace(p, '[^0-9+]', '', 'g') FROM ({real.format(t='staged_contacts')})
              WHERE contains(p, ';ext=')""")  # +998712000000;ext=101 → a stored id typed '… доб. 101'
    if not con.execute("SELECT count(*) FROM _lk_touch").fetchall()[0][0]:
        return report
    # identifier-keyed customers: the batch's, and the store's keyed by a touched value or whose contact carries one
    # (the digits of a phone key only: a regexp over every e-mail key cost 0.3 CPU s per 200 k guests, BENCHMARKS.md)
    touches = ("lower(trim(customer_id)) IN (SELECT raw FROM _lk_touch) OR CASE WHEN starts_with(customer_id, '+') "
               "THEN regexp_replace(customer_id, '[^0-9+]', '', 'g') END IN (SELECT raw FROM _lk_touch)")
    # the store's guest contacts keyed by a touched value or carrying one, with their values (one scan)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _lk_guests AS SELECT * FROM (SELECT customer_id, lower(trim(email))
        AS e, phone AS p FROM contacts WHERE {idlike('customer_id')}) WHERE {touches} OR e IN (SELECT raw FROM _lk_touch) OR p IN (SELECT raw FROM _lk_touch)""")
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _lk_ids AS
        SELECT customer_id AS raw FROM staged_orders WHERE {idlike('customer_id')}
        UNION SELECT customer_id FROM staged_contacts WHERE {idlike('customer_id')}
        UNION SELECT customer_id FROM (SELECT DISTINCT customer_id FROM orders WHERE {idlike('customer_id')})
              WHERE {touches}
        UNION SELECT customer_id FROM _lk_guests""")
    if not con.execute("SELECT count(*) FROM _lk_ids").fetchall()[0][0]:  # no guest to link: nothing more to read
        for name in ("touch", "ids", "guests"):
            con.execute(f"DROP TABLE IF EXISTS _lk_{name}")
        return report
    email_map(con, "SELECT raw FROM _lk_ids WHERE contains(raw, '@')", "_lk_emails")
    phone_map(con, "SELECT raw FROM _lk_ids WHERE NOT contains(raw, '@')", "_lk_phones", None)
    # each guest's values: its key (how 0), its contact's e-mail (1) and phone (2), staged or stored
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _lk_values AS
        WITH g AS ({guest.format(t='staged_contacts')} UNION SELECT * FROM _lk_guests)
        SELECT raw, norm, 0 AS how FROM _lk_emails WHERE norm IS NOT NULL
        UNION SELECT raw, norm, 0 FROM _lk_phones WHERE norm IS NOT NULL
        UNION SELECT g.customer_id, g.e, 1 FROM g JOIN _lk_ids i ON i.raw = g.customer_id WHERE g.e IS NOT NULL
        UNION SELECT g.customer_id, g.p, 2 FROM g JOIN _lk_ids i ON i.raw = g.customer_id WHERE g.p IS NOT NULL""")
    con.execute("""DELETE FROM _lk_values v WHERE how > 0 AND EXISTS (SELECT 1 FROM _lk_values k
                   WHERE k.raw = v.raw AND k.how = 0 AND k.norm = v.norm)""")  # (its key again)
    recall(con, learned)  # the links of these guests made before (``_lk_recall``)
    stored = _stored_people(con)  # the store's contacts of those values (or all of them)
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _lk_cand AS
        WITH people AS ({real.format(t=stored)} UNION {real.format(t='staged_contacts')})
        SELECT i.raw, i.norm, i.how, c.customer_id FROM _lk_values i JOIN people c ON c.e = i.norm
        UNION SELECT i.raw, i.norm, i.how, c.customer_id FROM _lk_values i JOIN people c ON c.p = i.norm""")
    drop_gone(con)  # a customer deleted in the CRM (stored, or by this batch) takes nobody
    # rule 4: the customers of each value (of a candidate, or a remembered link's), registered ones, guests keyed by
    # another value that carry it, and guests keyed by another value that were joined by it (their contacts gone)
    con.execute("""CREATE OR REPLACE TEMP TABLE _lk_judged AS SELECT norm FROM _lk_cand
                   UNION SELECT norm FROM _lk_recall WHERE raw NOT IN (SELECT raw FROM _lk_cand)""")
    judged = "(SELECT norm FROM _lk_judged)"
    joined = (f"UNION SELECT identifier, guest FROM {learned} WHERE identifier IN {judged} AND guest <> identifier"
              " AND regexp_replace(guest, '[^0-9+]', '', 'g') <> identifier") if learned else ""
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _lk_shared AS
        WITH people AS ({real.format(t=stored)} UNION {real.format(t='staged_contacts')}),
             guests AS ({guest.format(t=stored)} UNION {guest.format(t='staged_contacts')}),
             anchors AS (SELECT e AS v, customer_id AS a FROM people WHERE e IN {judged}
                         UNION SELECT p, customer_id FROM people WHERE p IN {judged}
                         UNION SELECT norm, lower(trim(raw)) FROM _lk_values WHERE how > 0
                         UNION SELECT e, lower(trim(customer_id)) FROM guests WHERE e IN {judged}
                               AND lower(trim(customer_id)) <> e
                         UNION SELECT p, lower(trim(customer_id)) FROM guests WHERE p IN {judged}
                               AND regexp_replace(customer_id, '[^0-9+]', '', 'g') <> p AND customer_id <> p
                         {joined})
        SELECT v, count(DISTINCT a) AS n FROM anchors WHERE v IN {judged}
        GROUP BY v HAVING count(DISTINCT a) > {int(max_group)}""" if con.execute(
        "SELECT count(*) FROM _lk_judged").fetchall()[0][0] else
                "CREATE OR REPLACE TEMP TABLE _lk_shared (v VARCHAR, n BIGINT)")  # (no candidate: nothing to read)
    _ignored(con, "_lk_shared", report)
    con.execute("""CREATE OR REPLACE TEMP TABLE _lk_map AS
        WITH c AS (SELECT * FROM _lk_cand WHERE norm NOT IN (SELECT v FROM _lk_shared)),
             best AS (SELECT raw, min(how) AS how FROM c GROUP BY raw)
        SELECT c.raw, any_value(c.norm) AS norm, min(c.customer_id) AS key FROM c JOIN best USING (raw, how)
        GROUP BY c.raw""")
    # the guests nobody carries now (no candidate: one refused by rule 4 stays refused) that were linked before:
    # the customer of their latest link, unless rule 4 now refuses the value it went by
    con.execute("""INSERT INTO _lk_map SELECT raw, norm, key FROM _lk_recall
                   WHERE raw NOT IN (SELECT raw FROM _lk_cand) AND norm NOT IN (SELECT v FROM _lk_shared)""")
    report.merged_customers = con.execute("SELECT count(*) FROM _lk_map").fetchall()[0][0]
    if report.merged_customers:
        if learned:  # the orders about to be re-keyed stay their customer's (an order linked again: its new link)
            con.execute(f"""INSERT INTO {learned} (order_id, identifier, customer_id, guest)
                SELECT DISTINCT ON (o.order_id) o.order_id, m.norm, m.key, lower(trim(m.raw)) FROM _lk_map m
                JOIN (SELECT order_id, customer_id FROM staged_orders UNION ALL SELECT order_id, customer_id
                      FROM orders WHERE customer_id IN (SELECT raw FROM _lk_map)) o ON o.customer_id = m.raw
                ORDER BY o.order_id, m.key ON CONFLICT (order_id) DO UPDATE SET identifier = excluded.identifier,
                customer_id = excluded.customer_id, guest = excluded.guest, linked_at = now()""")
        report.linked_rows = rekey(con, stored_newer=stored_newer)
        report.moved = [i for pair in con.execute("SELECT raw, key FROM _lk_map").fetchall() for i in pair]
    for name in ("touch", "ids", "guests", "emails", "phones", "values", "recall", "people", "cand", "gone", "judged",
                 "shared", "map"):
        con.execute(f"DROP TABLE IF EXISTS _lk_{name}")
    if report.merged_customers or report.ignored_count:
        log.info("%s", report)
    return report
