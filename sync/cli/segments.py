"""``rfmsync segments`` and ``rfmsync predict``: score, segment and predict, print or write the result."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import click

from connectors.counts import counted
from segmentation import PRESETS

from .main import as_of_option, config_option, load, reading, reading_options
from .output import (info, print_bad_rows, print_predict, print_segment_customers, print_summary, print_warnings,
                     status)


@click.command()
@config_option
@as_of_option
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default=None, help="Override [segmentation] preset.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--customers", is_flag=True,
              help="Write one row per customer to -o FILE (.csv, .parquet, .json, .xlsx; -o - writes CSV to stdout).")
@click.option("--segment", "segment", default=None, metavar="NAME",
              help="List the customers in this segment (id, name, e-mail, phone, r/f/m, monetary, last order, "
                   "churn risk, next order date).")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="--segment: how many customers to list.")
@click.option("--sort", type=click.Choice(["monetary", "recency", "clv"]), default="monetary", show_default=True,
              help="--segment: order by monetary (highest first), recency (most recent first) or clv.")
@click.option("--predict/--no-predict", "with_predictions", default=None,
              help="--customers output has the predictive fields (p_alive, churn_risk, clv, ...) unless --no-predict, "
                   "which writes the RFM columns alone (much faster on a large shop) unless a segment rule uses one.")
@click.option("--record", is_flag=True,
              help="Also record each customer's segment in the segment history (as a sync does; see rfmsync history).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Output file.")
@reading_options
def segments(config_path, as_of, preset, fmt, customers, segment, limit, sort, with_predictions, record, output,
             reread, verify):
    """Score every customer, assign segments and print the summary and the falling-asleep boundary
    (with --customers: write one row per customer to -o FILE instead, without the boundary; with --segment NAME:
    list that segment's customers)."""
    from .. import api

    cfg = load(config_path)
    if customers and not output:
        raise click.UsageError("--customers needs -o FILE (.csv, .parquet, .json or .xlsx) or -o - (CSV on stdout)")
    if customers and segment:
        raise click.UsageError("--customers and --segment are exclusive")
    listing = customers or segment is not None
    with status("Reading orders and scoring customers…"):
        # only the per-customer outputs show the fields (a rule that uses one computes them in any case)
        predict = listing and with_predictions is not False
        # (the listings read the predictions through customers_relation: not joined into the segments table)
        run = api.segments(cfg, as_of, preset=preset, predict=predict, boundary=not listing,
                           reading=reading(reread, verify), join_predictions=not listing)
    print_warnings(run.warnings)
    try:
        if record:
            _record(cfg, run, preset)
        if customers:
            n = _write_customers(run, output)
            info(f"wrote {counted(n, 'customer')} to {'stdout' if output == '-' else output}")
            print_bad_rows(run)
            return
        if segment is not None:
            _emit_segment(run, segment, limit, sort, fmt, output)
            if fmt != "json":  # (the JSON has bad_rows)
                print_bad_rows(run)
            return
        _emit_summary(run, fmt, output)
        if fmt == "csv":  # (the table says it under the boundary, the JSON in bad_rows)
            print_bad_rows(run)
    finally:
        run.close()


def _record(cfg, run, preset: str | None) -> None:
    from .. import api

    if preset and preset != cfg.segmentation.preset:
        raise click.UsageError("--record records the config's segments: drop --preset (or change the config)")
    done = api.record_history(cfg, run)
    note = (f", a new history line {done.line}: the preset or the rules changed" if done.new_line and done.line > 1
            else "")
    info(f"recorded the segments as of {run.result.as_of} in the segment history: "
         f"{counted(done.customers, 'customer')}, {done.moves} moved{note}")


def _write_customers(run, output: str) -> int:
    from ..pipeline import write_customers
    from ..segment_list import write_customers_stdout, write_customers_xlsx

    if output == "-":
        return write_customers_stdout(run)
    if Path(output).suffix.lower() == ".xlsx":
        return write_customers_xlsx(run, output)
    return write_customers(run, output)


def _emit_segment(run, segment: str, limit: int, sort: str, fmt: str, output: str | None) -> None:
    from ..segment_list import SEGMENT_COLUMNS, rows_csv, segment_customers

    rows = segment_customers(run, segment, limit=limit, sort=sort)
    if fmt == "table":
        print_segment_customers(segment, rows)
        return
    if fmt == "json":
        text = json.dumps({"segment": segment, "as_of": run.result.as_of.isoformat(), "sort": sort,
                           "customers": rows, "bad_rows": run.bad_row_count, "warnings": list(run.warnings)},
                          ensure_ascii=False, indent=2, default=str)
    else:
        text = rows_csv(rows, SEGMENT_COLUMNS)
    if output and output != "-":
        Path(output).write_text(text, encoding="utf-8")
    else:
        click.echo(text)


def _emit_summary(run, fmt: str, output: str | None) -> None:
    if fmt == "table":
        print_summary(run)
        return
    if fmt == "json":
        text = json.dumps(run.to_json(), ensure_ascii=False, indent=2)
    else:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(run.result.summary[0]))
        w.writeheader()
        w.writerows(run.result.summary)
        text = buf.getvalue()
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        click.echo(text)


@click.command()
@config_option
@as_of_option
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def predict(config_path, as_of, fmt):
    """Fit BG/NBD and Gamma-Gamma; show parameters, fit quality and churn risk per segment."""
    from .. import api

    cfg = load(config_path)
    with status("Fitting models…"):
        # the falling-asleep boundary is not part of this output (`rfmsync segments` and the report show it)
        run = api.segments(cfg, as_of, predict=True, holdout=True, boundary=False, join_predictions=False)
    print_warnings(run.warnings)
    try:
        report = run.predictions.to_json()
        report["bad_rows"] = run.bad_row_count  # (the table says it on stderr)
        report["warnings"] = list(run.warnings)  # the models' own and the run's (stale data, ...)
        # the predictions' columns are not joined into the segments table (unless a rule reads one): the two
        # columns counted here are joined instead, the cheaper of the two joins of a million customers
        dist = run.con.execute(f"""
            SELECT s.segment, p.churn_risk, count(*) FROM {run.result.table} s
            JOIN customer_predictions p USING (customer_id) GROUP BY ALL ORDER BY ALL
        """).fetchall()
        by_seg: dict = {}
        for segment, risk, n in dist:
            by_seg.setdefault(segment, {})[risk if risk is not None else "unknown"] = n
        report["churn_risk_by_segment"] = by_seg
        if fmt == "json":
            click.echo(json.dumps(report, ensure_ascii=False, indent=2, default=str))
            return
        print_bad_rows(run)
        print_predict(report)
    finally:
        run.close()


COMMANDS = [segments, predict]
