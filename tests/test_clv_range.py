"""A customer's clv past DECIMAL(18, 2) (16 digits before the point): left empty with a warning naming the
customer and the field, never an internal error (hunter 28a: orders of 3–4e14 passed the RFM step's guard and
`segments --customers` exited 70 "Conversion Error: Could not cast value … to DECIMAL(18,2)")."""

from __future__ import annotations

import json
import random
from datetime import date, timedelta

from tests.builders import run_cli


def test_a_clv_past_sixteen_digits_is_left_empty_and_named(tmp_path):
    rng = random.Random(11)
    lines = ["order_id,customer_id,ordered_at,amount,status"]
    for i in range(80):
        for j in range(rng.choice([1, 2, 5, 10, 20, 24])):
            day = date(2025, 1, 1) + timedelta(days=rng.randint(0, 180))
            lines.append(f"{i}-{j},c{i},{day},{rng.randint(3 * 10**14, 4 * 10**14)}.00,completed")
    (tmp_path / "orders.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "rfmsync.toml").write_text(
        '[source]\ntype = "file"\norders = "orders.csv"\ntimezone = "UTC"\ncurrency = "USD"\n[source.columns]\n'
        + "".join(f'{c} = "{c}"\n' for c in ("order_id", "customer_id", "ordered_at", "amount", "status"))
        + '[segmentation]\npreset = "tracks"\n', encoding="utf-8")
    out = tmp_path / "customers.json"
    result = run_cli("segments", "--customers", "-o", str(out), "--predict", "--as-of", "2025-06-30",
                     "--config", str(tmp_path / "rfmsync.toml"))
    rows = json.loads(out.read_text(encoding="utf-8"))
    empty = [r for r in rows if r["clv"] is None]
    assert len(rows) == 80 and 0 < len(empty) < 80
    assert all(r["clv"] < 1e16 for r in rows if r["clv"] is not None)
    assert all(r["p_alive"] is not None and r["expected_purchases"] is not None for r in empty)  # only clv empty
    line = next(w for w in result.stderr.splitlines() if "clv left empty" in w)
    assert line.startswith(f"warning: clv left empty for {len(empty)} customers: the expected spend over "
                           "clv_horizon_days has more than 16 digits before the decimal point (the largest: customer 'c")
    assert line.endswith("not a real check (ids or phone numbers in the amount column?): fix the amounts in the export")
