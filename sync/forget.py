"""``rfmsync forget --destination NAME``: the ledger forgets what it holds of a destination the config no longer has.

A destination removed from the config leaves its ledger rows: the plan warns of the tags they say rfmsync gave
(:func:`sync.planning.retired.removed_destinations`) until they are off. When another destination of the same
audience took them off (its ``--reconcile``), or the user took them off by hand or no longer cares, nothing ever
deletes those rows and the warning, and its check's cost, stays on every plan. This is the way out: it says what the
ledger holds under the name (the contacts, the tags it says rfmsync gave them, the audience), and deletes it only
when told (``--yes``), under the destination's sync lock so that it never races a sync of that name, in one
transaction (:meth:`sync.ledger.Ledger.forget_destination`). Nothing in the ESP is touched. Refused for a
destination the config has (that one is started afresh with ``sync --full-refresh``) and for one a configured
destination's ``renamed_from`` names (that one takes the rows over).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import ConfigError
from .planning.retired import counted
from .planning.target import TARGET_CURSOR, describe, known_target

if TYPE_CHECKING:
    from .config import Config
    from .ledger import Ledger

#: the destination's lock while its rows are deleted (one transaction: seconds at most)
LOCK_TTL = 600


@dataclass(frozen=True)
class Forgotten:
    """What the ledger holds (or held) under a destination: ``done`` says whether it was deleted."""

    destination: str
    target: str | None
    contacts: int
    tags: list[tuple[str, int]]
    done: bool
    failures: int = 0  # its operations recorded failed (`rfmsync failures`), forgotten with it
    in_flight: int = 0  # the operations a run killed mid-apply left in flight (in doubt), forgotten with it

    def text(self) -> str:
        where = f" of {describe(self.target)}" if self.target is not None and self.contacts else ""
        tags = (f"; it says rfmsync gave them tags/lists: {counted(self.tags)}, which stay on them in the ESP "
                f"(rfmsync will no longer know it gave them)" if self.tags else "")
        failed = (f"; {self.failures} failed operation{'s' if self.failures != 1 else ''} recorded "
                  f"(rfmsync failures), never retried once forgotten" if self.failures else "")
        failed += (f"; {self.in_flight} operation{'s' if self.in_flight != 1 else ''} in doubt (left in flight by a "
                   f"run that ended without finishing: adds the ESP may have carried out), never taken off once "
                   f"forgotten" if self.in_flight else "")
        target = (f"; its recorded target, {describe(self.target)}" if self.target is not None and not self.contacts
                  else "")
        held = f"{self.contacts} contact{'s' if self.contacts != 1 else ''}{where}{tags}{failed}{target}"
        if self.done:
            return f"the ledger forgot destination {self.destination!r}: {held}"
        return (f"the ledger holds under destination {self.destination!r}, no longer in the config: {held}. "
                f"Nothing forgotten: run again with --yes to forget it")


def forget_destination(cfg: "Config", ledger: "Ledger", name: str, *, yes: bool = False) -> Forgotten:
    """What the ledger holds under destination ``name`` and, with ``yes``, its deletion under ``sync:NAME``'s lock
    (:class:`sync.errors.LockBusyError` while a sync of it runs). ConfigError when the config has ``name``, when a
    configured destination's ``renamed_from`` names it, or when the ledger holds nothing under it."""
    from .engine import destination_lock
    from .ledger.locks import apply_lock

    if any(d.name == name for d in cfg.destinations):
        raise ConfigError(f"destination {name!r} is in the config: rfmsync forgets only a destination removed from "
                          f"it (to plan one against the ESP afresh: 'rfmsync sync --destination {name} "
                          f"--full-refresh')")
    heir = next((d.name for d in cfg.destinations if d.renamed_from == name), None)
    held = ledger.held_destinations(TARGET_CURSOR)  # its contacts, or only failures or a recorded target left
    if name not in held:  # (an heir's old name after the takeover too: nothing left to forget, nor to take over)
        removed = [n for n in held if all(d.name != n for d in cfg.destinations)]
        listed = ", ".join(repr(n) for n in removed) if removed else "none"
        taken = (f"; destination {heir!r} has renamed_from = {name!r}: it has taken over whatever the ledger held "
                 f"there, if anything" if heir is not None else "")
        raise ConfigError(f"the ledger holds nothing under destination {name!r} (destinations it holds that the "
                          f"config no longer has: {listed}){taken}")
    if heir is not None:
        raise ConfigError(f"destination {heir!r} has renamed_from = {name!r}: it takes over what the ledger holds "
                          f"under {name!r} once it has synced successfully; to forget it instead, remove "
                          f"renamed_from first")

    def look() -> tuple[list[tuple[str, int]], int, int]:
        counts: dict[str, int] = {}
        for tags, n in ledger.tag_set_counts(name).items():
            for tag in tags:
                counts[tag] = counts.get(tag, 0) + n
        return sorted(counts.items()), len(ledger.pending_failures(name)), ledger.in_flight_count(name)

    target = known_target(ledger, name)
    if not yes:
        tags, failed, flying = look()
        return Forgotten(name, target, ledger.state_count(name), tags, done=False, failures=failed, in_flight=flying)
    with destination_lock(ledger, apply_lock(name), LOCK_TTL) as lock:
        tags, failed, flying = look()
        contacts = ledger.forget_destination(name, (TARGET_CURSOR, name), lock=(lock.name, lock.owner),
                                             untagged=False)
    return Forgotten(name, target, contacts, tags, done=True, failures=failed, in_flight=flying)


__all__ = ["Forgotten", "forget_destination"]
