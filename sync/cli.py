"""The ``rfmsync`` command line: a thin layer over :mod:`sync.pipeline` and the sync engine.

Errors are converted here only: one clear line on stderr, exit code by kind (see :mod:`sync.errors`);
``-v`` adds the traceback.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
import traceback
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from connectors.errors import ConnectorError, ConfigError as SourceConfigError
from segmentation import PRESETS, SegmentationError

from .cli_output import print_warnings
from .console import SafeConsole, styled, visible
from .errors import INTERNAL_EXIT, ConfigError, DataError, RfmsyncError

log = logging.getLogger("rfmsync")
_WIDTH = None if sys.stdout.isatty() else 120  # pipes and files get full rows, not an 80-column wrap
# User text (paths, headers, values, names) is printed literally: no markup, control characters made visible.
out = SafeConsole(soft_wrap=True, width=_WIDTH)
err = SafeConsole(stderr=True, soft_wrap=True, width=_WIDTH)


def _exit_code(exc: BaseException) -> int:
    if isinstance(exc, RfmsyncError):
        return exc.exit_code
    if isinstance(exc, (SourceConfigError, SegmentationError)):
        return ConfigError.exit_code
    if isinstance(exc, ConnectorError):
        return DataError.exit_code
    return INTERNAL_EXIT


class RfmsyncGroup(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as exc:  # the one place errors become exit codes
            verbose = (ctx.obj or {}).get("verbose", 0)
            code = _exit_code(exc)
            try:
                if verbose:
                    traceback.print_exc()
                kind = "internal error" if code == INTERNAL_EXIT else "error"
                _print_error(kind, _message(exc))
                if code == INTERNAL_EXIT and not verbose:
                    err.print("(run with -v for details)")
            except Exception:  # printing the error must not become a traceback of its own
                pass
            ctx.exit(code)


def _message(exc: BaseException) -> str:
    try:
        return str(exc) or type(exc).__name__
    except Exception:
        return type(exc).__name__


def _print_error(kind: str, msg: str) -> None:
    """``kind: msg`` on stderr, the message literally (control characters as visible escapes)."""
    try:
        err.print(Text.assemble(styled(f"{kind}:", "bold red"), " ", visible(msg)), highlight=False)
    except Exception:  # e.g. a stderr that cannot encode the text: fall back to plain ASCII escapes
        line = f"{kind}: {visible(msg)}\n"
        sys.stderr.write(line.encode("ascii", "backslashreplace").decode("ascii"))


config_option = click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
                             help="Config file (default: $RFMSYNC_CONFIG, else ./rfmsync.toml).")
as_of_option = click.option("--as-of", type=click.DateTime(formats=["%Y-%m-%d"]), default=None,
                            help="Compute as of this date (YYYY-MM-DD; default today).")


@click.group(cls=RfmsyncGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More output; -v shows tracebacks, -vv debug logs.")
@click.version_option(package_name="rfmsync")
@click.pass_context
def main(ctx: click.Context, verbose: int) -> None:
    """rfmsync: RFM customer segments from your orders, kept in sync with your email platform."""
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    if verbose:
        logging.basicConfig(level=logging.DEBUG if verbose > 1 else logging.INFO,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from .settings import warn_unknown_variables

    warn_unknown_variables()  # MAILCHIMP_KEY and the like: a warning naming the expected variable


@contextmanager
def _status(message: str):
    if sys.stdout.isatty():
        with err.status(message):
            yield
    else:
        yield


def _load(config_path):
    from .config import load_config

    return load_config(config_path)


def _money(x: float) -> str:
    return f"{x:,.2f}".replace(",", " ")


def print_summary(run, title: str | None = None) -> None:
    res = run.result
    table = Table(title=title or f"RFM segments as of {res.as_of} — preset {res.preset}, {res.method} scoring, "
                                 f"{res.levels} levels")
    for col, justify in (("Segment", "left"), ("Customers", "right"), ("% cust.", "right"), ("Revenue", "right"),
                         ("% rev.", "right"), ("Avg check", "right"), ("Avg repeat", "right")):
        table.add_column(col, justify=justify)
    for r in res.summary:
        style = "bold" if r["segment"] == "Total" else None
        table.add_row(r["segment"], f"{r['customers']:,}".replace(",", " "), f"{r['customers_pct']:.1f}",
                      _money(r["revenue"]), f"{r['revenue_pct']:.1f}", _money(r["avg_check"]),
                      f"{r['avg_repeat_purchases']:.2f}", style=style)
    out.print(table)
    b = res.boundary
    if b:
        if b.get("days") is not None:
            out.print(Text.assemble(
                "Falling-asleep boundary: ", styled(f"{b['days']} days", "bold"),
                f" of silence (P(return within {b['window_days']} d) < {b['return_probability']:.0%}; "
                f"method {b['method']}); suggested reminder on day ", styled(b["reminder_day"], "bold"), "."))
        else:
            out.print(f"Falling-asleep boundary: not computed ({b.get('reason')}).")
        if b.get("gap_percentiles"):
            out.print("Days between purchases: " + ", ".join(f"{k} {v}" for k, v in b["gap_percentiles"].items()))
    if run.bad_row_count:
        out.print(Text.assemble(styled(f"{run.bad_row_count} bad rows were left out", "yellow"),
                                " (see `rfmsync check`)."))


@main.command()
@config_option
@as_of_option
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default=None, help="Override [segmentation] preset.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--customers", is_flag=True, help="Write one row per customer to -o FILE (.csv, .parquet, .json).")
@click.option("--predict/--no-predict", "with_predictions", default=None,
              help="--customers output has the predictive fields (p_alive, churn_risk, clv, ...) unless --no-predict, "
                   "which writes the RFM columns alone (much faster on a large shop) unless a segment rule uses one.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None, help="Output file.")
def segments(config_path, as_of, preset, fmt, customers, with_predictions, output):
    """Score every customer, assign segments and print the summary and the falling-asleep boundary
    (with --customers: write one row per customer to -o FILE instead, without the boundary)."""
    from .pipeline import compute_segments, write_customers

    cfg = _load(config_path)
    if customers and not output:
        raise click.UsageError("--customers needs -o FILE (.csv, .parquet or .json)")
    with _status("Reading orders and scoring customers…"):
        # only the per-customer file shows the fields (a rule that uses one computes them in any case)
        predict = customers and (with_predictions if with_predictions is not None else _predictions_available())
        run = compute_segments(cfg, as_of.date() if as_of else None, preset=preset, predict=bool(predict),
                               boundary=not customers)
    print_warnings(run.warnings)
    try:
        if customers:
            n = write_customers(run, output)
            err.print(f"wrote {n} customers to {output}")
            return
        _emit_summary(run, fmt, output)
    finally:
        run.close()


def _predictions_available() -> bool:
    try:
        import segmentation.predictive  # noqa: F401
    except ImportError:
        return False
    return True


def _emit_summary(run, fmt: str, output: str | None) -> None:
    if fmt == "table":
        print_summary(run)
        return
    if fmt == "json":
        text = json.dumps(run.to_json(), ensure_ascii=False, indent=2)
    else:
        import io

        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(run.result.summary[0]))
        w.writeheader()
        w.writerows(run.result.summary)
        text = buf.getvalue()
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        click.echo(text)


@main.command()
@config_option
@click.option("--limit", default=50, show_default=True, help="Bad rows to list.")
@click.option("--strict", is_flag=True, help="Exit 3 when any row is bad.")
@click.option("--offline", is_flag=True, help="Do not contact the ESPs: skip the destination checks.")
def check(config_path, limit, strict, offline):
    """Validate the config and the source (files or CRM credentials); list bad rows; check each destination
    read-only (credentials accepted, audience/account reachable; exit 2 when not)."""
    import duckdb

    from connectors.tables import create_tables

    from .pipeline import build_source, is_file_source

    cfg = _load(config_path)
    source = build_source(cfg)
    out.print(f"config {cfg.path}: ok")
    if not is_file_source(cfg) and hasattr(source, "check"):
        out.print(f"source {cfg.source.get('type')}: {source.check()}")
        _check_destinations(cfg, offline)
        return
    con = duckdb.connect()
    create_tables(con)
    with _status("Reading the source…"):
        result = source.pull(con, None)
    out.print(f"source {cfg.source.get('type', 'file')}: {result.orders} orders, {result.contacts} contacts, "
              f"{result.bad_row_count} bad rows")
    if result.identity is not None:
        out.print(f"  {result.identity}", highlight=False, markup=False)
    for bad in result.bad_rows[:limit]:
        out.print(f"  {bad}", highlight=False, markup=False)
    if result.bad_row_count > limit:
        out.print(f"  … and {result.bad_row_count - limit} more")
    _check_destinations(cfg, offline)
    if strict and result.bad_row_count:
        raise DataError(f"{result.bad_row_count} bad rows")
    from .guards import check_source_lines  # a sync would be refused: stop `check && sync` here

    guard_lines = check_source_lines(cfg.guards, result.orders, result.bad_row_count)
    if guard_lines:
        raise DataError("\n".join(guard_lines))


def _check_destinations(cfg, offline: bool) -> None:
    """One read-only line per destination (``Destination.check``); no writes. Exit 2 when credentials are
    rejected or the audience is missing, 4 when an ESP cannot be reached."""
    from .destinations.registry import make_destination
    from .errors import DestinationConfigError, DestinationError
    from .settings import load_settings

    if offline:
        if cfg.destinations:
            out.print("destinations: not checked (--offline)")
        return
    settings, rejected, unreachable = load_settings(), [], []
    for dest in cfg.destinations:
        label = f"destination {dest.name} ({dest.type})"
        try:
            client = make_destination(dest, settings, required=False)
            if client is None:
                out.print(f"{label}: not checked, {dest.spec.key_env} is not set", markup=False,
                          highlight=False)
                continue
            out.print(f"{label}: {client.check()}", markup=False, highlight=False)
        except DestinationConfigError as exc:
            rejected.append(dest.name)
            out.print(f"{label}: {exc}", markup=False, highlight=False)
        except DestinationError as exc:
            unreachable.append(dest.name)
            out.print(f"{label}: not reachable: {exc}", markup=False, highlight=False)
    if rejected:
        raise ConfigError(f"destination check failed: {', '.join(rejected)} (credentials or audience)")
    if unreachable:
        raise DestinationError(f"destination check failed: {', '.join(unreachable)} not reachable")


@main.command()
@click.option("--workdir", type=click.Path(file_okay=False), default="rfmsync-demo", show_default=True,
              help="Folder for the generated sample shop.")
@click.option("--customers", default=3000, show_default=True, help="Customers in the sample shop.")
@click.option("--seed", default=42, show_default=True)
def demo(workdir, customers, seed):
    """Build a realistic sample shop, segment it and show the Mailchimp dry-run plan (no account needed)."""
    from .config import load_config
    from .demodata import generate_shop
    from .pipeline import compute_segments

    path = generate_shop(Path(workdir), customers=customers, seed=seed)
    out.print(f"Sample shop written to {path.parent} (config {path}).")
    cfg = load_config(path)
    as_of = _demo_as_of(cfg)
    run = compute_segments(cfg, as_of)
    print_warnings(run.warnings)
    try:
        print_summary(run)
        for bad in run.bad_rows[:5]:
            out.print(f"  bad row: {bad}", highlight=False, markup=False)
        _demo_plan(cfg, run)
    finally:
        run.close()
    out.print(f"Next: `rfmsync segments --config {path} --format json`, "
              f"`rfmsync plan --config {path}`, `rfmsync check --config {path}`.")


def _demo_as_of(cfg) -> date | None:
    marker = cfg.base_dir / "AS_OF"
    return date.fromisoformat(marker.read_text().strip()) if marker.exists() else None


def _demo_plan(cfg, run) -> None:
    """Hook for the dry-run plan; filled in by the sync engine when present."""
    try:
        from .engine import demo_plan
    except ImportError:
        return
    demo_plan(cfg, run, out)


@main.command()
@config_option
@as_of_option
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def predict(config_path, as_of, fmt):
    """Fit BG/NBD and Gamma-Gamma; show parameters, fit quality and churn risk per segment."""
    from .pipeline import compute_segments

    cfg = _load(config_path)
    with _status("Fitting models…"):
        run = compute_segments(cfg, as_of.date() if as_of else None, predict=True, holdout=True)
    print_warnings(run.warnings)
    try:
        report = run.predictions.to_json()
        report["warnings"] = list(run.warnings)  # the models' own and the run's (stale data, ...)
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
        _print_predict(report)
    finally:
        run.close()


def _print_predict(report: dict) -> None:
    from segmentation.fitnotes import beyond_horizon_line

    bg, gg = report.get("bgnbd") or {}, report.get("gamma_gamma") or {}
    if report.get("reason"):
        out.print(Text.assemble(styled("Models not fitted:", "yellow"), " ", visible(report["reason"])))
    if bg.get("r") is not None:
        out.print(f"BG/NBD ({bg.get('time_unit')}): r={bg['r']:.4f} alpha={bg['alpha']:.4f} a={bg['a']:.4f} "
                  f"b={bg['b']:.4f} log-likelihood={bg['log_likelihood']:.2f}")
    if gg.get("p") is not None:
        out.print(f"Gamma-Gamma: p={gg['p']:.4f} q={gg['q']:.4f} gamma={gg['gamma']:.4f}")
    if report.get("next_order_beyond_horizon"):
        out.print(beyond_horizon_line(report["next_order_beyond_horizon"], report["horizon_days"]),
                  markup=False, highlight=False)
    hold = report.get("holdout")
    if hold:
        out.print(f"Holdout: {json.dumps(hold, default=str)}")
    table = Table(title="Churn risk by segment")
    risks = ["low", "medium", "high", "unknown"]
    table.add_column("Segment")
    for r in risks:
        table.add_column(r, justify="right")
    for seg, counts in report.get("churn_risk_by_segment", {}).items():
        table.add_row(seg, *[str(counts.get(r, 0)) for r in risks])
    out.print(table)


def _register() -> None:
    from .cli_serve import COMMANDS as SERVE
    from .cli_sync import COMMANDS

    for command in [*COMMANDS, *SERVE]:
        main.add_command(command)


_register()


if __name__ == "__main__":  # python -m sync.cli, like python -m sync
    main()
