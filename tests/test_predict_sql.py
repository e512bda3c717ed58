"""The predictions computed per distinct summary and joined back in DuckDB equal the per-customer numbers; the
holdout check and its per-group aggregates (the report's chart) come from one pass and add up.

The oracle in each test is the per-customer computation the code did before: ``btyd_summary`` (one row per
customer) and the numpy model functions evaluated customer by customer.
"""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pytest

from segmentation import btyd_models as M
from segmentation import predictive as P
from segmentation.btyd import btyd_summary
from segmentation.holdout import HOLDOUT_GROUPS
from tests.test_predictive import CAL_END, HOLDOUT_END, _synthetic_shop, cdnow  # noqa: F401  (fixture)


def test_spend_clv_and_churn_risk_in_sql_equal_the_per_customer_numbers(cdnow):
    cfg = P.PredictConfig(holdout_days=0)
    report = P.predict_customers(cdnow, HOLDOUT_END, cfg)
    bg, gg = report.bgnbd, report.gamma_gamma
    s = btyd_summary(cdnow, HOLDOUT_END, "UTC", "weeks")
    got = cdnow.sql("""SELECT customer_id, churn_probability, churn_risk, expected_aov::DOUBLE AS aov,
                              clv::DOUBLE AS clv FROM customer_predictions ORDER BY customer_id""").fetchnumpy()
    assert list(got["customer_id"]) == s.customer_id.to_pylist()
    aov = M.expected_aov(gg, s.frequency, s.monetary)
    value = M.clv(bg, aov, s.frequency, s.recency, s.T, 365 / 7, (365.25 / 12) / 7)
    np.testing.assert_allclose(got["aov"], np.round(aov, 2), atol=0.0051)
    np.testing.assert_allclose(got["clv"], np.round(value, 2), atol=0.0051)
    assert value.max() > 100 and np.abs(got["clv"] - value).max() <= 0.005 + 1e-9
    want_risk = M.churn_risk(got["churn_probability"], cfg.churn_risk_cut_points)
    assert list(got["churn_risk"]) == list(want_risk) and set(want_risk) == {"low", "medium", "high"}


def test_undiscounted_clv_is_the_sum_of_the_monthly_steps(cdnow):
    s = btyd_summary(cdnow, CAL_END, "UTC", "weeks")
    bg, month = M.fit_bgnbd(s.frequency, s.recency, s.T), 4.345
    steps, prev = np.zeros(len(s)), np.zeros(len(s))
    for end in np.arange(1, 13) * month:
        cum = M.expected_purchases(bg, end, s.frequency, s.recency, s.T)
        steps, prev = steps + (cum - prev), cum
    np.testing.assert_allclose(M.clv(bg, 2.0, s.frequency, s.recency, s.T, 12 * month, month), 2.0 * steps,
                               rtol=1e-12)


def test_holdout_groups_add_up_to_the_check_and_equal_the_per_customer_numbers(cdnow):
    report = P.predict_customers(cdnow, HOLDOUT_END, P.PredictConfig(holdout_days=273))
    hold, groups = report.holdout, report.holdout_groups
    assert hold["customers"] == 2357 and hold["actual_purchases"] == 1882
    assert hold["correlation"] == pytest.approx(0.626, abs=1e-3)  # FHL 2005
    assert [g["repeat_purchases"] for g in groups] == list(range(HOLDOUT_GROUPS + 1))
    assert sum(g["customers"] for g in groups) == hold["customers"]
    assert sum(g["actual"] for g in groups) == hold["actual_purchases"]
    assert sum(g["predicted"] for g in groups) == pytest.approx(hold["predicted_purchases"], rel=1e-12)
    assert "groups" not in report.to_json()["holdout"]  # the chart's data stay out of `predict --format json`

    # the per-customer computation the report used to redo: calibration summary, expectation, days after
    cal = btyd_summary(cdnow, CAL_END, "UTC", "weeks")
    bg = M.BgNbdParams(*(hold["bgnbd"][k] for k in ("r", "alpha", "a", "b")))
    predicted = M.expected_purchases(bg, 273 / 7, cal.frequency, cal.recency, cal.T)
    later = dict(cdnow.execute("""SELECT customer_id, count(DISTINCT ordered_at::DATE) FROM orders
                                  WHERE ordered_at::DATE > ? GROUP BY 1""", [CAL_END]).fetchall())
    actual = np.array([later.get(c, 0) for c in cal.customer_id.to_pylist()])
    assert hold["correlation"] == pytest.approx(float(np.corrcoef(predicted, actual)[0, 1]), rel=1e-9)
    group = np.minimum(cal.frequency, HOLDOUT_GROUPS)
    for g in groups:
        mine = group == g["repeat_purchases"]
        assert g["customers"] == mine.sum() and g["actual"] == actual[mine].sum()
        assert g["predicted"] == pytest.approx(predicted[mine].sum(), rel=1e-9)


def test_holdout_without_purchases_in_the_window_has_no_correlation():
    """Nobody bought after the calibration end (an export that stops early): the totals are there, the
    correlation is None rather than NaN (a constant series has none)."""
    con = _synthetic_shop(200)  # orders up to 2025-02-04
    as_of = date(2025, 2, 4) + timedelta(days=120)
    report = P.predict_customers(con, as_of, P.PredictConfig(holdout_days=90))
    hold = report.holdout
    assert hold["calibration_end"] == "2025-03-06" and hold["customers"] == 200
    assert hold["actual_purchases"] == 0 and hold["predicted_purchases"] > 0
    assert hold["correlation"] is None
    assert sum(g["actual"] for g in report.holdout_groups) == 0
