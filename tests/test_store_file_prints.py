"""The order store's fingerprint of a file is of the bytes its read read (:mod:`sync.store.file_prints`): a file
rewritten in place between the run's first look at the folder and its read (``cp -p`` of the same export again,
which sets the old mtime back once done) is not stored as half a file under the whole file's fingerprint; and a
first ``--verify`` on unchanged files keeps each file's first read time (:func:`sync.store.file_gone.alike`), and
reads each file's bytes once for its hash, not twice."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pytest

from connectors.files import FileSource, FileSourceConfig
from connectors.tables import create_tables
from sync.ingest import segments_from_store
from sync.ledger import open_ledger
from sync.pipeline import Reading
from sync.settings import load_settings
from sync.store import connect_store
from sync.store.files import ingest_files
from tests.test_store_file_gone import _refund_and_withdraw
from tests.test_store_webhook_age import AS_OF, _ingest, _ingested_shop, _state

COLS = {"order_id": "order_id", "customer_id": "customer", "ordered_at": "date", "amount": "amount"}
HEAD = "order_id,customer,date,amount\n"


def _rows(day: int, n: int) -> bytes:
    return (HEAD + "".join(f"{day}-{i},c{i},2025-06-0{day},{i}.50\n" for i in range(1, n + 1))).encode()


def _day2_orders(con) -> int:
    return con.execute("SELECT count(*) FROM orders WHERE order_id LIKE '2-%'").fetchone()[0]


def _in_place(path: Path, data: bytes, mtime_ns: int | None = None) -> None:
    """Write ``data`` over the file in place (the same inode, as ``cp`` onto an existing file does), then set its
    mtime (``cp -p``'s last step) when given."""
    with open(path, "r+b") as f:
        f.truncate(0)
        f.write(data)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


def _setup(tmp_path: Path) -> tuple[FileSource, Path, bytes, int]:
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / "day1.csv").write_bytes(_rows(1, 50))
    day2 = tmp_path / "exports" / "day2.csv"
    full = _rows(2, 2000)
    day2.write_bytes(full)
    source = FileSource(FileSourceConfig(type="file", orders="exports/*.csv", columns=COLS), tmp_path)
    return source, day2, full, day2.stat().st_mtime_ns


def test_a_file_rewritten_between_the_first_look_and_its_read_is_stored_as_read_and_read_again(tmp_path):
    """day1 is read first; then the copy job starts writing day2 again in place (half of it written when day2 is
    read). After the run the copy ends and sets the source's mtime: the same size, mtime and ends as the run's first
    fingerprint. The next run must see that day2 is not what was stored, and read it whole."""
    source, day2, full, mtime = _setup(tmp_path)
    half = full[:full.index(b"\n", len(full) // 2) + 1]  # the copy so far: whole lines

    def copy_starts(rows: int) -> None:
        if day2.stat().st_size == len(full):  # after day1's read, before day2's
            _in_place(day2, half)

    con = connect_store(tmp_path / "store.duckdb")
    ingest_files(con, source, progress=copy_starts)
    assert _day2_orders(con) == half.count(b"\n") - 1
    _in_place(day2, full, mtime)  # the copy done, its mtime the source's: what the first look saw
    ingested = ingest_files(con, source)
    assert ingested.read == [str(day2)]
    assert _day2_orders(con) == 2000


def test_with_verify_the_whole_file_hash_is_of_the_bytes_read(tmp_path):
    """A middle edit in place that keeps the size, mtime and ends, made between the run's first look and the read:
    the whole-file hash stored is the edited file's, so the original bytes coming back are read again."""
    source, day2, full, mtime = _setup(tmp_path)
    edited = full.replace(b"2-1000,c1000,2025-06-02,1000.50", b"2-1000,c1000,2025-06-02,9999.50")
    assert len(edited) == len(full)

    def edit(rows: int) -> None:
        if day2.read_bytes() == full:
            _in_place(day2, edited, mtime)

    con = connect_store(tmp_path / "store.duckdb")
    ingest_files(con, source, verify=True, progress=edit)
    amount = "SELECT amount FROM orders WHERE order_id = '2-1000'"
    assert con.execute(amount).fetchone()[0] == 9999.5
    _in_place(day2, full, mtime)  # the export rolled back: size, mtime and ends unchanged all along
    assert ingest_files(con, source, verify=True).read == [str(day2)]
    assert con.execute(amount).fetchone()[0] == 1000.5


def test_a_first_verify_on_unchanged_files_keeps_a_refund_and_a_withdrawn_consent_received_since(tmp_path):
    """Files read without ``--verify`` have no whole-file hash stored; the first ``--verify`` reads them all again,
    and the same bytes must keep their first read time: the webhook's newer refund and withdrawn consent stay."""
    cfg, (oid, cid, at, amount) = _ingested_shop(tmp_path)
    other = _refund_and_withdraw(cfg, oid, cid, at, amount)
    _ingest(cfg)
    assert _state(cfg, oid, other) == ([("refunded", 1)], [("no",)])
    settings = load_settings()
    with open_ledger(cfg, settings) as ledger:
        segments_from_store(cfg, ledger, settings, as_of=AS_OF, reading=Reading(verify=True)).con.close()
    assert _state(cfg, oid, other) == ([("refunded", 1)], [("no",)])


def _bytes_read() -> int:
    """The bytes this process has read so far (``rchar`` in /proc/self/io: every thread's reads, DuckDB's too)."""
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar:"))


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="needs Linux's /proc/self/io")
@pytest.mark.parametrize("first", ["without --verify", "with --verify, another config"])
def test_a_verify_that_must_read_a_file_again_reads_it_once_more_not_twice(tmp_path, first):
    """A ``--verify`` run reads again a file whose catalogue row has no whole-file hash (read without ``--verify``)
    or another config: hashing every byte of it before that read decides nothing. Its bytes read, beyond those of
    a ``--reread`` without ``--verify``, are the one hash after the read (they were two: that and one before it)."""
    (tmp_path / "exports").mkdir()
    day = tmp_path / "exports" / "day.csv"
    day.write_text(HEAD + "".join(f"{i},c{i % 5000},2025-06-{1 + i % 28:02d},{i % 997}.50\n" for i in range(100_000)))
    read = FileSource(FileSourceConfig(type="file", orders="exports/*.csv", columns=COLS), tmp_path)
    verified = first != "without --verify"
    then = FileSource(FileSourceConfig(type="file", orders="exports/*.csv", columns=COLS, delimiter=","),
                      tmp_path) if verified else read  # the run measured: another config, or the same
    con = duckdb.connect(str(tmp_path / "store.duckdb"))
    create_tables(con)
    ingest_files(con, read, verify=verified)
    at = _bytes_read()
    ingest_files(con, then, reread=True)
    reread = _bytes_read() - at
    ingest_files(con, read, verify=verified, reread=True)  # the catalogue as the first run left it
    at = _bytes_read()
    ingest_files(con, then, verify=True)
    more = _bytes_read() - at - reread
    assert 0.5 * day.stat().st_size < more < 1.5 * day.stat().st_size


@pytest.mark.parametrize("first, then", [(60, 0), (60, 600)])
def test_changing_quiet_seconds_reads_no_file_again(tmp_path, first, then):
    """``quiet_seconds`` says when a file is read, not what its rows are: it was part of the stored rows' config
    fingerprint, so changing it, or the upgrade that added it (a store's fingerprint was of the ``[source]`` without
    it), read every file of every store again."""
    (tmp_path / "exports").mkdir()
    for day in (1, 2):
        (tmp_path / "exports" / f"day{day}.csv").write_bytes(_rows(day, 50))
    con = connect_store(tmp_path / "store.duckdb")
    for quiet, read in ((first, 2), (then, 0)):
        source = FileSource(FileSourceConfig(type="file", orders="exports/*.csv", columns=COLS, quiet_seconds=quiet),
                            tmp_path)
        assert len(ingest_files(con, source).read) == read
