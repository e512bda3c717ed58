"""Which staged webhook versions are older than the version the store holds (a webhook's, a file's or a pull's), by
the vendor's times or by acceptance: :func:`drop_older_versions`, for :func:`sync.store.merge.merge_staged`; how new
the versions merged are (:func:`note_versions`: their acceptance, vendor time and sender); a guest's version against
his customer's (:func:`stored_newer`), and a guest's "no" folded into him against his later versions
(:func:`note_withdrawn`, :func:`keep_withdrawals`)."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Mapping, TypeVar, Union

import duckdb

from connectors.guest_merge import idlike

from .deletes import FINAL_STAGED
from .pulled import PULLED_STAGED
from .webhooks import (CONSENTS, EQUAL_CONSENT, FILE_WON_TABLE, GUEST_WITHDRAWALS, KEY_OF, KIND, LATE_WITHDRAWALS,
                       WEBHOOK_TABLE, leave_out, later_vendor_time)

log = logging.getLogger(__name__)

#: when the ledger accepted each record of a webhook batch: ``(kind, id)`` → the time of the event it came in
Ages = Mapping[tuple[str, str], datetime]
#: when the vendor modified each record of a webhook batch that says (its payload's ``updated_at``): ``(kind, id)``
#: → that time; a record pulled for the batch: None (a pull's version has no vendor time: the stored one is cleared)
Versions = Mapping[tuple[str, str], Union[datetime, None]]
#: who sent each record of a webhook batch (its event's source: ``generic``, or the CRM's type): ``(kind, id)`` →
#: that sender, whose clock its vendor time is (two senders' clocks say nothing of each other: :func:`stored_newer`)
Senders = Mapping[tuple[str, str], str]
#: a stored version ``w`` (``vt``: the vendor's time; ``file``: a file's) and a staged one ``a`` are ordered by the
#: vendor's times (``THEN w.vt > a.vt``) when both have one and they differ (a file's version is at least as new as
#: the webhook version it replaced and as its read: a later ``vt`` is not newer than the file: it may hold a later one)
BY_VENDOR = "w.vt IS NOT NULL AND a.vt IS NOT NULL AND w.vt <> a.vt AND (NOT w.file OR w.vt > a.vt)"


T = TypeVar("T", datetime, tuple[datetime, str])


def own_times(times: Mapping[tuple[str, str], T], kind: str, links: Mapping[str, str]) -> dict[str, T]:
    """``kind``'s records' own times by id (a time, or a time and its sender: ordered by the time); ``links``: the
    ids the merge re-keyed (identifier → customer id, :func:`connectors.identity.link_staged`)."""
    own = {str(i): t for (k, i), t in times.items() if k == kind}
    for raw, key in links.items() if kind == "contact" else ():
        # a contact keyed by its e-mail or phone, re-keyed to its customer when linked: its own time under the
        # customer's id (several: the newest, whose version won)
        if raw in own and (key not in own or own[raw] > own[key]):
            own[key] = own[raw]
    return own


def lenders(links: Mapping[str, str], received_at: Union[datetime, Ages, None], versions: Versions
            ) -> dict[str, str]:
    """The ``links`` whose guest record lends its times to the customer's id (the merge's links, for
    :func:`drop_older_versions` and :func:`note_versions`): those of a customer with no staged version of his own in
    the batch (no time of his in either mapping). Else his version (the guest's only fills its gaps:
    :mod:`connectors.guest_merge`) is judged and noted by its own times: the guest's record is another object, and
    its later time let his retried older "yes" undo his stored "no", or held his own "no" against his later real
    "yes". A guest's "no" folded into his version still lands (a stale version that withdraws still withdraws,
    :func:`.webhooks.withdraw_late`) and is noted as a withdrawal by the guest's own times (``_lk_folded``:
    :func:`note_withdrawn`), so his next older "yes" does not undo it."""
    his = {str(i) for k, i in [*versions, *(received_at if isinstance(received_at, Mapping) else ())]
           if k == "contact"}
    return {raw: key for raw, key in links.items() if key not in his}


def ages_of(con: duckdb.DuckDBPyConnection, kind: str, received_at: Union[datetime, Ages, None],
            links: Mapping[str, str], versions: Versions, senders: Senders | None = None
            ) -> tuple[datetime | None, str | None]:
    """The time for records without their own, and a temp table of ``kind``'s records' own times (``id``, ``ts``:
    accepted, NULL when not its own; ``vt``: the vendor's, NULL when unknown; ``src``: the sender of that vendor
    time, NULL when not said), or None when no record has either."""
    ages = own_times(received_at, kind, links) if isinstance(received_at, Mapping) else {}
    vendor = own_times({k: (t, (senders or {}).get(k, "")) for k, t in versions.items() if t is not None}, kind,
                       links)  # (a record re-keyed: the sender of the time kept)
    if not isinstance(received_at, Mapping) and not vendor:
        return received_at, None
    ids = list(ages.keys() | vendor.keys())
    # one statement with the ids and times as lists (a row-by-row executemany cost ~120 µs a row)
    con.execute("CREATE OR REPLACE TEMP TABLE _webhook_ages AS SELECT unnest(?::VARCHAR[]) AS id, "
                "unnest(?::TIMESTAMPTZ[]) AS ts, unnest(?::TIMESTAMPTZ[]) AS vt, unnest(?::VARCHAR[]) AS src",
                [ids, [ages.get(i) for i in ids], [vendor[i][0] if i in vendor else None for i in ids],
                 [(vendor[i][1] or None) if i in vendor else None for i in ids]])
    at = max(received_at.values(), default=None) if isinstance(received_at, Mapping) else received_at
    return at, "_webhook_ages"


def drop_older_versions(con: duckdb.DuckDBPyConnection, present: set[str],
                        received_at: Union[datetime, Ages, None], links: Mapping[str, str],
                        versions: Versions, senders: Senders | None = None) -> dict[str, int]:
    """Leave out of a webhook merge the staged orders (with their line items) and contacts older than the version the
    store notes for their webhook version, or for the file version that replaced it (``file_won_records``), or for
    the version a pull stored (``pulled_versions``, by the vendor's time only): merged after a newer version (an
    older batch retried, or held up, while a newer one went through; a vendor's older delivery retried after a newer
    one), the older one would win (an order before its refund, a consent given before it was withdrawn). Older: by
    the vendor's modification times when both versions have one and they differ (:data:`Versions`; equal, a
    contact's: its withdrawal, :data:`~.webhooks.EQUAL_CONSENT`; a file version: the vendor time of the webhook
    version it replaced; a pulled version: :mod:`.pulled`), else by acceptance: the record's own age (the one time
    for all, or its entry in :data:`Ages`: a record a CRM pull read for the batch has the pull's start, and the
    batch's webhook copy of it is gone, :func:`sync.serve.resync_staging.pull_after_webhook_records`) against the
    stored one. A final delete is never older (:mod:`.deletes`). A contact's stored "no" and a staged version that
    does not say "no", dated by two senders (:data:`Senders`: a form posting a CRM customer's id to
    ``/webhooks/generic`` and the CRM's own webhook, whose clocks say nothing of each other), are ordered as
    :func:`stored_newer` orders a guest's (:data:`TWO_SENDERS`): the "no" is newer when accepted later or not older
    by the times (never subscribe on a doubt). A sender not said (a pull's version, a row an older rfmsync noted) is
    the record's usual one. Returns how many were left out: ``stale_orders``, ``stale_contacts``."""
    dropped: dict[str, int] = {}
    for name, kind in KIND.items():
        staged, key = f"staged_{name}", KEY_OF[name]
        if staged not in present:
            continue
        _, ages = ages_of(con, kind, received_at, links, versions, senders)
        single = None if isinstance(received_at, Mapping) else received_at  # a record not in Ages: not compared
        if ages is None and single is None:  # merged now, no vendor time: nothing stored is newer
            continue
        joined = (f"LEFT JOIN {ages} a ON a.id = w.id" if ages else
                  "CROSS JOIN (SELECT NULL AS ts, NULL AS vt, NULL::VARCHAR AS src) a")
        newer = (f"CASE {TWO_SENDERS[name]}WHEN {BY_VENDOR} THEN w.vt > a.vt "
                 + (EQUAL_CONSENT if name == "contacts" else "") + f"ELSE {_ACCEPTED_LATER} END")
        if name == "contacts":  # the stored consent and the staged one (its last row)
            joined += CONSENTS
        # a webhook's version, a file's, or a pull's (no acceptance: by the vendor's times only)
        versions_ = (f"(SELECT kind, id, received_at, updated_at AS vt, false AS file, sender FROM {WEBHOOK_TABLE} "
                     f"UNION ALL SELECT kind, id, read_at, updated_at, true, sender FROM {FILE_WON_TABLE} UNION ALL "
                     f"SELECT kind, id, NULL::TIMESTAMPTZ, updated_at, false, NULL FROM {PULLED_STAGED})")
        final = f" AND w.id NOT IN ({FINAL_STAGED})" if name == "orders" else ""  # a delete for good: the newest
        older = (f"SELECT DISTINCT w.id FROM {versions_} w {joined} WHERE w.kind = '{kind}' "
                 f"AND w.id IN (SELECT {key} FROM {staged}){final} AND {newer}")
        con.execute(f"CREATE OR REPLACE TEMP TABLE _older_{name} AS {older}", [single] * older.count("?"))
        count = leave_out(con, name, present, f"_older_{name}", "webhook")
        if count:
            dropped[f"stale_{name}"] = count
    return dropped


#: SQL: the stored version ``w`` is newer than the staged one ``a`` by acceptance (``a.ts``; else the batch's one time)
_ACCEPTED_LATER = "w.received_at > coalesce(a.ts, ?::TIMESTAMPTZ)"
#: SQL for :func:`drop_older_versions` (``w``'s ``sender``, ``a``'s ``src``; ``c``, ``s``: the stored and the staged
#: consent): a stored "no" and a staged version that does not say "no", dated by two senders: the "no" is newer when
#: accepted later or not older by the times, as a guest's "no" is (:data:`GUEST_NEWER`): a sender's clock running
#: ahead does not give its held-back older "yes" the last word. Anything else by one clock, as before: a record
#: notes only its latest vendor time and that time's sender, so a sender's retried older version is told older by
#: it only so (review-self36: ordering all two senders' versions by acceptance let Shopify's retried older order
#: undo its refund after a form's version). (A staged "no" left out still withdraws: :func:`.webhooks.withdraw_late`.)
TWO_SENDERS = {
    "orders": "",
    "contacts": ("WHEN w.sender IS NOT NULL AND a.src IS NOT NULL AND w.sender <> a.src AND coalesce("
                 "c.marketing_consent = 'no', false) AND NOT coalesce(s.marketing_consent = 'no', false) THEN "
                 f"coalesce(w.vt >= a.vt, false) OR {_ACCEPTED_LATER} "),
}


def stored_newer(con: duckdb.DuckDBPyConnection, origin: str, present: set[str],
                 received_at: Union[datetime, Ages, None], versions: Versions,
                 senders: Senders | None = None) -> str | None:
    """For :func:`connectors.identity.link_staged`: SQL over ``m`` (``raw``: a stored guest's key, ``key``: the
    customer staged now), true when the version the store noted of the guest (a webhook's, or the file's that
    replaced it) is newer than his staged one, by :func:`drop_older_versions`' rule (equal vendor times: the guest's,
    a withdrawal, is the newer) when one sender (:data:`Senders`; not said: the same) dated both. The guest's record
    and his contact may come from two (a generic sender's form and Shopify), whose clocks say nothing of each other:
    then the guest's "no" is newer when accepted later, or when not older by their vendor times (never subscribe on
    a doubt: a sender's clock behind no longer loses its "no"s, and Shopify's "yes" retried for hours, accepted
    after the "no" made after it, does not win either). None when a webhook merge compares nothing (his version is
    the newest word, as a pull's or a file's read is)."""
    single = None if isinstance(received_at, Mapping) else received_at  # a record not in Ages: not compared
    _, ages = ages_of(con, "contact", received_at, {}, versions, senders) if origin == "webhook" else (None, None)
    if "staged_contacts" not in present or origin != "webhook" or (ages is None and single is None):
        return None
    _staged_ages(con, ages, single)
    return (f"EXISTS (SELECT 1 FROM {_STORED} w JOIN _guest_ages a ON a.id = m.key WHERE w.kind = 'contact' AND "
            f"w.id = m.raw AND {GUEST_NEWER})")


#: the versions the store noted of the records (``kind``, ``id``, ``received_at``, ``vt``, ``file``, ``sender``): a
#: webhook's, or the file's that replaced it (its read)
_STORED = (f"(SELECT kind, id, received_at, updated_at AS vt, false AS file, sender FROM {WEBHOOK_TABLE} UNION "
           f"ALL SELECT kind, id, read_at, updated_at, true, sender FROM {FILE_WON_TABLE})")
#: SQL: a guest's version ``w`` (``received_at``, ``vt``, ``file``, ``sender``) is newer than the customer's staged
#: one ``a`` (``ts``, ``vt``, ``src``: :func:`_staged_ages`) — :func:`stored_newer`'s rule: one sender's (``NULL``:
#: not said) by :data:`BY_VENDOR`, equal times the guest's; two senders' when accepted later or not older by the times
GUEST_NEWER = ("CASE WHEN NOT (w.sender IS NOT DISTINCT FROM a.src) THEN coalesce(w.vt >= a.vt, false) OR "
               f"w.received_at > a.ts WHEN {BY_VENDOR} THEN w.vt > a.vt WHEN w.vt = a.vt THEN true "
               "ELSE w.received_at > a.ts END")


def _staged_ages(con: duckdb.DuckDBPyConnection, ages: str | None, single: datetime | None) -> None:
    """``_guest_ages``: each staged contact's own acceptance (``ts``; else ``single``), vendor time (``vt``) and its
    sender (``src``), from ``ages`` (:func:`ages_of`' table, or None)."""
    own = (f"LEFT JOIN {ages} a ON a.id = s.customer_id" if ages else
           "CROSS JOIN (SELECT NULL AS ts, NULL AS vt, NULL AS src) a")
    con.execute(f"CREATE OR REPLACE TEMP TABLE _guest_ages AS SELECT DISTINCT s.customer_id AS id, coalesce(a.ts, "
                f"?::TIMESTAMPTZ) AS ts, a.vt::TIMESTAMPTZ AS vt, a.src::VARCHAR AS src FROM staged_contacts s {own}",
                [single])


def keep_withdrawals(con: duckdb.DuckDBPyConnection, present: set[str], received_at: Union[datetime, Ages, None],
                     versions: Versions, senders: Senders | None) -> None:
    """A webhook merge: a staged version of a customer whose consent a guest's "no" withdrew (noted in
    :data:`.webhooks.GUEST_WITHDRAWALS` by :func:`note_withdrawn`) that is not newer than that "no" by
    :func:`stored_newer`'s rule withdraws too (its consent only: a held-back or retried "yes" of his dated before
    the "no" does not subscribe him); a newer one is his word, and the note goes. By his own version's times only:
    a guest record of his e-mail in the batch, re-keyed to him, lends him none (another object's time)."""
    if "staged_contacts" not in present or not con.execute(
            f"SELECT count(*) FROM {GUEST_WITHDRAWALS} WHERE customer_id IN (SELECT customer_id FROM staged_contacts)"
    ).fetchall()[0][0]:
        return
    _, ages = ages_of(con, "contact", received_at, {}, versions, senders)
    _staged_ages(con, ages, None if isinstance(received_at, Mapping) else received_at)
    con.execute(f"CREATE OR REPLACE TEMP TABLE _wd_newer AS SELECT w.customer_id FROM (SELECT customer_id, "
                f"received_at, updated_at AS vt, false AS file, sender FROM {GUEST_WITHDRAWALS}) w JOIN _guest_ages a "
                f"ON a.id = w.customer_id WHERE {GUEST_NEWER}")
    _log_kept(con)
    con.execute("UPDATE staged_contacts SET marketing_consent = 'no' WHERE customer_id IN "
                "(SELECT customer_id FROM _wd_newer)")
    forget_withdrawals(con, "SELECT customer_id FROM staged_contacts EXCEPT SELECT customer_id FROM _wd_newer")
    con.execute("DROP TABLE _wd_newer")


def _log_kept(con: duckdb.DuckDBPyConnection) -> None:
    """Log at INFO how many staged versions saying "yes" (their last row) :func:`keep_withdrawals` turns into "no"
    (``_wd_newer``), and the first one's customer id (never one that is an e-mail or a phone)."""
    count, first = con.execute(
        "SELECT count(*), min(customer_id) FILTER (WHERE NOT " + idlike("customer_id") + ") FROM (SELECT customer_id "
        "FROM staged_contacts WHERE customer_id IN (SELECT customer_id FROM _wd_newer) GROUP BY customer_id "
        "HAVING arg_max(marketing_consent, rowid) = 'yes')").fetchall()[0]
    if count:
        log.info("webhook merge: %d contact version(s) saying yes kept \"no\"%s: not newer than a guest's withdrawal "
                 "folded into the customer", count, f" (e.g. customer {first})" if first else "")


def forget_withdrawals(con: duckdb.DuckDBPyConnection, customers: str) -> None:
    """Drop the guests' withdrawals noted of ``customers`` (a query): his newer version, or a sync's pull's or a
    file's read of his contact (the newest word), came since. (The worker's pull for a webhook batch merges as the
    batch: :func:`keep_withdrawals` orders its read as one more version of his.)"""
    con.execute(f"DELETE FROM {GUEST_WITHDRAWALS} WHERE customer_id IN ({customers})")


def note_withdrawn(con: duckdb.DuckDBPyConnection, origin: str, received_at: Union[datetime, Ages, None],
                   links: Mapping[str, str], versions: Versions, senders: Senders | None = None) -> None:
    """The stored customers a staged record keyed by their e-mail (or phone) withdrew consent of, folded into their
    contact (``_lk_withdrawn``: :func:`connectors.guest_merge.rekey`), in a webhook merge: that record's age is noted
    under the customer's id (the later of it and his), so that a file read before it does not give the "yes" back,
    and he is pushed at once with the late withdrawals (:data:`.webhooks.LATE_WITHDRAWALS`). Not its vendor time:
    the record is another of the vendor's objects than his (its time says nothing of his versions). The withdrawal
    itself (its acceptance, vendor time and sender) is noted in :data:`.webhooks.GUEST_WITHDRAWALS`, and so is a
    stored guest's "no" that landed on his staged version (``_lk_landed``: :func:`stored_newer`), and a staged guest's
    "no" folded into his staged version (``_lk_folded``): a later version of his not newer than it does not give the
    "yes" back (:func:`keep_withdrawals`)."""
    made = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE table_name IN ('_lk_withdrawn', "
                                      "'_lk_landed', '_lk_folded') AND temporary").fetchall()}
    kept = f"ON CONFLICT DO UPDATE SET received_at = greatest({GUEST_WITHDRAWALS}.received_at, excluded.received_at), "
    if origin == "webhook" and "_lk_withdrawn" in made and con.execute("SELECT count(*) FROM _lk_withdrawn"
                                                                         ).fetchall()[0][0]:
        at, ages = ages_of(con, "contact", received_at, links, versions, senders)
        own = (f"LEFT JOIN {ages} a ON a.id = w.raw" if ages else
               "CROSS JOIN (SELECT NULL::TIMESTAMPTZ AS ts, NULL::TIMESTAMPTZ AS vt, NULL::VARCHAR AS src) a")
        con.execute(f"INSERT INTO {WEBHOOK_TABLE} (kind, id, received_at) SELECT 'contact', w.key, max(coalesce("
                    f"a.ts, ?::TIMESTAMPTZ, now())) FROM _lk_withdrawn w {own} GROUP BY w.key ON CONFLICT DO UPDATE "
                    f"SET received_at = greatest({WEBHOOK_TABLE}.received_at, excluded.received_at)", [at])
        con.execute(f"INSERT INTO {GUEST_WITHDRAWALS} SELECT w.key, max(coalesce(a.ts, ?::TIMESTAMPTZ, now())), "
                    f"max(a.vt), arg_max(a.src, a.vt) FROM _lk_withdrawn w {own} GROUP BY w.key "
                    f"{kept}{later_vendor_time(GUEST_WITHDRAWALS)}", [at])
        con.execute(f"CREATE TEMP TABLE IF NOT EXISTS {LATE_WITHDRAWALS} (customer_id VARCHAR)")
        con.execute(f"INSERT INTO {LATE_WITHDRAWALS} SELECT DISTINCT key FROM _lk_withdrawn")
    if origin == "webhook" and "_lk_folded" in made and con.execute("SELECT count(*) FROM _lk_folded").fetchall()[0][0]:
        at, ages = ages_of(con, "contact", received_at, {}, versions, senders)
        own = (f"LEFT JOIN {ages} a ON a.id = w.raw" if ages else
               "CROSS JOIN (SELECT NULL::TIMESTAMPTZ AS ts, NULL::TIMESTAMPTZ AS vt, NULL::VARCHAR AS src) a")
        con.execute(f"INSERT INTO {GUEST_WITHDRAWALS} SELECT w.key, max(coalesce(a.ts, ?::TIMESTAMPTZ, now())), "
                    f"max(a.vt), arg_max(a.src, a.vt) FROM _lk_folded w {own} GROUP BY w.key "
                    f"{kept}{later_vendor_time(GUEST_WITHDRAWALS)}", [at])
    if origin == "webhook" and "_lk_landed" in made:  # the stored guest's version (a webhook's, or a file's)
        con.execute(f"INSERT INTO {GUEST_WITHDRAWALS} SELECT l.key, max(w.received_at), max(w.vt), arg_max(w.sender, "
                    f"w.vt) FROM _lk_landed l JOIN {_STORED} w ON w.kind = 'contact' AND w.id = l.raw GROUP BY l.key "
                    f"{kept}{later_vendor_time(GUEST_WITHDRAWALS)}")
    for table in made:
        con.execute(f"DROP TABLE {table}")


def note_versions(con: duckdb.DuckDBPyConnection, name: str, staged: str, *, origin: str, noted: bool,
                  received_at: Union[datetime, Ages, None], links: Mapping[str, str], pulled_at: datetime | None,
                  versions: Versions, senders: Senders | None = None) -> None:
    """Note how new the version an incremental merge took of each ``name`` record (orders, contacts) in the table
    ``staged`` (keyed by the records' key) is: a webhook's acceptance, vendor time and its sender (that of the
    vendor time kept), a pull's start (webhook records only)."""
    kind, key = KIND[name], KEY_OF[name]
    if origin == "webhook":  # only a file read after the records came yields its version (_keep_webhook_rows)
        at, ages = ages_of(con, kind, received_at, links or {}, versions or {}, senders)
        # both ages the later of the stored one and this version's (a version without a vendor time keeps the
        # stored one: it replaced that version, so it is at least as new), the sender the vendor time's
        con.execute(f"INSERT INTO {WEBHOOK_TABLE} (kind, id, received_at, updated_at, sender) SELECT DISTINCT "
                    f"'{kind}', s.{key}, coalesce({'a.ts' if ages else 'NULL'}, ?::TIMESTAMPTZ, now()), "
                    f"{'a.vt, a.src' if ages else 'NULL, NULL'} FROM {staged} s "
                    + (f"LEFT JOIN {ages} a ON a.id = s.{key} " if ages else "")
                    + f"ON CONFLICT DO UPDATE SET received_at = greatest({WEBHOOK_TABLE}.received_at, "
                    f"excluded.received_at), {later_vendor_time(WEBHOOK_TABLE)}", [at])
        untimed = [str(i) for (k, i), t in (versions or {}).items() if k == kind and t is None]
        if untimed:  # pulled for the batch (None): no vendor time, as a pull's (below)
            con.execute(f"UPDATE {WEBHOOK_TABLE} SET updated_at = NULL, sender = NULL WHERE kind = '{kind}' "
                        "AND id IN (SELECT unnest(?::VARCHAR[]))", [untimed])
        # what is left of the batch is at least as new as a file's version: the note above says so now
        con.execute(f"DELETE FROM {FILE_WON_TABLE} WHERE kind = '{kind}' AND id IN (SELECT {key} FROM {staged})")
    elif noted:  # an API source's pull: its version is as new as the pull's start (the cursor's bound), so
        # an older webhook batch merged after it (re-claimed after waiting for the sync that pulled) is left
        # out (ordering.drop_older_versions), and one accepted while it pulled is not. Its start is no vendor
        # time: the host's clock, never compared with the vendor's (a withdrawal the vendor dated a second before
        # it, accepted after it, is newer); the vendor's time the pull read, if any, is in pulled_versions
        con.execute(f"UPDATE {WEBHOOK_TABLE} SET received_at = greatest(received_at, "
                    f"coalesce(?::TIMESTAMPTZ, now())), updated_at = NULL, sender = NULL WHERE kind = "
                    f"'{kind}' AND id IN (SELECT {key} FROM {staged})", [pulled_at])
