"""Summary per segment: revenue, share, customers, average check, repeat purchases, with a totals row."""

from __future__ import annotations

from decimal import Decimal

import duckdb


def summarise(con: duckdb.DuckDBPyConnection, table: str, segment_names: tuple[str, ...]) -> list[dict]:
    """One row per segment (in rule order, empty ones included) and a final ``Total`` row.

    ``avg_check`` = segment revenue / its completed orders; ``avg_repeat_purchases`` = mean of (frequency − 1);
    ``revenue_pct`` = the share of the total revenue, 0 when the total is not above zero.
    """
    rows = con.execute(f"""
        SELECT segment, count(*) AS customers, sum(monetary) AS revenue, sum(frequency) AS orders,
               avg(frequency - 1) AS avg_repeat
        FROM {table} GROUP BY segment
    """).fetchall()
    by_name = {r[0]: r for r in rows}
    total_customers = sum(r[1] for r in rows)
    total_revenue = sum((r[2] for r in rows), Decimal(0))
    total_orders = sum(r[3] for r in rows)
    names = list(segment_names) + sorted(set(by_name) - set(segment_names))

    def row(name: str, customers: int, revenue: Decimal, orders: int, avg_repeat: float | None) -> dict:
        return {
            "segment": name,
            "customers": customers,
            "customers_pct": round(100.0 * customers / total_customers, 2) if total_customers else 0.0,
            "revenue": float(round(revenue, 2)),
            # a share of a total at or below zero means nothing (a shop of refunds): 0, never -0.0 or a flipped sign
            "revenue_pct": round(100.0 * float(revenue) / float(total_revenue), 2) + 0.0 if total_revenue > 0 else 0.0,
            "avg_check": float(round(revenue / orders, 2)) if orders else 0.0,
            "avg_repeat_purchases": round(float(avg_repeat), 3) if avg_repeat is not None else 0.0,
        }

    out = []
    for name in names:
        _, customers, revenue, orders, avg_repeat = by_name.get(name, (name, 0, Decimal(0), 0, None))
        out.append(row(name, customers, revenue, orders, avg_repeat))
    total_repeat = ((total_orders - total_customers) / total_customers) if total_customers else None
    out.append(row("Total", total_customers, total_revenue, total_orders, total_repeat))
    return out
