"""A UTF-8 export that grows while its encoding is decided (connectors.file_encoding.utf8_copy under
``encoding = "auto"``): its last row ends inside a character, and the writer appends the rest between two of the
decision's reads. Whichever two reads the append falls between, the answer is the file read whole as UTF-8 (the
append came before the reads that decide) or the retry-later error; never the encoding error (exit 2: "fix that
line" for a line that is fine), a file cut short for good, or a copy decided on the bytes before the append (cp1251
mojibake of a UTF-8 letter). The append comes from the path itself: a :class:`GrowingPath` appends once, at its
``at``-th use by the reader (an open or a stat), deterministically, nothing waits."""

from __future__ import annotations

import os
import time
from pathlib import Path, PosixPath

import pytest

from connectors import file_encoding
from connectors.errors import ConnectorError, TransientError
from connectors.file_encoding import SETTLED_SECONDS, utf8_copy

HEAD = "order_id,customer,date,amount\n"


class GrowingPath(PosixPath):
    """A path that appends :attr:`rest` to its file at its :attr:`at`-th use (``os.fspath``: every open and stat)."""

    uses = 0
    at = 0
    rest = b""

    def __fspath__(self) -> str:
        cls = type(self)
        cls.uses += 1
        if cls.uses == cls.at:
            self.change()
        return str(self)

    def change(self) -> None:
        with open(str(self), "ab") as f:
            f.write(type(self).rest)


class ReplacedPath(GrowingPath):
    """A path whose file is replaced by :attr:`new` (``os.replace``: another inode) at its :attr:`at`-th use."""

    new = Path()

    def change(self) -> None:
        os.replace(type(self).new, str(self))


def uses(path: Path, cls: type[GrowingPath] = GrowingPath) -> int:
    """How many times the decision uses ``path`` when nothing changes (the places a change can fall between)."""
    cls.uses, cls.at = 0, 0
    try:
        utf8_copy(cls(path), "auto", path.parent)
    except ConnectorError:  # cut short: retry later (fresh) or for good (an hour old)
        pass
    return cls.uses


CASES = {  # the whole file; the name whose last letter the writer is inside when the decision begins
    "utf8-rows": (HEAD + "".join(f"{i},Смирнов {i},2025-06-01,1.50\n" for i in range(1, 40)) + "40,Анна Смирнова,"
                  "2025-06-02,2.50\n", "Смирнова"),
    "ascii-then-one-letter": (HEAD + "".join(f"{i},c{i},2025-06-01,1.50\n" for i in range(1, 40)) + "40,Я,"
                              "2025-06-02,2.50\n", "Я"),
}


@pytest.mark.parametrize("age", [0, SETTLED_SECONDS + 5])  # fresh, or its clock an hour ahead (the file "old")
@pytest.mark.parametrize("case", list(CASES))
def test_a_file_grown_between_the_reads_of_its_encoding_decision_is_read_whole_or_retried(tmp_path, monkeypatch,
                                                                                          case, age):
    text, name = CASES[case]
    data = text.encode()
    cut = data.index(name.encode()) + len(name.encode()) - 1  # inside the name's last letter (2 bytes in UTF-8)
    monkeypatch.setattr(file_encoding, "clock", lambda: time.time() + age)
    day = tmp_path / "day.csv"
    day.write_bytes(data[:cut])
    n = uses(day)
    assert n >= 5  # the decision reads the file several times: the cases below put the append between each two
    GrowingPath.rest = data[cut:]
    for at in range(1, n + 1):
        day.write_bytes(data[:cut])
        GrowingPath.uses, GrowingPath.at = 0, at
        try:
            read = utf8_copy(GrowingPath(day), "auto", tmp_path)
        except TransientError as exc:
            assert "still being written or copied?" in str(exc) and "nothing was stored" in str(exc), (at, exc)
            continue
        assert read.read_bytes().decode("utf-8") == text, at  # read whole, as UTF-8 (in place or copied)


def test_a_cp1251_file_replaced_by_a_utf8_one_from_the_encoding_sniff_on_is_read_whole_or_retried(tmp_path):
    """A cp1251 export written anew as UTF-8 under another name and renamed onto it, between any two of
    utf8_copy's reads. Before, the file's state was taken after the sniff: one replaced between the sniff and that
    line was the encoding error, "not valid cp1251 … fix that line" for a fine file (UTF-8 «И» is 0xD0 0x98, and
    0x98 is no cp1251 character). FileSource.read_file, which checks the file's state around utf8_copy, read it
    again already; utf8_copy called on its own now says it too."""
    text = HEAD + "".join(f"{i},Иван Петров,2025-06-01,1.50\n" for i in range(1, 50))
    day, new = tmp_path / "day.csv", tmp_path / "day.new"
    day.write_bytes(text.encode("cp1251"))
    n = uses(day, ReplacedPath)
    assert n >= 3
    for at in range(1, n + 1):
        day.write_bytes(text.encode("cp1251"))
        new.write_bytes(text.encode("utf-8"))
        ReplacedPath.uses, ReplacedPath.at, ReplacedPath.new = 0, at, new
        try:
            read = utf8_copy(ReplacedPath(day), "auto", tmp_path)
        except TransientError as exc:
            assert "the file changed while its encoding was being decided" in str(exc), (at, exc)
            continue
        assert read.read_bytes().decode("utf-8") == text, at  # the cp1251 file or the UTF-8 one, read whole
