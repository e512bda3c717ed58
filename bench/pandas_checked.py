"""A checked pandas baseline: the same work as ``rfmsync segments --customers -o FILE`` on a plain CSV file source.

Where :func:`bench.pandas_lean.pandas_segments` is the lean reference (it trusts the file), this version mirrors
rfmsync's checks, in idiomatic vectorised pandas (C CSV engine, five columns, no per-row Python):

1. read ``order_id, customer_id, ordered_at, amount, status``; ids and statuses as text (leading zeros kept,
   spaces trimmed, empty → missing); dates with one format, amounts with ``to_numeric`` (failures → missing);
2. statuses mapped like ``connectors.normalize.status_sql`` (empty → completed, synonyms, then stems, else
   unknown), on the distinct raw values only;
3. bad rows, first reason in ``connectors.file_staging._BAD`` order (no customer id, date, amount, unknown status,
   negative amount without a refund): the first 1000 as (row, field, reason, value), and the total count;
4. repeated order ids among the valid rows: the last row of each id wins; the dropped rows are counted;
5. per-customer metrics as of a date (segmentation/metrics.py), 6. tie-aware scores and preset rules (the
   helpers of bench/segments.py), 7. the per-segment summary (segmentation/summary.py) and 8. the Parquet file
   of ``sync.pipeline.BASE_COLUMNS`` sorted by customer id.

Dates are read in the one format of the benchmark files and amounts as plain numbers: rfmsync also reads other
date formats and "1 234,50 сум"-style amounts, which this baseline would count as bad rows.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from connectors.normalize import TRIMMED_SPACES

COLUMNS = ["order_id", "customer_id", "ordered_at", "amount", "status"]
COMPLETED, REFUNDED, CANCELLED, UNKNOWN = 0, 1, 2, -1
_CODES = {"completed": COMPLETED, "refunded": REFUNDED, "cancelled": CANCELLED}
_BAD = [("customer_id", "no customer id, valid email or phone"), ("ordered_at", "unparseable or empty date"),
        ("amount", "unparseable or empty amount"), ("status", "unknown status (map it under [source.statuses])"),
        ("amount", "negative amount without a refund status")]
MAX_BAD_ROWS = 1000
SPACES = "".join(map(chr, TRIMMED_SPACES))  # what DuckDB's trim() strips; Python's bare strip() differs
LAST_RUN: dict = {}  # details of the last run: bad_rows (the first 1000), duplicates, summary


def status_code(raw: str) -> int:
    """One raw status → its code, the rules of ``connectors.normalize.status_sql`` (empty → completed)."""
    from connectors.normalize import STATUS_STEMS, STATUS_SYNONYMS

    v = raw.strip(SPACES).lower()
    if not v:
        return COMPLETED
    if v in STATUS_SYNONYMS:
        return _CODES[STATUS_SYNONYMS[v]]
    return next((_CODES[st] for stem, st in STATUS_STEMS.items() if v.startswith(stem)), UNKNOWN)


def _text(s):
    """Trimmed text, empty → missing (like ``connectors.normalize.text_sql``)."""
    s = s.str.strip(SPACES)
    return s.mask(s == "")


def summary(out, names: tuple[str, ...]) -> list[dict]:
    """Rows of segmentation/summary.py: each segment in rule order (empty ones too), extra ones, and Total."""
    import pandas as pd

    g = out.groupby("segment").agg(customers=("frequency", "size"), revenue=("monetary", "sum"),
                                   orders=("frequency", "sum"))
    g = g.reindex(list(names) + sorted(set(g.index) - set(names)), fill_value=0)
    g.loc["Total"] = g.sum()
    cust, rev = g.at["Total", "customers"], g.at["Total", "revenue"]
    table = pd.DataFrame({
        "customers": g["customers"],
        "customers_pct": (100.0 * g["customers"] / cust).round(2) if cust else 0.0,
        "revenue": g["revenue"].round(2),
        "revenue_pct": (100.0 * g["revenue"] / rev).round(2) if rev else 0.0,
        "avg_check": (g["revenue"] / g["orders"].where(g["orders"] > 0)).round(2).fillna(0.0),
        # mean(frequency − 1) = (orders − customers) / customers
        "avg_repeat_purchases": ((g["orders"] - g["customers"]) / g["customers"].where(g["customers"] > 0))
        .round(3).fillna(0.0),
    })
    return table.rename_axis("segment").reset_index().to_dict("records")


def pandas_checked_segments(csv_path: Path, out_path: Path, as_of: date, preset: str) -> tuple[dict[str, int], int]:
    """The checked pandas version of ``rfmsync segments --customers``; returns ({segment: customers}, bad rows)."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    from bench.pandas_lean import _rule_mask, scored_metrics
    from segmentation.rules import PRESETS

    rules = PRESETS[preset]
    # 1. read: text columns as text, only "" is missing (no "NA"/"null" guessing); then parse. Arrow strings:
    # pandas 3.1's C parser builds them straight from its buffers, dtype=str goes through Python objects (~4 s
    # more per column at 10 M rows)
    text = pd.ArrowDtype(pa.string())
    df = pd.read_csv(csv_path, usecols=COLUMNS, engine="c", keep_default_na=False, na_values=[""],
                     dtype={"order_id": text, "customer_id": text, "ordered_at": text, "status": text})
    order_id, customer = _text(df["order_id"]), _text(df["customer_id"])
    ts = pd.to_datetime(df["ordered_at"], format="%Y-%m-%d %H:%M:%S", errors="coerce")
    amount = pd.to_numeric(df["amount"], errors="coerce")
    amount = amount.where(np.isfinite(amount))  # "inf" is no amount either
    # 2. statuses: map each distinct raw value once (code -1 of factorize = missing → the last entry, completed)
    codes, uniques = pd.factorize(df["status"])
    status = np.array([status_code(u) for u in uniques] + [COMPLETED], dtype=np.int8)[codes]
    # 3. bad rows: the first failing check of each row
    reason = np.select([customer.isna(), ts.isna(), amount.isna(), status == UNKNOWN,
                        (amount < 0) & (status != REFUNDED)], list(range(len(_BAD))), default=-1)
    bad_at = np.flatnonzero(reason >= 0)
    raw = {"ordered_at": df["ordered_at"], "amount": df["amount"], "status": df["status"]}
    bad_rows = []  # (spreadsheet row: header = 1, field, reason, raw value), at most MAX_BAD_ROWS of them
    for i, r in zip(bad_at[:MAX_BAD_ROWS], reason[bad_at[:MAX_BAD_ROWS]]):
        field, why = _BAD[r]
        value = raw[field].iat[i] if field in raw else None
        value = None if pd.isna(value) else value.strip(SPACES) if isinstance(value, str) else f"{value:.2f}"
        bad_rows.append((int(i) + 2, field, why, value))
    valid = reason < 0
    # 4. repeated order ids among the valid rows (rows without an id never repeat), as connectors.file_repeats: the
    # same id at the same time is one order (the last row wins); then another customer's rows are an order of their
    # own, each refund later than its customer's sale under the same id is a return of its own; the rest of a
    # customer's rows under the id are the same order again: the last one wins
    ids = order_id.where(valid)
    again = ids.duplicated(keep=False).to_numpy() & ids.notna().to_numpy()
    rep = pd.DataFrame({"oid": ids[again], "cust": customer[again], "pos": np.flatnonzero(again),
                        "ts": ts[again], "st": status[again]})
    same = rep.duplicated(["oid", "ts"], keep="last").to_numpy()
    one = rep[~same]
    sold = one["ts"].where(one["st"] == COMPLETED).groupby([one["oid"], one["cust"]]).transform("min")
    ret = ((one["st"] == REFUNDED) & (one["ts"] > sold)).to_numpy()
    again_later = np.zeros(len(one), dtype=bool)
    again_later[~ret] = one[~ret].duplicated(["oid", "cust"], keep="last").to_numpy()
    repeated = np.zeros(len(ids), dtype=bool)
    repeated[rep["pos"].to_numpy()[same]] = True
    repeated[one["pos"].to_numpy()[again_later]] = True
    duplicates = len(rep) - rep["oid"].nunique()
    # 5. metrics as of the end of ``as_of``: completed orders count, refunds subtract their absolute amount
    keep = valid & ~repeated & (ts < pd.Timestamp(as_of) + pd.Timedelta(days=1)).to_numpy() \
        & ((status == COMPLETED) | (status == REFUNDED))
    sale, net = status[keep] == COMPLETED, amount.to_numpy()[keep]
    work = pd.DataFrame({"customer_id": customer[keep], "sale": sale, "net": np.where(sale, net, -np.abs(net)),
                         "sale_at": ts[keep].where(sale)})
    g = work.groupby("customer_id", sort=False).agg(frequency=("sale", "sum"), monetary=("net", "sum"),
                                                    first=("sale_at", "min"), last=("sale_at", "max"))
    g = g[g["frequency"] > 0]
    # 6. tie-aware scores (with the metrics), rfm code, preset rules (first matching rule wins)
    out = scored_metrics(g["last"], g["frequency"], g["monetary"], as_of, rules.levels)
    out["avg_check"] = (out["monetary"] / out["frequency"]).round(2)
    out["first_order_at"], out["last_order_at"] = g["first"], g["last"]
    out["rfm"] = (out["r"] * 100 + out["f"] * 10 + out["m"]).astype(str)  # levels ≤ 9: one digit each
    names = [n for n, _ in rules.rules]
    conds = [np.logical_or.reduce([_rule_mask(p, out["r"], out["f"], out["m"], rules.levels) for p in pats])
             for _, pats in rules.rules]
    out["segment"] = np.select(conds, names, rules.default) if conds else rules.default
    # 7. summary per segment (computed, not printed)
    table = summary(out, tuple(dict.fromkeys(names + [rules.default])))  # rules in order, then the default
    # 8. one Parquet row per customer; this file maps no email or phone
    out = out.reset_index().sort_values("customer_id")
    out["email"] = out["phone"] = pd.Series(index=out.index, dtype="str")
    out[["customer_id", "email", "phone", "recency_days", "frequency", "monetary", "r", "f", "m", "rfm",
         "segment"]].to_parquet(out_path, index=False)
    LAST_RUN.update(bad_rows=bad_rows, duplicates=duplicates, summary=table)
    counts = out["segment"].value_counts()
    return {str(k): int(v) for k, v in counts.items()}, len(bad_at)
