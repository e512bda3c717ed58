"""A consent withdrawn in the source by a contact rfmsync itself subscribed (docs/sync.md, "Consent").

rfmsync never changes an existing contact's status in the ESP: a contact it created ``subscribed`` (the source said
yes then) stays subscribed when the source says ``no`` later, and under every mode but ``skip`` keeps getting his
managed tags. The plan names those contacts (:attr:`~sync.planning.plan.Plan.withdrawn_subscribed`, a warning
line, a ``withdrawn_subscribed`` count in the run's counts) so that someone unsubscribes them in the ESP: the
ledger's ``subscribed_by_us`` (:mod:`sync.ledger.subscribed`) tells them from those who subscribed themselves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import duckdb

from ..config import DestinationConfig
from .columnar import CONSENT, PUSHED
from .rows import DESIRED

if TYPE_CHECKING:
    from ..ledger import Ledger


def withdrawn_subscribed(con: duckdb.DuckDBPyConnection, ledger: "Ledger", destination: str) -> tuple[str, ...]:
    """The contacts of the staged rows whose consent is ``no``, whom the staged pushed state has in the ESP and
    the ledger records rfmsync created ``subscribed`` there, sorted (none read when it records nobody)."""
    if not ledger.has_subscribed(destination):
        return ()
    keys = [k for (k,) in con.execute(
        f"SELECT d._key FROM {DESIRED} d JOIN {PUSHED} p ON p.key = d._key "
        f"WHERE {CONSENT} = 'no' AND coalesce(p.present, FALSE)").fetchall()]
    return tuple(sorted(ledger.subscribed_among(destination, keys))) if keys else ()


def withdrawn_warning(dest: DestinationConfig, keys: Sequence[str]) -> str | None:
    """The plan's warning line naming ``keys`` (None: nobody)."""
    if not keys:
        return None
    n = len(keys)
    whom = f"{keys[0]}{' and more' if n > 1 else ''}"
    tags = ("" if dest.new_contacts == "skip" else
            f", and under new_contacts = {dest.new_contacts!r} {'they keep' if n > 1 else 'he keeps'} getting "
            f"managed tags/lists (\"skip\" takes them off)")
    return (f"{n} contact{'s' if n > 1 else ''} rfmsync created subscribed now "
            f"{'have' if n > 1 else 'has'} marketing consent \"no\" in the source ({whom}; \"withdrawn_subscribed\" "
            f"in the JSON): rfmsync never changes an existing contact's status, so "
            f"{'they stay' if n > 1 else 'he stays'} subscribed in the ESP{tags}: unsubscribe "
            f"{'them' if n > 1 else 'him'} in the ESP")


__all__ = ["withdrawn_subscribed", "withdrawn_warning"]
