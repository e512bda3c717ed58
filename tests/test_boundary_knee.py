"""The boundary that fell back to the knee says so, in `segments` and on the report page: it is no day after which
customers rarely return (hunter 28a: "40 days of silence (P(return within 90 d) < 10%; method knee)" and "they
rarely return after day 40" while the curve never went below 41 %)."""

from __future__ import annotations

import json
from datetime import date

from sync.demodata import generate_shop
from tests.builders import run_cli

AS_OF = "2025-06-30"


def test_a_knee_boundary_is_told_as_the_knee_with_its_reason(tmp_path):
    cfg = generate_shop(tmp_path / "shop", customers=300, seed=7, as_of=date.fromisoformat(AS_OF))
    with open(cfg, "a", encoding="utf-8") as f:  # the demo shop's curve never goes below 1 %: the knee is given
        f.write("\n[segmentation.boundary]\nreturn_probability = 0.01\n")
    b = json.loads(run_cli("segments", "--config", str(cfg), "--as-of", AS_OF, "--format", "json").stdout)["boundary"]
    low = min(p["p_return"] for p in b["curve"])
    assert b["method"] == "knee" and b["days"] == b["knee_days"] and low > 0.01
    assert b["reason"].startswith("P(return within 90 days) stays above 1% (its lowest: ")
    text = run_cli("segments", "--config", str(cfg), "--as-of", AS_OF).stdout
    line = " ".join(text[text.index("Falling-asleep boundary"):].split("\n")[:3])
    line = " ".join(line.split())
    assert f"{b['days']} days of silence (the return curve's knee: P(return within 90 days) stays above 1%" in line
    assert "< 1%" not in line
    page = tmp_path / "report.html"
    run_cli("report", "--config", str(cfg), "--as-of", AS_OF, "-o", str(page))
    html = page.read_text(encoding="utf-8")
    assert "they rarely return after day" not in html
    assert (f"Remind on day {b['reminder_day']}. Day {b['days']} is the knee of the return curve, not a day after "
            "which they rarely return: the chance of buying again within 90 days never drops below 1% in the history "
            f"(its lowest: {low:.0%}).") in html
    assert f"the curve&#39;s knee: day {b['days']}" in html or f"the curve's knee: day {b['days']}" in html
