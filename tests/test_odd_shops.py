"""A shop's odd data through the predictions: figures that have no value are null, never NaN in the JSON."""

from __future__ import annotations

import csv
import json
from datetime import timedelta

import numpy as np
from click.testing import CliRunner

from sync.cli import main
from tests.test_warnings import NEWEST, write_shop


def _strict(text: str) -> dict:
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_every_repeat_buyer_on_the_same_number_of_days_gives_no_correlation_not_nan(tmp_path):
    """A young shop whose repeat buyers all bought on exactly three days: corr(frequency, spend) has no value, and
    numpy's NaN (with its RuntimeWarning on stderr) was written as ``NaN`` into predict's JSON, which no strict
    parser reads. (Two days each was the shop here until the BG/NBD fit of such a shop was refused: when nobody
    buys on a third day the fit runs off to "every repeat buyer drops out", and no spend model follows.)"""
    cfg = write_shop(tmp_path / "shop")
    rng = np.random.default_rng(0)
    rows = [["order_id", "ordered_at", "customer_id", "email", "amount"]]
    for i in range(300):  # first orders over 400 days; every other customer comes back twice; spend varies
        first = NEWEST - timedelta(days=int(rng.integers(30, 400)))
        later = sorted(rng.choice(np.arange(1, (NEWEST - first).days + 1), size=2, replace=False).tolist())
        days = [first] + ([first + timedelta(days=int(d)) for d in later] if i % 2 == 0 else [])
        level = rng.gamma(3, 10)
        rows += [[f"o{i}-{k}", day.isoformat(), f"c{i}", f"c{i}@example.org", f"{rng.gamma(4, level / 4) + 1:.2f}"]
                 for k, day in enumerate(days)]
    with (tmp_path / "shop" / "orders.csv").open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    as_of = (NEWEST + timedelta(days=1)).isoformat()
    result = CliRunner().invoke(main, ["predict", "--config", str(cfg), "--as-of", as_of, "--format", "json"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = _strict(result.stdout)
    assert out["repeat_customers"] == 150 and out["gamma_gamma"]["p"] is not None, out["reason"]
    assert out["gamma_gamma"]["corr_frequency_spend"] is None
    assert "RuntimeWarning" not in result.stderr
