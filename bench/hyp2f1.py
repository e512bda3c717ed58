"""CPU cost of the model numbers that need 2F1 (expected purchases, CLV) on a steady-rate fit against CDNOW's.

A fit of a shop whose customers all buy at one steady rate has r and α huge (r/α the rate), and scipy's ``hyp2f1``
gives no number there: :mod:`segmentation.hypergeometric` sums the series term by term, some a·z terms (about the
purchases expected in the window: hundreds at 7 a week over a year) for every row. The run computes the numbers
once per distinct summary (x, t_x, T) in whole days (:mod:`segmentation.triples`), so the rows timed are those
distinct summaries of N customers (their count is printed), each customer of age T ≤ 104 weeks, first purchase
uniform in it, buying at the fit's rate since (Poisson). Timed: expected purchases over 90 days, and CLV over 365
days undiscounted (one call) and with ``monthly_discount_rate`` 0.01 (the 12 month ends in one call), in CPU seconds of
this process (numpy's threads included), each the fastest of ``--repeat``.

    python bench/hyp2f1.py                    # 100k and 1m customers
    python bench/hyp2f1.py --customers 1m --repeat 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] != str(ROOT):
    sys.path.insert(0, str(ROOT))

from bench.common import format_table, parse_size, size_label  # noqa: E402
from segmentation.btyd_models import DAYS_PER_MONTH, BgNbdParams, clv, expected_purchases  # noqa: E402
from segmentation.triples import distinct_triples  # noqa: E402

FITS = {
    "steady, 7/week": BgNbdParams(1e6, 1e6 / 7, 1e-8, 100.0),
    "steady, 1/week": BgNbdParams(1e6, 1e6, 1e-8, 100.0),
    "CDNOW": BgNbdParams(0.243, 4.414, 0.793, 2.426),
}


def summaries(n: int, rate: float, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct (x, t_x, T) in weeks of ``n`` customers buying ``rate`` a week (whole days, as a run's)."""
    rng = np.random.default_rng(seed)
    t_days = rng.integers(1, 729, n)
    first = np.floor(rng.uniform(0, 1, n) * t_days)
    x = rng.poisson(rate * (t_days - first) / 7)
    rec_days = np.where(x > 0, np.floor(rng.uniform(0, 1, n) ** (1 / np.maximum(x, 1)) * (t_days - first)), 0)
    x, rec, T, _ = distinct_triples(x.astype(np.int64), rec_days.astype(np.int64), (t_days - first).astype(np.int64))
    return x.astype(np.float64), rec / 7, T / 7


def cpu(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", default="100k,1m", help="comma-separated sizes (default 100k,1m)")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    rows = []
    for n in (parse_size(s) for s in args.customers.split(",")):
        for name, bg in FITS.items():
            x, tx, T = summaries(n, bg.r / bg.alpha)
            aov = np.ones(len(x))
            with np.errstate(all="ignore"):
                e = expected_purchases(bg, 90 / 7, x, tx, T)
                timed = (lambda: expected_purchases(bg, 90 / 7, x, tx, T),
                         lambda: clv(bg, aov, x, tx, T, 365 / 7, DAYS_PER_MONTH / 7),
                         lambda: clv(bg, aov, x, tx, T, 365 / 7, DAYS_PER_MONTH / 7, 0.01))
                rows.append({"n": size_label(n), "fit": name, "rows": len(x), "bad": int((~np.isfinite(e)).sum()),
                             **{k: f"{cpu(fn, args.repeat):.2f}" for k, fn in zip(("ep", "clv", "clvd"), timed)}})
            print(f"{size_label(n)} {name}: done", file=sys.stderr)
    print(format_table(rows, [("n", "customers"), ("fit", "fit"), ("rows", "distinct summaries"),
                              ("ep", "expected 90 d CPU s"), ("clv", "CLV 365 d CPU s"),
                              ("clvd", "CLV discounted CPU s"), ("bad", "non-finite")]))


if __name__ == "__main__":
    main()
