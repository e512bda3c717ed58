"""The encoding of a file export: detected (UTF-8, UTF-16 with a BOM, cp1251 or cp866 by their Cyrillic letter
runs), transcoded to a UTF-8 copy for DuckDB, and the error for text that is not in it, naming the line and
quoting the text around the first bad byte. A part of :mod:`connectors.file_readers`."""

from __future__ import annotations

import codecs
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from .errors import BadFileError, ConfigError, ConnectorError, TransientError
from .file_bytes import ROW_MAX, first_bad_byte, last_row, line_at, quoted_at, row_start, stray_quote
from .file_cyrillic import CYRILLIC_RUN, cyrillic_8bit, decide_8bit, tied_8bit  # noqa: F401 (re-exported)
from .file_guesses import guessed
from .file_paths import FileState, file_state, given, unchanged
from .file_signatures import not_text

log = logging.getLogger("connectors.file_readers")


def _detect_encoding(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(1 << 20)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
        return "utf-8"
    except UnicodeDecodeError:
        enc, tied = decide_8bit(head)
    if tied:  # a guess: not silent, as the last row's is (cut_or_8bit)
        at = next(i for i, b in enumerate(head) if b >= 0x80)
        guessed(f"{path}: not UTF-8, and as many letters in Cyrillic words as cp1251 and as cp866: read as "
                f"{both_readings(path, at, enc)} (set [source] encoding to say which)")
    return enc


def both_readings(path: Path, at: int, enc: str) -> str:
    """``cp1251 (line N: '…'); as cp866 it reads '…' (as many letters): a guess``: the line holding byte ``at`` in
    the encoding read (``enc``) and in the other, for the warning of a tie (:func:`tied_8bit`)."""
    other = "cp866" if enc == "cp1251" else "cp1251"
    line, text = quoted_at(path, at, enc)
    return (f"{enc} (line {line}: {text!r}); as {other} it reads {quoted_at(path, at, other)[1]!r} (as many "
            f"letters): a guess")


def detect_encoding(path: Path) -> str:
    """``utf-8`` (with or without BOM), ``utf-16`` (BOM), ``cp1251`` or ``cp866`` (whichever reads more
    Cyrillic words: :func:`cyrillic_8bit`): what ``encoding = "auto"`` reads."""
    return _detect_encoding(path)


def utf8_copy(path: Path, encoding: str, tmp: Path) -> Path:
    """The file itself when it is UTF-8 (with or without BOM), else a UTF-8 copy written in chunks; a workbook or
    Parquet file under a text name (:func:`not_text`) and a file ending in NUL bytes (:func:`nul_tail`) stop. Under
    ``auto``, a UTF-8 file whose last row is not UTF-8 (one that ends inside a character included) is cut short
    or in an 8-bit encoding: :func:`cut_or_8bit` decides."""
    auto = encoding.lower() == "auto"
    state = file_state(path)  # before the sniff: the decision and the copy read the file several times, of one state
    enc = read_encoding(path, encoding, state)
    if codecs.lookup(enc).name in _UTF8:  # (cut_or_8bit's utf-8: finished since it was found cut, read as it is)
        return path
    out = tmp / (path.stem + ".utf8.csv")
    try:
        with open(path, encoding=enc, newline="") as src, open(out, "w", encoding="utf-8", newline="") as dst:
            while chunk := src.read(1 << 22):
                dst.write(chunk)
    except UnicodeDecodeError:
        if not unchanged(path, state):
            raise changed_while_decided(path) from None
        raise encoding_error(path, enc, auto=auto) from None
    if not unchanged(path, state):  # an encoding decided on bytes since changed, or a copy of a half-written file
        raise changed_while_decided(path)
    log.debug("transcoded %s from %s", path, enc)
    return out


_UTF8 = ("utf-8", "utf-8-sig", "ascii")


def read_encoding(path: Path, encoding: str = "auto", state: FileState | None = None) -> str:
    """The encoding the file reader reads ``path`` in with ``encoding`` set (:func:`utf8_copy`'s decision, also
    ``rfmsync init``'s): ``encoding`` itself, or under ``auto`` :func:`detect_encoding`'s, unless the first MB reads
    as UTF-8 and the last row does not (:func:`cut_or_8bit`). A workbook or Parquet file under a text name
    (:func:`not_text`), a file ending in NUL bytes (:func:`nul_tail`) or one cut short stop; one that changed since
    ``state`` (:func:`~connectors.file_paths.file_state`, taken before) while it was decided is read again later."""
    state = state or file_state(path)
    not_text(path)
    enc = _detect_encoding(path) if encoding.lower() == "auto" else encoding
    try:
        utf8 = codecs.lookup(enc).name in _UTF8
    except LookupError:
        raise ConfigError(f"unknown encoding {encoding!r} for {path}") from None
    nul_tail(path, codecs.lookup(enc).name)
    if utf8 and encoding.lower() == "auto" and _ends_outside_utf8(path):
        try:
            return cut_or_8bit(path)
        except ConnectorError:
            if not unchanged(path, state):
                raise changed_while_decided(path) from None
            raise
    return enc


def changed_while_decided(path: Path) -> TransientError:
    """The retry-later error of a file that changed (grew, was written anew) while its encoding was decided or it
    was copied to UTF-8: the decision's reads saw different files (a character begun, then finished), so neither an
    encoding error nor a copy of it stands. The file reader reads it again (:data:`~connectors.file_paths.READ_ATTEMPTS`
    times before its own retry-later error)."""
    return TransientError(f"{path}: the file changed while its encoding was being decided (still being written or "
                          f"copied?); nothing was stored: run again once it is complete")


def encoding_error(path: Path, encoding: str, auto: bool = False) -> ConnectorError:
    """A ConfigError naming the file, the first bad byte, its line (number and text, bad bytes shown as
    U+FFFD) and what to do: set ``encoding = "auto"`` or an encoding that reads the whole file (``"utf-16"`` for a
    file with a UTF-16 BOM, whatever encoding is set), or, when
    ``auto`` says it is already set or the file is UTF-16 (its BOM), fix that line (a stray byte in a file of the
    encoding detected). A UTF-8 file whose only bad bytes are the start of a character at its very end, modified
    in the last :data:`SETTLED_SECONDS`, is cut short (a copy under way): a retry-later error
    (:func:`cut_inside_character`); one unchanged since is not valid UTF-8 like any other. A UTF-16 file that ends
    inside a code unit (an odd byte count) or a surrogate pair, the same retry-later error while fresh, and once
    settled the BadFileError of a file cut for good (no 8-bit encoding could read it instead)."""
    enc = codecs.lookup(encoding).name
    if enc == "utf-8" and not settled(path) and cut_inside_character(path):
        return cut_short(path)
    if enc.startswith("utf-16") and _utf16_cut(path, enc):  # cut inside a code unit or a surrogate pair
        return cut_short(path) if not settled(path) else cut_for_good(path, first_bad_byte(path, enc), enc)
    with open(path, "rb") as f:
        head = f.read(1 << 20)
    bom = head[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)  # Excel's "Unicode text": no 8-bit guess
    # a UTF-16 file (BOM) with a bad code unit: an 8-bit encoding "reads" any bytes
    auto = auto or (enc.startswith("utf-16") and bom)
    at = first_bad_byte(path, enc)
    where = f" at byte {at}{line_at(path, at, enc)}" if at is not None else ""
    if auto:  # the file's first MB read as ``enc``: a stray byte, not a file in another encoding
        hint = "; fix that line, or set [source] encoding to the file's encoding"
    else:
        others = [e for e in (("utf-16",) if bom else (cyrillic_8bit(head), "utf-8"))
                  if e != enc and first_bad_byte(path, e) is None]
        hint = '; set encoding = "auto"' + "".join(f' or "{e}"' for e in others[:1]) + " in [source]"
    return ConfigError(f"{path}: not valid {enc} text{where}{hint}")


def cut_inside_character(path: Path) -> bool:
    """Whether ``path`` is valid UTF-8 (a BOM allowed) but for its last 1-3 bytes, which begin a multi-byte
    character that the file ends before finishing: a file cut short, not one in another encoding."""
    at = first_bad_byte(path, "utf-8")
    return at is not None and _cut_at(path, at)


def _cut_at(path: Path, at: int) -> bool:
    """Whether the bytes from ``at`` (the first that is not UTF-8) are the file's last 1-3 and begin a character it
    ends before finishing."""
    if path.stat().st_size - at > 3:
        return False
    with open(path, "rb") as f:
        f.seek(at)
        return _unfinished(f.read())


def _unfinished(tail: bytes, enc: str = "utf-8") -> bool:
    """Whether ``tail`` is ``enc`` text (UTF-8, or UTF-16 of one byte order) that ends inside a character: the
    decoder holds its last bytes back, not refuses any (bytes appended could finish it)."""
    decoder = codecs.getincrementaldecoder(enc)()
    try:
        decoder.decode(tail, final=False)
    except UnicodeDecodeError:
        return False
    return bool(decoder.getstate()[0])


#: a file not modified for this many seconds is not being written or copied (:func:`settled`). Nothing in the bytes
#: tells a cp1251 file ending in «Р» (0xD0) from a UTF-8 file cut after the first byte of «Ж» (0xD0 0x96): only time
#: does, so the quiet period must make a writer that is still at work implausible. A minute is not enough (an export
#: or a copy over a slow share pausing for a minute, then stored as cp1251: its last letter wrong, the rest of the
#: file lost); an hour is. The cost: an 8-bit file that ends so waits an hour (with runs every 10 minutes, it is read
#: within about 70 minutes), with a retry-later error until then.
SETTLED_SECONDS = 3600
_SETTLED = f"{SETTLED_SECONDS // 60} minutes"
#: an mtime ahead of this machine's clock by more than this is called a wrong clock in :func:`cut_short`
CLOCK_SLACK = 300


#: this machine's clock, in seconds since the epoch (tests set it ahead instead of waiting an hour)
clock: Callable[[], float] = time.time


def changed_at(path: Path) -> float:
    """When ``path`` last changed: its mtime, or on POSIX its ctime when that is later. ``cp -p``, ``rsync -t``,
    tar and unzip set the source's mtime only after the last byte; robocopy dates an unfinished file 1980-01-01, and
    a writer may set the time itself before it is done. None can set the ctime, which every write, ``utime``,
    ``chmod`` or rename moves to the clock of this machine (or of the share)."""
    return _changed(path.stat())


def _changed(st: os.stat_result) -> float:
    """:func:`changed_at` of a ``stat`` result."""
    return max(st.st_mtime, st.st_ctime) if os.name == "posix" else st.st_mtime


def settled(path: Path) -> bool:
    """Whether ``path`` has not changed for :data:`SETTLED_SECONDS` (:func:`changed_at`, by :data:`clock`: an mtime
    ahead of it delays the decision, and :func:`cut_short` says so)."""
    return clock() - changed_at(path) >= SETTLED_SECONDS


def utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def clock_ahead(mtime: float, so: str) -> str:
    """The words for a file whose modification time ``mtime`` is ahead of this machine's clock (by more than
    :data:`CLOCK_SLACK`), ``so`` what that does to its read; the caller adds its other way out."""
    return (f"its modification time, {utc(mtime)}, is ahead of this machine's clock (the clock of the device or "
            f"share that wrote it is wrong?), so {so}: set that clock right and save the file again")


def ctime_later(changed: float, mtime: float, wait: str) -> str:
    """The words for a file whose change time ``changed`` (its ctime) is later than its ``mtime`` (by more than
    :data:`CLOCK_SLACK`): the ``wait`` counts from it."""
    return (f"{wait} counts from its change time (ctime), {utc(changed)}, later than its modification time, "
            f"{utc(mtime)} (a copy tool that kept the source's time, or a rename, chmod or touch since: anything "
            f"that moves the ctime starts {wait} again)")


def cut_short(path: Path) -> TransientError:
    """The retry-later error of a file that ends inside a character and is not :func:`settled`; one whose mtime is
    ahead of this machine's clock (the writer's clock wrong) names that time and what to do; one whose ctime is
    later than its mtime (:func:`changed_at`) names the ctime the hour counts from."""
    st = path.stat()  # once: the times named are of one state of the file
    mtime, changed = st.st_mtime, _changed(st)
    ahead = ""
    if mtime > clock() + CLOCK_SLACK:  # a share's clock seconds ahead of ours is not worth a word
        ahead = ("; " + clock_ahead(mtime, f"it is taken as complete only {_SETTLED} after that")
                 + ", or set [source] encoding to the file's encoding")
    elif changed > mtime + CLOCK_SLACK:  # its ctime: the hour counts from there, not from the mtime shown
        ahead = "; " + ctime_later(changed, mtime, "the hour")
    return TransientError(f"{path}: the file ends inside a character (cut short: still being written or copied?); "
                          f"nothing was stored: run again once it is complete (a file unchanged for {_SETTLED} is "
                          f"taken as complete){ahead}")


def _ends_outside_utf8(path: Path) -> bool:
    """Whether the file's last row holds non-ASCII bytes that are not UTF-8 (a character begun and not finished
    included)."""
    row = last_row(path)[1]
    if row.isascii():
        return False
    try:
        row.decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


def _utf8_words(row: bytes) -> bool:
    """Whether ``row``, UTF-8 but for a character begun at its end, reads before that character as UTF-8 text: a run
    of two or more Cyrillic letters, or any other non-ASCII character. cp1251 bytes seldom do (``Рё`` is one letter,
    UTF-8 ``и``); a UTF-8 row cut inside its last word does (``Анна Смир`` and the first byte of ``н``)."""
    text = codecs.getincrementaldecoder("utf-8")().decode(row, final=False)
    return bool(CYRILLIC_RUN.search(text)) or any(not ("\u0400" <= c <= "\u04ff") for c in text if not c.isascii())


def _utf8_words_from(path: Path, start: int) -> bool:
    """Whether the file's bytes from ``start`` hold UTF-8 words (two or more Cyrillic letters in a run, as UTF-8):
    a UTF-8 file with a stray byte, not an 8-bit one (cp1251 seldom makes even one such letter: ``Рё``). Read in
    4 MB chunks."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    with open(path, "rb") as f:
        f.seek(start)
        while chunk := f.read(1 << 22):
            if CYRILLIC_RUN.search(decoder.decode(chunk)):
                return True
    return False


def _ascii_before(path: Path, end: int) -> bool:
    """Whether the file's bytes before offset ``end`` are all ASCII (read in 4 MB chunks)."""
    with open(path, "rb") as f:
        return all(f.read(min(1 << 22, end - pos)).isascii() for pos in range(0, end, 1 << 22))


def cut_or_8bit(path: Path) -> str:
    """The encoding to read ``path`` with, whose first MB reads as UTF-8 but whose last row does not
    (:func:`_ends_outside_utf8`) under ``encoding = "auto"``, by the row holding its first bad byte. Bad bytes that
    are the file's very last and begin a character it does not finish may be a file cut short (a copy under way),
    or an 8-bit file whose last letter is a byte UTF-8 starts a character with (cp1251 ``Ш`` is 0xD8, ``РёД`` is
    UTF-8 ``и`` and a started character): modified in the last :data:`SETTLED_SECONDS`, a retry-later error (still
    being written or copied?), unless the file was named on the command line (:func:`~connectors.file_paths.given`). Any other bad bytes (cp1251 ``ДД``, ``я``: 0xFF is never UTF-8; a letter before a line
    break or Excel's ``;;`` row) are no UTF-8 file cut short, fresh or not. Either way, once it cannot be a cut
    file: ASCII before the row holding the first bad byte, it is an 8-bit file (:func:`cyrillic_8bit`, cp1251 when
    its few bytes hold no Cyrillic word; the warning shows the other reading too when both read as many letters:
    :func:`tied_8bit`), read as that with a warning, unless the bytes from that row read as UTF-8 text
    (a cut row: :func:`_utf8_words`, ``Анна Смир``; other rows: :func:`_utf8_words_from`). A file cut so is a UTF-8
    file cut short that will not be finished: a BadFileError naming the byte and its line; any other, the encoding
    error (:func:`encoding_error`), fresh or not."""
    at = first_bad_byte(path, "utf-8")
    if at is None:  # finished since it was found cut: UTF-8 after all
        return "utf-8"
    start = row_start(path, at)
    with open(path, "rb") as f:
        f.seek(start)
        row = f.read(ROW_MAX)
    cut = _cut_at(path, at)  # the bad bytes the file's very last: a character begun, maybe a file cut short
    if cut and not settled(path) and not given(path):  # (a file named on the command line is no copy under way)
        raise cut_short(path)
    if _ascii_before(path, start) and not (_utf8_words(row) if cut else _utf8_words_from(path, start)):
        enc, tied = decide_8bit(row)  # a tie, a guess: both readings shown, each quoting the line (not twice)
        shown = bytes(b for b in row if b >= 0x80)
        whole = f"unchanged for {_SETTLED}" if settled(path) else "named on the command line"
        why = (f"which begin a UTF-8 character it does not finish; {whole}, so it is no file cut short" if cut
               else "which are not UTF-8")
        where = ("its last row's byte(s)" if start >= last_row(path)[0] else
                 f"the byte(s) from byte {at} on{'' if tied else line_at(path, at, enc)}")  # rows after that one too
        read = both_readings(path, at, enc) if tied else enc
        guessed(f"{path}: ASCII text but for {where} ({shown[:16].hex(' ')}{' …' if len(shown) > 16 else ''}), "
                f"{why}: read as {read} (set [source] encoding to say which)")
        return enc
    if not cut:
        raise encoding_error(path, "utf-8", auto=True)
    raise cut_for_good(path, at, "utf-8")


def cut_for_good(path: Path, at: int | None, enc: str) -> BadFileError:
    """A file that ends inside a character and has not changed for :data:`SETTLED_SECONDS`: cut short for good."""
    where = f" at byte {at}{line_at(path, at, enc)}" if at is not None else ""
    since = "" if given(path) and not settled(path) else f", and has not changed for {_SETTLED}"
    return BadFileError(f"{path}: the file ends inside a character{where}{since}: it was "
                        f"cut short (an export or copy that stopped?); nothing was stored: export it again (or, if it "
                        f"is not {'UTF-8' if enc == 'utf-8' else 'UTF-16'}, set [source] encoding to its encoding)")


def _utf16_cut(path: Path, enc: str) -> bool:
    """Whether the UTF-16 file ``path`` is valid but for its last 1-3 bytes: a code unit begun (an odd byte count)
    or a surrogate pair begun, that the file ends before finishing."""
    at = first_bad_byte(path, enc)
    if at is None or path.stat().st_size - at > 3:
        return False
    with open(path, "rb") as f:
        big = f.read(2) == codecs.BOM_UTF16_BE or enc.endswith("be")
        f.seek(at)
        return _unfinished(f.read(), "utf-16-be" if big else "utf-16-le")  # (a lone low surrogate is no cut)


def nul_tail(path: Path, enc: str) -> None:
    """A text file that ends in NUL bytes (two or more; a NUL code unit of a UTF-32 file) is a copy under way that set
    the file's size first (Windows Explorer or robocopy onto a share, some NAS sync tools): the rest is not written
    yet. Changed in the last :data:`SETTLED_SECONDS`, a retry-later error; unchanged since, a copy that stopped:
    a BadFileError. No export ends so: its last line is text."""
    unit = 4 if enc.startswith("utf-32") else 2  # (UTF-16 LE text ends in one zero byte: 0A 00; whatever is set)
    size = path.stat().st_size
    n, block = 0, 1 << 16
    with open(path, "rb") as f:
        while n < size:
            f.seek(max(0, size - n - block))
            chunk = f.read(min(block, size - n))
            n += len(chunk) - len(chunk.rstrip(b"\0"))
            if chunk.rstrip(b"\0"):
                break
    if n < unit:
        return
    if not settled(path):
        raise TransientError(f"{path}: the file ends in {n} NUL bytes (a copy under way that set its size first?); "
                             f"nothing was stored: run again once it is complete (a file unchanged for {_SETTLED} is "
                             f"taken as complete)")
    raise BadFileError(f"{path}: the file ends in {n} NUL bytes, and has not changed for {_SETTLED}: a copy that "
                       f"stopped?; nothing was stored: copy or export it again")


def csv_error(path: Path, read: Path, exc: Exception, auto: bool = False, delim: str | None = None,
              skip: int = 0) -> Exception:
    """The error to raise when DuckDB cannot read ``read`` (``path`` itself or its UTF-8 copy, ``skip`` title lines
    left out): text that is not UTF-8 gets the encoding message (``auto``: ``encoding = "auto"`` is set), a field
    that goes on after its closing quote its line (with ``delim``), anything else a BadFileError with DuckDB's
    first line."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    try:
        if "unicode" in str(exc).lower() or first_bad_byte(read, "utf-8") is not None:
            return encoding_error(path, "utf-8", auto)
    except OSError:
        pass
    if delim and (stray := stray_quote(read, delim)) is not None:
        line, text = stray[0] + skip, stray[1]
        return BadFileError(f"{path}: cannot read as CSV: line {line} has a field that begins with a quote and goes on "
                            f"after its closing one ({text!r}): in CSV such a field must be quoted whole, its own "
                            f"quotes doubled (\"\"\"Ромашка\"\" ООО\"); fix it in the export (or write it without "
                            f"the quotes) and run again (DuckDB: {first})")
    return BadFileError(f"{path}: cannot read as CSV: {first}")
