"""Smoke test of bench/ledger_write.py: a tiny run writes the pushed states through ``Ledger.save_states`` and
through every layout, and prints each one's CPU a row (the figures themselves are the benchmark's business)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_small_ledger_write_bench_prints_the_product_every_layout_and_the_parts():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "ledger_write.py"), "--rows", "2000",
                           "--group", "500"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"SQLite {sqlite3.sqlite_version} (sqlite3), 2,000 rows in groups of 500")
    assert any(line.startswith("product: Ledger.save_states") for line in lines)
    names = ["sql, as it is", "destination id, WITHOUT ROWID", "no customer index", "no foreign key",
             "16 KiB pages", "smallest: id, WITHOUT ROWID, no index, no FK", "temp table (executemany)",
             "fields text ready-made"]
    if sqlite3.sqlite_version_info >= (3, 45):
        names.append("jsonb_each (SQLite ≥ 3.45)")
    for name in names:
        assert any(line.startswith(name + " ") and line.rstrip().endswith("×") for line in lines), name
    assert next(line for line in lines if line.startswith("sql, as it is")).rstrip().endswith("1.00×")
    assert sum(line.startswith("as it is, part:") for line in lines) == 3
