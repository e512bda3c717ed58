"""A file source is read into the order store once: only new and changed files are read again, and the results
are those of reading every file fresh (sync.store.files)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from sync import api
from sync.config import load_config
from connectors.errors import ConnectorError
from connectors.files import FileSource, FileSourceConfig
from sync.errors import RfmsyncError
from sync.pipeline import Reading, configured_source, customers_relation
from sync.store import connect_store
from sync.store.files import ingest_files
from tests.builders import run_cli
from tests.profiles import examples

AS_OF = date(2025, 6, 30)
HEADER = "order_id,customer,email,date,amount,status"
CONFIG = """\
[source]
type = "file"
orders = "exports/*.csv"

[source.columns]
order_id = "order_id"
customer_id = "customer"
email = "email"
ordered_at = "date"
amount = "amount"
status = "status"

[store]
orders = "{store}"
"""

# Small pools so that files share customers, e-mails and order ids; some values make bad rows.
ORDER_IDS = ["1", "2", "3", "4", "5", ""]
CUSTOMERS = ["c1", "c2", "c3", ""]
EMAILS = ["a@example.com", "b@example.com", "not-an-email", ""]
DATES = ["2025-01-05", "2025-03-10 10:00", "2025-06-01", "2025-06-29", "2025-06-29", "not a date"]
AMOUNTS = ["10.00", "25.50", "99.99", "-5.00", "abc"]
STATUSES = ["", "", "completed", "refunded", "lost in space"]

rows = st.lists(st.tuples(*(st.sampled_from(pool) for pool in (ORDER_IDS, CUSTOMERS, EMAILS, DATES, AMOUNTS,
                                                                STATUSES))), min_size=1, max_size=6)
FILES = ["day1.csv", "day2.csv", "day3.csv"]
steps = st.lists(st.one_of(st.tuples(st.just("write"), st.sampled_from(FILES), rows),
                           st.tuples(st.just("remove"), st.sampled_from(FILES + ["day0.csv"]), st.none())),
                 min_size=1, max_size=3)


def write_export(folder: Path, name: str, data: list[tuple[str, ...]]) -> None:
    (folder / "exports").mkdir(exist_ok=True)
    (folder / "exports" / name).write_text("\n".join([HEADER, *(",".join(r) for r in data)]) + "\n",
                                           encoding="utf-8")


def shop(folder: Path, contact_fields: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = folder / "rfmsync.toml"
    text = CONFIG.format(store="rfmsync.duckdb")
    cfg.write_text(text if contact_fields else text.replace('email = "email"\n', ""), encoding="utf-8")
    return cfg


def outcome(cfg_path: Path, reading: Reading = Reading()) -> tuple:
    """Everything a user sees of a segments run: the summary, every customer row, the bad-row report and the
    store's rows (or the error)."""
    try:
        run = api.segments(load_config(cfg_path), AS_OF, boundary=False, reading=reading)
    except (RfmsyncError, ConnectorError) as exc:
        return ("error", type(exc).__name__, str(exc))
    try:
        summary = run.to_json()
        summary.pop("warnings")  # a removed file is announced by the run that removes it
        customers = customers_relation(run).fetchall()
        # every order carries its file: compared by the file's path (file ids differ between stores)
        stored = (run.con.execute("SELECT o.* EXCLUDE (file_id), f.path FROM orders o LEFT JOIN ingest_files f"
                                  " USING (file_id) ORDER BY ALL").fetchall(),
                  *(run.con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in ("contacts", "line_items")))
        report = ([str(b) for b in run.bad_rows], run.bad_row_count,
                  [str(i) for i in run.pull.issues], run.pull.issue_count, run.pull.duplicate_orders)
    finally:
        run.close()
    return summary, customers, stored, report


def fresh(folder: Path) -> tuple:
    """The same files, read under the same config into a brand-new store."""
    store = folder / "fresh.duckdb"
    store.unlink(missing_ok=True)
    cfg = folder / "fresh.toml"
    text = (folder / "rfmsync.toml").read_text(encoding="utf-8")
    cfg.write_text(text.replace('orders = "rfmsync.duckdb"', 'orders = "fresh.duckdb"'), encoding="utf-8")
    return outcome(cfg)


@settings(max_examples=examples(12), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=rows, more=steps, contact_fields=st.booleans())
def test_any_sequence_of_added_changed_removed_files_gives_the_fresh_results(first, more, contact_fields):
    """Both shapes of the store: contact fields mapped (a table per file), or not (the lean path while the rows
    allow it: files with a customer id on every row and no order id in two files)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cfg = shop(folder, contact_fields)
        source = configured_source(load_config(cfg))
        read_before = False  # the store holds files: a step's ingest went through
        for kind, name, data in [("write", "day0.csv", first), *more]:
            if kind == "write":
                write_export(folder, name, data)
            else:
                (folder / "exports" / name).unlink(missing_ok=True)
            con = connect_store(folder / "rfmsync.duckdb")  # each step read into the store as it happens
            try:
                ingest_files(con, source)
                read_before = True
            except ConnectorError:
                pass  # the same error as a fresh read: compared below when it is the last step
            finally:
                con.close()
        expected = fresh(folder)  # a brand-new store each time: one is enough for both runs
        got = outcome(cfg)
        if expected[:2] == ("error", "ConfigError") and expected[2].startswith("no file matches") and read_before:
            # every file removed: a store holding files read before says so the retry-later way, removing nothing
            # (one that never read a file, every step's file refused, says what a fresh read says)
            assert got[:2] == ("error", "TransientError") and got[2].startswith(f"{expected[2]}, where ")
        else:
            assert got == expected
        assert outcome(cfg) == got  # the warm run: nothing read, the same report


ID_ROWS = st.lists(st.tuples(st.sampled_from([str(i) for i in range(1, 40)]), st.sampled_from(CUSTOMERS[:3]),
                            st.just(""), st.sampled_from(DATES), st.sampled_from(AMOUNTS), st.sampled_from(STATUSES)),
                  min_size=1, max_size=6)


@settings(max_examples=examples(10), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(days=st.lists(ID_ROWS, min_size=2, max_size=4), rewrite=st.integers(0, 5))
def test_daily_files_added_in_order_give_the_fresh_results(days, rewrite):
    """The nightly case (customer and order ids on every row, no contact fields): new files are staged alone
    and appended when no order id repeats; a repeat, a rewritten file, a bad file: every file is staged."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cfg = shop(folder, contact_fields=False)
        source = configured_source(load_config(cfg))
        for i, data in enumerate(days):
            write_export(folder, f"day{i}.csv", data)
            if rewrite == i and i:
                write_export(folder, f"day{i - 1}.csv", days[i - 1][::-1])
            con = connect_store(folder / "rfmsync.duckdb")
            try:
                ingest_files(con, source)
            except ConnectorError:
                pass
            finally:
                con.close()
        assert outcome(cfg) == fresh(folder)


def file_tables(store: Path) -> list[str]:
    """The per-file tables of the store (a file read the lean way has none: its rows are in ``orders``)."""
    with duckdb.connect(str(store), read_only=True) as con:
        return [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() WHERE table_name LIKE"
                                          " 'ingest_f%_data' ORDER BY 1").fetchall()]


def orders_by_file(store: Path) -> list[tuple]:
    with duckdb.connect(str(store), read_only=True) as con:
        return con.execute("SELECT o.order_id, f.path FROM orders o LEFT JOIN ingest_files f USING (file_id)"
                           " ORDER BY 1").fetchall()


def test_the_lean_path_keeps_one_copy_and_stages_every_file_when_a_rule_crosses_files(tmp_path):
    cfg = shop(tmp_path, contact_fields=False)
    source = configured_source(load_config(cfg))
    store = tmp_path / "rfmsync.duckdb"
    day = {i: str(tmp_path / "exports" / f"day{i}.csv") for i in range(4)}
    write_export(tmp_path, "day1.csv", [("1", "c1", "", "2025-06-01", "10.00", ""), ("2", "c2", "", "x", "1", "")])

    def ingest():
        with connect_store(store) as con:
            return ingest_files(con, source)

    done = ingest()  # the first run: the rows are written once, into orders, with their file
    assert done.lean and done.read == [day[1]] and file_tables(store) == []
    assert orders_by_file(store) == [("1", day[1])]
    write_export(tmp_path, "day2.csv", [("3", "c1", "", "2025-06-02", "20.00", ""), ("4", "c3", "", "2025-06-02", "abc", "")])
    done = ingest()
    assert done.lean and done.read == [day[2]] and done.pull.bad_row_count == 2 and done.pull.orders == 2
    assert file_tables(store) == [] and outcome(cfg) == fresh(tmp_path)
    write_export(tmp_path, "day3.csv", [("1", "c1", "", "2025-06-03", "30.00", "")])  # order 1 again: day3 wins
    done = ingest()
    assert not done.lean and done.pull.duplicate_orders == 1 and done.read == [day[3]]
    assert len(file_tables(store)) == 3  # day1 and day2 were read again for their tables
    assert orders_by_file(store) == [("1", day[3]), ("3", day[2])]
    assert outcome(cfg) == fresh(tmp_path)
    write_export(tmp_path, "day0.csv", [("9", "c2", "", "2025-05-03", "30.00", "")])  # sorts before the others
    assert not ingest().lean
    assert outcome(cfg) == fresh(tmp_path)


def test_the_lean_path_replaces_a_changed_file_and_removes_a_gone_one(tmp_path):
    cfg = shop(tmp_path, contact_fields=False)
    source = configured_source(load_config(cfg))
    store = tmp_path / "rfmsync.duckdb"
    day = {i: str(tmp_path / "exports" / f"day{i}.csv") for i in range(4)}
    for i in (1, 2, 3):
        write_export(tmp_path, f"day{i}.csv", [(str(i), f"c{i}", "", "2025-06-01", "10.00", ""),
                                               (f"{i}0", "c1", "", "bad", "1", "")])
    run_cli("pull", "--config", str(cfg))
    write_export(tmp_path, "day2.csv", [("2", "c2", "", "2025-06-02", "25.00", ""), ("7", "c1", "", "2025-06-03", "5", "")])
    with connect_store(store) as con:
        done = ingest_files(con, source)
    assert done.lean and done.read == [day[2]]
    assert [b.source for b in done.pull.bad_rows] == [day[1], day[3]]  # in file and row order
    assert orders_by_file(store) == [("1", day[1]), ("2", day[2]), ("3", day[3]), ("7", day[2])]
    assert outcome(cfg) == fresh(tmp_path)
    os.remove(day[1])
    result = run_cli("segments", "--config", str(cfg), "--as-of", str(AS_OF))
    assert f"{day[1]}: the file is gone; its rows were removed from the order store" in result.stderr
    assert orders_by_file(store) == [("2", day[2]), ("3", day[3]), ("7", day[2])]
    assert file_tables(store) == []
    assert outcome(cfg) == fresh(tmp_path)
    with connect_store(store) as con:
        done = ingest_files(con, source, reread=True)
    assert done.lean and done.read == [day[2], day[3]] and orders_by_file(store) == [
        ("2", day[2]), ("3", day[3]), ("7", day[2])]
    assert outcome(cfg) == fresh(tmp_path)


def test_only_new_and_changed_files_are_read_and_a_removed_file_is_announced(tmp_path):
    cfg = shop(tmp_path)
    write_export(tmp_path, "day1.csv", [("1", "c1", "", "2025-06-01", "10.00", "")])
    write_export(tmp_path, "day2.csv", [("2", "c2", "", "2025-06-02", "abc", "")])
    source = configured_source(load_config(cfg))
    day1, day2, day3 = (str(tmp_path / "exports" / f"day{i}.csv") for i in (1, 2, 3))

    def ingest(**kw):
        con = connect_store(tmp_path / "rfmsync.duckdb")
        try:
            done = ingest_files(con, source, **kw)
            return done, con.execute("SELECT order_id FROM orders ORDER BY 1").fetchall()
        finally:
            con.close()

    done, orders = ingest()
    assert (done.read, done.gone, orders) == ([day1, day2], [], [("1",)])  # day2's only row is bad
    assert [b.source for b in done.pull.bad_rows] == [day2]
    done, orders = ingest()
    assert (done.read, done.warm, orders) == ([], True, [("1",)])
    assert [str(b) for b in done.pull.bad_rows] == [f"{day2}, row 2: amount: unparseable or empty amount ('abc')"]
    write_export(tmp_path, "day3.csv", [("3", "c3", "", "2025-06-03", "30.00", "")])
    assert ingest()[0].read == [day3]
    write_export(tmp_path, "day2.csv", [("2", "c2", "", "2025-06-02", "20.00", "")])
    done, orders = ingest()
    assert (done.read, done.pull.bad_row_count, orders) == ([day2], 0, [("1",), ("2",), ("3",)])
    assert ingest(reread=True)[0].read == [day1, day2, day3]
    assert outcome(cfg) == outcome(cfg, Reading(reread=True)) == fresh(tmp_path)

    os.remove(day2)
    result = run_cli("segments", "--config", str(cfg), "--as-of", str(AS_OF))
    assert f"{day2}: the file is gone; its rows were removed from the order store" in result.stderr
    con = duckdb.connect(str(tmp_path / "rfmsync.duckdb"), read_only=True)
    assert con.execute("SELECT order_id FROM orders ORDER BY 1").fetchall() == [("1",), ("3",)]
    tables = con.execute("SELECT table_name FROM duckdb_tables() WHERE table_name LIKE 'ingest_f%_data'"
                         " ORDER BY 1").fetchall()
    files = con.execute("SELECT path, file_id FROM ingest_files ORDER BY 1").fetchall()
    con.close()
    assert [p for p, _ in files] == [day1, day3]
    assert tables == sorted((f"ingest_f{i}_data",) for _, i in files)  # day2's rows went with its table


def test_verify_hashes_the_whole_file(tmp_path):
    """An edit in the middle of a big file that keeps its size and mtime is seen only with --verify."""
    cfg = shop(tmp_path)
    filler = [(str(i), f"c{i % 50}", "", "2025-06-01", "10.00", "") for i in range(10, 8000)]
    write_export(tmp_path, "big.csv", [("1", "c1", "", "2025-06-01", "10.00", ""), *filler])
    path = tmp_path / "exports" / "big.csv"
    assert path.stat().st_size > 3 * 65536  # the edit is outside the hashed head and tail
    run_cli("segments", "--config", str(cfg), "--as-of", str(AS_OF))
    stat = path.stat()
    text = path.read_text(encoding="utf-8")
    middle = text.index("\n4000,")  # order 4000: 10.00 → 90.00, same length
    edited = text[:middle] + text[middle:].replace("2025-06-01,10.00", "2025-06-01,90.00", 1)
    path.write_text(edited, encoding="utf-8")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size

    def monetary() -> str:
        with duckdb.connect(str(tmp_path / "rfmsync.duckdb"), read_only=True) as con:
            return str(con.execute("SELECT sum(amount) FROM orders").fetchall()[0][0])

    total = monetary()
    run_cli("segments", "--config", str(cfg), "--as-of", str(AS_OF))
    assert monetary() == total  # size, mtime, head and tail unchanged: not read again
    run_cli("segments", "--config", str(cfg), "--as-of", str(AS_OF), "--verify")
    assert float(monetary()) == float(total) + 80
    run_cli("segments", "--config", str(cfg), "--as-of", str(AS_OF), "--verify")  # its full hash is noted now
    assert float(monetary()) == float(total) + 80


def test_a_changed_source_table_reads_every_file_again(tmp_path):
    cfg = shop(tmp_path)
    write_export(tmp_path, "day1.csv", [("1", "c1", "", "2025-06-01", "10.00", "lost")])
    assert outcome(cfg)[3][1] == 1  # the unknown status is a bad row
    cfg.write_text(cfg.read_text(encoding="utf-8") + '\n[source.statuses]\nlost = "cancelled"\n', encoding="utf-8")
    assert outcome(cfg)[3][1] == 0
    assert outcome(cfg) == fresh(tmp_path)


CRASH = textwrap.dedent("""
    import os, sys
    from sync.config import load_config
    from sync.pipeline import configured_source
    from sync.store import connect_store
    from sync.store.files import ingest_files

    cfg = load_config(sys.argv[1])
    con = connect_store(sys.argv[2])
    ingest_files(con, configured_source(cfg), before_merge=lambda result: os._exit(9))
""")


def test_a_crash_between_reading_and_saving_leaves_the_store_consistent(tmp_path):
    cfg = shop(tmp_path)
    write_export(tmp_path, "day1.csv", [("1", "c1", "", "2025-06-01", "10.00", ""), ("2", "c2", "", "bad", "1", "")])
    assert outcome(cfg) == fresh(tmp_path)
    write_export(tmp_path, "day1.csv", [("1", "c1", "", "2025-06-01", "12.00", "")])
    write_export(tmp_path, "day2.csv", [("1", "c1", "", "2025-06-02", "15.00", ""), ("3", "c3", "", "x", "1", "")])
    # the process dies after the changed and new files were read into the store, before their fingerprints
    # and rows were committed
    died = subprocess.run([sys.executable, "-c", CRASH, str(cfg), str(tmp_path / "rfmsync.duckdb")],
                          cwd=Path(__file__).parent.parent, capture_output=True, text=True)
    assert died.returncode == 9, died.stderr
    after = outcome(cfg)
    assert after == fresh(tmp_path)
    orders = after[2][0]
    assert [(r[0], float(r[3])) for r in orders] == [("1", 15.0)]  # day2's order 1 wins, nothing twice
    assert after[3][0] == [f"{tmp_path / 'exports' / 'day2.csv'}, row 3: ordered_at: unparseable or empty date ('x')"]
    with duckdb.connect(str(tmp_path / "rfmsync.duckdb"), read_only=True) as con:
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        files = con.execute("SELECT file_id FROM ingest_files").fetchall()
    assert {t for t in tables if t.startswith("ingest_f") and t != "ingest_files"} == \
        {f"ingest_f{i}_data" for (i,) in files}  # no table of the crashed run is left


def test_a_refused_merge_keeps_the_store_and_the_next_run_reads_the_file_again(tmp_path):
    cfg = shop(tmp_path)
    write_export(tmp_path, "day1.csv", [("1", "c1", "", "2025-06-01", "10.00", "")])
    before = outcome(cfg)
    write_export(tmp_path, "day2.csv", [("2", "c2", "", "2025-06-02", "20.00", "")])

    class Refused(Exception):
        pass

    def refuse(result):
        raise Refused

    con = connect_store(tmp_path / "rfmsync.duckdb")
    with pytest.raises(Refused):
        ingest_files(con, configured_source(load_config(cfg)), before_merge=refuse)
    con.close()
    (tmp_path / "exports" / "day2.csv").unlink()  # the refused read must not have stayed in the store
    assert outcome(cfg) == before


def test_pull_reads_new_files_and_names_a_removed_one(tmp_path):
    cfg = shop(tmp_path)
    write_export(tmp_path, "day1.csv", [("1", "c1", "", "2025-06-01", "10.00", "")])
    write_export(tmp_path, "day2.csv", [("2", "c2", "", "2025-06-02", "20.00", "")])
    assert "the store now holds 2 orders" in run_cli("pull", "--config", str(cfg)).stdout
    (tmp_path / "exports" / "day1.csv").unlink()
    result = run_cli("pull", "--config", str(cfg), "--format", "json")
    day1 = tmp_path / "exports" / "day1.csv"
    assert f"{day1}: the file is gone; its rows were removed from the order store" in result.stderr
    doc = json.loads(result.stdout)
    assert doc["warnings"] == [f"{day1}: the file is gone; its rows were removed from the order store"]
    assert doc["counts"]["stored_orders"] == 1


@pytest.mark.parametrize("contact_fields", [True, False])  # the full staging and the lean path
def test_a_renamed_file_is_named_as_renamed_not_gone(tmp_path, contact_fields):
    """A file renamed within the pattern (the same bytes under a new name) was announced as gone, its rows removed,
    though they were read again under the new name: the warning names the rename, the store is a fresh read's, and
    a file really gone beside it is still named gone."""
    cfg = shop(tmp_path, contact_fields=contact_fields)
    write_export(tmp_path, "day1.csv", [("1", "c1", "", "2025-06-01", "10.00", "")])
    write_export(tmp_path, "day2.csv", [("2", "c2", "", "2025-06-02", "20.00", "")])
    write_export(tmp_path, "day3.csv", [("3", "c3", "", "2025-06-03", "30.00", "")])
    run_cli("pull", "--config", str(cfg))
    day1, day2, day3 = (tmp_path / "exports" / f"day{i}.csv" for i in (1, 2, 3))
    day1.rename(tmp_path / "exports" / "day1-june.csv")
    day3.unlink()
    doc = json.loads(run_cli("pull", "--config", str(cfg), "--format", "json").stdout)
    assert doc["warnings"] == [
        f"{day3}: the file is gone; its rows were removed from the order store",
        f"{day1} was renamed {tmp_path / 'exports' / 'day1-june.csv'} (the same bytes): its rows are read under the "
        "new name"]
    assert doc["counts"]["stored_orders"] == 2
    assert outcome(cfg) == fresh(tmp_path)


def test_a_files_repeated_order_ids_are_told_by_every_run_that_reads_it_once_in_its_json_too(tmp_path):
    """hunt30b F6: a file's repeated order ids were logged by the staging alone: never in a JSON output's warnings
    (a nightly job reading JSON never learnt its export repeats receipts), and never again once the store held the
    file (a warm run said nothing, the data still holding the repeats); and the lean path, giving way on the repeat
    to staging every file, logged it a second time. The staging's warnings are kept with the files' report: every
    run that reads the files says them once, on stderr and in the JSON's warnings."""
    cfg = shop(tmp_path, contact_fields=False)
    write_export(tmp_path, "day1.csv", [("1", "c1", "", "2025-06-01", "10.00", "")])
    run_cli("pull", "--config", str(cfg))  # the lean path's store
    write_export(tmp_path, "day2.csv", [("2", "c2", "", "2025-06-02", "20.00", "completed"),
                                        ("2", "c2", "", "2025-06-03", "20.00", "refunded")])
    line = ("1 order id holds a sale and its return (a later refunded row of the same customer): the return kept "
            "beside the sale as ID~return (the sale counts, the customer's net revenue is the sale minus the return): "
            f"'2' ({tmp_path / 'exports' / 'day2.csv'} rows 2, 3)")
    store = tmp_path / "rfmsync.duckdb"
    for run in ("cold", "warm", "a store whose summary an older rfmsync saved"):
        if run.startswith("a store"):
            with connect_store(store) as con:
                con.execute("UPDATE ingest_summary SET summary = json_remove(summary, '$.warnings')")
        told = run_cli("segments", "--config", str(cfg), "--as-of", AS_OF.isoformat(), "--format", "json")
        assert json.loads(told.stdout)["warnings"] == [line], run
        assert told.stderr.count("a sale and its return") == 1 and f"warning: {line}" in told.stderr, run
        with connect_store(store) as con:
            assert json.loads(con.execute("SELECT summary FROM ingest_summary").fetchone()[0])["warnings"] == [line]
    for command in (("pull",), ("check", "--offline")):  # (check reads the files without the store)
        assert json.loads(run_cli(*command, "--config", str(cfg), "--format", "json").stdout)["warnings"] == [line]


def test_a_crash_on_the_lean_path_leaves_the_store_as_it_was(tmp_path):
    cfg = shop(tmp_path, contact_fields=False)
    write_export(tmp_path, "day1.csv", [("1", "c1", "", "2025-06-01", "10.00", ""), ("2", "c2", "", "bad", "1", "")])
    assert outcome(cfg) == fresh(tmp_path)
    write_export(tmp_path, "day1.csv", [("1", "c1", "", "2025-06-01", "12.00", "")])
    write_export(tmp_path, "day2.csv", [("3", "c3", "", "2025-06-02", "15.00", "")])
    died = subprocess.run([sys.executable, "-c", CRASH, str(cfg), str(tmp_path / "rfmsync.duckdb")],
                          cwd=Path(__file__).parent.parent, capture_output=True, text=True)
    assert died.returncode == 9, died.stderr
    with duckdb.connect(str(tmp_path / "rfmsync.duckdb"), read_only=True) as con:  # nothing of the crashed run
        assert con.execute("SELECT order_id, amount FROM orders").fetchall() == [("1", Decimal("10.00"))]
        assert con.execute("SELECT count(*) FROM ingest_files").fetchall() == [(1,)]
    after = outcome(cfg)
    assert after == fresh(tmp_path)
    assert [(r[0], float(r[3])) for r in after[2][0]] == [("1", 12.0), ("3", 15.0)]
    assert file_tables(tmp_path / "rfmsync.duckdb") == []


def test_webhook_records_survive_the_files_and_a_file_version_wins(tmp_path):
    """A webhook order the export does not contain yet survives the file refresh; once a file has the same order
    id, the file's version wins (the rule of sync.store), whichever path the files take."""
    from datetime import datetime, timezone

    from connectors.records import Order
    from connectors.source import PullResult
    from connectors.tables import stage_records
    from sync.store import merge_staged

    cfg = shop(tmp_path, contact_fields=False)
    source = configured_source(load_config(cfg))
    write_export(tmp_path, "day1.csv", [("1", "c1", "", "2025-06-01", "10.00", "")])
    with connect_store(tmp_path / "rfmsync.duckdb") as con:
        assert ingest_files(con, source).lean
        at = datetime(2025, 6, 5, tzinfo=timezone.utc)
        stage_records(con, [Order(order_id="w9", customer_id="c2", ordered_at=at, amount=Decimal("7.00")),
                            Order(order_id="1", customer_id="c1", ordered_at=at, amount=Decimal("99.00"))])
        merge_staged(con, PullResult(orders=2, contacts=0), origin="webhook")
    write_export(tmp_path, "day2.csv", [("2", "c3", "", "2025-06-02", "20.00", "")])
    write_export(tmp_path, "day1.csv", [("1", "c1", "", "2025-06-01", "11.00", "")])
    with connect_store(tmp_path / "rfmsync.duckdb") as con:
        done = ingest_files(con, source)
        assert not done.lean
        assert con.execute("SELECT order_id, amount FROM orders ORDER BY 1").fetchall() == [
            ("1", Decimal("11.00")), ("2", Decimal("20.00")), ("w9", Decimal("7.00"))]
        assert con.execute("SELECT id FROM webhook_records").fetchall() == [("w9",)]


def test_a_cut_bad_row_report_sends_a_removal_down_the_full_path(tmp_path):
    """The report lists the first 1000 bad rows; removing a file from a cut report needs the rows after the cut."""
    cfg = shop(tmp_path, contact_fields=False)
    source = configured_source(load_config(cfg))
    write_export(tmp_path, "day1.csv", [("1", "c1", "", "2025-06-01", "10.00", "")] +
                 [(str(i), "c1", "", "2025-06-01", "abc", "") for i in range(100, 1101)])
    write_export(tmp_path, "day2.csv", [("2", "c2", "", "2025-06-02", "10.00", ""), ("3", "c2", "", "x", "1", "")])
    for _ in range(2):
        with connect_store(tmp_path / "rfmsync.duckdb") as con:
            ingest_files(con, source)
        write_export(tmp_path, "day3.csv", [("4", "c3", "", "2025-06-03", "10.00", "")])
    (tmp_path / "exports" / "day1.csv").unlink()
    with connect_store(tmp_path / "rfmsync.duckdb") as con:
        done = ingest_files(con, source)
    assert not done.lean
    assert [b.row for b in done.pull.bad_rows] == [3] and done.pull.bad_row_count == 1
    assert outcome(cfg) == fresh(tmp_path)


class Recorder:
    """A progress reporter that notes each step's label, unit and the rows it was told."""

    def __init__(self) -> None:
        self.steps: list[list] = []

    def start(self, label, total=None, unit=""):
        self.steps.append([label, unit, []])
        return self

    def update(self, done=0, *, total=None, calls=0):
        self.steps[-1][2].append(done)

    def close(self):
        pass

    def retry_wait(self, wait):
        pass


def test_reading_files_counts_the_rows_of_each_file_read(tmp_path):
    from sync import progress

    cfg = shop(tmp_path)
    write_export(tmp_path, "day1.csv", [("1", "c1", "", "2025-06-01", "10.00", ""), ("2", "c2", "", "x", "1", "")])
    write_export(tmp_path, "day2.csv", [("3", "c3", "", "2025-06-03", "30.00", "")])
    for expected in ([2, 1], []):  # the second run reads nothing
        with progress.reporting(Recorder()) as recorder:
            outcome(cfg)
        assert recorder.steps[0] == ["reading files", "records", expected]


def test_the_data_guards_see_the_orders_the_store_will_hold_after_a_file_is_removed(tmp_path):
    from sync.pipeline import pull_into

    cfg = shop(tmp_path, contact_fields=False)
    source = configured_source(load_config(cfg))
    write_export(tmp_path, "day1.csv", [("1", "c1", "", "2025-06-01", "10.00", ""), ("2", "c2", "", "2025-06-01", "5", "")])
    write_export(tmp_path, "day2.csv", [("3", "c3", "", "2025-06-02", "20.00", "")])
    with connect_store(tmp_path / "rfmsync.duckdb") as con:
        assert pull_into(con, source).orders == 3
    (tmp_path / "exports" / "day1.csv").unlink()
    seen = []

    class Refused(Exception):
        pass

    def guard(result):
        seen.append(result.orders)
        raise Refused

    with connect_store(tmp_path / "rfmsync.duckdb") as con:
        with pytest.raises(Refused):
            pull_into(con, source, before_merge=guard)
        assert seen == [1]
        assert con.execute("SELECT count(*) FROM orders").fetchall() == [(3,)]  # refused: the store as it was
    with connect_store(tmp_path / "rfmsync.duckdb") as con:
        done = ingest_files(con, source)
    assert done.lean and done.gone == [str(tmp_path / "exports" / "day1.csv")] and done.pull.orders == 1


def test_receipt_lines_of_another_source_table_do_not_stay_behind(tmp_path):
    """A [source] table that mapped receipt lines, then one that does not: every file is read again, and the
    store holds what a fresh read of the new table holds (no line items)."""
    cfg = shop(tmp_path, contact_fields=False)
    plain = cfg.read_text(encoding="utf-8")
    write_export(tmp_path, "day1.csv", [("1", "c1", "", "2025-06-01", "10.00", "")])
    cfg.write_text(plain.replace('status = "status"', 'status = "status"\nsku = "email"'), encoding="utf-8")
    (tmp_path / "exports" / "day1.csv").write_text(f"{HEADER}\n1,c1,A-1,2025-06-01,10.00,\n2,c1,B-2,2025-06-01,5,\n",
                                                   encoding="utf-8")
    assert len(outcome(cfg)[2][2]) == 2  # two line items
    cfg.write_text(plain, encoding="utf-8")
    assert outcome(cfg)[2][2] == []
    assert outcome(cfg) == fresh(tmp_path)


def test_a_daily_file_without_sales_keeps_the_lean_path(tmp_path):
    cfg = shop(tmp_path, contact_fields=False)
    source = configured_source(load_config(cfg))
    write_export(tmp_path, "day1.csv", [("1", "c1", "", "2025-06-01", "10.00", "")])
    assert outcome(cfg) == fresh(tmp_path)
    write_export(tmp_path, "day2.csv", [])  # a header only
    with connect_store(tmp_path / "rfmsync.duckdb") as con:
        done = ingest_files(con, source)
    assert done.lean and done.read == [str(tmp_path / "exports" / "day2.csv")] and done.pull.orders == 1
    assert outcome(cfg) == fresh(tmp_path)
    (tmp_path / "exports" / "day1.csv").unlink()  # now no file has a data row: the fresh read's error
    assert outcome(cfg) == fresh(tmp_path) and outcome(cfg)[0] == "error"


def test_the_store_writes_order_and_customer_ids_uncompressed(tmp_path):
    """The ids cost the bulk write most to compress (connectors.tables.UNCOMPRESSED); other strings still are."""
    cfg = shop(tmp_path, contact_fields=False)
    write_export(tmp_path, "day1.csv", [(str(i), f"c{i % 3}", "", "2025-06-01", "10.00", "") for i in range(1, 3001)])
    run_cli("pull", "--config", str(cfg))
    with duckdb.connect(str(tmp_path / "rfmsync.duckdb"), read_only=True) as con:
        found = dict(con.execute("SELECT column_name, list(DISTINCT compression ORDER BY compression) FROM "
                                 "pragma_storage_info('orders') WHERE segment_type = 'VARCHAR' GROUP BY ALL").fetchall())
    assert found["order_id"] == found["customer_id"] == ["Uncompressed"]
    assert "Uncompressed" not in found["status"]


@pytest.mark.parametrize("contact_fields", [False, True])
def test_a_file_copied_under_another_name_is_named_by_every_run(tmp_path, contact_fields):
    """An order without an order id gets one made from its file and row, so a copy of an export under another name
    (``orders (1).csv``) counts those orders twice: every run names the copy, whichever path the files take."""
    cfg = shop(tmp_path, contact_fields)
    rows = [("", "c1", "", "2025-06-01", "10.00", ""), ("7", "c2", "", "2025-06-02", "20.00", "")]
    write_export(tmp_path, "day1.csv", rows)
    write_export(tmp_path, "day2.csv", [])  # a header only: the same bytes as the next day's, no rows to double
    write_export(tmp_path, "day3.csv", [])
    write_export(tmp_path, "day4.csv", [("8", "c3", "", "2025-06-03", "5.00", "")])  # an order id on every row:
    write_export(tmp_path, "day5.csv", [("8", "c3", "", "2025-06-03", "5.00", "")])  # kept once, as always
    run = api.segments(load_config(cfg), AS_OF, boundary=False)
    run.close()
    again = ("1 order is written again (at the same time, or for the same customer: a status update, a customer merge, "
             "or export periods that overlap): the last row of each kept: "
             f"'8' ({tmp_path / 'exports' / 'day4.csv'} row 2; {tmp_path / 'exports' / 'day5.csv'} row 2)")
    assert run.warnings == [again]  # (told by every run that reads the files; no copy named)
    day1, copy = tmp_path / "exports" / "day1.csv", tmp_path / "exports" / "day1 (1).csv"
    copy.write_bytes(day1.read_bytes())
    # (both named, in the read order: "day1 (1).csv" sorts first; neither is called the copy)
    line = (f"{copy} and {day1} have the same bytes: both files are read, so their rows without an order id "
            "count twice")
    twice = again.replace("1 order is", "2 orders are").replace(  # the copy's order 7 too
        "kept: '8'", f"kept: '7' ({copy} row 3; {day1} row 3), '8'")
    for _ in range(2):  # the run that reads the copy, then a warm one
        run = api.segments(load_config(cfg), AS_OF, boundary=False)
        try:
            assert run.warnings == [line, twice]
            # the order without an id twice, orders 7 and 8 once
            assert run.con.execute("SELECT count(*) FROM orders").fetchall() == [(4,)]
        finally:
            run.close()
    result = run_cli("pull", "--config", str(cfg), "--format", "json")
    assert json.loads(result.stdout)["warnings"] == [line, twice] and line in result.stderr


def test_a_big_file_of_the_same_size_head_and_tail_is_no_copy(tmp_path):
    """Past 128 KiB the quick fingerprint sees the head and tail: the copy is confirmed by hashing both files."""
    cfg = shop(tmp_path, contact_fields=False)
    rows = [("", f"c{i % 7}", "", f"2025-06-0{1 + i % 7}", "10.00", "") for i in range(1, 9001)]  # no order ids
    # (each customer on a day of its own: seven customers on one day would warn that their recency scores collapsed)
    write_export(tmp_path, "day1.csv", rows)
    rows[4500] = (*rows[4500][:4], "12.00", "")  # the same size, another amount in the middle
    write_export(tmp_path, "day2.csv", rows)
    assert (tmp_path / "exports" / "day1.csv").stat().st_size == (tmp_path / "exports" / "day2.csv").stat().st_size
    run = api.segments(load_config(cfg), AS_OF, boundary=False)
    run.close()
    assert run.warnings == []


@pytest.mark.parametrize("contact_fields", [False, True])
def test_a_file_removed_while_the_folder_is_read_is_named_and_nothing_is_stored(tmp_path, contact_fields):
    """A file listed, then removed or renamed before it is read: a source error naming it (the CLI's exit 3 and
    one line, not an internal error), the store as it was; the next run reads what is there."""
    from connectors.errors import TransientError

    cfg = shop(tmp_path, contact_fields)
    write_export(tmp_path, "day1.csv", [("1", "c1", "", "2025-06-01", "10.00", "")])
    before = outcome(cfg)
    write_export(tmp_path, "day2.csv", [("2", "c2", "", "2025-06-02", "20.00", "")])
    write_export(tmp_path, "day3.csv", [("3", "c3", "", "2025-06-03", "30.00", "")])
    day3 = tmp_path / "exports" / "day3.csv"
    with connect_store(tmp_path / "rfmsync.duckdb") as con:
        with pytest.raises(TransientError, match=f"^{re.escape(str(day3))}: the file was removed or renamed "):
            ingest_files(con, configured_source(load_config(cfg)), progress=lambda rows: day3.unlink())
    (tmp_path / "exports" / "day2.csv").unlink()
    assert outcome(cfg) == before  # nothing of the failed run stayed


def test_a_link_to_a_file_no_longer_there_stops_the_run_and_keeps_its_rows(tmp_path):
    """The export folder holds links to the files on a network share: the share not mounted one night, a link
    leads nowhere. The run stops naming it (exit 3, the store as it was) instead of skipping it: a file read before
    would have its orders removed (and their customers' tags after them), a new one left out, without a word."""
    cfg = shop(tmp_path)
    share = tmp_path / "share"
    share.mkdir()
    write_export(share, "day1.csv", [("1", "c1", "a@example.com", "2025-06-01", "10.00", "")])
    write_export(share, "day2.csv", [("2", "c2", "b@example.com", "2025-06-02", "20.00", "")])
    (tmp_path / "exports").mkdir()
    for name in ("day1.csv", "day2.csv"):
        (tmp_path / "exports" / name).symlink_to(share / "exports" / name)
    before = outcome(cfg)
    assert len(before[1]) == 2
    (share / "exports" / "day2.csv").rename(share / "day2.away")  # unmounted: the link leads nowhere
    link = tmp_path / "exports" / "day2.csv"
    result = run_cli("segments", "--config", str(cfg), "--as-of", AS_OF.isoformat(), code=3)
    assert f"error: {link}: a link to {share / 'exports' / 'day2.csv'}, which is not there (a network share not " \
           "mounted?); nothing was read: run again once it is, or remove the link" in result.output
    (tmp_path / "exports" / "day3.csv").symlink_to(share / "day3.csv")  # never read: not left out either
    assert "day2.csv (and 1 more): a link to" in run_cli("segments", "--config", str(cfg), code=3).output
    (tmp_path / "exports" / "day3.csv").unlink()
    (share / "day2.away").rename(share / "exports" / "day2.csv")  # mounted again
    assert outcome(cfg) == before


NOW = datetime(2025, 6, 29, 12, tzinfo=timezone.utc)
SOON = ["2025-06-29", "2025-07-01", "2025-07-02 10:00", "2025-07-05", "2025-08-01"]  # future once NOW + a day


def stored_now(folder: Path, store: str, contact_fields: bool, at: datetime) -> tuple:
    """The store's orders and bad-row report after reading the exports at ``at`` (a brand-new ``store``: fresh)."""
    cfg = load_config(folder / "rfmsync.toml")
    source = FileSource(FileSourceConfig.model_validate(cfg.source), folder, clock=lambda: at)
    con = connect_store(folder / store)
    try:
        pull = ingest_files(con, source).pull
        return (con.execute("SELECT o.* EXCLUDE (file_id), f.path FROM orders o LEFT JOIN ingest_files f"
                            " USING (file_id) ORDER BY ALL").fetchall(),
                [str(b) for b in pull.bad_rows], pull.bad_row_count, pull.orders)
    except ConnectorError as exc:
        return ("error", str(exc))
    finally:
        con.close()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(days=st.lists(st.tuples(st.booleans(), st.lists(st.tuples(
           st.sampled_from(["1", "2", "3"]), st.sampled_from(CUSTOMERS[:3]), st.just(""), st.sampled_from(SOON),
           st.sampled_from(AMOUNTS[:3]), st.just("")), min_size=1, max_size=4), st.integers(0, 40)),
           min_size=1, max_size=3),
       contact_fields=st.booleans())
def test_a_row_dated_in_the_future_counts_once_the_clock_has_passed_its_date(days, contact_fields):
    """The clock moves on between runs: a file unchanged since a run that found rows dated in the future is
    read again once their date is no longer in the future, so the warm store is the fresh one."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shop(folder, contact_fields)
        at = NOW
        for i, (write, data, days_later) in enumerate(days):
            if write or not i:
                write_export(folder, f"day{i}.csv", data)
            at += timedelta(days=days_later)
            warm = stored_now(folder, "rfmsync.duckdb", contact_fields, at)
            (folder / "fresh.duckdb").unlink(missing_ok=True)
            assert warm == stored_now(folder, "fresh.duckdb", contact_fields, at)
            assert stored_now(folder, "rfmsync.duckdb", contact_fields, at) == warm  # and the warm run again


def test_a_future_order_counts_on_the_warm_run_once_its_date_has_passed(tmp_path):
    write_export(tmp_path, "day0.csv", [("1", "c1", "", "2025-06-01", "10.00", ""),
                                        ("2", "c2", "", "2025-07-05", "20.00", "")])
    shop(tmp_path, contact_fields=False)
    first = stored_now(tmp_path, "rfmsync.duckdb", False, NOW)
    assert [r[0] for r in first[0]] == ["1"] and first[2] == 1
    assert stored_now(tmp_path, "rfmsync.duckdb", False, NOW + timedelta(days=4))[2] == 1  # 2025-07-04 12:00 + 1 day
    later = stored_now(tmp_path, "rfmsync.duckdb", False, NOW + timedelta(days=5))
    assert [r[0] for r in later[0]] == ["1", "2"] and later[1:] == ([], 0, 2)
