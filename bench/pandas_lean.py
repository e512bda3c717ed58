"""The lean pandas reference of bench/segments.py: ``read_csv`` → parse → filter → ``groupby`` per customer → the
same tie-aware quantile scores (``rank(method="min")``, rfm-models.md §4.3/§6) → the same preset rules →
``to_parquet``. It trusts the file (no checks, no order ids, no summary). :mod:`bench.pandas_checked` reuses its
scores and rules."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

_DIGIT_CODE = re.compile(r"^[0-9Xx*?]{3}$")
_LETTER_TOKEN = re.compile(r"(FM|R|F|M)(\d)(?:-(?:FM|R|F|M)?(\d))?")


def _rule_mask(pattern: str, r, f, m, levels: int):
    """A preset pattern (digit code ``4X4`` or letter code ``R2F3``, ``F1-F2``, ``R5FM4``) as a boolean Series."""
    import numpy as np

    p = pattern.strip()
    if _DIGIT_CODE.match(p):
        mask = np.ones(len(r), dtype=bool)
        for col, ch in zip((r, f, m), p):
            if ch not in "Xx*?":
                mask &= (col == int(ch)).to_numpy()
        return mask
    cols = {"R": r, "F": f, "M": m, "FM": np.floor((f + m) / 2.0 + 0.5).astype("int64")}
    mask, pos = np.ones(len(r), dtype=bool), 0
    for tok in _LETTER_TOKEN.finditer(p.upper()):
        if tok.start() != pos:
            break
        lo, hi = int(tok.group(2)), int(tok.group(3) or tok.group(2))
        mask &= cols[tok.group(1)].between(lo, hi).to_numpy()
        pos = tok.end()
    if pos != len(p) or pos == 0:
        raise ValueError(f"pandas reference: unsupported pattern {pattern!r} (score codes only)")
    return mask


def tie_aware_scores(values, levels: int, worse_is_larger: bool):
    """1 + floor(N × w / n), w = customers with a strictly worse value; ties share a score."""
    import numpy as np

    worse = values.rank(method="min", ascending=not worse_is_larger).to_numpy(dtype=np.int64) - 1
    return np.minimum(levels, 1 + (worse * levels) // len(values))


def scored_metrics(last, frequency, monetary, as_of: date, levels: int):
    """Per customer (the Series' shared index): recency_days, frequency, monetary (2 dp) and tie-aware r, f, m."""
    import pandas as pd

    out = pd.DataFrame({
        "recency_days": (pd.Timestamp(as_of) - last.dt.normalize()).dt.days.astype("int64"),
        "frequency": frequency.astype("int64"),
        "monetary": monetary.round(2),
    }, index=last.index)
    out["r"] = tie_aware_scores(out["recency_days"], levels, worse_is_larger=True)
    out["f"] = tie_aware_scores(out["frequency"], levels, worse_is_larger=False)
    out["m"] = tie_aware_scores(out["monetary"], levels, worse_is_larger=False)
    return out


def pandas_segments(csv_path: Path, out_path: Path, as_of: date, preset: str, engine: str = "c") -> dict[str, int]:
    """The straightforward pandas version of ``rfmsync segments``; returns {segment: customers}."""
    import numpy as np
    import pandas as pd

    from segmentation.rules import PRESETS

    rules = PRESETS[preset]
    levels = rules.levels
    df = pd.read_csv(csv_path, usecols=["customer_id", "ordered_at", "amount", "status"], engine=engine)
    ts = pd.to_datetime(df["ordered_at"], format="%Y-%m-%d %H:%M:%S")
    keep = (ts < pd.Timestamp(as_of) + pd.Timedelta(days=1)) & df["status"].isin(["completed", "refunded"])
    df, ts = df[keep], ts[keep]
    sale = df["status"] == "completed"
    work = pd.DataFrame({
        "customer_id": df["customer_id"],
        "sale": sale.astype("int64"),
        "sales": df["amount"].where(sale, 0.0),
        "refunds": df["amount"].abs().where(~sale, 0.0),
        "last": ts.where(sale),
    })
    g = work.groupby("customer_id", sort=False).agg(frequency=("sale", "sum"), sales=("sales", "sum"),
                                                    refunds=("refunds", "sum"), last=("last", "max"))
    g = g[g["frequency"] > 0]
    out = scored_metrics(g["last"], g["frequency"], g["sales"] - g["refunds"], as_of, levels)
    out["rfm"] = out["r"].astype(str) + out["f"].astype(str) + out["m"].astype(str)
    conds, names = [], []
    for name, patterns in rules.rules:
        mask = np.zeros(len(out), dtype=bool)
        for pat in patterns:
            mask |= _rule_mask(pat, out["r"], out["f"], out["m"], levels)
        conds.append(mask)
        names.append(name)
    out["segment"] = np.select(conds, names, default=rules.default) if conds else rules.default
    out = out.reset_index().sort_values("customer_id")
    out.to_parquet(out_path, index=False)
    counts = out["segment"].value_counts()
    return {str(k): int(v) for k, v in counts.items()}
