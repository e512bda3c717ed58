"""A guest joining a customer: whose values the one contact left keeps (:func:`rekey`, :func:`fill_contact`).

When identity resolution (:func:`connectors.identity.link_staged`, :func:`sync.store.links.apply_links`) moves a
guest's records (keyed by its e-mail or phone) to a registered customer, the two contacts become one, the
customer's:

* the customer's values win, whatever arrived first or last: a guest's record is no version of the customer's
  contact (its time is the guest order's, not the contact's), so a guest staged over a stored customer fills the
  stored contact's gaps and is not merged as a new version of it;
* a guest's e-mail and phone never become the customer's, not even in an empty field: the customer registered his
  own (a guest's phone may be the shop's own typed on many orders, which rule 4 refuses as a link: it must not
  reach the customer through a fill either); his name, creation time and attributes fill the gaps;
* a guest's marketing consent counts only when given for the customer's own e-mail (:data:`CONSENT_CARRIED`: the
  guest's e-mail, or its key when keyed by an e-mail without one): its "yes" only where the customer's is
  ``unknown`` (a guest's "yes" never overrides his explicit "no": joining never subscribes anyone), its "no" always
  (a webhook's or an export's contact record keyed by his e-mail is the same shape as a guest order's contact, and
  a withdrawal made there must reach him). Several guests joining one customer at once (keyed by his e-mail and by
  his phone, two rows of one key) count each one's last row, and any one's "no" lands, whatever their order. One
  exception: a stored guest's "no" over a customer staged now lands only when the store noted it as newer than his
  staged version (by the vendor's times, else by acceptance: :func:`sync.store.ordering.stored_newer`); his newer
  registration's explicit word stands. A phone-only guest's SMS opt-in or opt-out is no word on the customer's
  e-mail.

A staged guest that withdraws a stored customer's consent is no version of his contact, but the batch did change
him: :func:`rekey` leaves it in ``_lk_withdrawn`` (``raw``, ``key``) for the merge, which notes its age under his id
and pushes him at once (:func:`sync.store.ordering.note_withdrawn`); a stored guest's "no" that landed on his staged
version is left in ``_lk_landed``, and a staged guest's "no" folded into his staged version in ``_lk_folded``. The merge notes both withdrawals, so that a later version of his not newer than
the "no" does not give the "yes" back (:func:`sync.store.ordering.keep_withdrawals`).

A customer deleted in the CRM (:func:`connectors.contacts.gone_contact`: his row stays, emptied, attribute
``deleted``) takes no guest: not while the pull that deletes him still stores his old e-mail, nor later through a
link an earlier order made (:func:`drop_gone`); his links are erased with him
(:func:`sync.store.links.forget_gone_links`).
"""

from __future__ import annotations

from typing import Callable

import duckdb

_FIELDS = ("first_name", "last_name", "created_at", "attributes")  # (never the e-mail or phone: see the module doc)
#: a guest's (``g``) consent fills its customer's (``t``) only when given for the address he carries: the guest's
#: e-mail, or its key when the record is keyed by an e-mail and gives none (a generic order's contact), is the
#: customer's. An SMS opt-in of a phone-only guest is not one.
CONSENT_CARRIED = ("lower(trim(coalesce(g.email, CASE WHEN contains(g.customer_id, '@') THEN g.customer_id END))) "
                   "= lower(trim(t.email))")


def last_rows(source: str, keys: str) -> str:
    """SQL (a subquery): the last row (by ``rowid``: the latest staged, the one the contact merge keeps) of each
    ``source`` contact whose id ``keys`` (a query) selects."""
    return (f"(SELECT * EXCLUDE _rn FROM (SELECT *, row_number() OVER (PARTITION BY customer_id ORDER BY rowid DESC) "
            f"AS _rn FROM {source} WHERE customer_id IN ({keys})) WHERE _rn = 1)")


#: SQL over a contacts row: the customer was deleted in the CRM (:func:`connectors.contacts.gone_contact`)
DELETED = "coalesce(json_extract_string(attributes, '$.deleted') = 'true', false)"


def idlike(col: str) -> str:
    """SQL: the customer id is an e-mail or a ``+`` phone, i.e. the record had no customer id of its own."""
    return f"(contains({col}, '@') OR starts_with({col}, '+'))"


def recall(con: duckdb.DuckDBPyConnection, learned: str | None) -> None:
    """``_lk_recall(raw, norm, key)``: the guests of ``_lk_ids`` whose key was linked before (``learned``'s
    ``guest``), with the value and the customer of their latest link, while his contact is in the store (and he is
    not deleted in the CRM: :func:`drop_gone`)."""
    if not learned:
        con.execute("CREATE OR REPLACE TEMP TABLE _lk_recall (raw VARCHAR, norm VARCHAR, key VARCHAR)")
        return
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _lk_recall AS SELECT i.raw, arg_max(l.identifier, l.linked_at) AS norm,
                        arg_max(l.customer_id, l.linked_at) AS key FROM _lk_ids i
                    JOIN {learned} l ON l.guest = lower(trim(i.raw))
                    WHERE l.customer_id IN (SELECT customer_id FROM contacts
                                            UNION SELECT customer_id FROM staged_contacts
                                            WHERE NOT {idlike('customer_id')})
                    GROUP BY i.raw""")


def drop_gone(con: duckdb.DuckDBPyConnection) -> None:
    """``_lk_gone``: the customers of ``_lk_cand`` and ``_lk_recall`` deleted in the CRM (staged deleted by the batch:
    his stored row still carries the e-mail/phone the deletion erases; or stored deleted, also when the batch
    stages a live version of him: linking runs before the merge drops a version older than the stored deletion, so
    a retried stale update is no restore yet — a restored customer takes guests from his next merge on), dropped
    from both: they take no guest. Only those customers' rows are looked at (a scan of every contact's attributes
    cost 0.15 CPU s per 1 M contacts)."""
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _lk_gone AS
        WITH ids AS (SELECT customer_id AS id FROM _lk_cand UNION SELECT key FROM _lk_recall)
        SELECT customer_id FROM staged_contacts WHERE customer_id IN (SELECT id FROM ids) AND {DELETED}
        UNION SELECT customer_id FROM contacts WHERE customer_id IN (SELECT id FROM ids) AND {DELETED}""")
    con.execute("DELETE FROM _lk_cand WHERE customer_id IN (SELECT customer_id FROM _lk_gone)")
    con.execute("DELETE FROM _lk_recall WHERE key IN (SELECT customer_id FROM _lk_gone)")


def fill_contact(con: duckdb.DuckDBPyConnection, target: str, t_col: str, source: str, s_col: str,
                 links: str = "_lk_map", carried: str = "true", withdraws: str = "true") -> None:
    """Fill the gaps of the customers' ``target`` rows (matched on ``{links}.{t_col}``) from the guests' ``source``
    rows (``{links}.{s_col}``; each guest's last row): the name, creation time and attributes (several guests: the
    first by key that has one); the consent only where ``carried`` (SQL over ``t``, ``g``, ``m``) and
    :data:`CONSENT_CARRIED` hold: a "no" lands where ``withdraws`` (SQL over the same) holds, whatever the others
    say, else a "no" or a "yes" fills an unknown consent. Never the e-mail or phone. Several guests joining one
    customer are reduced to one row per target row first (an ``UPDATE … FROM`` with several matching rows applies
    any one), each target row judged on its own e-mail: a word given for his old address never reaches the row of
    his new one."""
    said = f"{carried} AND {CONSENT_CARRIED}"
    firsts = ", ".join(f"arg_min(g.{f}, g.customer_id) FILTER (WHERE g.{f} IS NOT NULL) AS {f}" for f in _FIELDS)
    fill = ", ".join(f"{f} = coalesce(t.{f}, w.{f})" for f in _FIELDS)
    con.execute(f"""UPDATE {target} AS t SET {fill}, marketing_consent = CASE WHEN w.lands THEN 'no' ELSE
                        coalesce(nullif(t.marketing_consent, 'unknown'), w.word, t.marketing_consent) END
                    FROM (SELECT t.rowid AS rid, {firsts},
                                 bool_or(g.marketing_consent = 'no' AND {said} AND {withdraws}) AS lands,
                                 CASE WHEN bool_or(g.marketing_consent = 'no' AND {said}) THEN 'no'
                                      WHEN bool_or(g.marketing_consent = 'yes' AND {said}) THEN 'yes' END AS word
                          FROM {target} t JOIN {links} m ON t.customer_id = m.{t_col}
                          JOIN {last_rows(source, f"SELECT {s_col} FROM {links}")} g ON g.customer_id = m.{s_col}
                          GROUP BY t.rowid) w
                    WHERE t.rowid = w.rid""")


def rekey(con: duckdb.DuckDBPyConnection, staged: bool = True,
          stored_newer: Callable[[], str | None] | None = None) -> int:
    """Apply ``_lk_map`` (``raw`` identifier key → ``key``, the customer id) to staged and stored rows
    (``staged=False``: to the stored ones only); returns rows re-keyed.

    A contact keyed by the identifier and the customer's own contact become one, the customer's (see the module
    doc): the guest's fills its gaps, staged or stored, and a staged guest over a stored customer is no new version
    of his contact (it fills the stored one and is dropped). A guest whose customer has no contact anywhere is
    renamed: it becomes his. ``stored_newer``: gives (asked only when something links) SQL over ``m`` (``raw``,
    ``key``), true when the version the store noted of the stored guest ``raw`` is newer than the one of the
    customer ``key`` staged now (its "no" lands on his staged consent; None: never, his is the newest word)."""
    tables = ("staged_orders", "orders", "staged_contacts", "contacts") if staged else ("orders", "contacts")
    rows = sum(con.execute(f"SELECT count(*) FROM {t} WHERE customer_id IN (SELECT raw FROM _lk_map)").fetchall()[0][0]
               for t in tables)
    for table in ("staged_orders", "orders") if staged else ("orders",):
        con.execute(f"UPDATE {table} AS t SET customer_id = m.key FROM _lk_map m WHERE t.customer_id = m.raw")
    has = "m.key IN (SELECT customer_id FROM {t})"
    drop = "DELETE FROM {t} WHERE customer_id IN (SELECT m.raw FROM _lk_map m WHERE {cond})"
    rename = "UPDATE {t} AS t SET customer_id = m.key FROM _lk_map m WHERE t.customer_id = m.raw"
    if not staged:
        fill_contact(con, "contacts", "key", "contacts", "raw")
        con.execute(drop.format(t="contacts", cond=has.format(t="contacts")))
        con.execute(rename.format(t="contacts"))
        return rows
    # staged identifier contacts: into the staged customer, else into the stored customer (its gaps: the guest's
    # record is no version of his contact), else renamed
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _lk_folded AS SELECT DISTINCT m.raw, m.key FROM _lk_map m
                    JOIN {last_rows("staged_contacts", "SELECT raw FROM _lk_map")} g ON g.customer_id = m.raw
                    JOIN staged_contacts t ON t.customer_id = m.key
                    WHERE g.marketing_consent = 'no' AND {CONSENT_CARRIED}""")
    fill_contact(con, "staged_contacts", "key", "staged_contacts", "raw")
    con.execute(drop.format(t="staged_contacts", cond=has.format(t="staged_contacts")))
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _lk_withdrawn AS SELECT m.raw, m.key FROM _lk_map m
                    JOIN {last_rows("staged_contacts", "SELECT raw FROM _lk_map")} g ON g.customer_id = m.raw
                    JOIN contacts t ON t.customer_id = m.key
                    WHERE g.marketing_consent = 'no' AND {CONSENT_CARRIED}""")  # (its age and push: the merge's)
    fill_contact(con, "contacts", "key", "staged_contacts", "raw")
    con.execute(drop.format(t="staged_contacts", cond=has.format(t="contacts")))
    con.execute(rename.format(t="staged_contacts"))
    # stored identifier contacts: into the staged customer (a "no" lands only when newer than his staged version),
    # else into the stored customer, else renamed
    newer = stored_newer() if stored_newer else None
    con.execute(f"CREATE OR REPLACE TEMP TABLE _lk_older AS SELECT raw FROM _lk_map m WHERE {newer or 'false'}")
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _lk_landed AS SELECT DISTINCT m.raw, m.key FROM _lk_map m
                    JOIN {last_rows("contacts", "SELECT raw FROM _lk_older")} g ON g.customer_id = m.raw
                    JOIN staged_contacts t ON t.customer_id = m.key
                    WHERE g.marketing_consent = 'no' AND {CONSENT_CARRIED}""")  # (its note: the merge's)
    fill_contact(con, "staged_contacts", "key", "contacts", "raw", withdraws="m.raw IN (SELECT raw FROM _lk_older)")
    con.execute("DROP TABLE _lk_older")
    fill_contact(con, "contacts", "key", "contacts", "raw")
    con.execute(drop.format(t="contacts", cond=f"{has.format(t='staged_contacts')} OR {has.format(t='contacts')}"))
    con.execute(rename.format(t="contacts"))
    return rows


__all__ = ["CONSENT_CARRIED", "DELETED", "drop_gone", "fill_contact", "idlike", "last_rows", "recall", "rekey"]
