"""Which account of a CRM an order store holds (the ``source_accounts`` table): a store is one account's.

Two accounts of one CRM number their customers alike (amoCRM contact 123 of one shop and of another are two
people). Pulled into one store, the second account's records would take the first's ids: another customer's orders
and segment under one id, and his tags on the other's address. So a pull that merged notes the account it read (in
the merge's transaction, :func:`note_account`), by the name the source's settings give it (amoCRM's subdomain: an
account moved from amocrm.com to kommo.com keeps it; a Bitrix24 portal's host, a RetailCRM account's host, a Shopify
shop; never a secret), and a pull of another
account of the same CRM into that store is refused before it reads anything (:func:`check_account`: a
:class:`~sync.errors.ConfigError` naming both and what to do). A source that names no account (its address given
only as an IP address or ``localhost``, as tests and local proxies do) is neither checked nor noted; nor is a file
export. A store
written before this table existed notes its account at its next pull (it cannot tell which it held before). An
account whose address changed (a portal renamed) is refused too: a new store, filled from the CRM by its first pull,
costs a full read and loses nothing (the ledger, what was pushed to the ESPs, is not the store).
"""

from __future__ import annotations

import ipaddress
from typing import Any
from urllib.parse import urlsplit

import duckdb

from ..errors import ConfigError

TABLE = "source_accounts"


def account_of(source: Any) -> str | None:
    """The account ``source`` reads, as a name its settings give (lower case), or None when they name none."""
    kind = getattr(source, "name", None)
    if kind == "amocrm":
        sub = getattr(source, "subdomain", None)
        return f"{sub.lower()} (amoCRM subdomain)" if sub else None
    if kind == "bitrix24":
        return _named(getattr(source, "portal", None))
    if kind == "retailcrm":  # its account's URL, not an API URL override's (a proxy's name)
        return _named(getattr(source, "account_url", None))
    if kind == "shopify":
        return _named(getattr(source, "host", None))
    return None


def _named(address: str | None) -> str | None:
    """The host of ``address`` (a host, or a URL), lower case; None for none, an IP address or ``localhost``: a
    test's or a local proxy's address (``*_API_URL``), no account's name."""
    if not address or address == "?":
        return None
    host = (urlsplit(address if "//" in address else f"https://{address}").hostname or "").rstrip(".")
    if not host or host == "localhost":
        return None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host
    return None


def _noted(con: duckdb.DuckDBPyConnection, kind: str) -> str | None:
    if not con.execute("SELECT 1 FROM duckdb_tables() WHERE table_name = ? AND NOT temporary", [TABLE]).fetchall():
        return None
    row = con.execute(f"SELECT account FROM {TABLE} WHERE source = ?", [kind]).fetchone()
    return row[0] if row else None


def check_account(con: duckdb.DuckDBPyConnection, source: Any) -> None:
    """Refuse (:class:`~sync.errors.ConfigError`) a pull of ``source`` when the store holds another account of the
    same CRM; nothing is read from the source first."""
    account = account_of(source)
    noted = _noted(con, source.name) if account else None
    if noted is not None and noted != account:
        raise ConfigError(
            f"{source.name}: the order store holds the records of the account {noted}, but [source] now reads "
            f"{account}: two accounts number their customers alike, so one store would give one account's orders, "
            f"segments and consent to the other's customers under the same ids. Pull {account} into a store of its "
            f"own (set [store] path to a new file, or remove the store to start over from {account}); to read "
            f"{noted} again, set [source] back to it")


def note_account(con: duckdb.DuckDBPyConnection, source: Any) -> None:
    """Note the account ``source`` read as the store's (a merge's transaction; one already noted stays)."""
    account = account_of(source)
    if account is None:
        return
    con.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (source VARCHAR PRIMARY KEY, account VARCHAR NOT NULL)")
    con.execute(f"INSERT OR IGNORE INTO {TABLE} VALUES (?, ?)", [source.name, account])


__all__ = ["TABLE", "account_of", "check_account", "note_account"]
