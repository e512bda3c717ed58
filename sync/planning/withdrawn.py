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
from ..ledger.subscribed import BY_KEY_LIMIT
from .columnar import CONSENT, PUSHED
from .rows import DESIRED

if TYPE_CHECKING:
    from ..ledger import Ledger


def withdrawn_subscribed(con: duckdb.DuckDBPyConnection, ledger: "Ledger", destination: str) -> tuple[str, ...]:
    """The contacts of the staged rows whose consent is ``no``, whom the staged pushed state has in the ESP and
    the ledger records rfmsync created ``subscribed`` there, sorted (none read when it records nobody)."""
    if not ledger.has_subscribed(destination):
        return ()
    said_no = (f"SELECT d._key AS key FROM {DESIRED} d JOIN {PUSHED} p ON p.key = d._key "
               f"WHERE {CONSENT} = 'no' AND coalesce(p.present, FALSE)")
    n = con.execute(f"SELECT count(*) FROM ({said_no})").fetchall()[0][0]
    if n <= BY_KEY_LIMIT:  # (usually: few say no, or none) read by key
        keys = [k for (k,) in con.execute(said_no).fetchall()]
        return tuple(sorted(ledger.subscribed_among(destination, keys))) if keys else ()
    import pyarrow as pa  # many say no: the ledger's keys joined in DuckDB (no Python set of either)

    con.register("_plan_subscribed_arrow", pa.table({"key": pa.array(ledger.subscribed_keys(destination),
                                                                       pa.string())}))
    try:
        return tuple(k for (k,) in con.execute(f"SELECT n.key FROM ({said_no}) n SEMI JOIN _plan_subscribed_arrow s "
                                               "ON s.key = n.key ORDER BY n.key").fetchall())
    finally:
        con.unregister("_plan_subscribed_arrow")


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
