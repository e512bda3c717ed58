"""What normalising a file export's phones costs (:func:`connectors.email_phone.phone_map`, branch ident29).

``--values`` distinct phones, as a till and a CRM type them: Uzbek numbers in the demo shop's five forms (``+998 90
123-45-67``, ``998901234567``, ``(90) 123-45-67``, ``901234567``, ``+998(90)1234567``) under ``phone_region = "UZ"``,
or Russian ones in four (``8 (902) 001-58-38``, ``+7 902 001-58-38``, ``89020015838``, ``7-902-001-5838``) under
``RU``; ``--short`` of them a digit short (``8 (902) 001-58-3``). Each round maps them into a fresh in-memory DuckDB
table; wall and process CPU seconds (DuckDB's threads included) of each round, and how many values were invalid.

    PYTHONPATH=. python bench/phone_map.py --values 1000000 --region RU --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

# the tree measured is PYTHONPATH's (main or a branch): not bench/, whose sync.py would hide the package
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import duckdb  # noqa: E402

from connectors.email_phone import phone_map  # noqa: E402

_FORMS = {"UZ": ("'+998 ' || o || ' ' || d[1:3] || '-' || d[4:5] || '-' || d[6:7]", "'998' || o || d",
                 "'(' || o || ') ' || d[1:3] || '-' || d[4:5] || '-' || d[6:7]", "o || d", "'+998(' || o || ')' || d"),
          "RU": ("'8 (' || o || ') ' || d[1:3] || '-' || d[4:5] || '-' || d[6:7]",
                 "'+7 ' || o || ' ' || d[1:3] || '-' || d[4:5] || '-' || d[6:7]", "'8' || o || d",
                 "'7-' || o || '-' || d[1:3] || '-' || d[4:7]")}
_OPERATORS = {"UZ": "['90', '91', '93', '94', '95', '97', '98', '99', '33', '88', '77', '50']",
              "RU": "['902', '903', '904', '905', '906', '909', '912', '916', '921', '926', '950', '977']"}


def values(con: duckdb.DuckDBPyConnection, n: int, region: str, short: float) -> None:
    forms = _FORMS[region]
    pick = " ".join(f"WHEN {k} THEN {f}" for k, f in enumerate(forms))
    # distinct subscriber numbers (a multiplicative walk over 10^7), an operator, a form; some a digit short
    con.execute(f"""CREATE OR REPLACE TABLE v AS
        SELECT CASE WHEN hash(i) % 1000 < {int(short * 1000)} THEN left(raw, length(raw) - 1) ELSE raw END AS raw
        FROM (SELECT i, CASE i % {len(forms)} {pick} END AS raw
              FROM (SELECT i, lpad(((i * 7919) % 10000000)::VARCHAR, 7, '0') AS d,
                           {_OPERATORS[region]}[1 + (i // 7) % 12] AS o FROM range({n}) t(i)))""")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--values", type=int, default=1_000_000)
    ap.add_argument("--region", choices=sorted(_FORMS), default="RU")
    ap.add_argument("--short", type=float, default=0.01, help="share of values a digit short")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    con = duckdb.connect()
    values(con, args.values, args.region, args.short)
    print(f"{con.execute('SELECT count(DISTINCT raw) FROM v').fetchall()[0][0]} distinct values, "
          f"region {args.region}; load average {os.getloadavg()[0]:.1f}")
    times, cpu = [], []
    for _ in range(args.rounds):
        con.execute("DROP TABLE IF EXISTS pm")
        start, start_cpu = time.perf_counter(), time.process_time()
        result = phone_map(con, "SELECT raw FROM v", "pm", args.region)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        print(f"  {times[-1]:.2f} s wall, {cpu[-1]:.2f} s CPU, {result.invalid} invalid", flush=True)
    print(f"median {statistics.median(times):.2f} s wall, {statistics.median(cpu):.2f} s CPU")


if __name__ == "__main__":
    main()
