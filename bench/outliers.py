"""The outlier-amount check (:mod:`segmentation.outliers`) on a large shop: CPU seconds of ``outlier_amounts``.

A shop of ``--orders`` orders (the segments benchmark's export, :func:`bench.segments.dataset`) is loaded into a
DuckDB file in ``--workdir`` once, in two layouts: as the export comes (in time order, as the order store
holds a file source's rows) and shuffled (no zone map of ``ordered_at`` or ``amount`` narrows a scan: the worst
case). Each is timed as it is (no outlier: the median is not computed), with one order's amount replaced by a
barcode (the median and the outliers' table are computed), with two customers' orders of 10 000 times the median
(both tests trip, the amount is a price: the top of the other orders and the prices are computed, no outlier), and
as of a day mid-history. Process CPU seconds (all threads), the best of ``--repeat`` runs, and the outliers found (none in the
generated shop).

    python bench/outliers.py                      # 10 M orders
    python bench/outliers.py --orders 1m --repeat 5
"""

from __future__ import annotations

import argparse
import resource
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] != str(ROOT):
    sys.path.insert(0, str(ROOT))

from bench.common import format_table, parse_size, size_label  # noqa: E402

AS_OF = date(2026, 1, 1)
MID = date(2025, 1, 1)
BARCODE = 4_600_000_000_000


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _store(workdir: Path, orders: int, shuffled: bool) -> Path:
    import duckdb

    from bench.segments import dataset
    from connectors.tables import create_tables

    path = workdir / f"outliers-{size_label(orders)}{'-shuffled' if shuffled else ''}.duckdb"
    if path.exists():
        return path
    csv_path, _ = dataset(workdir, orders)  # the segments benchmark's export (generated once, shared)
    con = duckdb.connect(str(path))
    create_tables(con)
    order = "ORDER BY hash(order_id)" if shuffled else ""
    con.execute(f"INSERT INTO orders SELECT order_id, customer_id, ordered_at::TIMESTAMPTZ, amount, 'UZS', status, "
                f"NULL FROM read_csv('{csv_path}') {order}")
    con.execute("CHECKPOINT")
    con.close()
    return path


def measure(path: Path, repeat: int) -> list[dict]:
    import duckdb

    from segmentation.outliers import outlier_amounts

    rows = []
    con = duckdb.connect(str(path))
    try:
        median = con.execute("SELECT median(amount) FROM orders WHERE amount > 0").fetchall()[0][0]
        cases = [("as it is", AS_OF, None), ("as of mid-history", MID, None), ("one barcode", AS_OF, (BARCODE,)),
                 # 10 000 times the median on two customers' orders: both tests trip, a price, no outlier
                 ("10 000x median, a price", AS_OF, (median * 10_000, median * 10_000))]
        for name, as_of, amounts in cases:
            if amounts is not None:
                con.execute("BEGIN")
                for i, amount in enumerate(amounts):
                    con.execute(f"UPDATE orders SET amount = ? WHERE order_id = (SELECT {('min', 'max')[i]}"
                                "(order_id) FROM orders)", [amount])
            best, found = float("inf"), None
            for _ in range(repeat):
                start = _cpu()
                found = outlier_amounts(con, as_of, "UTC")
                best = min(best, _cpu() - start)
            if amounts is not None:
                con.execute("ROLLBACK")
            rows.append({"store": path.name, "case": name, "cpu_s": f"{best:.3f}", "outliers": found.orders})
    finally:
        con.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orders", default="10m", type=parse_size)
    ap.add_argument("--repeat", default=3, type=int)
    ap.add_argument("--workdir", default="/tmp/rfmsync-bench", help="where the CSVs go (shared with segments.py)")
    args = ap.parse_args(argv)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    rows = []
    for shuffled in (False, True):
        rows += measure(_store(workdir, args.orders, shuffled), args.repeat)
    print(format_table(rows, [("store", "store"), ("case", "case"), ("cpu_s", "CPU s (best)"),
                              ("outliers", "outliers")]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
