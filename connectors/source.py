"""The one boundary every source implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import duckdb

from .identity import IdentityReport
from .records import BadRow


@dataclass
class PullResult:
    """What one pull staged, and what it could not use."""

    orders: int = 0  # order records staged (after sync.pipeline.pull_into: less ``unstored_orders``)
    contacts: int = 0
    bad_rows: list[BadRow] = field(default_factory=list)
    bad_row_count: int = 0  # may exceed len(bad_rows) when the list is capped
    #: values dropped from records that were kept (an invalid e-mail or phone: the contact is kept without it),
    #: each naming its record and field; not bad rows (``max_bad_rows_pct`` does not count them)
    issues: list[BadRow] = field(default_factory=list)
    issue_count: int = 0  # may exceed len(issues) when the list is capped
    cursor: str | None = None  # new bookmark to save once the pull has been stored
    full_refresh: bool = False  # True: staged rows are the whole history (replace the store)
    #: identity resolution (connectors.identity): rows linked, customers merged, shared identifiers ignored
    identity: IdentityReport | None = None
    #: order records read but not stored: tombstones of orders the store never held (a deal lost or deleted before
    #: rfmsync stored it), counted by :func:`sync.pipeline.pull_into` and left out of ``orders``
    unstored_orders: int = 0
    #: records an incremental pull read again exactly as the store holds them (its lookback window overlaps the
    #: pull before), counted by :func:`sync.pipeline.pull_into` and left out of ``orders`` / ``contacts``: those
    #: count what is new or changed
    unchanged_orders: int = 0
    unchanged_contacts: int = 0
    #: an incremental pull: it read what changed since the source's cursor, not the whole history (set by
    #: :func:`sync.pipeline.pull_into`); ``[guards] min_bad_rows`` applies to such a window only
    incremental: bool = False
    #: purchases read that name no customer, e-mail or phone (a POS walk-in sale): counted here, not stored, not
    #: segmented, not bad rows (:class:`connectors.non_purchase.NoCustomer`)
    anonymous_orders: int = 0
    #: what the user must be told about this pull (e.g. a Shopify token that lists only 60 days of orders): printed
    #: with the run's warnings (:func:`sync.pipeline.pull_lines`)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Account:
    """What a source's ``check()`` found: the account's name, and what the user should be told about the config
    (e.g. a Shopify shop whose own time zone is not ``[source] timezone``). ``str()`` is the name."""

    name: str
    warnings: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.name


#: called with the number of records each page of an API read brought (a progress bar's advance)
Progress = Callable[[int], None] | None


class Source(Protocol):
    """Reads contacts and orders since a cursor into the connection's ``staged_*`` tables.

    Every source declares both methods, so callers never probe for them:

    * ``pull(con, cursor, *, progress=None)``: ``progress`` is called with the records of each page read
      (an API source reads pages; a file source has none and ignores it);
    * ``check()``: one cheap authenticated read that names the account (API sources: a ``str``, or an
      :class:`Account` with warnings about the config), or ``None`` when the source can only be checked by
      reading it (a file export: ``rfmsync check`` pulls it and lists its bad rows).

    ``max_identity_group`` is the ``[source]`` key of that name (default 5): an e-mail or phone shared by more
    customers links nobody when records are merged into the order store (:mod:`connectors.identity`).
    """

    name: str
    max_identity_group: int

    def check(self) -> str | Account | None: ...

    def pull(self, con: duckdb.DuckDBPyConnection, cursor: str | None = None, *,
             progress: Progress = None) -> PullResult: ...
