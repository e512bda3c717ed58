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


def test_the_writer_strategies_with_keys_in_random_order_write_every_row_and_print_the_outbox_halves():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "ledger_write.py"), "--rows", "2000",
                           "--group", "500", "--big-group", "1000", "--key-order", "random", "--only", "strategies"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith(f"SQLite {sqlite3.sqlite_version} (sqlite3), 2,000 rows in groups of 500, keys random")
    for name in ("product: groups of --group", "fewer, larger transactions: groups of --big-group",
                 "customer index on customer_id alone", "no customer index (its cost; the resync needs one)"):
        assert any(line.startswith(name + " ") and line.rstrip().endswith("-") for line in lines), name
    outbox = next(line for line in lines if line.startswith("outbox: appends, one sorted fold at the end"))
    assert outbox.count("+") == 2 and " / " in outbox  # append + fold, insert pass / update pass
    assert not any(line.startswith("sql, as it is") for line in lines)  # --only strategies: no layouts


def test_random_keys_are_the_sync_benchs_addresses_and_ids():
    import duckdb

    sys.path.insert(0, str(ROOT))
    from bench.ledger_write import contact
    from bench.sync import KEY_ORDERS

    for order in ("ordered", "random"):
        cid_sql, key_sql = KEY_ORDERS[order]
        got = duckdb.sql(f"SELECT {key_sql}, {cid_sql} FROM range(3) t(i)").fetchall()
        assert got == [contact(i, order) for i in range(3)], order
