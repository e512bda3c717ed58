"""The issue 17 targets of ``bench/sync.py``: the summary lines it prints and the targets it checks.

At 1 M contacts: no-change plan <= 3 s, 1 %-moved plan <= 4 s, full plan <= 8 s, peak RSS of the full plan
(made in a fresh process) <= 1.5 GB, ledger writes <= 10 % of the apply and, with a latency, apply contacts/s
>= 80 % of the ideal (calls x latency / connections). Write calls are checked at every size: at most
``TARGET_RATIO`` x the theoretical minimum + ``TARGET_CONSTANT``.
"""

from __future__ import annotations

from typing import Any

from bench.common import human_bytes

TARGET_RATIO, TARGET_CONSTANT = 1.05, 3
PLAN_TARGETS = {"full": 8.0, "moved": 4.0, "no change": 3.0}  # seconds at 1 M contacts
RSS_TARGET = 1.5 * 1024 ** 3
LEDGER_SHARE, IDEAL_SHARE = 0.10, 0.80
TARGET_SIZE = 1_000_000


def ideal(r: dict[str, Any], latency: float) -> float:
    """Seconds the apply's calls take at ``latency`` each with the client's connections all busy."""
    calls = r["calls"] + r["setup"]
    return calls * latency / (r["connections"] or 1)


def summary(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for row in rows:
        r, latency = row["_r"], row["_latency"]
        where = f"{row['destination']} {row['run']}"
        if row["run"].startswith("full"):
            child = r["child"]
            lines.append(f"{where}: full plan in a fresh process {child['plan_s']:.2f} s, peak RSS "
                         f"{human_bytes(child['peak_rss'])} ({child['changes']} changes)")
        if r["changes"]:
            lines.append(f"{where}: ledger {r['ledger_s']:.2f} s of the {r['apply_s']:.1f} s apply "
                         f"({r['ledger_s'] / r['apply_s']:.1%}; written off the calls' path, the apply waited "
                         f"{r['ledger_wait_s']:.2f} s for it at the end; the writer thread's own CPU "
                         f"{r['ledger_cpu_s']:.2f} s = {r['ledger_cpu_s'] / r['apply_s']:.1%} of the apply); "
                         f"rfmsync's process used {r['apply_cpu_s']:.1f} CPU s "
                         f"({r['apply_cpu_s'] / r['changes'] * 1e6:.0f} µs a contact), the fake's "
                         f"{r['fake_cpu_s']:.1f} CPU s in its own process")
        if latency and r["changes"]:
            best = ideal(r, latency)
            lines.append(f"{where}: apply {r['changes'] / r['apply_s']:,.0f} contacts/s; ideal "
                         f"{r['changes'] / best:,.0f} ({r['calls'] + r['setup']} calls × {latency * 1000:.0f} ms / "
                         f"{r['connections']} connections = {best:.1f} s): {best / r['apply_s']:.0%} of ideal")
    return lines


def check(rows: list[dict[str, Any]]) -> list[str]:
    """Targets missed, one line each (empty when all hold)."""
    problems = []
    for row in rows:
        r, latency = row["_r"], row["_latency"]
        where = f"{row['destination']} {row['run']}"
        if r["failed"]:
            problems.append(f"{where}: {r['failed']} failed operations")
        if r["calls"] > TARGET_RATIO * r["minimum"] + TARGET_CONSTANT:
            problems.append(f"{where}: {r['calls']} calls > {TARGET_RATIO} × {r['minimum']} + {TARGET_CONSTANT}")
        if row["run"] == "no change" and (r["changes"] or r["calls"]):
            problems.append(f"{where}: a rerun planned {r['changes']} changes and made {r['calls']} calls")
        kind = next(k for k in PLAN_TARGETS if row["run"].startswith(k) or k in row["run"])
        if row["_contacts"] >= TARGET_SIZE:
            if r["plan_s"] > PLAN_TARGETS[kind]:
                problems.append(f"{where}: plan {r['plan_s']:.2f} s > {PLAN_TARGETS[kind]:g} s")
            if kind == "full" and r["child"]["peak_rss"] > RSS_TARGET:
                problems.append(f"{where}: plan peak RSS {human_bytes(r['child']['peak_rss'])} > 1.50 GB")
        # the ledger's share is its writer thread's own CPU time: its wall time also counts waiting for the
        # interpreter lock while the calls' threads run, which is not time spent writing (both are printed)
        if r["changes"] >= 10_000 and r["apply_s"] and r["ledger_cpu_s"] / r["apply_s"] > LEDGER_SHARE:
            problems.append(f"{where}: ledger writes {r['ledger_cpu_s'] / r['apply_s']:.1%} of the apply"
                            f" > {LEDGER_SHARE:.0%}")
        if latency and r["changes"] >= 10_000 and ideal(r, latency) / r["apply_s"] < IDEAL_SHARE:
            problems.append(f"{where}: apply at {ideal(r, latency) / r['apply_s']:.0%} of ideal < {IDEAL_SHARE:.0%}")
    return problems
