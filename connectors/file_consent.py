"""Consent cells a file source cannot read as yes, no or empty: reported, never silent.

:func:`connectors.consent_words.consent_sql` takes such a statement (``не согласна`` before the word was known,
``oui``, ``✓``) as ``no``: it never subscribes anyone, and an older ``yes`` of the customer does not beat it (the
customer's latest statement wins, and a cell that says something is a statement). Each distinct value is reported
once, at its first file and row, with how many rows hold it: an issue of the pull (kept with the file's bad-row
report, so a run that does not read the file again names it too) and a warning line of every run
(:func:`consent_lines`).
"""

from __future__ import annotations

import logging

import duckdb

from .counts import counted
from .records import BadRow

log = logging.getLogger(__name__)

FIELD = "marketing_consent"
#: an unread consent value's issue reason; ``{rows}``: how many rows hold it (:func:`~connectors.counts.counted`)
REASON = ("consent value read neither as yes nor as no ({rows}): taken as no, nobody is subscribed on it; write "
          "yes or no (да / нет)")
SHOWN = 3  # values named in the warning line


def consent_issues(con: duckdb.DuckDBPyConnection, views: list[str], paths: list[str],
                   limit: int) -> tuple[list[BadRow], int]:
    """One issue per distinct unread consent value of the rows of ``views`` (with ``_file``, ``_row``, ``key``
    and ``consent_raw``: :mod:`connectors.file_sql`) that have a customer, at its first file and row, in file and
    row order: the first ``limit`` of them (a mis-mapped column of a million distinct values fetches no more), and
    how many distinct values there are. A table a file source read before ``consent_raw`` has none (its rows were
    read as ``unknown``)."""
    parts = [f"SELECT _file, _row, consent_raw FROM {v} WHERE key IS NOT NULL AND consent_raw IS NOT NULL"
             for v in views if "consent_raw" in con.table(v).columns]
    if not parts:
        return [], 0
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _fs_unread AS
        SELECT min(_file::BIGINT * 4294967296 + _row) AS first, consent_raw, count(*) AS n
        FROM ({' UNION ALL '.join(parts)}) GROUP BY consent_raw""")
    ((total,),) = con.execute("SELECT count(*) FROM _fs_unread").fetchall()
    found = con.execute(f"SELECT first, consent_raw, n FROM _fs_unread ORDER BY first LIMIT {limit}").fetchall()
    con.execute("DROP TABLE _fs_unread")
    issues = [BadRow(source=paths[at >> 32], row=at & 0xFFFFFFFF, field=FIELD, value=v,
                     reason=REASON.format(rows=counted(n, "row"))) for at, v, n in found]
    if issues:  # (the run's warnings name them: consent_lines)
        log.info("%s", consent_lines(issues)[0])
    return issues, total


def cut(issues: list[BadRow], paths: list[str], limit: int) -> list[BadRow]:
    """``issues`` in file and row order, at most ``limit``: the unread consent values' kept first (each is a
    customer taken as no; named by every run's warning), the others cut to make room."""
    unread = [b for b in issues if _unread(b)][:limit]
    others = sorted((b for b in issues if not _unread(b)), key=lambda b: (paths.index(b.source), b.row))
    return sorted(unread + others[:limit - len(unread)], key=lambda b: (paths.index(b.source), b.row))


def _count(n: int) -> str:
    """``n`` with its thousands apart: 1 000."""
    return f"{n:,}".replace(",", " ")


def _unread(b: BadRow) -> bool:
    return b.field == FIELD and b.reason.startswith(REASON[:40])


def consent_lines(pull: object) -> list[str]:
    """The warning line naming the unread consent values among a pull's issues (a list of them, or a result with
    ``issues``); none when there are none. A result whose list was cut counts them all (``consent_values``:
    :func:`consent_issues`' total); one that does not carry that count (a summary an older rfmsync saved) with
    nothing but unread values in a cut list may have more of them than it lists (they are kept first:
    :func:`cut`): the line says so (``1 000+``) instead of a count it does not know."""
    listed = pull if isinstance(pull, list) else getattr(pull, "issues", None) or []
    issues = [b for b in listed if _unread(b)]
    if not issues:
        return []
    known = getattr(pull, "consent_values", 0)
    total = max(len(issues), known)
    capped = not known and len(issues) == len(listed) < getattr(pull, "issue_count", 0)
    plus = "+" if capped else ""
    named = "; ".join(f"{b.value!r} ({b.source}, row {b.row})" for b in issues[:SHOWN])
    more = f" and {_count(total - SHOWN)}{plus} more" if total > SHOWN else ""
    return [f"{_count(total)}{plus} marketing consent value{'s' if total > 1 else ''} read neither as "
            f"yes nor as no: "
            f"{named}{more}; each is taken as no (nobody is subscribed on it, an older yes of the customer does "
            f"not count, and under new_contacts = \"skip\" he carries no managed tag): write yes or no (да / нет) "
            f"there"]
