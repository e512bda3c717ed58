"""Builders for test data: canonical orders in an in-memory DuckDB."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal

import duckdb

from connectors.records import Order, OrderStatus
from connectors.tables import create_tables, stage_records
from connectors.source import PullResult

AS_OF = date(2025, 6, 30)


def customer_orders(customer_id: str, recency_days: int, frequency: int, monetary: float,
                    as_of: date = AS_OF, gap_days: int = 1) -> list[Order]:
    """``frequency`` completed orders summing to ``monetary``, the last one ``recency_days`` before as_of."""
    last = datetime.combine(as_of - timedelta(days=recency_days), time(12), tzinfo=timezone.utc)
    total = Decimal(str(monetary)).quantize(Decimal("0.01"))
    each = (total / frequency).quantize(Decimal("0.01"))
    amounts = [total - each * (frequency - 1)] + [each] * (frequency - 1)  # exact total
    return [Order(order_id=f"{customer_id}-{i}", customer_id=customer_id,
                  ordered_at=last - timedelta(days=gap_days * i), amount=amounts[i],
                  status=OrderStatus.COMPLETED) for i in range(frequency)]


def con_with(orders: list[Order], contacts=()) -> duckdb.DuckDBPyConnection:
    from sync.store import merge_staged

    con = duckdb.connect()
    create_tables(con)
    stage_records(con, orders, contacts)
    merge_staged(con, PullResult())
    return con


def con_with_customers(spec: dict[str, tuple[int, int, float]], as_of: date = AS_OF) -> duckdb.DuckDBPyConnection:
    orders = [o for cid, (r, f, m) in spec.items() for o in customer_orders(cid, r, f, m, as_of)]
    return con_with(orders)


def segments_of(con: duckdb.DuckDBPyConnection) -> dict[str, tuple[str, str]]:
    """customer_id → (rfm, segment) from the last run."""
    return {cid: (rfm, seg) for cid, rfm, seg in
            con.execute("SELECT customer_id, rfm, segment FROM customer_segments").fetchall()}


def run_cli(*args: str, code: int = 0):
    """``rfmsync ARGS`` through click's runner; asserts the exit code (the output is the message)."""
    from click.testing import CliRunner

    from sync.cli import main

    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result
