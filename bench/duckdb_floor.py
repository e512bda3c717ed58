"""The DuckDB floors of bench/segments.py: the same metrics, scores and rules in plain DuckDB SQL over a typed read
of the clean CSV (duckdb-sql), and the same after writing the rows once to a database file (duckdb-persist)."""

from __future__ import annotations

from datetime import date
from pathlib import Path


def duckdb_floor(csv_path: Path, out_path: Path, as_of: date, preset: str,
                 persist: Path | None = None) -> dict[str, int]:
    """The least work in plain DuckDB SQL: a typed read of this clean file, the same metrics, tie-aware scores
    and preset rules, COPY to Parquet. No column mapping, no checks (bad rows, repeated ids, statuses), no contact
    details, no summary, no falling-asleep boundary: what rfmsync adds on top of the engine it runs on.

    ``persist`` (the duckdb-persist row): the typed rows are first written once to a new database file there
    (in any order, as rfmsync writes its store) and checkpointed; the metrics then read that table. The least a
    cold run that keeps the export costs."""
    from datetime import timedelta

    import duckdb

    from segmentation import SegmentationConfig
    from segmentation.engine import resolve_rules

    rules = resolve_rules(SegmentationConfig(preset=preset), {"recency_days", "frequency", "monetary"})
    n_levels = rules.levels
    con = duckdb.connect()
    con.execute("SET checkpoint_threshold = '1TB'")  # as rfmsync's throw-away connection: no compression passes
    src = (f"read_csv('{csv_path}', header=true, types={{'order_id': 'VARCHAR', 'customer_id': 'VARCHAR',"
           f" 'ordered_at': 'TIMESTAMP', 'amount': 'DECIMAL(18,2)', 'status': 'VARCHAR'}})")
    if persist is not None:
        for p in (persist, persist.with_suffix(".duckdb.wal")):
            p.unlink(missing_ok=True)
        con = duckdb.connect(str(persist))
        con.execute("SET preserve_insertion_order = false")
        con.execute(f"CREATE TABLE orders AS SELECT * FROM {src}")
        con.execute("CHECKPOINT")
        src = "orders"
    n = con.execute(f"""CREATE TEMP TABLE m AS SELECT customer_id,
            DATE '{as_of}' - CAST(max(ordered_at) FILTER (WHERE status = 'completed') AS DATE) AS recency_days,
            count(*) FILTER (WHERE status = 'completed') AS frequency,
            CAST(coalesce(sum(amount) FILTER (WHERE status = 'completed'), 0)
                 - coalesce(sum(abs(amount)) FILTER (WHERE status = 'refunded'), 0) AS DECIMAL(18,2)) AS monetary
        FROM {src} WHERE ordered_at < TIMESTAMP '{as_of + timedelta(days=1)}' AND status IN ('completed', 'refunded')
        GROUP BY customer_id HAVING count(*) FILTER (WHERE status = 'completed') > 0""").fetchall()[0][0]

    def score(col: str, order: str) -> str:
        return f"least({n_levels}, 1 + ((rank() OVER (ORDER BY {col} {order}) - 1) * {n_levels}) // {n})"

    con.execute(f"""CREATE TEMP TABLE s AS SELECT *, r::VARCHAR || f::VARCHAR || m::VARCHAR AS rfm,
                           {rules.case_sql} AS segment
                    FROM (SELECT *, {score('recency_days', 'DESC')} AS r, {score('frequency', 'ASC')} AS f,
                                 {score('monetary', 'ASC')} AS m FROM m)""")
    con.execute(f"COPY (SELECT * FROM s ORDER BY customer_id) TO '{out_path}' (FORMAT PARQUET)")
    return {k: v for k, v in con.execute("SELECT segment, count(*) FROM s GROUP BY segment").fetchall()}
