"""The bad-row report, counts and warnings of a file source's last staging, kept in the order store for the warm run
(:mod:`sync.store.files`): a run that reads the files from the store says what the run that read them said (a
repeated order id, a receipt total repeated on its lines: the data still hold them)."""

from __future__ import annotations

import json

import duckdb

from connectors.file_staging import FilePullResult
from connectors.identity import IdentityReport, SharedIdentifier
from connectors.records import BadRow

FILES_TABLE = "ingest_files"
BAD_TABLE = "ingest_bad_rows"
SUMMARY_TABLE = "ingest_summary"


def save_report(con: duckdb.DuckDBPyConnection, result: FilePullResult, ids: dict[str, int]) -> None:
    """The staging's bad rows and cleaned values, per file and row, its counts and its warnings (read back by a warm
    run)."""
    con.execute(f"DELETE FROM {BAD_TABLE}")
    rows = [(ids[b.source], seq, kind, b.row, b.field, b.reason, b.value)
            for kind, items in (("bad", result.bad_rows), ("issue", result.issues)) for seq, b in enumerate(items)]
    if rows:
        con.executemany(f"INSERT INTO {BAD_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    ident = result.identity or IdentityReport()
    summary = {"orders": result.orders, "contacts": result.contacts, "bad_row_count": result.bad_row_count,
               "issue_count": result.issue_count, "duplicate_orders": result.duplicate_orders,
               "consent_values": result.consent_values,
               "fast_path": result.fast_path, "warnings": list(result.warnings),
               "identity": {**ident.to_json(), "ignored_count": ident.ignored_count}}
    con.execute(f"DELETE FROM {SUMMARY_TABLE}")
    con.execute(f"INSERT INTO {SUMMARY_TABLE} VALUES (?)", [json.dumps(summary)])


def read_back(con: duckdb.DuckDBPyConnection, summary: dict) -> FilePullResult:
    """The last staging's result, as the warm run reports it."""
    rows = con.execute(f"""SELECT b.kind, f.path, b.row, b.field, b.reason, b.value FROM {BAD_TABLE} b
                           JOIN {FILES_TABLE} f USING (file_id) ORDER BY b.seq""").fetchall()
    found = {"bad": [], "issue": []}
    for kind, path, row, fld, reason, value in rows:
        found[kind].append(BadRow(source=path, row=row, reason=reason, field=fld, value=value))
    ident = summary["identity"]
    identity = IdentityReport(ident["linked_rows"], ident["merged_customers"],
                              [SharedIdentifier(**s) for s in ident["ignored_identifiers"]], ident["ignored_count"])
    return FilePullResult(orders=summary["orders"], contacts=summary["contacts"], bad_rows=found["bad"],
                          bad_row_count=summary["bad_row_count"], full_refresh=True, identity=identity,
                          issues=found["issue"], issue_count=summary["issue_count"],
                          duplicate_orders=summary["duplicate_orders"], fast_path=summary["fast_path"],
                          consent_values=summary.get("consent_values", 0),  # (0: a summary saved before it)
                          warnings=list(summary.get("warnings", [])))  # (a summary saved before: staged again)


def order_files(con: duckdb.DuckDBPyConnection, order_ids: list[str]) -> dict[str, str]:
    """The file each of ``order_ids`` was read from (its path as the source names it), for the orders a file source
    stored (``orders.file_id``); an order of a CRM pull or a webhook is not in it."""
    has_files = con.execute("SELECT count(*) FROM duckdb_columns() WHERE schema_name = 'main' AND table_name = "
                            "'orders' AND column_name = 'file_id'").fetchall()[0][0]
    if not order_ids or not has_files:
        return {}
    return dict(con.execute(f"SELECT o.order_id, f.path FROM orders o JOIN {FILES_TABLE} f USING (file_id) "
                            "WHERE o.order_id IN (SELECT unnest(?::VARCHAR[]))", [order_ids]).fetchall())
