"""A shop whose customers all buy at one steady rate (a subscription shop's regular buyers): BG/NBD's fit runs to
its limit of no heterogeneity (r, α → ∞ with the rate r/α fixed, a → 0: nobody drops out), where scipy's 2F1 of
a first parameter r + x ≥ 10⁵ is NaN. Every customer's expected purchases and CLV were left NULL, with a warning
to change the time unit (which does not help); summed as a positive series, they are the pooled rate's."""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pytest

from segmentation import btyd_models as M
from segmentation import predictive as P
from segmentation.btyd import btyd_summary
from tests.test_outliers import TRIALS, _shop
from tests.test_predictive import _expected_purchases_by_mpmath

#: the 1 ₽-trial subscription shop's fit (tests.test_outliers.TRIALS, as of 2026-01-01, in weeks)
STEADY_BG = M.BgNbdParams(17054915.0973778, 96536913.49376279, 8.85153486685869e-09, 15422.263566253718)
AS_OF = date(2026, 1, 1)


@pytest.mark.parametrize("bg", [STEADY_BG, M.BgNbdParams(1e5, 1e5 / 1.5, 8.85e-9, 15422.26),
                                M.BgNbdParams(4e8, 4e8 / 0.02, 0.3, 2.5)], ids=["the shop's", "1e5", "4e8"])
@pytest.mark.parametrize("t,x,tx,T", [(90 / 7, 8, 42.0, 46.57), (365 / 7, 9, 46.0, 52.0), (52.0, 0, 0.0, 1.0),
                                      (400.0, 3, 10.0, 20.0), (260.0, 60, 399.0, 400.0)])
def test_expected_purchases_of_a_steady_rate_fit_match_a_40_digit_reference(bg, t, x, tx, T):
    got = M.expected_purchases(bg, t, x, tx, T)
    assert np.isfinite(got) and float(got) == pytest.approx(_expected_purchases_by_mpmath(bg, t, x, tx, T), rel=1e-9)


def test_a_subscription_shop_of_regular_buyers_gets_every_prediction():
    con = _shop(TRIALS)
    report = P.predict_customers(con, AS_OF, P.PredictConfig())
    bg, gg = report.bgnbd, report.gamma_gamma
    assert bg.r > 1e5 and bg.a < 1e-6  # the limit: one rate for everyone, nobody drops out
    assert gg.q > 1e5  # the spend's limit too: every customer's orders are one mix of 1, 399 and 12 000 ₽
    assert report.reason is None
    _says_limit(report.warnings)
    out = json.loads(json.dumps(report.to_json(), allow_nan=False))
    assert np.isfinite(out["holdout"]["predicted_purchases"])
    got = con.execute("""SELECT count(*), count(p_alive), count(expected_purchases), count(churn_probability),
                         count(expected_aov), count(clv), min(expected_purchases), max(expected_purchases),
                         min(clv) / max(clv) FROM customer_predictions""").fetchall()[0]
    assert got[:6] == (300,) * 6
    s = btyd_summary(con, AS_OF, "UTC", "weeks")
    rate = s.frequency.sum() / s.T.sum()  # the pooled rate of repeat purchases a week
    assert got[6] == pytest.approx(rate * 90 / 7, rel=1e-6) and got[7] == pytest.approx(rate * 90 / 7, rel=1e-6)
    mean_spend = gg.p * gg.gamma / (gg.q - 1)
    assert float(got[8]) == pytest.approx(1, abs=1e-5)
    clv = con.execute("SELECT avg(clv) FROM customer_predictions").fetchall()[0][0]
    assert float(clv) == pytest.approx(rate * 365 / 7 * mean_spend, rel=1e-4)


#: a steady rate of 7 purchases a unit (a daily subscription in weeks): r·T/α passes 709 (exp's overflow) at T ≈ 101
DAILY_BG = M.BgNbdParams(1e6, 1e6 / 7, 1e-8, 100.0)


def _one_customer_by_mpmath(bg: M.BgNbdParams, t: float, x: int, tx: float, T: float) -> tuple[float, float, float]:
    """P(alive), P(no purchase in (T, T+t]) and the log-likelihood of one customer (FHL 2005 eq. 6) at 40 digits."""
    import mpmath as mp

    with mp.workdps(40):
        r, alpha, a, b = (mp.mpf(v) for v in (bg.r, bg.alpha, bg.a, bg.b))
        t, tx, T = mp.mpf(t), mp.mpf(tx), mp.mpf(T)
        alive = 1 / (1 + a / (b + x - 1) * ((alpha + T) / (alpha + tx)) ** (r + x)) if x > 0 else mp.mpf(1)
        none = 1 - alive + alive * ((alpha + T) / (alpha + T + t)) ** (r + x)
        lik = (mp.beta(a, b + x) / mp.beta(a, b) * mp.gamma(r + x) * alpha ** r / mp.gamma(r)
               * (1 / (alpha + T) ** (r + x) + (a / (b + x - 1) / (alpha + tx) ** (r + x) if x > 0 else 0)))
        return float(alive), float(none), float(mp.log(lik))


@pytest.mark.parametrize("x,tx,T", [(0, 0.0, 90.0), (0, 0.0, 104.0), (0, 0.0, 400.0), (0, 0.0, 5000.0),
                                    (3, 10.0, 104.0), (700, 100.0, 104.0)])
def test_a_steady_rate_fits_older_customers_get_finite_predictions(x, tx, T):
    # one-time buyers past T ≈ 101 got NaN expected purchases: 1 + 0·exp(r·log1p(T/α)) was 1 + 0·inf
    with np.errstate(all="raise"):
        got = M.expected_purchases(DAILY_BG, 52.0, x, tx, T)
    assert np.isfinite(got) and float(got) == pytest.approx(_expected_purchases_by_mpmath(DAILY_BG, 52.0, x, tx, T),
                                                           rel=1e-9, abs=1e-300)
    alive, none, lik = _one_customer_by_mpmath(DAILY_BG, 52.0, x, tx, T)
    assert float(M.p_alive(DAILY_BG, x, tx, T)) == pytest.approx(alive, rel=1e-9, abs=1e-300)
    assert float(M.prob_no_purchase(DAILY_BG, 52.0, x, tx, T)) == pytest.approx(none, rel=1e-9, abs=1e-300)
    assert M.bgnbd_log_likelihood(DAILY_BG, [x], [tx], [T]) == pytest.approx(lik, rel=1e-9)


def test_a_batch_of_steady_rate_customers_gets_each_the_number_it_gets_alone():
    """The series is summed once per distinct (x, T) (t_x does not enter it) and the entries that converged leave
    the working arrays: every customer of a batch (shared (x, T) with other t_x, repeated rows, series of a few
    and of hundreds of terms, in any order) gets bit for bit the number computed for it alone, and it is right."""
    rng = np.random.default_rng(3)
    x = rng.choice([0, 1, 8, 60, 700], 400)
    T = rng.choice([1.0, 46.57, 104.0, 400.0], 400)
    tx = np.where(x > 0, np.floor(rng.uniform(0, 1, 400) * T * 7) / 7, 0.0)
    for bg, t in ((DAILY_BG, 52.0), (STEADY_BG, 365 / 7), (STEADY_BG, np.full(400, 90 / 7))):
        got = M.expected_purchases(bg, t, x, tx, T)
        alone = [M.expected_purchases(bg, np.atleast_1d(t)[min(i, np.size(t) - 1)], x[i], tx[i], T[i])
                 for i in range(0, 400, 7)]
        assert got[::7].tobytes() == np.array(alone, dtype=np.float64).tobytes()
        assert np.isfinite(got).all()
    for i in range(0, 400, 57):
        assert got[i] == pytest.approx(_expected_purchases_by_mpmath(STEADY_BG, 90 / 7, x[i], tx[i], T[i]), rel=1e-9)


def _says_limit(warnings: tuple[str, ...]) -> None:
    """The run's one warning names the limits the fit reached and what they mean for the predictions."""
    [line] = warnings
    assert line.startswith("the predictive models reached their limit on this data: everyone buys at one rate (")
    assert line.endswith("check that the orders are the customers' real purchases (not generated, or imported on one "
                         "day), or export a longer history")


def _regular_shop(spread_hours: int, orders: int) -> "duckdb.DuckDBPyConnection":
    """300 customers, each buying exactly every 37.5 days (900 hours) from a start ``spread_hours`` after the one
    before, ``orders`` orders each (up to the as-of), at 399 or 990 in turn."""
    return _shop(f"""INSERT INTO orders SELECT 'o' || c || '-' || k, 'c' || c,
                     TIMESTAMPTZ '2024-01-01' + c * INTERVAL {spread_hours} HOUR + k * INTERVAL 900 HOUR,
                     CASE WHEN (c + k) % 2 = 0 THEN 399 ELSE 990 END, 'RUB', 'completed', NULL
                     FROM range(300) a(c), range({orders}) b(k)""")


@pytest.mark.parametrize("unit", ["weeks", "days"])
@pytest.mark.parametrize("spread, orders", [(29, 20), (24, 100), (3, 100)],
                         ids=["ran off to a boundary", "did not converge", "spend did not converge"])
def test_a_perfectly_regular_shop_gets_every_prediction(spread, orders, unit):
    """Purchase counts that vary less than any mix of Poisson rates allows (every customer every 37.5 days) have the
    model's limit for maximum: r, α → ∞ (one rate), a → 0 (nobody drops out). In a difference of gammaln near
    r = 3·10⁸ the likelihood lost 8 digits and the optimizer ran off to the box's edge ("the data do not identify
    the model") or did not converge; the spend fit (each customer's mean spend one mix of 399 and 990: q → ∞) too.
    Computed exactly, the fits reach the limit, which is a model: every customer's expected purchases are the
    pooled rate's, as for a steady-rate shop."""
    con = _regular_shop(spread, orders)
    report = P.predict_customers(con, AS_OF, P.PredictConfig(time_unit=unit))
    assert report.reason is None
    _says_limit(report.warnings)
    bg, gg = report.bgnbd, report.gamma_gamma
    assert min(bg.r, bg.alpha) > M.ONE_RATE and bg.a < 1e-6 and gg is not None
    got = con.execute("""SELECT count(*), count(p_alive), count(expected_purchases), count(churn_probability),
                         count(expected_aov), count(clv), min(expected_purchases), max(expected_purchases)
                         FROM customer_predictions""").fetchall()[0]
    assert got[:6] == (300,) * 6
    s = btyd_summary(con, AS_OF, "UTC", unit)
    per_day = s.frequency.sum() / s.T.sum() / (7 if unit == "weeks" else 1)  # the pooled rate a day
    assert got[6] == pytest.approx(per_day * 90, rel=1e-6) and got[7] == pytest.approx(per_day * 90, rel=1e-6)
    assert per_day * 37.5 == pytest.approx(1, rel=0.05)


@pytest.mark.parametrize("v", [0.3, 2.5, 999.0, 1e3, 5e4, 3e8, 4.85e8])
def test_the_likelihoods_terms_are_exact_where_gammaln_differences_lose_digits(v):
    """log Γ(v + x) − log Γ(v), ψ(v + x) − ψ(v), log B(a, v + x)/B(a, v) and −log B(u, v) against 40 digits, for the
    v of a regular shop's fit (3·10⁸: gammaln(v) is 5.6·10⁹, so its difference kept ~8 digits)."""
    import mpmath as mp

    from segmentation.rising import digamma_rising, log_beta_ratio, log_rising, neg_log_beta

    ux = np.array([0.0, 1, 2, 7, 60, 700])
    u = np.array([0.4, 6.3, 150.0, 2e3, 7e7, 3e9])
    with mp.workdps(40):
        V = mp.mpf(v)
        rising = [mp.loggamma(V + k) - mp.loggamma(V) for k in ux]
        slope = [mp.digamma(V + k) - mp.digamma(V) for k in ux]
        beta = [mp.log(mp.beta(2e-9, V + k) / mp.beta(2e-9, V)) for k in ux]
        nlb = [-mp.log(mp.beta(mp.mpf(k), V)) for k in u]
        d_u = [mp.digamma(k + V) - mp.digamma(k) for k in u]
        d_v = [mp.digamma(k + V) - mp.digamma(V) for k in u]
    value, _, d_b = log_beta_ratio(2e-9, v, ux)
    for got, want in ((log_rising(v, ux), rising), (digamma_rising(v, ux), slope), (value, beta),
                      *zip(neg_log_beta(u, v), (nlb, d_u, d_v))):
        np.testing.assert_allclose(got, np.array(want, dtype=np.float64), rtol=2e-12, atol=1e-11)


def _discounted_clv_by_mpmath(bg: M.BgNbdParams, x: int, tx: float, T: float, rate: float) -> float:
    """A year's CLV of one unit of spend, discounted monthly (weeks), from 40-digit expected purchases."""
    month, total, before = M.DAYS_PER_MONTH / 7, 0.0, 0.0
    for end in np.minimum(np.arange(1, 13) * month, 365 / 7):
        now = _expected_purchases_by_mpmath(bg, end, x, tx, T)
        total, before = total + (now - before) / (1 + rate) ** (end / month), now
    return total


@pytest.mark.parametrize("bg", [DAILY_BG, STEADY_BG, M.BgNbdParams(1e6, 1e6, 1e-8, 100.0)],
                         ids=["7 a week", "the shop's", "1 a week"])
def test_a_steady_rate_fits_discounted_clv_is_exact_on_a_grid(bg):
    """Discounted CLV sums the 2F1 series of every month end; summed in logs, every term's log carried the rounding
    of the logs before it: a year's CLV was up to 5.7·10⁻¹² off 40 digits (the shop's fit; 10⁻¹² at 7 a week, 7·10⁻¹³
    at 1 a week), summed as doubles 3·10⁻¹² (10⁻¹³, 5·10⁻¹⁴): the rest is the formula's, whose expected purchases
    are 1 − a term near 1 (an error of 10⁻¹⁵ in the series' log is ~10⁻¹² of them). Each month end's expected
    purchases are, bit for bit, those of a call for that month alone."""
    x = np.array([0, 1, 8, 60, 300, 700, 3, 40])
    T = np.array([1.0, 46.57, 104.0, 104.0, 90.0, 104.0, 30.0, 8.0])
    tx = np.where(x > 0, np.floor(T * 6) / 7, 0.0)
    got = M.clv(bg, np.ones(x.size), x, tx, T, 365 / 7, M.DAYS_PER_MONTH / 7, 0.01)
    want = [_discounted_clv_by_mpmath(bg, int(x[i]), tx[i], T[i], 0.01) for i in range(x.size)]
    np.testing.assert_allclose(got, want, rtol=4e-12)
    ends = np.minimum(np.arange(1, 13) * M.DAYS_PER_MONTH / 7, 365 / 7)
    together = M.expected_purchases(bg, ends[:, None], x, tx, T)
    alone = np.array([M.expected_purchases(bg, end, x, tx, T) for end in ends])
    assert together.tobytes() == alone.tobytes()
