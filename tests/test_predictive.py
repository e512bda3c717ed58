"""BG/NBD + Gamma-Gamma: published CDNOW numbers, lifetimes as oracle, thin-data rules.

The CDNOW files are read by path from the lifetimes wheel (``import lifetimes.datasets``
needs pkg_resources) and loaded into a canonical ``orders`` table, so the whole
DuckDB summary path is exercised.
"""

from __future__ import annotations

import importlib.util
import math
import warnings
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from scipy import integrate
from scipy.special import betaln

from connectors.tables import create_tables
from segmentation import btyd_models as M
from segmentation import fit_optimizer
from segmentation import predictive as P
from segmentation.btyd import btyd_summary, simulate_bgnbd
from segmentation.errors import ThinDataError

from tests.profiles import examples

DATASETS = Path(importlib.util.find_spec("lifetimes").origin).parent / "datasets"
CAL_END, HOLDOUT_END = date(1997, 9, 30), date(1998, 6, 30)
PUBLISHED_BG = M.BgNbdParams(0.2425945, 4.4136019, 0.7929199, 2.4258881)  # CLVTools full-precision MLE


def _lifetimes():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from lifetimes import BetaGeoFitter, GammaGammaFitter
    return BetaGeoFitter, GammaGammaFitter


def load_orders(con: duckdb.DuckDBPyConnection, customer_ids, days, amounts, currency="USD") -> None:
    create_tables(con)
    tbl = pa.table({"customer_id": pa.array(customer_ids, pa.string()), "day": pa.array(days, pa.date32()),
                    "amount": pa.array(amounts, pa.float64()), "currency": pa.array([currency] * len(days))})
    con.register("_raw", tbl)
    con.execute("""INSERT INTO orders SELECT 'o' || row_number() OVER (),
                   customer_id, day::TIMESTAMPTZ, amount::DECIMAL(18,2), currency, 'completed', NULL FROM _raw""")
    con.unregister("_raw")


@pytest.fixture(scope="module")
def cdnow() -> duckdb.DuckDBPyConnection:
    rows = [line.split() for line in (DATASETS / "CDNOW_sample.txt").read_text().splitlines() if line.strip()]
    con = duckdb.connect()
    load_orders(con, [str(int(r[1])) for r in rows], [datetime.strptime(r[2], "%Y%m%d").date() for r in rows],
                [float(r[4]) for r in rows])
    return con


@pytest.fixture(scope="module")
def cal(cdnow):
    return btyd_summary(cdnow, CAL_END, "UTC", "weeks")


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return pd.read_csv(DATASETS / "cdnow_customers_summary_with_transactions.csv").set_index("ID")


def test_summary_from_raw_cdnow_matches_shipped_summary(cdnow, cal, reference):
    assert cdnow.execute("SELECT count(*), sum(amount) FROM orders").fetchall() == [(6919, Decimal("244091.94"))]
    ref = reference.loc[np.array(cal.customer_id.to_pylist(), dtype=int)]
    assert len(cal) == 2357 and cal.repeat_customers == 946
    np.testing.assert_array_equal(cal.frequency, ref["x"].to_numpy())
    np.testing.assert_allclose(cal.recency, ref["t_x"], atol=0.005 + 1e-9)  # shipped file is rounded to 2 dp
    np.testing.assert_allclose(cal.T, ref["T"], atol=0.005 + 1e-9)
    np.testing.assert_allclose(cal.monetary, ref["zbar"], atol=0.005 + 1e-9)
    summary = pd.read_csv(DATASETS / "cdnow_customers_summary.csv").set_index("ID").loc[ref.index]
    np.testing.assert_array_equal(cal.frequency, summary["frequency"].to_numpy())


def test_bgnbd_reproduces_fader_hardie_lee_2005(cal):
    bg = M.fit_bgnbd(cal.frequency, cal.recency, cal.T)
    assert (bg.r, bg.alpha, bg.a, bg.b) == pytest.approx((0.2426, 4.4136, 0.7929, 2.4259), abs=6e-5)
    assert bg.log_likelihood == pytest.approx(-9582.43, abs=0.01)
    # our likelihood at the published full-precision MLE, and the MLE is not beaten by it
    assert M.bgnbd_log_likelihood(PUBLISHED_BG, cal.frequency, cal.recency, cal.T) == pytest.approx(-9582.429, abs=1e-3)
    assert bg.log_likelihood >= M.bgnbd_log_likelihood(PUBLISHED_BG, cal.frequency, cal.recency, cal.T) - 1e-6


def test_bgnbd_published_per_customer_numbers(reference):
    x, tx, T = (reference.loc[[1, 2, 3], col].to_numpy() for col in ("x", "t_x", "T"))
    np.testing.assert_allclose(M.p_alive(PUBLISHED_BG, x, tx, T), [0.7266, 0.2122, 1.0], atol=1e-4)
    assert M.expected_purchases(PUBLISHED_BG, 39, x[0], tx[0], T[0]) == pytest.approx(1.2259, abs=1e-4)


def test_gamma_gamma_reproduces_fader_hardie_2013(cal):
    rep = cal.frequency > 0
    assert rep.sum() == 946 and cal.monetary[rep].mean() == pytest.approx(35.08, abs=0.005)
    gg = M.fit_gamma_gamma(cal.frequency, cal.monetary)
    assert (gg.p, gg.q, gg.gamma) == pytest.approx((6.25, 3.74, 15.44), abs=0.01)
    assert gg.log_likelihood == pytest.approx(-4055.92, abs=0.01)


def _fit_evaluations(caplog, fit):
    """(the fit, how many likelihood evaluations its optimizer made), from the fit's DEBUG line."""
    caplog.clear()
    with caplog.at_level("DEBUG", logger="segmentation.btyd_models"):
        got = fit()
    lines = [r.getMessage() for r in caplog.records if "likelihood evaluations" in r.getMessage()]
    assert len(lines) == 1
    return got, int(lines[0].split(": ")[1].split()[0])


def test_a_fit_stops_once_its_evaluations_only_round_and_finds_the_same_maximum(cal, caplog, monkeypatch):
    """L-BFGS-B at ftol 1e-15 spends its last line searches on points whose values differ only by rounding: the
    fit stops after a run of them (at the best point) instead of waiting for the line search to give up."""
    gg, evals = _fit_evaluations(caplog, lambda: M.fit_gamma_gamma(cal.frequency, cal.monetary))
    bg, bg_evals = _fit_evaluations(caplog, lambda: M.fit_bgnbd(cal.frequency, cal.recency, cal.T))
    monkeypatch.setattr(fit_optimizer, "STALLED_EVALUATIONS", 10**9)  # the optimizer's own stopping rules alone
    full_gg, full_evals = _fit_evaluations(caplog, lambda: M.fit_gamma_gamma(cal.frequency, cal.monetary))
    full_bg, full_bg_evals = _fit_evaluations(caplog, lambda: M.fit_bgnbd(cal.frequency, cal.recency, cal.T))
    assert evals <= full_evals - 15 and bg_evals <= full_bg_evals  # CDNOW's spend: 29 against 49
    assert (gg.p, gg.q, gg.gamma) == pytest.approx((full_gg.p, full_gg.q, full_gg.gamma), rel=1e-9)
    assert gg.log_likelihood == pytest.approx(full_gg.log_likelihood, rel=1e-14)
    assert (bg.r, bg.alpha, bg.a, bg.b) == pytest.approx((full_bg.r, full_bg.alpha, full_bg.a, full_bg.b), rel=1e-9)
    assert bg.log_likelihood == pytest.approx(full_bg.log_likelihood, rel=1e-14)


def test_predictions_agree_with_lifetimes_at_the_same_parameters(cal):
    BetaGeoFitter, GammaGammaFitter = _lifetimes()
    x, tx, T, m = cal.frequency, cal.recency, cal.T, cal.monetary
    bg, gg = M.fit_bgnbd(x, tx, T), M.fit_gamma_gamma(x, m)
    lbg = BetaGeoFitter()
    lbg.params_ = pd.Series([bg.r, bg.alpha, bg.a, bg.b], index=["r", "alpha", "a", "b"])
    lbg.predict = lbg.conditional_expected_number_of_purchases_up_to_time
    lgg = GammaGammaFitter()
    lgg.params_ = pd.Series([gg.p, gg.q, gg.gamma], index=["p", "q", "v"])
    np.testing.assert_allclose(M.p_alive(bg, x, tx, T), lbg.conditional_probability_alive(x, tx, T), atol=1e-6)
    for t in (1.0, 13.0, 39.0, 52.0):
        np.testing.assert_allclose(M.expected_purchases(bg, t, x, tx, T),
                                   lbg.conditional_expected_number_of_purchases_up_to_time(t, x, tx, T), atol=1e-6)
    aov = M.expected_aov(gg, x, m)
    np.testing.assert_allclose(aov, lgg.conditional_expected_average_profit(pd.Series(x), pd.Series(m)), atol=1e-6)
    ours = M.clv(bg, aov, x, tx, T, horizon=12 * 4.345, month=4.345, monthly_discount_rate=0.01)
    theirs = lgg.customer_lifetime_value(lbg, pd.Series(x), pd.Series(tx), pd.Series(T), pd.Series(m),
                                         time=12, discount_rate=0.01, freq="W")
    np.testing.assert_allclose(ours, theirs.to_numpy(), atol=1e-6)
    assert ours.max() > 100  # a real spread, not all zeros


def test_our_fit_and_lifetimes_fit_agree(cal):
    BetaGeoFitter, _ = _lifetimes()
    theirs = BetaGeoFitter().fit(cal.frequency, cal.recency, cal.T).params_
    ours = M.fit_bgnbd(cal.frequency, cal.recency, cal.T)
    assert (ours.r, ours.alpha, ours.a, ours.b) == pytest.approx(tuple(theirs), rel=1e-4)


def _no_purchase_by_integration(bg: M.BgNbdParams, x: int, tx: float, T: float, t: float) -> float:
    """P(no purchase in (T, T+t]) from the model's definition: integrate λ numerically, p by Beta moments."""
    beta = math.exp(betaln(bg.a, bg.b))
    stay = math.exp(betaln(bg.a, bg.b + x)) / beta  # E[(1-p)^x]
    drop = math.exp(betaln(bg.a + 1, bg.b + x - 1)) / beta if x > 0 else 0.0  # E[p (1-p)^(x-1)]

    def joint(horizon: float) -> float:  # P(history, no purchase in (T, T+horizon]) up to a constant
        def f(u: float) -> float:  # λ = u^(1/r) absorbs the Gamma density's λ^(r-1) singularity at 0
            lam = u ** (1 / bg.r)
            return math.exp(-bg.alpha * lam) * lam ** x * (
                stay * math.exp(-lam * (T + horizon)) + drop * math.exp(-lam * tx))
        return integrate.quad(f, 0, np.inf, epsabs=0, epsrel=1e-11, limit=500)[0]

    return joint(t) / joint(0.0)


@pytest.mark.parametrize("x,tx,T,t", [(2, 30.43, 38.86, 13.0), (0, 0.0, 38.86, 13.0), (7, 35.0, 39.0, 52.0),
                                      (1, 2.0, 60.0, 5.0)])
def test_prob_no_purchase_matches_the_model_definition(x, tx, T, t):
    bg = M.BgNbdParams(1.3, 4.4, 0.79, 2.43)
    closed = float(M.prob_no_purchase(bg, t, x, tx, T))
    assert closed == pytest.approx(_no_purchase_by_integration(bg, x, tx, T, t), abs=1e-8)
    assert float(M.prob_no_purchase(PUBLISHED_BG, t, x, tx, T)) == pytest.approx(
        _no_purchase_by_integration(PUBLISHED_BG, x, tx, T, t), abs=1e-8)


def test_time_to_likely_purchase_is_where_no_purchase_crosses_one_half(cal):
    x, tx, T = cal.frequency, cal.recency, cal.T
    t = M.time_to_likely_purchase(PUBLISHED_BG, x, tx, T)
    alive = M.p_alive(PUBLISHED_BG, x, tx, T)
    assert np.array_equal(np.isnan(t), alive <= 0.5)
    ok = ~np.isnan(t)
    np.testing.assert_allclose(M.prob_no_purchase(PUBLISHED_BG, t[ok], x[ok], tx[ok], T[ok]), 0.5, atol=1e-9)
    assert np.all(M.prob_no_purchase(PUBLISHED_BG, t[ok] * 0.99, x[ok], tx[ok], T[ok]) > 0.5)


def test_churn_risk_buckets_follow_the_cut_points():
    got = M.churn_risk(np.array([0.0, 0.3299, 0.33, 0.66, 0.6601, 1.0, np.nan]), (0.33, 0.66))
    assert list(got) == ["low", "low", "medium", "medium", "high", "high", None]


@settings(max_examples=examples(60), deadline=None)
@given(x=st.integers(0, 60), rec_frac=st.floats(0, 1), T=st.floats(0.1, 500), t=st.floats(0.01, 400),
       r=st.floats(0.05, 5), alpha=st.floats(0.1, 50), a=st.floats(0.05, 5), b=st.floats(0.05, 10))
def test_prediction_invariants(x, rec_frac, T, t, r, alpha, a, b):
    bg = M.BgNbdParams(r, alpha, a, b)
    tx = rec_frac * T if x else 0.0
    alive = float(M.p_alive(bg, x, tx, T))
    none = float(M.prob_no_purchase(bg, t, x, tx, T))
    assert 0.0 <= alive <= 1.0 and 1.0 - alive - 1e-12 <= none <= 1.0 + 1e-12
    if abs(a - 1) > 1e-3:
        e1, e2 = M.expected_purchases(bg, t, x, tx, T), M.expected_purchases(bg, 2 * t, x, tx, T)
        if np.isfinite(e1) and np.isfinite(e2):
            assert -1e-9 <= e1 <= e2 * (1 + 1e-9) + 1e-12


def _expected_purchases_by_mpmath(bg: M.BgNbdParams, t: float, x: int, tx: float, T: float) -> float:
    """FHL 2005 eq. 10 at 40 digits: the reference where doubles overflow or lose the sign."""
    import mpmath as mp

    with mp.workdps(40):
        r, alpha, a, b = (mp.mpf(v) for v in (bg.r, bg.alpha, bg.a, bg.b))
        t, tx, T = mp.mpf(t), mp.mpf(tx), mp.mpf(T)
        term = ((alpha + T) / (alpha + T + t)) ** (r + x) * mp.hyp2f1(r + x, b + x, a + b + x - 1, t / (alpha + T + t))
        denom = 1 + (a / (b + x - 1) * ((alpha + T) / (alpha + tx)) ** (r + x) if x > 0 else 0)
        return float((a + b + x - 1) / (a - 1) * (1 - term) / denom)


#: a + b < 1: a U-shaped dropout mix (most customers almost never leave, the rest leave at once), as a shop with
#: heavy-tailed purchase counts fits; 2F1(r, b; a + b − 1; z) of its one-time buyers is negative for large z
U_SHAPED_BG = M.BgNbdParams(0.78, 4.1, 0.14, 0.37)


@pytest.mark.parametrize("x,tx,T,t", [
    (0, 0.0, 0.5, 90 / 7), (0, 0.0, 2.0, 52.0), (0, 0.0, 57.0, 260.0),  # 2F1 < 0
    (0, 0.0, 8.0, 30.44 / 7), (0, 0.0, 57.0, 90 / 7), (1, 3.0, 57.0, 52.0), (40, 56.0, 57.0, 13.0),  # 2F1 > 0
    (500, 399.0, 400.0, 260.0), (3000, 399.9, 400.0, 52.0),  # the series overflows: Euler's transformation
])
def test_expected_purchases_is_finite_and_matches_a_40_digit_reference(x, tx, T, t):
    got = M.expected_purchases(U_SHAPED_BG, t, x, tx, T)
    assert np.isfinite(got) and got > 0
    assert float(got) == pytest.approx(_expected_purchases_by_mpmath(U_SHAPED_BG, t, x, tx, T), rel=1e-9)
    for bg in (PUBLISHED_BG, M.BgNbdParams(0.49, 17.3, 0.21, 0.52)):
        assert float(M.expected_purchases(bg, t, x, tx, T)) == pytest.approx(
            _expected_purchases_by_mpmath(bg, t, x, tx, T), rel=1e-9)


def test_one_time_buyers_of_a_u_shaped_dropout_mix_get_every_prediction():
    # the BG/NBD process with Beta(0.2, 0.5) dropout: the fit has a + b < 1, and young one-time buyers (large
    # z = t/(α+T+t)) had NaN expected purchases and CLV, so no predictions at all (270 of these 1000 customers)
    con = _synthetic_shop(1000, params=(0.8, 4.0, 0.2, 0.5))
    report = P.predict_customers(con, date(2025, 2, 4), P.PredictConfig())
    assert report.bgnbd.a + report.bgnbd.b < 1 and report.gamma_gamma is not None
    assert report.warnings == ()
    rows, empty = con.execute("""SELECT count(*), count(*) - least(count(p_alive), count(expected_purchases),
        count(churn_probability), count(churn_risk), count(expected_aov), count(clv)) FROM customer_predictions
        """).fetchall()[0]
    assert rows == 1000 and empty == 0
    s = btyd_summary(con, date(2025, 2, 4), "UTC", "weeks")
    one_time = s.frequency == 0
    table = con.sql("SELECT expected_purchases, clv FROM customer_predictions ORDER BY customer_id").fetchnumpy()
    assert np.all(table["expected_purchases"] > 0) and np.all(table["clv"] > 0)
    youngest = np.flatnonzero(one_time)[np.argsort(s.T[one_time], kind="stable")[:5]]  # the largest z
    for i in youngest:
        assert table["expected_purchases"][i] == pytest.approx(
            _expected_purchases_by_mpmath(report.bgnbd, 90 / 7, 0, 0.0, s.T[i]), rel=1e-9)


def test_fit_recovers_simulated_parameters_and_is_order_independent():
    rng = np.random.default_rng(7)
    T = rng.uniform(5, 80, 40_000)
    x, tx = simulate_bgnbd(0.5, 6.0, 0.6, 3.0, T, rng)
    bg = M.fit_bgnbd(x, tx, T)
    assert (bg.r, bg.alpha, bg.a, bg.b) == pytest.approx((0.5, 6.0, 0.6, 3.0), rel=0.15)
    perm = rng.permutation(x.size)
    again = M.fit_bgnbd(x[perm], tx[perm], T[perm])
    assert (again.r, again.alpha, again.a, again.b) == pytest.approx((bg.r, bg.alpha, bg.a, bg.b), rel=1e-6)


def test_fit_errors_are_thin_data_errors():
    with pytest.raises(ThinDataError, match="repeat buyer"):
        M.fit_bgnbd(np.zeros(100), np.zeros(100), np.full(100, 30.0))
    with pytest.raises(ThinDataError, match="recency"):
        M.fit_bgnbd([1, 2], [5.0, 50.0], [10.0, 20.0])
    with pytest.raises(ThinDataError, match="two repeat buyers"):
        M.fit_gamma_gamma([0, 1], [0.0, 10.0])


# --------------------------------------------------------------------------- predict_customers

def test_predict_customers_on_cdnow_with_holdout(cdnow):
    report = P.predict_customers(cdnow, HOLDOUT_END, P.PredictConfig(holdout_days=273))
    out = report.to_json()
    assert set(out) >= {"bgnbd", "gamma_gamma", "customers", "repeat_customers", "horizon_days",
                        "clv_horizon_days", "holdout", "reason", "churn_risk_cut_points"}
    assert set(out["bgnbd"]) >= {"r", "alpha", "a", "b", "log_likelihood", "time_unit"}
    assert set(out["gamma_gamma"]) >= {"p", "q", "gamma"}
    assert out["customers"] == 2357 and out["reason"] is None and out["churn_risk_cut_points"] == [0.33, 0.66]
    hold = out["holdout"]
    assert hold["calibration_end"] == "1997-09-30" and hold["customers"] == 2357
    assert hold["bgnbd"]["r"] == pytest.approx(0.2426, abs=1e-4)
    assert hold["correlation"] == pytest.approx(0.626, abs=1e-3)  # FHL 2005
    assert hold["actual_purchases"] == 1882 and 1500 < hold["predicted_purchases"] < 1900

    cols = dict(cdnow.execute("SELECT column_name, column_type FROM (DESCRIBE customer_predictions)").fetchall())
    assert list(cols) == ["customer_id", "p_alive", "expected_purchases", "churn_probability", "churn_risk",
                          "expected_aov", "clv", "next_order_date", "reorder_due", "avg_days_between_orders",
                          "discount_share", "discount_hunter", "favourite_category", "favourite_brand",
                          "next_order_reason"]
    assert cols["next_order_date"] == "DATE" and cols["reorder_due"] == "BOOLEAN"
    n, nulls, lo, hi = cdnow.execute("""SELECT count(*), count(*) - count(p_alive), min(churn_probability),
                                        max(churn_probability) FROM customer_predictions""").fetchall()[0]
    assert n == 2357 and nulls == 0 and 0 <= lo <= hi <= 1

    # the table's numbers are the model's numbers for the full-history summary
    s = btyd_summary(cdnow, HOLDOUT_END, "UTC", "weeks")
    bg = report.bgnbd
    table = cdnow.sql("SELECT p_alive, expected_purchases, churn_probability FROM customer_predictions"
                      " ORDER BY customer_id").fetchnumpy()
    np.testing.assert_allclose(table["p_alive"], M.p_alive(bg, s.frequency, s.recency, s.T), atol=1e-12)
    np.testing.assert_allclose(table["expected_purchases"],
                               M.expected_purchases(bg, 90 / 7, s.frequency, s.recency, s.T), atol=1e-12)
    np.testing.assert_allclose(table["churn_probability"],
                               M.prob_no_purchase(bg, 90 / 7, s.frequency, s.recency, s.T), atol=1e-12)


def _synthetic_shop(n: int, repeat: bool = True, days: int = 400, currencies=("EUR",),
                    as_of: date = date(2025, 2, 4), params=(0.8, 4.0, 0.8, 2.5)) -> duckdb.DuckDBPyConnection:
    """A shop whose customers follow BG/NBD (``params`` r, α per week, a, b); first orders spread over the last
    ``days`` days."""
    rng = np.random.default_rng(3)
    age = rng.integers(0, days, n)
    x, tx = simulate_bgnbd(*params, age / 7, rng)
    if not repeat:
        x[:] = 0
    cust = np.repeat(np.arange(n), x + 1)
    first = np.repeat(np.arange(n) * 0 + (x + 1).cumsum() - (x + 1), x + 1)  # row index of each first order
    offset = rng.uniform(0, 1, cust.size) * np.repeat(tx * 7, x + 1)
    offset[first == np.arange(cust.size)] = 0.0
    last = np.flatnonzero(x > 0)
    offset[(x + 1).cumsum()[last] - 1] = tx[last] * 7
    day = np.datetime64(as_of) - age[cust] + offset.astype(int)
    con = duckdb.connect()
    create_tables(con)
    con.register("_raw", pa.table({"c": [f"c{i}" for i in cust], "d": pa.array(day.astype("datetime64[D]")),
                                   "a": rng.gamma(4, 10, cust.size),
                                   "cur": [currencies[i % len(currencies)] for i in range(cust.size)]}))
    con.execute("""INSERT INTO orders SELECT 'o' || row_number() OVER (), c, d::TIMESTAMPTZ, a::DECIMAL(18,2),
                   cur, 'completed', NULL FROM _raw""")
    return con


@pytest.mark.parametrize("make,cfg,reason", [
    (lambda: _synthetic_shop(12), {}, "BG/NBD not fitted: only 12 customers with a completed order (need 50)"),
    (lambda: _synthetic_shop(80, repeat=False), {}, "BG/NBD not fitted: only 0 repeat customers (need 10)"),
    (lambda: _synthetic_shop(80, days=30), {}, "BG/NBD not fitted: only"),
    (lambda: _synthetic_shop(80, repeat=False), {"min_repeat_customers": 2, "min_customers": 2},
     "BG/NBD not fitted: only 0 repeat customers (need 2)"),
])
def test_thin_data_leaves_model_fields_null_with_a_reason(make, cfg, reason):
    con = make()
    report = P.predict_customers(con, date(2025, 2, 4), P.PredictConfig(**cfg))
    out = report.to_json()
    assert out["reason"].startswith(reason) and "\n" not in out["reason"]
    assert out["bgnbd"]["r"] is None and out["gamma_gamma"]["p"] is None
    rows, model = con.execute("""SELECT count(*), count(p_alive) + count(expected_purchases) + count(churn_risk)
                                 + count(clv) + count(expected_aov) FROM customer_predictions""").fetchall()[0]
    assert rows == out["customers"] > 0 and model == 0
    assert "reason" in out["holdout"]


def test_spend_model_needs_one_currency():
    con = _synthetic_shop(200, currencies=("EUR", "USD"))
    out = P.predict_customers(con, date(2025, 2, 4), P.PredictConfig()).to_json()
    assert out["bgnbd"]["r"] is not None and out["gamma_gamma"]["p"] is None
    assert "Gamma-Gamma not fitted: spend model needs one currency" in out["reason"] and "EUR, USD" in out["reason"]
    assert con.execute("SELECT count(p_alive), count(clv) FROM customer_predictions").fetchall()[0] == (200, 0)


@pytest.mark.parametrize("later", [[], ["USD"], ["USD", "GBP"]])
def test_spend_model_counts_the_currencies_up_to_as_of(later):
    """Orders in other currencies after as_of (a later export read with an earlier --as-of) do not stop the
    spend model; none at all is one currency too (the config's, or none given)."""
    con = _synthetic_shop(200)
    for i, cur in enumerate(later):
        con.execute("INSERT INTO orders VALUES (?, 'c1', TIMESTAMPTZ '2025-03-01 12:00:00+00', 10, ?, "
                    "'completed', NULL)", [f"late{i}", cur])
    out = P.predict_customers(con, date(2025, 2, 4), P.PredictConfig()).to_json()
    assert out["gamma_gamma"]["p"] is not None and out["reason"] is None


def test_holdout_needs_enough_calibration_history():
    con = _synthetic_shop(200)
    out = P.predict_customers(con, date(2025, 2, 4), P.PredictConfig(holdout_days=380)).to_json()
    assert out["reason"] is None
    assert out["holdout"]["reason"].startswith("calibration period: only")
    assert P.predict_customers(con, date(2025, 2, 4), P.PredictConfig(holdout_days=0)).holdout == {
        "reason": "disabled (holdout_days = 0)"}


def test_config_is_strict():
    cfg = P.PredictConfig()
    assert (cfg.horizon_days, cfg.clv_horizon_days, cfg.time_unit, cfg.churn_risk_cut_points) == (
        90, 365, "weeks", (0.33, 0.66))
    with pytest.raises(ValidationError, match="horizon"):
        P.PredictConfig(horizon=30)
    with pytest.raises(ValidationError, match="0 < low < high < 1"):
        P.PredictConfig(churn_risk_cut_points=(0.7, 0.2))
    with pytest.raises(ValidationError):
        P.PredictConfig(time_unit="months")


def test_days_and_weeks_give_the_same_predictions(cdnow):
    weeks = P.predict_customers(cdnow, CAL_END, P.PredictConfig(holdout_days=0))
    w = cdnow.sql("SELECT p_alive, clv FROM customer_predictions ORDER BY customer_id").fetchnumpy()
    days = P.predict_customers(cdnow, CAL_END, P.PredictConfig(holdout_days=0, time_unit="days"))
    d = cdnow.sql("SELECT p_alive, clv FROM customer_predictions ORDER BY customer_id").fetchnumpy()
    assert days.bgnbd.alpha == pytest.approx(weeks.bgnbd.alpha * 7, rel=1e-4)
    assert days.to_json()["bgnbd"]["time_unit"] == "days"
    np.testing.assert_allclose(d["p_alive"], w["p_alive"], atol=1e-4)
    np.testing.assert_allclose(d["clv"].astype(float), w["clv"].astype(float), atol=0.02)


def test_distinct_triples_rebuild_every_row_from_distinct_ones():
    from segmentation.triples import distinct_triples

    rng = np.random.default_rng(3)
    x = rng.integers(0, 4, 5000).astype(float)
    tx = np.where(x == 0, 0.0, rng.integers(0, 30, 5000) / 7)
    T = rng.integers(0, 60, 5000) / 7
    T[7] = np.nan  # a NaN matches nothing, itself included
    ux, utx, uT, inv = distinct_triples(x, tx, T)
    rows = list(zip(x, tx, T))
    assert len(ux) == len({r for r in rows if not np.isnan(r[2])}) + 1 < len(x)  # + the NaN row
    np.testing.assert_array_equal(ux[inv], x)
    np.testing.assert_array_equal(utx[inv], tx)
    np.testing.assert_array_equal(uT[inv], T)
    keys = list(zip(ux, utx, uT))
    assert len(set(k for k in keys if not np.isnan(k[2]))) == sum(1 for k in keys if not np.isnan(k[2]))


# --------------------------------------------------------------------------- next_order_date horizon, warnings

def test_model_next_order_date_beyond_horizon_is_null_on_cdnow(cdnow):
    """The issue's numbers: as of 1997-09-30, 1 598 of 2 357 customers got a model date more than a year ahead
    (every one-time buyer, P(alive) = 1); with horizon_days = 365 they are NULL, P(alive) etc. unchanged."""
    report = P.predict_customers(cdnow, CAL_END, P.PredictConfig(holdout_days=0, horizon_days=365))
    assert report.next_order_beyond_horizon == 1598 and report.to_json()["next_order_beyond_horizon"] == 1598
    assert report.warnings == ()  # a documented rule, not a warning: the reason is in the column
    rows = cdnow.execute("""SELECT count(*), count(*) FILTER (WHERE next_order_reason = 'beyond_horizon'),
                                   count(*) FILTER (WHERE next_order_date > DATE '1997-09-30' + 365),
                                   count(*) FILTER (WHERE l.purchase_days = 1 AND next_order_date IS NOT NULL),
                                   count(*) FILTER (WHERE next_order_date IS NULL AND next_order_reason IS NULL)
                            FROM customer_predictions JOIN customer_lifecycle l USING (customer_id)""").fetchall()
    assert rows == [(2357, 1598, 0, 0, 0)]
    s = btyd_summary(cdnow, CAL_END, "UTC", "weeks")
    alive = cdnow.sql("SELECT p_alive FROM customer_predictions ORDER BY customer_id").fetchnumpy()["p_alive"]
    np.testing.assert_allclose(alive, M.p_alive(report.bgnbd, s.frequency, s.recency, s.T), atol=1e-12)
    assert (report.bgnbd.r, report.bgnbd.a) == pytest.approx((0.2426, 0.7929), abs=6e-5)


def test_one_time_buyers_get_no_next_order_date_repeat_buyers_with_a_short_cycle_keep_it():
    as_of = date(2025, 2, 4)
    con = _synthetic_shop(600, as_of=as_of, params=(0.25, 4.4, 0.8, 2.4))  # CDNOW-like: most buy once
    extra = [("one-a", as_of - timedelta(days=1)), ("one-b", as_of - timedelta(days=30)),
             ("short", as_of - timedelta(days=14)), ("short", as_of - timedelta(days=7)),  # one gap of 7 days
             ("gaps", as_of - timedelta(days=402)), ("gaps", as_of - timedelta(days=202)),  # own median gap: 200
             ("gaps", as_of - timedelta(days=2))]
    con.executemany("INSERT INTO orders VALUES (?, ?, ?::TIMESTAMPTZ, 20, 'EUR', 'completed', NULL)",
                    [(f"x{i}", cid, day) for i, (cid, day) in enumerate(extra)])
    report = P.predict_customers(con, as_of, P.PredictConfig(holdout_days=0))
    assert report.bgnbd is not None
    got = {r[0]: r[1:] for r in con.execute("""SELECT customer_id, next_order_date, next_order_reason, p_alive
        FROM customer_predictions WHERE customer_id IN ('one-a', 'one-b', 'short', 'gaps')""").fetchall()}
    for one in ("one-a", "one-b"):
        assert got[one][0] is None and got[one][1] == "beyond_horizon" and got[one][2] == 1.0
    assert got["short"][1] is None and as_of < got["short"][0] <= as_of + timedelta(days=90)
    assert got["gaps"][:2] == (as_of - timedelta(days=2) + timedelta(days=200), None)  # not model-based: kept
    assert report.next_order_beyond_horizon >= 2
    # the rule, not the model, is what empties them: with a longer horizon they get their (far) model date
    P.predict_customers(con, as_of, P.PredictConfig(holdout_days=0, horizon_days=100_000))
    far = con.execute("SELECT next_order_date FROM customer_predictions WHERE customer_id = 'one-a'").fetchall()
    assert far[0][0] is not None and far[0][0] > as_of + timedelta(days=90)


def test_unfitted_models_give_a_plain_warning_with_what_to_change():
    one_time = P.predict_customers(_synthetic_shop(80, repeat=False), date(2025, 2, 4), P.PredictConfig())
    [line] = one_time.warnings
    assert "only 0 repeat customers (need 10); no repeat buyers: the models learn from customers who bought " \
           "twice; export a longer history or lower [predict] min_repeat_customers (now 10)" in line
    assert one_time.to_json()["warnings"] == [line]
    few = P.predict_customers(_synthetic_shop(12), date(2025, 2, 4), P.PredictConfig())
    assert "too few customers to learn from" in few.warnings[0] and "min_customers (now 50)" in few.warnings[0]
    currencies = P.predict_customers(_synthetic_shop(200, currencies=("EUR", "USD")), date(2025, 2, 4),
                                     P.PredictConfig())
    assert currencies.warnings == ("spend predictions not computed (expected_aov, clv stay empty): spend model needs "
                                   "one currency, orders are in 2 (EUR, USD); the spend model adds amounts "
                                   "together; export one currency per config (one shop per currency)",)
    # its amounts are drawn alike for every customer (gamma(4, 10)): the spend fit is at its limit, and says so
    assert P.predict_customers(_synthetic_shop(200), date(2025, 2, 4), P.PredictConfig()).warnings == (
        "the predictive models reached their limit on this data: one mean spend (expected_aov is the same for every "
        "customer: his own orders' amounts do not move it); check that the orders are the customers' real purchases "
        "(not generated, or imported on one day), or export a longer history",)


def test_fit_errors_map_to_advice():
    from segmentation.fitnotes import from_fit_error

    for message in ("BG/NBD optimizer did not converge: ABNORMAL", "BG/NBD parameters ran off to a boundary "
                                                                   "(the data do not identify the model)"):
        note = from_fit_error(message)
        assert note.kind == "did_not_converge" and str(note) == message
        assert "did not converge" in note.advice and 'time_unit = "days"' in note.advice
    assert from_fit_error("Gamma-Gamma q = 0.800 ≤ 1: expected spend is undefined").kind == "spend"
    for message in ("Gamma-Gamma optimizer did not converge: ABNORMAL", "Gamma-Gamma parameters ran off to a "
                                                                       "boundary (the data do not identify the model)"):
        note = from_fit_error(message)
        assert note.kind == "did_not_converge" and "time_unit" not in note.advice
        assert "the spend model learns how mean spend varies between customers" in note.advice


def test_a_spend_model_that_does_not_converge_gets_advice_true_for_it():
    """A shop of one price (every order 100.00: a subscription box) leaves the spend model nothing to learn and it
    runs off to a boundary; the advice named [predict] time_unit, which the spend model does not read (changing it
    changes nothing), and now says what it saw and what to check."""
    con = _synthetic_shop(300)
    con.execute("UPDATE orders SET amount = 100")
    report = P.predict_customers(con, date(2025, 2, 4), P.PredictConfig(holdout_days=0))
    assert report.bgnbd is not None and report.gamma_gamma is None
    [line] = report.warnings
    assert "time_unit" not in line
    single = con.execute("SELECT count(*) FILTER (WHERE monetary = 100) / count(*) FROM customer_lifecycle "
                         "WHERE purchase_days > 1").fetchall()[0][0]
    assert line.startswith("spend predictions not computed (expected_aov, clv stay empty): Gamma-Gamma parameters "
                           "ran off to a boundary (the data do not identify the model); the spend model learns how "
                           "mean spend varies between customers, and the repeat buyers' mean spend per purchase day "
                           f"runs from 100.00 to 200.00, {single * 100:.0f} % of them exactly 100.00: one price for "
                           "everything (a subscription box, a fixed fee) leaves it nothing to learn")
    assert line.endswith("check that the [source] amount column holds each order's amount, or export a longer "
                         "history (more repeat buyers)")
    in_days = P.predict_customers(con, date(2025, 2, 4), P.PredictConfig(holdout_days=0, time_unit="days"))
    assert in_days.gamma_gamma is None  # (the advice it gave: changing time_unit does not help)


@pytest.mark.parametrize("case", ["sorted", "sorted by x only", "sorted with a NaN", "sorted but the last row"])
def test_distinct_triples_of_rows_in_order_equal_those_of_the_same_rows_shuffled(case):
    """Rows that come sorted (the holdout's ORDER BY) skip the sort; rows that only look sorted do not."""
    from segmentation.triples import distinct_triples

    rng = np.random.default_rng(5)
    x, tx, T = (rng.integers(0, k, 3000).astype(float) for k in (4, 20, 40))
    order = np.lexsort((T, tx, x)) if case != "sorted by x only" else np.argsort(x, kind="stable")
    x, tx, T = x[order], tx[order], T[order]
    if case == "sorted with a NaN":
        T[100] = np.nan
    if case == "sorted but the last row":
        x[-1] = 0.0
    shuffle = rng.permutation(len(x))
    got, want = distinct_triples(x, tx, T), distinct_triples(x[shuffle], tx[shuffle], T[shuffle])
    for a, b in zip(got[:3], want[:3]):
        np.testing.assert_array_equal(a, b)
    for u, col in zip(got[:3], (x, tx, T)):
        np.testing.assert_array_equal(u[got[3]], col)


def test_predictions_as_a_view_equal_the_table():
    """`segments --customers` and `predict` read customer_predictions as a view (computed when read, over the
    model's numbers kept in a table), plan and sync as a table: every column the same, and the report (the count
    beyond the horizon is counted on the distinct summaries); one connection may switch between the two."""
    as_of = date(2025, 2, 4)
    con = _synthetic_shop(800, as_of=as_of, params=(0.25, 4.4, 0.8, 2.4))  # most buy once: many beyond
    cfg = P.PredictConfig(holdout_days=60, churn_risk_cut_points=(0.1 + 0.2, 2 / 3))  # no exact decimal literal
    seen = {}
    for view in (True, False, True):
        report = P.predict_customers(con, as_of, cfg, view=view)
        assert report.bgnbd is not None and report.gamma_gamma is not None
        assert con.execute("SELECT count(*) FROM duckdb_views() WHERE view_name = 'customer_predictions'"
                           ).fetchall() == [(int(view),)]
        rows = con.execute("SELECT * FROM customer_predictions ORDER BY customer_id").fetchall()
        beyond = con.execute("SELECT count(*) FROM customer_predictions WHERE next_order_reason = 'beyond_horizon'"
                             ).fetchall()[0][0]
        assert report.next_order_beyond_horizon == beyond > 0
        assert len(rows) == report.customers and {r[4] for r in rows} >= {"low", "medium", "high"}
        seen.setdefault(view, (rows, report.to_json()))
    assert seen[True] == seen[False]


def test_a_shop_of_one_customer_is_told_in_the_singular():
    from segmentation import fitnotes

    assert str(fitnotes.too_few_customers(1, 50)) == "only 1 customer with a completed order (need 50)"
    assert str(fitnotes.too_few_customers(12, 50)) == "only 12 customers with a completed order (need 50)"
