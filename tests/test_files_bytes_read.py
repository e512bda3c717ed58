"""How many bytes the file reader reads of an export (BENCHMARKS.md, files28): read by ``/proc/self/io``'s
``rchar``, every byte a ``read`` returned. Linux only."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.file_lines import newline_of

pytestmark = pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs /proc/self/io (Linux)")


def _rchar() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar"))


def test_the_newline_of_a_csv_is_found_without_reading_its_first_mb(tmp_path):
    """Called 4 times per file by a read (the header, title lines, the row numbers, the slices): each read the
    first MB, 0.8 of a 5 MB file's size again. Now up to the first line break, in 64 KiB blocks."""
    path = tmp_path / "sales.csv"
    path.write_bytes(b"id,amount\n" + b"1,10.50\n" * 400_000)
    before = _rchar()
    assert newline_of(path) == "\n"
    assert _rchar() - before < 1 << 18  # (the /proc read itself: a few hundred bytes)
    cr = tmp_path / "cr.csv"
    cr.write_bytes(b"id,amount\r" + b"1,10.50\r" * 400_000)
    assert newline_of(cr) == ""
