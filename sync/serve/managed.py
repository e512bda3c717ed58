"""The plan guards' denominator on the webhook path, without reading a destination's whole state each resync.

The plan guards (:mod:`sync.guards`) compare a plan's removals and changes with the number of contacts the
destination manages (ledger contacts holding at least one managed tag, or waiting to be given back one the ESP
lost: :meth:`~sync.ledger.state.PushedStates.lost_tags`; :func:`sync.guards.plan_stats` adds the plan's own
contacts re-tagged from names no longer managed). Counting them is one aggregate over all of the destination's
ledger rows: fine once per full sync, not once per webhook batch on a million contacts. :class:`ManagedCounts`
keeps the count per destination with the ledger revision it is valid for:

* the revision unchanged: the count is reused;
* after a webhook resync applied a plan made at the cached revision, the count moves by the plan's own
  effect (its contacts' managed-ness before and after, read by key, and whether they wait for a tag the ESP
  lost: :meth:`~sync.ledger.state.PushedStates.lost_tags` of its contacts) and is kept for the new revision;
* after a resync whose run had the ledger forget a field or tag the ESP lost (for every holder, not only the
  plan's contacts: :func:`sync.engine.lost_in_destination`): dropped, counted again next time;
* any other revision (a full sync, another process's resync) or a count older than ``recount_after`` seconds
  (a bound on any drift): counted again.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable, Mapping

from ..guards import holds_managed, waiting_only
from ..ledger import Ledger
from ..model import PushedState


class ManagedCounts:
    def __init__(self, recount_after: float = 600.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.recount_after, self._clock = recount_after, clock
        # → revision, managed contacts (holding a managed tag, or only waiting for a lost one: waiting_only), at
        self._cache: dict[tuple[str, str, frozenset[str]], tuple[int, int, float]] = {}

    def _key(self, ledger: Ledger, destination: str, managed: Iterable[str]
             ) -> tuple[str, str, frozenset[str]]:
        return f"{ledger!r}#{id(ledger.state)}", destination, frozenset(managed)

    def count(self, ledger: Ledger, destination: str, managed: Iterable[str], revision: int) -> tuple[int, int]:
        """(managed contacts at ``revision``, ledger rows read to know it: 0 when cached)."""
        key = self._key(ledger, destination, managed)
        hit = self._cache.get(key)
        if hit is not None and hit[0] == revision and self._clock() - hit[2] < self.recount_after:
            return hit[1], 0
        sets = ledger.tag_set_counts(destination)
        holding = sum(c for tags, c in sets.items() if tags & key[2])
        lost = ledger.lost_tags(destination)  # none, but after the ESP lost a managed tag
        waiting = ledger.load_states(destination, lost) if lost else {}
        extra = waiting_only(lost, waiting, key[2])
        self._cache[key] = (revision, holding + extra, self._clock())
        return holding + extra, sum(sets.values()) + len(waiting)

    def applied(self, ledger: Ledger, destination: str, managed: Iterable[str], revision_before: int,
                before: Mapping[str, PushedState], after: Mapping[str, PushedState], revision_after: int,
                lost_before: Mapping[str, frozenset[str]] | None = None,
                lost_after: Mapping[str, frozenset[str]] | None = None) -> None:
        """A plan made at ``revision_before`` was applied: ``before``/``after`` hold its contacts' rows, and
        ``lost_before``/``lost_after`` the tags the ESP lost they waited for (:meth:`Ledger.lost_tags` of its
        contacts: only theirs move on this path)."""
        key = self._key(ledger, destination, managed)
        hit = self._cache.get(key)
        if hit is None or hit[0] != revision_before:
            return
        delta = sum(holds_managed(after.get(k), key[2]) - holds_managed(before.get(k), key[2])
                    for k in set(before) | set(after))
        waits = waiting_only(lost_after or {}, after, key[2]) - waiting_only(lost_before or {}, before, key[2])
        self._cache[key] = (revision_after, hit[1] + delta + waits, hit[2])

    def drop(self, ledger: Ledger, destination: str, managed: Iterable[str]) -> None:
        """Forget the count kept for ``destination`` (the next :meth:`count` counts again)."""
        self._cache.pop(self._key(ledger, destination, managed), None)
