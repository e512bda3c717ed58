"""What ``--reconcile`` takes off that rfmsync never gave: the members of a managed tag or list the ESP holds but the
ledger does not say rfmsync put there (the tag or list existed before rfmsync managed it and was adopted by its
setup, or someone added them by hand), whom the plan takes it off because they are not in its segment.

Without ``--reconcile`` rfmsync takes a tag off only those the ledger says it gave it to; with it, the plan is made
against the members the ESP lists (:func:`~sync.planning.columnar.reconcile_pushed`), so a pre-existing list's own
members leave it (docs/sync.md#reconcile, under Apply). The plan says so, once per tag or list, with the count alone (no
address): :func:`adopted_warnings`.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import duckdb

from ..model import ContactChange
from .columnar import LEDGER, TAGS


def adopted_warnings(con: duckdb.DuckDBPyConnection, changes: Sequence[ContactChange], read: Iterable[str]
                     ) -> list[str]:
    """One warning per tag/list of ``read`` (those ``--reconcile`` read the members of) that the plan's ``changes``
    take off contacts the ledger (the staged ``_plan_ledger``) does not say hold it: how many, and what to do."""
    import pyarrow as pa

    wanted = set(read)
    pairs = [(c.key, tag) for c in changes for tag in c.remove_tags if tag in wanted]
    if not pairs:
        return []
    con.register("_plan_adopted_arrow", pa.table({"key": pa.array([k for k, _ in pairs], pa.string()),
                                                  "tag": pa.array([t for _, t in pairs], pa.string())}))
    try:
        counts: Mapping[str, int] = dict(con.execute(f"""
            SELECT r.tag, count(*) FROM _plan_adopted_arrow r LEFT JOIN {LEDGER} l ON l.key = r.key
            WHERE NOT coalesce(list_contains({TAGS.format('l.tags_json')}, r.tag), FALSE)
            GROUP BY r.tag""").fetchall())
    finally:
        con.unregister("_plan_adopted_arrow")
    return [f"--reconcile takes the managed tag/list {tag!r} off {n} of its member{'s' if n != 1 else ''} "
            f"rfmsync did not add (the ledger does not say rfmsync put {'them' if n != 1 else 'him'} there: the "
            f"tag/list held {'them' if n != 1 else 'him'} before rfmsync managed it, or someone added "
            f"{'them' if n != 1 else 'him'} by hand), as {'they are' if n != 1 else 'he is'} not in its segment; "
            f"to keep {'them' if n != 1 else 'him'}, sync without --reconcile, or map the segment to a tag/list "
            f"of its own"
            for tag, n in sorted(counts.items()) if n]


__all__ = ["adopted_warnings"]
