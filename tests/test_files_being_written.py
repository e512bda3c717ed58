"""An export still being written while a run reads it (a POS appending its receipts, a copy onto the share under
way): the run stops with a retry-later error naming the file and stores nothing, the rows read before stay, and
the next run reads the finished file whole (connectors.files.FileSource.read_file)."""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
from pathlib import Path

from tests.builders import run_cli

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


def line(i: int) -> str:
    return f"{i},c{i % 97},2025-06-{1 + i % 28:02d},{100 + i}.50\n"


@contextlib.contextmanager
def being_written(path: Path, first: int):
    """A writer appending rows from order id ``first`` on, each in two writes (the file often ends half-way
    through a line, as a copy's does), until the block ends; yields once the file has grown."""
    stop, grown = threading.Event(), threading.Event()

    def write() -> None:
        with open(path, "a", encoding="utf-8") as f:
            for i in itertools.count(first):
                text = line(i)
                for part in (text[:9], text[9:]):
                    f.write(part)
                    f.flush()
                grown.set()
                if stop.wait(0.001):
                    return

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert grown.wait(10)
        yield
    finally:
        stop.set()
        writer.join()


def stored_orders(cfg: Path) -> int:
    return json.loads(run_cli("pull", "--config", str(cfg), "--format", "json").stdout)["counts"]["stored_orders"]


def test_a_file_written_while_it_is_read_stops_the_run_and_the_next_run_reads_it_whole(tmp_path):
    cfg = tmp_path / "rfmsync.toml"
    cfg.write_text(CONFIG, encoding="utf-8")
    exports = tmp_path / "exports"
    exports.mkdir()
    (exports / "day1.csv").write_text("order_id,customer,date,amount\n" + "".join(map(line, range(1, 51))),
                                      encoding="utf-8")
    assert stored_orders(cfg) == 50
    day2 = exports / "day2.csv"
    day2.write_text("order_id,customer,date,amount\n" + "".join(map(line, range(1000, 1500))), encoding="utf-8")
    with being_written(day2, 1500):
        result = run_cli("pull", "--config", str(cfg), code=3)
    assert f"{day2}: the file changed while it was read, 3 times in a row (still being written or copied?)" \
        in result.output
    assert "nothing was stored: run again once it is complete" in result.output
    written = day2.read_text(encoding="utf-8").count("\n") - 1
    assert written > 500
    # day1's rows stayed through the refused run; the finished file is read whole, no row short or left out
    assert stored_orders(cfg) == 50 + written


def test_check_names_a_file_being_written(tmp_path):
    cfg = tmp_path / "rfmsync.toml"
    cfg.write_text(CONFIG, encoding="utf-8")
    (tmp_path / "exports").mkdir()
    sales = tmp_path / "exports" / "sales.csv"
    sales.write_text("order_id,customer,date,amount\n" + "".join(map(line, range(1, 300))), encoding="utf-8")
    with being_written(sales, 300):
        result = run_cli("check", "--config", str(cfg), code=3)
    assert f"{sales}: the file changed while it was read" in result.output
    run_cli("check", "--config", str(cfg))
