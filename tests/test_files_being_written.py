"""An export changed while a run reads it (connectors.files.FileSource.read_file): one appended to (a POS adding its
receipts, a copy onto the share under way) or written anew again and again stops the run with a retry-later error
naming it, nothing stored, the rows read before kept, and the next run reads the finished file whole; one changed during a single read is read again; one
moved away is a retry-later error. The changes come from another process (tests.fakes.file_writer)."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from connectors.files import FileSource, FileSourceConfig
from tests.builders import run_cli
from tests.fakes.file_writer import appending, chmodding, line, on_open, rewriting, rewriting_in_place

CONFIG = """\
[source]
type = "file"
orders = "exports/*.csv"

[source.columns]
order_id = "order_id"
customer_id = "customer"
ordered_at = "date"
amount = "amount"
"""
HEAD = "order_id,customer,date,amount\n"
COLS = {"order_id": "order_id", "customer_id": "customer", "ordered_at": "date", "amount": "amount"}
ROWS = 60_000  # a read long enough for the writer to change the file during each of them


def write_rows(path: Path, first: int, last: int) -> None:
    path.write_text(HEAD + "".join(map(line, range(first, last + 1))), encoding="utf-8")


def stored_orders(cfg: Path) -> int:
    return json.loads(run_cli("pull", "--config", str(cfg), "--format", "json").stdout)["counts"]["stored_orders"]


#: the most runs :func:`refused` makes while a writer changes the file. A run stops (exit 3) when 3 reads in a row
#: saw the file change; at nice 19 beside the suite 13 of 40 reads saw no change, so a run is read whole (exit 0)
#: with odds 1 - (27/40)**3 = 0.69, and 26 such runs in a row 0.69**26 < 1e-4. Only a read that saw no change
#: costs another run: a run where the writer gets its share of the CPU stops at the first.
TRIES = 30


def refused(command: str, cfg: Path) -> str:
    """The output of the first of up to :data:`TRIES` runs of ``command`` that stops with exit 3, while another
    process changes a file all through. A read the writer did not change (a loaded machine gave it no CPU for the
    read's few hundred ms) is a whole file, rightly read (exit 0): then the run is made again."""
    args = [command, "--config", str(cfg)] + (["--format", "json"] if command == "pull" else [])
    for _ in range(TRIES):
        result = run_cli(*args, code=(0, 3))
        if result.exit_code == 3:
            return result.output
    raise AssertionError(f"{command} read a file changed all through {TRIES} times without a word")


def changed_during(read, done):
    """``read()``'s result, of the first of up to :data:`TRIES` reads that :func:`~tests.fakes.file_writer.on_open`'s
    watcher changed the file during (``done()``): a read that ended before the watcher got the CPU is made again."""
    for _ in range(TRIES):
        result = read()
        if done():
            return result
    raise AssertionError(f"the watcher never changed the file during any of {TRIES} reads")


def test_a_file_written_again_while_it_is_read_stops_the_run_and_the_next_run_reads_it_whole(tmp_path):
    cfg = tmp_path / "rfmsync.toml"
    cfg.write_text(CONFIG, encoding="utf-8")
    exports = tmp_path / "exports"
    exports.mkdir()
    write_rows(exports / "day1.csv", 1, 50)
    assert stored_orders(cfg) == 50
    day2 = exports / "day2.csv"
    write_rows(day2, 1000, 999 + ROWS)
    with rewriting(day2):  # not appended to: no rows of it can be kept
        output = refused("pull", cfg)
    assert f"{day2}: the file changed while it was read, 3 times in a row (still being written or copied?)" \
        in output
    assert "nothing was stored: run again once it is complete" in output
    # day1's rows stayed through the refused run; the finished file is read whole
    assert stored_orders(cfg) == 50 + ROWS


def test_check_names_a_file_being_written(tmp_path):
    cfg = tmp_path / "rfmsync.toml"
    cfg.write_text(CONFIG, encoding="utf-8")
    (tmp_path / "exports").mkdir()
    sales = tmp_path / "exports" / "sales.csv"
    write_rows(sales, 1, ROWS)
    with rewriting(sales):
        output = refused("check", cfg)
    assert f"{sales}: the file changed while it was read" in output
    run_cli("check", "--config", str(cfg))


def test_a_file_appended_to_all_through_its_reads_stops_the_run_and_the_next_run_reads_it_whole(tmp_path):
    """A POS appending its receipts while the run reads: nothing of it is stored (a copy of the lines it held
    would be a prefix if the file were being written anew in place, which its size cannot tell), exit 3."""
    cfg = tmp_path / "rfmsync.toml"
    cfg.write_text(CONFIG, encoding="utf-8")
    (tmp_path / "exports").mkdir()
    day = tmp_path / "exports" / "day.csv"
    write_rows(day, 1, ROWS)
    with appending(day, ROWS + 1):  # each line in two writes: the file often ends half-way through one
        output = refused("pull", cfg)
    assert f"{day}: the file changed while it was read, 3 times in a row" in output
    written = day.read_text(encoding="utf-8").count("\n") - 1
    assert stored_orders(cfg) == written  # finished: read whole


def staged(folder: Path) -> tuple[int, str]:
    """Pull ``folder``'s ``exports/*.csv`` with the file source: the orders staged and the last order's amount."""
    con = duckdb.connect()
    FileSource(FileSourceConfig(type="file", orders="exports/*.csv", columns=COLS), folder).pull(con)
    return con.execute("SELECT count(*), max_by(amount, order_id::INT)::VARCHAR FROM staged_orders").fetchone()


def test_a_file_appended_to_during_its_first_read_is_read_again_whole(tmp_path):
    (tmp_path / "exports").mkdir()
    day = tmp_path / "exports" / "day.csv"
    write_rows(day, 1, ROWS)
    with on_open(day, "append", str(ROWS + 1)) as done:  # the row appended mid-read included
        assert changed_during(lambda: staged(tmp_path), done) == (ROWS + 1, f"{100 + ROWS + 1}.50")


def test_a_file_replaced_by_one_of_the_same_size_during_its_first_read_is_read_again(tmp_path):
    (tmp_path / "exports").mkdir()
    day = tmp_path / "exports" / "day.csv"
    write_rows(day, 1, ROWS)
    new = tmp_path / "exports" / "day.new"  # the same rows but the last order's amount: same size, another inode
    new.write_text(day.read_text(encoding="utf-8").replace(f",{100 + ROWS}.50\n", ",77777.77\n"), encoding="utf-8")
    assert new.stat().st_size == day.stat().st_size
    with on_open(day, "replace", str(new)) as done:
        assert changed_during(lambda: staged(tmp_path), done) == (ROWS, "77777.77")


def test_check_names_a_file_moved_away_while_it_is_read(tmp_path):
    cfg = tmp_path / "rfmsync.toml"
    cfg.write_text(CONFIG, encoding="utf-8")
    (tmp_path / "exports").mkdir()
    (tmp_path / "archive").mkdir()
    day = tmp_path / "exports" / "day.csv"
    write_rows(day, 1, ROWS)
    with on_open(day, "move", str(tmp_path / "archive" / "day.csv")) as done:
        result = changed_during(lambda: run_cli("check", "--config", str(cfg), code=(0, 3)), done)
    assert result.exit_code == 3  # a retry-later error, not an internal one (70)
    assert f"{day}: the file was removed or renamed while the export folder was being read; nothing was stored" \
        in result.output


def test_a_utf8_file_cut_inside_its_last_character_is_retried_later(tmp_path):
    cfg = tmp_path / "rfmsync.toml"
    cfg.write_text(CONFIG, encoding="utf-8")
    (tmp_path / "exports").mkdir()
    day = tmp_path / "exports" / "day.csv"
    full = "order_id,date,amount,customer\n1,2025-06-01,10.50,Пётр\n2,2025-06-02,11.50,Иван".encode()
    euro = full + "€".encode()  # 3 bytes
    for data in (full[:-1], euro[:-1], euro[:-2]):  # the file ends 1 or 2 bytes into a 2- or 3-byte character
        day.write_bytes(data)
        result = run_cli("check", "--config", str(cfg), code=3)
        assert f"{day}: the file ends inside a character (cut short: still being written or copied?)" \
            in result.output
    day.write_bytes(full[:-3] + b"\xff\n")  # a bad byte, not a character cut short: the encoding error (exit 2)
    assert "not valid" in run_cli("check", "--config", str(cfg), code=2).output
    day.write_bytes(full + b"\n")  # finished (a fresh file without a final line break waits: test_files_copy_pause)
    run_cli("check", "--config", str(cfg))


def test_a_file_written_in_place_with_its_mtime_set_back_all_through_its_reads_stops_the_run(tmp_path):
    """Its last cents rewritten in place again and again, its mtime set back each time: inode, size and mtime stay
    (before files25, each read was kept, a file being written stored), only its ctime and bytes change."""
    cfg = tmp_path / "rfmsync.toml"
    cfg.write_text(CONFIG, encoding="utf-8")
    (tmp_path / "exports").mkdir()
    day = tmp_path / "exports" / "day.csv"
    write_rows(day, 1, ROWS)
    with rewriting_in_place(day):
        output = refused("pull", cfg)
    assert f"{day}: the file changed while it was read, 3 times in a row" in output
    assert stored_orders(cfg) == ROWS


def test_a_file_whose_mode_changes_all_through_its_reads_is_read_at_once(tmp_path):
    """A backup setting the files' attributes (chmod, the archive bit: ctime alone moves, no byte changes) while
    the run reads: the file did not change (files25: its ctime moved, so each read was thrown away and the run
    stopped, exit 3)."""
    (tmp_path / "exports").mkdir()
    day = tmp_path / "exports" / "day.csv"
    write_rows(day, 1, ROWS)
    with chmodding(day):
        assert staged(tmp_path) == (ROWS, f"{100 + ROWS}.50")
