"""A UTF-8 export that grows while its encoding is decided (connectors.file_encoding.utf8_copy under
``encoding = "auto"``): its last row ends inside a character, and the writer appends the rest between two of the
decision's reads. Whichever two reads the append falls between, the answer is the file read whole as UTF-8 (the
append came before the reads that decide) or the retry-later error; never the encoding error (exit 2: "fix that
line" for a line that is fine), a file cut short for good, or a copy decided on the bytes before the append (cp1251
mojibake of a UTF-8 letter). The append comes from the path itself: a :class:`GrowingPath` appends once, at its
``at``-th use by the reader (an open or a stat), deterministically, nothing waits."""

from __future__ import annotations

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
            with open(str(self), "ab") as f:
                f.write(cls.rest)
        return str(self)


def uses(path: Path) -> int:
    """How many times the decision uses ``path`` when nothing grows (the places an append can fall between)."""
    GrowingPath.uses, GrowingPath.at = 0, 0
    try:
        utf8_copy(GrowingPath(path), "auto", path.parent)
    except ConnectorError:  # cut short: retry later (fresh) or for good (an hour old)
        pass
    return GrowingPath.uses


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
