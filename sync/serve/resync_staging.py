"""The staging side of a webhook resync (:mod:`sync.serve.resync`): a webhook contact's missing fields kept from
the store, a CRM pull into staging next to the webhook records (each record's age: its event's, or the pull's
start), and forgetting the file versions' ages no webhook version can be older than.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Callable, Sequence

import duckdb

from connectors.source import PullResult
from connectors.tables import TABLES, create_staging
from connectors.webhooks import WEBHOOK_SOURCES

from ..config import Config
from ..errors import ConfigError
from ..ledger import Ledger
from ..pipeline import configured_source
from ..settings import Settings
from ..store.accounts import check_account
from ..store.gone import STORED_GONE
from ..store.lookup import normalise_emails
from ..store.ordering import Ages, Senders, Versions
from ..store.pulled import staged_times
from ..store.webhooks import FILE_WON_TABLE, prune_file_won

log = logging.getLogger("sync.serve.resync")


def coalesce_webhook_contacts(con: duckdb.DuckDBPyConnection, gone: Sequence[str] = ()) -> None:
    """A webhook contact's missing fields (and an ``unknown`` consent) keep the stored values; its e-mail is
    stored normalised (:func:`normalise_staged_emails`). ``gone``: the contacts a CRM deleted (emptied by its
    parser, :func:`connectors.contacts.gone_contact`, never a generic delivery's) keep nothing: their address
    must go. Nor does a contact whose stored row is such an emptied one (:data:`sync.store.gone.STORED_GONE`):
    restored in the CRM, it is what the delivery says, its consent too (``unknown`` when it says none), never the
    ``no`` and ``deleted`` of its deletion (docs/sources/common.md#deleted-contacts)."""
    if not con.execute("SELECT count(*) FROM staged_contacts").fetchall()[0][0]:
        return
    normalise_staged_emails(con)
    con.execute(f"""
        UPDATE staged_contacts AS s SET
            email = coalesce(s.email, c.email), phone = coalesce(s.phone, c.phone),
            first_name = coalesce(s.first_name, c.first_name), last_name = coalesce(s.last_name, c.last_name),
            marketing_consent = coalesce(nullif(s.marketing_consent, 'unknown'), c.marketing_consent),
            created_at = coalesce(s.created_at, c.created_at), attributes = coalesce(s.attributes, c.attributes)
        FROM contacts AS c WHERE s.customer_id = c.customer_id
          AND s.customer_id NOT IN (SELECT unnest(?::VARCHAR[])) AND NOT {STORED_GONE}
    """, [list(gone)])


def normalise_staged_emails(con: duckdb.DuckDBPyConnection) -> None:
    """The staged contacts' e-mails in their normalised form (:func:`connectors.email_phone.normalize_email`; an
    invalid one as it is), as every other write path stores them (the webhook parsers' and CRM pulls'
    ``clean_contact``, the file reader's ``email_map``): a contact handed to :func:`sync.serve.resync.resync` by a
    library caller too. The store's other cards of an address are read by that exact value
    (:func:`sync.serve.resync_scope.store_holders`)."""
    normalise_emails(con, "staged_contacts")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _pull_staged(cfg: Config, ledger: Ledger, con: duckdb.DuckDBPyConnection, settings: Settings
                 ) -> tuple[PullResult, str]:
    kind = str(cfg.source.get("type", "file"))
    if kind not in WEBHOOK_SOURCES:
        raise ConfigError(f"a pull was requested by a {kind!r} webhook, but only CRM sources can be pulled "
                          f"incrementally ({', '.join(WEBHOOK_SOURCES)})")
    source = configured_source(cfg, settings)
    check_account(con, source)  # a store is one account's (sync.store.accounts)
    return source.pull(con, ledger.get_cursor(kind, "all")), kind


def pull_after_webhook_records(cfg: Config, ledger: Ledger, con: duckdb.DuckDBPyConnection, settings: Settings,
                                received_at: datetime | Ages | None, now: Callable[[], datetime] = utcnow,
                                versions: Versions | None = None, senders: Senders | None = None
                                ) -> tuple[PullResult, str, Ages, Versions, Senders]:
    """Pull into staging without losing the webhook records staged already (a source's pull starts from
    fresh staging tables): they are set aside, then staged again, except those the pull read too (its version,
    the fresher one, replaces the webhook's: an order with its line items, a contact). Returns the records' ages
    for the merge (:data:`sync.store.ordering.Ages`): the webhook records' own (``received_at``), and the pull's start
    (the bound its cursor uses) for every pulled record, so that an older webhook version noted in the store does
    not leave the pulled one out with it, and a pulled record is as new as the pull, not as the batch's events.
    ``now``: the wall clock the pull's start is read from (the worker's, the one its events are dated by).
    Also returns the records' vendor times (:data:`sync.store.ordering.Versions`): the webhook records' own
    (``versions``), and for every pulled record the vendor's time the pull read of it (Shopify, amoCRM:
    :mod:`sync.store.pulled`), else None (the pull's start is this host's clock, never taken for the vendor's); and
    who sent each (:data:`sync.store.ordering.Senders`): the webhook records' own (``senders``), the CRM's for every
    pulled record (its vendor time is the CRM's clock, as its webhooks' are)."""
    for name in TABLES:
        con.execute(f"CREATE OR REPLACE TEMP TABLE _hook_{name} AS SELECT * FROM staged_{name}")
    started = now()
    result, kind = _pull_staged(cfg, ledger, con, settings)
    for name in TABLES:
        con.execute(f"CREATE TEMP TABLE IF NOT EXISTS staged_{name} AS SELECT * FROM _hook_{name} LIMIT 0")
        con.execute(f"CREATE OR REPLACE TEMP TABLE _pulled_{name} AS SELECT * FROM staged_{name}")
    create_staging(con)
    for name in TABLES:
        key = "customer_id" if name == "contacts" else "order_id"
        con.execute(f"INSERT INTO staged_{name} SELECT * FROM _hook_{name} WHERE {key} NOT IN "
                    f"(SELECT {key} FROM _pulled_{'contacts' if name == 'contacts' else 'orders'})")
        con.execute(f"INSERT INTO staged_{name} SELECT * FROM _pulled_{name}")
    # one age for every webhook record staged (a worker gives each its own), the pull's start for the pulled ones
    ages: dict[tuple[str, str], datetime] = (dict.fromkeys(_record_ids(con, "_hook"), received_at)
                                             if isinstance(received_at, datetime) else dict(received_at or {}))
    pulled = _record_ids(con, "_pulled")
    ages.update(dict.fromkeys(pulled, started))
    timed = staged_times(con)  # what the pull read of the vendor's own times (Shopify, amoCRM), else None
    vendor: dict[tuple[str, str], datetime | None] = {**(versions or {}), **{key: timed.get(key) for key in pulled}}
    for name in TABLES:
        con.execute(f"DROP TABLE _hook_{name}")
        con.execute(f"DROP TABLE _pulled_{name}")
    return result, kind, ages, vendor, {**(senders or {}), **dict.fromkeys(pulled, kind)}


#: how far the ledger's clock (events' ages) and a full sync's (a file's read) may disagree: a ``file_won_records``
#: row is kept this much longer than the oldest webhook version that can still come needs it
CLOCK_MARGIN = timedelta(hours=1)


#: a prune held back this long by one unsettled event is logged (a WARNING, once per event)
PRUNE_HELD_WARNING = timedelta(days=1)
_held_warned: set[datetime] = set()  # the oldest events' times a held prune was logged for


def prune_file_won_ages(con: duckdb.DuckDBPyConnection, ledger: Ledger, now: Callable[[], datetime]) -> None:
    """Forget the file versions' ages (:func:`sync.store.webhooks.prune_file_won`) older than every webhook
    version that can still be merged: the ledger's oldest unsettled event (a failed one included while it is in
    the requeue window, :data:`sync.ledger.queue.REQUEUE_WINDOW`: it can be replayed), else now; less
    :data:`CLOCK_MARGIN`. Nothing to do (no ledger read) while the table is empty. A prune held back more than
    :data:`PRUNE_HELD_WARNING` by one event is logged once."""
    if not con.execute(f"SELECT count(*) FROM {FILE_WON_TABLE}").fetchall()[0][0]:
        return
    oldest = ledger.oldest_unsettled() or now()
    pruned = prune_file_won(con, min(oldest, now()) - CLOCK_MARGIN)
    if pruned:
        log.debug("resync: %d file versions' ages forgotten (no older webhook version can come)", pruned)
    if now() - oldest >= PRUNE_HELD_WARNING and oldest not in _held_warned:
        _held_warned.add(oldest)
        log.warning("resync: the order store keeps the file versions' ages read since %s (file_won_records): an "
                    "event accepted then is still queued or failed (failed ones hold it for the requeue window); "
                    "settle or replay it", oldest.isoformat())


def _record_ids(con: duckdb.DuckDBPyConnection, prefix: str) -> list[tuple[str, str]]:
    """``("order", id)`` and ``("contact", customer id)`` of the records in ``{prefix}_orders``/``_contacts``."""
    return [("order", str(r[0])) for r in con.execute(f"SELECT order_id FROM {prefix}_orders").fetchall()] + \
        [("contact", str(r[0])) for r in con.execute(f"SELECT customer_id FROM {prefix}_contacts").fetchall()]
