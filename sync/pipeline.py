"""Load a source, segment, predict, write per-customer files (the steps under :mod:`sync.api`).

``compute_segments(cfg)`` is what ``rfmsync segments``, ``plan`` and ``report`` run; every command reads the
orders from the order store (:func:`store_path`). A file source is brought up to date first, reading only
its new and changed files (:mod:`sync.store.files`; ``reread`` reads them all, ``verify`` hashes them whole);
API sources are read from the store as ``rfmsync pull`` left it.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable
from zoneinfo import ZoneInfo

import duckdb
from pydantic import ValidationError

from connectors.errors import ConfigError as SourceConfigError
from connectors.counts import counted
from connectors.file_consent import consent_lines
from connectors.records import BadRow
from connectors.source import PullResult, Source
from connectors.tables import unchanged_staged
from segmentation import SegmentationConfig, SegmentationResult, run_segmentation
from segmentation.as_of import before_orders_line, future_line
from segmentation.purchase_days import PurchaseDays
from segmentation.metrics import NegativeRevenue
from segmentation.outliers import outlier_amounts, outlier_line
from segmentation.scoring import RecencyCollapse
from segmentation.warmup import MODEL_MODULES, PREDICTION_MODULES, import_in_background

from . import progress as steps
from .config import Config, format_validation_error
from .errors import ConfigError
from .guards import RECENCY_ADVICE, recency_collapse_text
from .stale import stale_warning  # (re-exported: the callers' import)
from .planning.values import PREDICTIVE_VALUES
from .store import connect_store, merge_staged
from .store.deletes import unstored_tombstones
from .store.day_cache import building_purchase_days, valid_purchase_days
from .store.facts import order_facts
from .store.file_report import order_files
from .store.fit_cache import StoreFits, StoreNumbers
from .store.rfm_totals import rfm_totals
from .store.files import file_lines, ingest_files
from .store.accounts import check_account, note_account
from .store.gone import SweepLimit, empty_gone, note_sources
from .store.key_rules import key_rules_notice, mark_key_rules

if TYPE_CHECKING:
    from .settings import Settings

log = logging.getLogger(__name__)

BASE_COLUMNS = ["customer_id", "email", "phone", "recency_days", "frequency", "monetary", "r", "f", "m", "rfm",
                "segment"]
PREDICTION_COLUMNS = ["p_alive", "expected_purchases", "churn_risk", "clv", "next_order_date", "next_order_reason"]


def configured_source(cfg: Config, settings: Settings | None = None) -> Source:
    """The config's ``[source]``, built by :func:`connectors.registry.build_source` with the config's [http]
    retry budget (API sources); a bad ``[source]`` table is a :class:`ConfigError` naming the config file."""
    from connectors.registry import build_source

    kind = cfg.source.get("type", "file")
    try:
        if kind == "file":
            return build_source(cfg.source, base_dir=cfg.base_dir, settings=settings)
        from .config import http_settings  # [http] timeouts and retry budget for the CRM client
        from .settings import load_settings

        settings = settings or load_settings()  # only API sources have secrets to read
        return build_source(cfg.source, base_dir=cfg.base_dir, settings=settings,
                            retry=http_settings(cfg.http, None, settings).retry_policy())
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, cfg.path, prefix="source")) from None
    except SourceConfigError as exc:
        raise ConfigError(str(exc)) from None


def is_file_source(cfg: Config) -> bool:
    return cfg.source.get("type", "file") == "file"


def store_path(cfg: Config) -> Path:
    return Path(cfg.store.orders) if cfg.store.orders and Path(cfg.store.orders).is_absolute() \
        else cfg.base_dir / (cfg.store.orders or "rfmsync.duckdb")


@dataclass(frozen=True)
class Reading:
    """How a file source is read into the store: ``reread`` every file, ``verify`` unchanged-looking files by
    a hash of their whole content (``--reread``, ``--verify``)."""

    reread: bool = False
    verify: bool = False


def pull_into(con: duckdb.DuckDBPyConnection, source: Source, cursor: str | None = None,
              progress: Callable[[int], None] | None = None,
              before_merge: Callable[[PullResult], None] | None = None, reading: Reading = Reading(),
              sweep_limit: SweepLimit = SweepLimit()) -> PullResult:
    """Pull from the source and merge the staged rows into ``con``'s tables (a file source: only the files
    new or changed since the last pull, :mod:`sync.store.files`). An API source's whole read (cursor None) empties
    the contacts of it its list no longer shows, within ``sweep_limit`` (:mod:`sync.store.gone`).

    ``before_merge`` sees the staged pull first and may raise to leave the store untouched (the guards)."""
    from connectors.files import FileSource

    try:
        with steps.step("reading files" if source.name == "file" else f"pulling {source.name}",
                        unit="records") as advance:
            if isinstance(source, FileSource):  # (every file is read under the keys' rules: FORMAT)
                pulled = ingest_files(con, source, reread=reading.reread, verify=reading.verify,
                                      before_merge=before_merge, progress=_both(progress, advance)).pull
                mark_key_rules(con)
                return pulled
            started = datetime.now(timezone.utc)  # what it reads is at least this new (its cursor's bound)
            check_account(con, source)  # a store is one account's (store/accounts.py)
            result = source.pull(con, cursor, progress=_both(progress, advance))
    except SourceConfigError as exc:
        raise ConfigError(str(exc)) from None
    # tombstones of orders never stored are read, not stored: the counts (CLI, run history, guards) leave them out
    result.unstored_orders = unstored_tombstones(con)
    result.orders -= result.unstored_orders
    if cursor is not None:  # an incremental pull counts what is new or changed, not its lookback's re-reads
        result.incremental = not result.full_refresh
        result.unchanged_orders, result.unchanged_contacts = unchanged_staged(con)
        result.orders -= result.unchanged_orders
        result.contacts -= result.unchanged_contacts
    if cursor is None:  # the whole contact list read: the contacts it no longer shows are gone (store/gone.py)
        empty_gone(con, result, source.name, sweep_limit)
    if before_merge is not None:
        before_merge(result)
    merge_staged(con, result, max_identity_group=source.max_identity_group, pulled_at=started,
                 after_link=lambda linked: (note_sources(linked, source.name), note_account(linked, source)))
    if cursor is None:  # the whole source read (a first pull, --full): its keys follow this release's rules
        mark_key_rules(con)
    return result


def _both(first: Callable[[int], None] | None, second: Callable[[int], None]) -> Callable[[int], None]:
    """A caller's page callback and the progress step's, both told each page."""
    if first is None:
        return second

    def both(n: int) -> None:
        first(n)
        second(n)

    return both


@dataclass
class SegmentsRun:
    con: duckdb.DuckDBPyConnection
    result: SegmentationResult
    pull: PullResult | None
    config: Config
    #: segmentation.predictive.PredictReport when computed. With ``join_predictions=False`` the run's
    #: ``customer_lifecycle`` and ``customer_predictions`` may be views over the store's kept totals: read them
    #: before anything writes to the store on this connection, or they show the new totals
    predictions: Any = None
    extra: dict = field(default_factory=dict)
    #: plain-language warnings raised while loading and segmenting (stale data, unfitted models, ...):
    #: printed on stderr and carried as ``warnings`` in every JSON output
    warnings: list[str] = field(default_factory=list)

    @property
    def bad_rows(self) -> list[BadRow]:
        return self.pull.bad_rows if self.pull else []

    @property
    def bad_row_count(self) -> int:
        return self.pull.bad_row_count if self.pull else 0

    def to_json(self) -> dict:
        out = self.result.to_json(bad_rows=self.bad_row_count)
        if self.pull is not None and self.pull.identity is not None:  # one customer per person (file sources)
            out["identity"] = self.pull.identity.to_json()
        out["warnings"] = list(self.warnings)
        return out

    def close(self) -> None:
        self.con.close()


def today_in(timezone: str) -> date:
    """The as-of rule of every command and job: a date not given is today in the config's timezone."""
    return datetime.now(ZoneInfo(timezone)).date()


def rules_need_predictions(seg: SegmentationConfig) -> bool:
    """Whether a custom segment rule refers to a predictive or behavioural field."""
    return any(any(n in pat for n in PREDICTIVE_VALUES) for r in seg.rules for pat in r.match)


def compute_segments(cfg: Config, as_of: date | None = None, *, preset: str | None = None,
                     con: duckdb.DuckDBPyConnection | None = None, settings: Settings | None = None,
                     predict: bool = False, holdout: bool = False, boundary: bool = True,
                     reading: Reading = Reading(), join_predictions: bool = True) -> SegmentsRun:
    """Load the orders (a file source: ingested into the store first; API: the store), then score, segment
    and summarise. ``con``: an open store, taken as it is (nothing read into it).

    ``boundary=False`` skips the falling-asleep boundary (``result.boundary`` stays empty): the per-customer
    file does not carry it, so ``rfmsync segments --customers`` does not pay for it.

    ``join_predictions=False``: the segments table carries the predictions' columns only when a rule reads one;
    else they stay in ``customer_predictions`` (:func:`customers_relation` joins them to the rows it writes). The
    per-customer outputs and ``rfmsync predict`` read nothing else of them, and a second table of a million rows
    joined by customer id is what the segmenting step cost most with predictions."""
    as_of = as_of or today_in(cfg.timezone)
    seg_cfg = cfg.segmentation.model_copy(update={"preset": preset}) if preset else cfg.segmentation
    pull = None
    predicting = predict or rules_need_predictions(seg_cfg)
    own_store = con is None  # a store this run opened: its purchase-day cache may be read and written
    if predicting:  # scipy's import overlaps the queries before the fits (opening the store, the export, ...);
        # a store this run opened may hold the model's numbers of this very run: their modules wait for a miss
        import_in_background(*(m for m in PREDICTION_MODULES if not (own_store and m in MODEL_MODULES)))
    if con is None:
        path = store_path(cfg)
        if not is_file_source(cfg) and not path.exists():
            raise ConfigError(f"the order store {path} is empty: run `rfmsync pull` first")
        con = connect_store(path)
        if is_file_source(cfg):
            try:
                pull = pull_into(con, configured_source(cfg, settings), reading=reading)
            except BaseException:
                con.close()
                raise
    report = None
    extra = None
    # one scan of the orders for both kept tables' checks (the purchase days' and the RFM totals')
    facts = order_facts(con, days=predicting or boundary) if own_store else None
    segmented: list[SegmentationResult] = []
    outliers = outlier_amounts(con, as_of, cfg.timezone)  # amounts far beyond the usual check (the spend fit's too)

    def segment(days: PurchaseDays | None) -> None:
        with steps.step("segmenting"):
            # a store this run opened keeps its per-customer totals between runs (sync.store.rfm_totals)
            totals = rfm_totals(con, as_of, cfg.timezone, facts) if own_store else None
            segmented.append(run_segmentation(con, seg_cfg, as_of, cfg.timezone, extra_fields=extra,
                                              with_boundary=boundary, purchase_days=days, totals=totals))

    if predicting:
        pcfg = cfg.predict_config()
        if not holdout:  # the holdout refit is a fit-quality report for `rfmsync predict`, not needed to sync
            pcfg = pcfg.model_copy(update={"holdout_days": 0})
        if not own_store:  # no fits kept: this run fits, and its optimizer's import overlaps the totals' queries
            import_in_background("scipy.optimize")
        with steps.step("predicting"):
            # the store keeps the purchase days between runs (sync.store.day_cache): rebuilt when the orders moved;
            # the day table only for the boundary (the holdout reads its window of the orders beside the totals)
            # (new orders: no earlier fit matches, so the optimizer's import overlaps the totals' queries too)
            # (a cold build of the totals alone: their kept tables written beside the BG/NBD fit, which reads the
            # same totals from TEMP tables first)
            with building_purchase_days(con, cfg.timezone, days=boundary,
                                        on_orders_moved=lambda: import_in_background("scipy.optimize"),
                                        facts=facts) if own_store else nullcontext() as build:
                from segmentation.predictive import predict_customers  # (its import ran meanwhile)

                joined = join_predictions or rules_need_predictions(seg_cfg)
                # not joined into the segments table: read once or twice after (the file, predict's counts), a
                # view; and without the boundary the segments read nothing of the predictions: they are made while
                # the model's numbers are computed (numpy on a worker thread, DuckDB on this one)
                report = predict_customers(con, as_of, pcfg, timezone=cfg.timezone, keep_days=boundary,
                                           days=build.days if build else None,
                                           fits=StoreFits(con) if own_store else None, view=not joined,
                                           # a warm run's numbers: those of the last run on the same orders and config
                                           numbers=StoreNumbers(con, build.key) if build else None,
                                           outliers=outliers, writes=build.writes if build else None,
                                           meanwhile=None if joined or boundary else lambda: segment(None))
        extra = "customer_predictions" if joined else None
    if not segmented:
        days = report.purchase_days if report is not None else None
        if days is None and boundary and own_store:  # the boundary reads the store's day table when it is current
            days = valid_purchase_days(con, cfg.timezone, day_table=True, facts=facts)
        segment(days)
    result = segmented[0]
    warnings = pull_lines(pull)
    # an as-of in the future: its own line; the data are stale only if the newest order is old as of today
    today = today_in(cfg.timezone)
    warnings += [w for w in [future_line(as_of, today, cfg.timezone, con),
                             stale_warning(con, as_of, cfg.timezone, cfg.guards.stale_days, today),
                             currency_warning(con, as_of, cfg.timezone)] if w]
    warnings += list(report.warnings) if report is not None else []
    if own_store:  # once, on a store pulled under older identity keys (phones' extensions, fullwidth e-mails)
        warnings += [w for w in [key_rules_notice(con, is_file_source(cfg))] if w]
    if not result.customers:  # nobody scored: an as-of before every order says so (it printed a table of zeros)
        warnings += [w for w in [before_orders_line(con, as_of, cfg.timezone)] if w]
    if result.recency_collapse is not None:
        warnings.append(recency_warning(result.recency_collapse))
    if result.negative_revenue is not None:
        warnings.append(refunds_warning(result.negative_revenue, as_of))
    if outliers:
        warnings.append(outlier_line(outliers, cfg.timezone, order_files(con, [o.order_id for o in outliers.shown]),
                                     predicted=report is not None and report.gamma_gamma is not None,
                                     left_out=report.spend_left_out if report is not None else None,
                                     own=report.spend_own if report is not None else None))
    return SegmentsRun(con=con, result=result, pull=pull, config=cfg, predictions=report, warnings=warnings)


def pull_lines(pull: object) -> list[str]:
    """A pull's warnings: a file source's files gone or copied (:func:`~sync.store.files.file_lines`), the
    consent values it read neither as yes nor as no (:func:`~connectors.file_consent.consent_lines`), and what
    the source said (``PullResult.warnings``: a Shopify token that lists 60 days of orders only)."""
    return file_lines(pull) + consent_lines(pull) + list(getattr(pull, "warnings", None) or [])


def currency_warning(con: duckdb.DuckDBPyConnection, as_of: date, timezone: str) -> str | None:
    """A warning when the sales and refunds up to the local day ``as_of`` are in several currencies: monetary, the M
    score and the revenue columns add their amounts as one number (100 USD and 100 000 UZS make 100 100), so the
    customers of the smaller unit all look like small spenders. The usual one currency is told by the column's
    least and greatest value, which DuckDB answers from its statistics where the count by currency scans every
    order: 0.7 ms on 2 M orders of a checkpointed store, 44 ms right after an ingest of them (not checkpointed yet)."""
    least, most = con.execute("SELECT min(currency), max(currency) FROM orders").fetchall()[0]
    if least == most:
        return None
    rows = con.execute("""SELECT currency, count(*) FROM orders
                          WHERE status IN ('completed', 'refunded') AND currency IS NOT NULL
                            AND ordered_at < CAST($as_of::DATE + 1 AS TIMESTAMP) AT TIME ZONE $tz
                          GROUP BY currency ORDER BY count(*) DESC, currency LIMIT 6""",
                       {"tz": timezone, "as_of": as_of}).fetchall()
    if len(rows) < 2:
        return None
    names = ", ".join(f"{cur} {n:,}".replace(",", " ") for cur, n in rows[:5]) + (", …" if len(rows) > 5 else "")
    return (f"orders in several currencies (orders of each: {names}): monetary, the M score and the revenue "
            "columns add the amounts as if they were one currency, so the customers who pay in the smaller unit "
            "look like small spenders; export the orders converted to one currency (or one config per currency)")


def refunds_warning(negative: NegativeRevenue, as_of: date) -> str:
    """A warning when customers' refunds exceed their sales (:func:`~segmentation.metrics.negative_revenue`)."""
    value = f"{negative.monetary:,.2f}".replace(",", " ")
    who = counted(negative.customers, "customer's refunds", "customers' refunds")
    return (f"refunds exceed sales: {who} up to {as_of} exceed their sales (the "
            f"lowest: customer {negative.customer_id!r}, net revenue {value}): their monetary and avg_check are "
            "below zero, in the segments and in any destination field mapped to them, and they get the lowest M "
            "scores; refunds of sales made before the export's first day (export those sales too) or a refund's "
            "amount mistyped?")


def recency_warning(collapse: RecencyCollapse) -> str:
    """A warning when the quantile recency scores collapsed (:func:`~segmentation.scoring.recency_collapse`)."""
    return (f"recency scores collapsed: {recency_collapse_text(collapse)}: quantile scores rank customers against "
            "each other, so when most of them bought on the newest days (a shop with a week or two of history, or "
            "a date column holding the export's date) the newest buyers land in Churn and the win-back segments; "
            f"{RECENCY_ADVICE}")


def customers_relation(run: SegmentsRun) -> duckdb.DuckDBPyRelation:
    """One row per customer: contact details, metrics, scores, segment, first and last name (and predictions
    when computed)."""
    con = run.con
    cols = [c for c in BASE_COLUMNS if c not in ("email", "phone")]
    seg_cols = [r[0] for r in con.execute(f"DESCRIBE {run.result.table}").fetchall()]
    pred = [c for c in PREDICTION_COLUMNS if c in seg_cols]
    if run.predictions is not None and not pred:
        pred = PREDICTION_COLUMNS
        join_pred = "LEFT JOIN customer_predictions p USING (customer_id)"
    else:
        join_pred = ""
    select = ", ".join(["s.customer_id", "c.email", "c.phone"] + [f"s.{c}" for c in cols[1:]]
                       + ["c.first_name", "c.last_name"]
                       + [f"{'p' if join_pred else 's'}.{c}" for c in pred])
    return con.sql(f"""
        SELECT {select}
        FROM {run.result.table} s
        LEFT JOIN contacts c USING (customer_id)
        {join_pred}
        ORDER BY s.customer_id
    """)


def write_customers(run: SegmentsRun, path: str | Path) -> int:
    """Write the per-customer table as .csv, .parquet or .json (by suffix); returns the number of rows."""
    path = Path(path)
    rel = customers_relation(run)
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    target = str(path).replace("'", "''")
    run.con.register("_customers_out", rel)
    try:
        if suffix == ".csv":
            options = "HEADER, DELIMITER ','"
        elif suffix == ".parquet":
            options = "FORMAT PARQUET"
        elif suffix == ".json":
            options = "FORMAT JSON, ARRAY true"
        else:
            raise ConfigError(f"{path}: unsupported output format {suffix or '(none)'}; "
                              f"use .csv, .parquet, .json or .xlsx")
        # COPY answers with the number of rows it wrote
        return run.con.execute(f"COPY (SELECT * FROM _customers_out) TO '{target}' ({options})").fetchall()[0][0]
    finally:
        run.con.unregister("_customers_out")
