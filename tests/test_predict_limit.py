"""BG/NBD fits at the model's limit a → 0 (nobody drops out): b then plays no part in the likelihood and drifts
anywhere in the box (to 10⁸), where the general expected purchases subtract nearly equal numbers. A shop whose
customers buy at random, each with one order two days before the as-of (an import day), got expected purchases of
0.004–5.3 for customers whose due is ~0.91 each, negative CLVs and up to 180 NULLs; at that limit the predictions
are the Gamma–Poisson mix's alone: P(alive) = 1, E[purchases in t] = (r+x)/(α+T)·t."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pytest

from segmentation import btyd_models as M
from segmentation import predictive as P
from tests.test_outliers import _shop
from tests.test_predictive import _expected_purchases_by_mpmath

AS_OF = date(2026, 1, 1)
#: a fit at that limit (the review's seed 1, in weeks): a at the box's edge, b drifted to 3.9·10⁸
EDGE_BG = M.BgNbdParams(206278625.72554314, 2942459556.6499844, 2.061153622438558e-09, 386454578.45002425)


def _sparse_shop(seed: int):
    """500 customers of 70–560 days, each buying on random days at 0.007 a day, and two days before the as-of."""
    rng = np.random.default_rng(seed)
    rows, repeat, ages = [], 0, 0
    for c in range(500):
        T = int(rng.uniform(70, 560))
        start = AS_OF - timedelta(days=T)
        n = min(rng.poisson(0.007 * T), T - 2)
        days = {0} | set(rng.choice(np.arange(1, T - 1), size=n, replace=False).tolist()) | {T - 2}
        repeat, ages = repeat + len(days) - 1, ages + T
        rows += [f"('o{c}-{k}', 'c{c}', TIMESTAMPTZ '{start + timedelta(days=int(d))}', {rng.integers(20, 90)}, "
                 "'EUR', 'completed', NULL)" for k, d in enumerate(sorted(days))]
    con = _shop("CREATE TEMP TABLE unused AS SELECT 1")
    con.execute("INSERT INTO orders VALUES " + ", ".join(rows))
    return con, repeat / ages


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_fit_where_nobody_leaves_predicts_the_pooled_rate_for_everyone(seed):
    """Everyone's due is the shop's one rate × 90 days (the repeat purchases over the customers' days: ~0.91); main
    refused seed 1 (a ran off to the box) and fitted seeds 2–3 a hair inside it (a = 2.3·10⁻⁹, 0.910–0.913)."""
    con, rate = _sparse_shop(seed)
    report = P.predict_customers(con, AS_OF, P.PredictConfig())
    assert report.reason is None and report.bgnbd.a < 1e-8
    [line] = report.warnings  # the limits reached, in plain words
    assert "everyone buys at one rate" in line and "nobody leaves (p_alive is 1 for everyone" in line
    n, nulls, lo, hi, p_lo, clv_lo = con.execute(
        "SELECT count(*), count(*) - count(expected_purchases), min(expected_purchases), max(expected_purchases), "
        "min(p_alive), min(clv) FROM customer_predictions").fetchall()[0]
    assert n == 500 and nulls == 0 and p_lo == 1.0 and clv_lo > 0
    assert hi / lo < 1.001 and lo == pytest.approx(rate * 90, rel=0.01)


@pytest.mark.parametrize("b", [EDGE_BG.b, 1.0])
@pytest.mark.parametrize("t,x,tx,T", [(90 / 7, 3, 40.0, 60.0), (52.0, 0, 0.0, 10.0), (13.0, 8, 70.0, 80.0),
                                      (260.0, 1, 1.0, 79.0)])
def test_predictions_at_that_edge_match_a_40_digit_reference(b, t, x, tx, T):
    """The edge's numbers are the limit's (FHL eq. 10 at 40 digits with a = 10⁻³⁰), whatever b drifted to."""
    bg = M.BgNbdParams(EDGE_BG.r, EDGE_BG.alpha, EDGE_BG.a, b)
    limit = M.BgNbdParams(EDGE_BG.r, EDGE_BG.alpha, 1e-30, b)
    got = M.expected_purchases(bg, t, x, tx, T)
    assert float(got) == pytest.approx(_expected_purchases_by_mpmath(limit, t, x, tx, T), rel=1e-9)
    assert float(M.p_alive(bg, x, tx, T)) == 1.0
    assert float(M.clv(bg, np.ones(1), [x], [tx], [T], 52.0, 52 / 12, 0.01)[0]) > 0


def test_a_fit_where_every_repeat_buyer_leaves_is_refused_not_high_churn_for_all():
    """The other limit, a/(a+b) → 1: 100 customers of four months, every third back once 5–40 days later, none on a
    third day. The likelihood rises as the dropout after a purchase goes to 1, the optimizer stopped on the way
    (a = 39 026, b = 2.6·10⁻⁵) and every repeat buyer, those of two days ago too, got P(alive) 6·10⁻¹⁰, churn risk
    high and CLV 0, without a word. The data do not identify when customers leave: the fit is refused, with why."""
    rng = np.random.default_rng(2)
    start, rows = date(2025, 8, 1), []
    for c in range(100):
        first = start + timedelta(days=int(rng.integers(0, 110)))
        days = [first] + ([first + timedelta(days=int(rng.integers(5, 40)))] if c % 3 == 0 else [])
        rows += [f"('o{c}-{k}', 'c{c}', TIMESTAMPTZ '{d} 10:00', {rng.integers(50, 150)}, 'EUR', 'completed', NULL)"
                 for k, d in enumerate(d for d in days if d < date(2025, 12, 1))]
    con = _shop("CREATE TEMP TABLE unused AS SELECT 1")
    con.execute("INSERT INTO orders VALUES " + ", ".join(rows))
    report = P.predict_customers(con, date(2025, 12, 1), P.PredictConfig())
    assert report.bgnbd is None and "every repeat buyer drops out after his last purchase" in report.reason
    assert "no customer bought on more than 2 days" in report.reason
    [line] = report.warnings
    assert line.startswith("predictions not computed (p_alive, expected_purchases, churn_probability, churn_risk")
    assert "no customer bought on a third day: the model needs customers who buy three times" in line
    assert "time_unit" not in line and "did not converge" not in line
    assert con.execute("SELECT count(*), count(p_alive), count(churn_risk) FROM customer_predictions").fetchall() == [
        (100, 0, 0)]


@pytest.mark.parametrize("seed", [4, 10, 0])
def test_a_shop_where_nobody_bought_on_a_third_day_gets_no_fit_wherever_the_optimizer_would_stop(seed):
    """Whether b/(a+b) came out under a threshold depended on where the optimizer stopped: 2 000 customers of up to
    800 days, 60 % back once in their last 5 days: seeds 4 and 10 stopped at a ≈ 590, b ≈ 0.0017 (b/(a+b) = 3·10⁻⁶),
    not refused, every repeat buyer near P(alive) 0 (seed 0 stopped past the threshold and was refused). With no x above 1 the likelihood rises all the way to that limit:
    the fit is refused exactly then, before it runs; one customer on a third day (of weight > 0) lets it run."""
    rng = np.random.default_rng(seed)
    T = rng.integers(2, 800, 2000).astype(float)
    x = (rng.random(2000) < 0.6).astype(float)
    t_x = np.where(x > 0, T - rng.integers(0, 5, 2000).clip(max=T - 1), 0.0)
    with pytest.raises(M.FitError, match="no customer bought on more than 2 days"):
        M.fit_bgnbd(x, t_x, T)
    x[0], t_x[0] = 2.0, T[0] / 2
    with pytest.raises(M.FitError, match="cannot tell when customers leave"):
        M.fit_bgnbd(x, t_x, T, weights=np.r_[0.0, np.ones(1999)])
    try:  # (this one repeat-of-repeat buyer does not identify the model: the fit may run off to the box's edge)
        M.fit_bgnbd(x, t_x, T)
    except M.FitError as e:
        assert "cannot tell when customers leave" not in str(e)
