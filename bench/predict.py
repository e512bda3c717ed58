"""BG/NBD fit + predict: rfmsync (numpy/scipy) against lifetimes' BetaGeoFitter on the same simulated customers.

Customers are drawn from BG/NBD at the CDNOW parameters (r=.2426, α=4.4136, a=.7929, b=2.4259, weeks) with a
seeded numpy generator; every customer is observed for ``--T`` weeks (39, as in FHL 2005). "Predict" = P(alive)
plus expected purchases over the next 13 weeks for every customer. lifetimes is slow, so by default it runs on the
first ``--lifetimes-customers`` customers and its time is also shown scaled linearly to the full size.

    python bench/predict.py                               # 1M customers, lifetimes on 200k
    python bench/predict.py --lifetimes-customers 1000000 # lifetimes on all of them
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from segmentation.btyd import simulate_bgnbd  # noqa: E402
from segmentation.btyd_models import expected_purchases, fit_bgnbd, p_alive  # noqa: E402

CDNOW = (0.2426, 4.4136, 0.7929, 2.4259)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--lifetimes-customers", type=int, default=200_000, help="0 skips lifetimes")
    ap.add_argument("--T", type=float, default=39.0, help="observation length in weeks")
    ap.add_argument("--seed", type=int, default=2005)
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    T = np.full(args.customers, args.T)
    t0 = time.perf_counter()
    x, tx = simulate_bgnbd(*CDNOW, T, rng)
    print(f"simulated {args.customers:,} customers in {time.perf_counter() - t0:.2f} s "
          f"({np.mean(x > 0):.1%} repeat buyers, {x.sum():,} repeat purchases)")

    t0 = time.perf_counter()
    bg = fit_bgnbd(x, tx, T)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    alive, expected = p_alive(bg, x, tx, T), expected_purchases(bg, 13.0, x, tx, T)
    pred_s = time.perf_counter() - t0
    rows = [("rfmsync", args.customers, fit_s, pred_s, (bg.r, bg.alpha, bg.a, bg.b))]

    k = min(args.lifetimes_customers, args.customers)
    if k:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from lifetimes import BetaGeoFitter

            t0 = time.perf_counter()
            lbg = BetaGeoFitter().fit(x[:k], tx[:k], T[:k])
            lfit_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            lbg.conditional_probability_alive(x[:k], tx[:k], T[:k])
            lbg.conditional_expected_number_of_purchases_up_to_time(13.0, x[:k], tx[:k], T[:k])
            lpred_s = time.perf_counter() - t0
        rows.append(("lifetimes 0.11.3", k, lfit_s, lpred_s, tuple(lbg.params_)))
        t0 = time.perf_counter()
        ours_k = fit_bgnbd(x[:k], tx[:k], T[:k])
        rows.append(("rfmsync (same subsample)", k, time.perf_counter() - t0, float("nan"),
                     (ours_k.r, ours_k.alpha, ours_k.a, ours_k.b)))

    print(f"\n{'engine':<26} {'customers':>10} {'fit s':>8} {'predict s':>10}   recovered (r, alpha, a, b)")
    for name, n, f, p, prm in rows:
        ps = "-" if np.isnan(p) else f"{p:.2f}"
        print(f"{name:<26} {n:>10,} {f:>8.2f} {ps:>10}   " + ", ".join(f"{v:.4f}" for v in prm))
    print(f"{'true':<26} {'':>10} {'':>8} {'':>10}   " + ", ".join(f"{v:.4f}" for v in CDNOW))
    if k:
        scaled = (rows[1][2] + rows[1][3]) * args.customers / k
        print(f"\nlifetimes fit+predict scaled to {args.customers:,}: ~{scaled:.1f} s; "
              f"rfmsync {fit_s + pred_s:.2f} s; ratio ~{scaled / (fit_s + pred_s):.1f}x "
              f"(same {k:,}: {(rows[1][2]) / rows[2][2]:.1f}x on the fit)")
    print(f"mean P(alive) {alive.mean():.4f}, expected purchases in 13 weeks {expected.sum():,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
