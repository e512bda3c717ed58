"""The plan guards' denominator on the webhook path, without reading a destination's whole state each resync.

The plan guards (:mod:`sync.guards`) compare a plan's removals and changes with the number of contacts the
destination manages now (ledger contacts holding at least one managed tag, or waiting to be given back one the
ESP lost: :meth:`~sync.ledger.state.PushedStates.lost_tags`). Counting them is one aggregate
over all of the destination's ledger rows: fine once per full sync, not once per webhook batch on a million
contacts. :class:`ManagedCounts` keeps the count per destination with the ledger revision it is valid for:

* the revision unchanged: the count is reused;
* after a webhook resync applied a plan made at the cached revision, the count moves by the plan's own
  effect (its contacts' managed-ness before and after, read by key) and is kept for the new revision; the
  contacts waiting for a tag the ESP lost (none, but after a loss) are read again at each count;
* after a resync whose run had the ledger forget a field or tag the ESP lost (for every holder, not only the
  plan's contacts: :func:`sync.engine.lost_in_destination`): dropped, counted again next time;
* any other revision (a full sync, another process's resync) or a count older than ``recount_after`` seconds
  (a bound on any drift): counted again.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable, Mapping

from ..guards import waiting_only
from ..ledger import Ledger
from ..model import PushedState


def is_managed(state: PushedState | None, managed: frozenset[str]) -> bool:
    return bool(state is not None and state.tags & managed)


class ManagedCounts:
    def __init__(self, recount_after: float = 600.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.recount_after, self._clock = recount_after, clock
        # → revision, contacts holding a managed tag, at, whether contacts wait for a lost tag
        self._cache: dict[tuple[str, str, frozenset[str]], tuple[int, int, float, bool]] = {}

    def _key(self, ledger: Ledger, destination: str, managed: Iterable[str]
             ) -> tuple[str, str, frozenset[str]]:
        return f"{ledger!r}#{id(ledger.state)}", destination, frozenset(managed)

    def count(self, ledger: Ledger, destination: str, managed: Iterable[str], revision: int) -> tuple[int, int]:
        """(managed contacts at ``revision``, ledger rows read to know it: 0 when cached)."""
        key = self._key(ledger, destination, managed)
        hit = self._cache.get(key)
        if hit is not None and hit[0] == revision and self._clock() - hit[2] < self.recount_after:
            holding, read, at, waits = hit[1], 0, hit[2], hit[3]
        else:
            sets = ledger.tag_set_counts(destination)
            holding, read, at, waits = (sum(c for tags, c in sets.items() if tags & key[2]), sum(sets.values()),
                                        self._clock(), True)
        if waits:  # read again each time (few rows; their wait ends as plans give the tag back or move them)
            lost = ledger.lost_tags(destination)  # none, but after the ESP lost a managed tag
            waiting = ledger.load_states(destination, lost) if lost else {}
            extra, read, waits = waiting_only(lost, waiting, key[2]), read + len(waiting), bool(lost)
        else:
            extra = 0
        self._cache[key] = (revision, holding, at, waits)
        return holding + extra, read

    def applied(self, ledger: Ledger, destination: str, managed: Iterable[str], revision_before: int,
                before: Mapping[str, PushedState], after: Mapping[str, PushedState], revision_after: int) -> None:
        """A plan made at ``revision_before`` was applied: ``before``/``after`` hold its contacts' rows."""
        key = self._key(ledger, destination, managed)
        hit = self._cache.get(key)
        if hit is None or hit[0] != revision_before:
            return
        delta = sum(is_managed(after.get(k), key[2]) - is_managed(before.get(k), key[2])
                    for k in set(before) | set(after))
        self._cache[key] = (revision_after, hit[1] + delta, hit[2], hit[3])

    def drop(self, ledger: Ledger, destination: str, managed: Iterable[str]) -> None:
        """Forget the count kept for ``destination`` (the next :meth:`count` counts again)."""
        self._cache.pop(self._key(ledger, destination, managed), None)
