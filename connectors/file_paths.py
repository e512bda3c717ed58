"""The files a file source's pattern (``orders``, ``contacts``) matches, or a clear error naming what is wrong."""

from __future__ import annotations

import errno
import fnmatch
import glob
import hashlib
import logging
import os
import re
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from .errors import ConfigError, TransientError
from .file_signatures import XLS, XLSX
from .suggest import did_you_mean

log = logging.getLogger(__name__)


class NothingMatches(ConfigError):
    """A pattern that matches no file (``pattern``: as configured)."""

    def __init__(self, message: str, pattern: str, full: str | None = None) -> None:
        super().__init__(message)
        self.pattern = pattern
        self.full = full or pattern  # the pattern as matched: made absolute against the folder it is relative to


#: the errors of a link's target that waiting cannot fix (a ConfigError); any other (the target missing, a mount
#: disconnected or stale, an I/O error, a timeout) is a retry-later error
LINK_CONFIG_ERRORS = frozenset({errno.ELOOP, errno.EACCES, errno.EPERM, errno.ENOTDIR})


def matching_files(pattern: str, base_dir: Path) -> list[Path]:
    """The files ``pattern`` (relative to ``base_dir``, or absolute) matches, sorted. A link that leads nowhere,
    matched by the pattern or by one of its folder levels (``exports/*`` of ``exports/*/orders.csv``: a month's
    folder linked to a network share not mounted), stops the read, naming it: skipping it would leave its orders
    out, or remove the rows read from it before, without a word. A link whose target is missing, or cannot be
    reached now (a share disconnected: ENOTCONN, ESTALE, EIO, a timeout...) is a retry-later error; a link that
    can never lead anywhere as it is (:data:`LINK_CONFIG_ERRORS`: a loop, no permission, a file used as a folder)
    a ConfigError. An office suite's own file beside a workbook (:func:`office_file`: Excel's ``~$sales.xlsx`` while
    ``sales.xlsx`` is open) is left out, said at ``-v`` (and by ``check``: :func:`left_out_lines`). Matching nothing:
    :class:`NothingMatches` (naming the files left out, when the pattern matched only those)."""
    full = pattern if os.path.isabs(pattern) else str(base_dir / pattern)
    matched = _check_links(full, 0 if os.path.isabs(pattern) else len(base_dir.parts))
    found = sorted(Path(p) for p in matched if os.path.isfile(p))
    left = {path: why for path in found if (why := office_file(path))}
    for path, why in left.items():
        log.info("%s: left out: %s", path, why)
    found = [p for p in found if p not in left]
    if not found:
        near = [p.name for p in Path(full).parent.glob("*") if p.is_file()] if Path(full).parent.is_dir() else []
        hint = did_you_mean(Path(pattern).name, near) if not glob.has_magic(pattern) else ""
        if left:  # what it matched is no export: say which and why, not "no file" of a folder that holds some
            more = f"; and {len(left) - 3} more" if len(left) > 3 else ""
            hint += (f"; the only files it matches are left out, as no exports: "
                     f"{'; '.join(f'{p}: {why}' for p, why in list(left.items())[:3])}{more}")
        raise NothingMatches(f"no file matches {pattern!r} (looked in {base_dir}){hint}", pattern, full)
    return found


#: Excel's temporary file of a save lives seconds (renamed to the workbook's name when the save is done): a file so
#: named and holding a workbook's bytes, changed this long ago or more, is an export saved without extension (a
#: workbook named for its date, ``20251206``), read (and named for what it is: a workbook under a text name)
EXCEL_TEMP_SECONDS = 60


def office_file(path: Path) -> str | None:
    """What ``path`` is when it is an office suite's own file, not an export, else None: Excel's owner file
    (``~$sales.xlsx``, beside a workbook open in Excel: a few bytes naming who has it open), LibreOffice's lock file
    (``.~lock.sales.xlsx#``), or Excel's temporary file of a save under way (8 hex characters, no extension:
    ``3A7F01C2``, holding a workbook's bytes and changed in the last :data:`EXCEL_TEMP_SECONDS`, or gone already: a
    text export so named is read, and so is a workbook so named that has been there longer)."""
    name = path.name
    if name.startswith("~$"):
        return "an Excel owner file (the workbook it names is open in Excel)"
    if name.startswith(".~lock.") and name.endswith("#"):
        return "a LibreOffice lock file (the file it names is open in LibreOffice)"
    if re.fullmatch(r"[0-9A-Fa-f]{8}", name):
        from .file_encoding import changed_at, clock  # (file_encoding reads files this module lists)

        try:
            with open(path, "rb") as f:
                head = f.read(8)
            fresh = clock() - changed_at(path) < EXCEL_TEMP_SECONDS
        except FileNotFoundError:  # gone already: Excel renamed it when the save was done
            return "an Excel temporary file of a save under way"
        if head.startswith((XLSX, XLS)) and fresh:
            return "an Excel temporary file of a save under way (a workbook's bytes under a name without extension)"
    return None


def left_out_lines(patterns: list[str | None], base_dir: Path) -> list[str]:
    """One line per file the ``patterns`` match that :func:`matching_files` leaves out (:func:`office_file`)."""
    lines = []
    for pattern in filter(None, patterns):
        full = pattern if os.path.isabs(pattern) else str(base_dir / pattern)
        lines += [f"{p}: left out: {why}" for p in sorted(glob.glob(full)) if os.path.isfile(p)
                  and (why := office_file(Path(p)))]
    return lines


def pattern_matches(full: str, path: str) -> bool:
    """Whether :func:`matching_files`' glob of the pattern ``full`` (as matched, see :class:`NothingMatches`) would
    give ``path``, by name only (the file need not exist): level by level, a wildcard never crosses a folder
    (``*`` is one level, as ``**`` is without ``recursive``), and a wildcard matches no hidden name."""
    levels, names = Path(full).parts, Path(path).parts
    if len(levels) != len(names):
        return False
    for level, name in zip(levels, names):
        if not glob.has_magic(level):
            if level != name:
                return False
        elif (name.startswith(".") and not level.startswith(".")) or not fnmatch.fnmatchcase(name, level):
            return False
    return True


def _check_links(full: str, first: int) -> list[str]:
    """Every link matched by a level of the pattern ``full`` past its ``first`` parts (the folder it is relative
    to is not the pattern's) that leads nowhere: a ConfigError for the first one that cannot lead anywhere, else
    a TransientError naming them. Returns what the whole pattern matches (``glob(full)``, listed once), unsorted."""
    parts = Path(full).parts
    missing: list[tuple[str, str]] = []  # (link, why its target cannot be read now)
    levels = range(max(first, 1), len(parts))
    matched = [] if levels else glob.glob(full)
    for level in levels:
        # the last level is the pattern as given: its matches keep the pattern's spelling (a file's identity)
        matched = glob.glob(full if level == len(parts) - 1 else str(Path(*parts[:level + 1])))
        for path in sorted(matched):
            if not os.path.islink(path):
                continue
            try:
                os.stat(path)
            except FileNotFoundError:
                missing.append((path, "which is not there (a network share not mounted?)"))
            except OSError as exc:
                why = "a link loop" if exc.errno == errno.ELOOP else exc.strerror or type(exc).__name__
                if exc.errno not in LINK_CONFIG_ERRORS:  # a share disconnected, a stale handle, a timeout...
                    missing.append((path, f"which cannot be reached now ({why}: a network share disconnected?)"))
                    continue
                raise ConfigError(f"{path}: a link to {os.readlink(path)}, which cannot be read ({why}): fix the "
                                  "link or its target's permissions, or remove the link") from None
        if missing:
            break  # the levels below a missing folder cannot be listed
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        path, why = missing[0]
        raise TransientError(f"{path}{more}: a link to {os.readlink(path)}, {why}; nothing was read: run again once "
                             "it is, or remove the link")
    return matched


def check_gone(paths: list[str]) -> None:
    """Files read before that the pattern no longer matches are gone (their rows leave the store) only when the
    system says so (no such file or folder, or it is there but no longer matched); any other error reaching one
    (a mount point under the pattern disconnected or stale: ENOTCONN, ESTALE, EIO; glob swallows those) is a
    TransientError naming it: nothing is removed, the run is retried."""
    for path in paths:
        try:
            os.lstat(path)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                raise TransientError(f"{path}: read before, it cannot be reached now ({exc.strerror}: a network "
                                     "share disconnected?); nothing was read or removed: run again once it is "
                                     "back") from None


#: how many times a file that changes while it is read is read again before the run stops (retry later)
READ_ATTEMPTS = 3


#: the bytes at each end of a file hashed to tell a change of its content from one of its attributes alone
CHUNK = 1 << 16


def head_tail(f: BinaryIO, size: int, digest: hashlib.blake2b) -> None:
    """Feed ``digest`` the first and last :data:`CHUNK` bytes of the open file ``f`` of ``size`` bytes (the order
    store's quick fingerprint and :func:`file_state`)."""
    f.seek(0)
    digest.update(f.read(CHUNK))
    if size > CHUNK:
        f.seek(max(CHUNK, size - CHUNK))
        digest.update(f.read(CHUNK))


@dataclass(frozen=True)
class FileState:
    """What a write, an append or a replacement of a file changes (:func:`file_state`)."""

    stat: tuple[int, int, int, int]  # device, inode, size, mtime
    ctime_ns: int
    ends: str  # the hash of its first and last CHUNK bytes (:func:`head_tail`)


def file_state(path: Path) -> FileState:
    """``path``'s device, inode, size, mtime and ctime, and a hash of its first and last :data:`CHUNK` bytes (read
    after the ``stat``: a change between the two is seen after the read, by the ``stat`` or the bytes)."""
    st = path.stat()
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        head_tail(f, st.st_size, digest)
    return FileState((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns), st.st_ctime_ns, digest.hexdigest())


def unchanged(path: Path, before: FileState) -> bool:
    """Whether ``path`` is still as :func:`file_state` found it ``before`` a read: same device, inode, size and
    mtime, and, when its ctime moved with those the same, the same first and last :data:`CHUNK` bytes. So a file
    written in place whose mtime a tool set back (only its ctime moves) is changed when its ends differ, and a
    chmod, chown, link or extended attribute (a backup's archive bit: ctime alone) is not. One ``stat`` when the
    ctime did not move. A network share whose client caches attributes (SMB, NFS: seconds) may show none of them
    changed for a while (docs/sources/files.md)."""
    st = path.stat()
    if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != before.stat:
        return False
    if st.st_ctime_ns == before.ctime_ns:
        return True
    now = file_state(path)
    return (now.stat, now.ends) == (before.stat, before.ends)


def being_written(path: Path) -> TransientError:
    """A file that changed during each of its :data:`READ_ATTEMPTS` reads: still being written or copied."""
    return TransientError(f"{path}: the file changed while it was read, {READ_ATTEMPTS} times in a row (still being "
                          "written or copied?); nothing was stored: run again once it is complete (an export "
                          "written under another name and renamed when done is never read half-written)")


def vanished(path: str | Path | None) -> TransientError:
    """A file listed by the source's pattern and removed or renamed before or while it was read (moved into an
    archive folder, replaced): the run stops, nothing stored, a retry-later error naming it."""
    return TransientError(f"{path}: the file was removed or renamed while the export folder was being read; "
                          "nothing was stored: run again")


#: the files a command was given by name (``rfmsync init orders.csv``): read as they are (:func:`read_as_given`)
_given: ContextVar[frozenset[Path]] = ContextVar("given", default=frozenset())


@contextmanager
def read_as_given(paths: Iterable[Path]) -> Iterator[None]:
    """Within it, ``paths`` are files the user has just named on the command line (``rfmsync init``: an export saved
    a moment ago, often without a final line break), not a copy they cannot see under way (:func:`given`): the file
    reader does not wait for them (:func:`connectors.file_copying.copy_under_way`), and one that ends inside a
    character is read for what it is at once (:func:`connectors.file_encoding.cut_or_8bit`)."""
    token = _given.set(_given.get() | {Path(p).resolve() for p in paths})
    try:
        yield
    finally:
        _given.reset(token)


def given(path: Path) -> bool:
    """Whether ``path`` is one of the files :func:`read_as_given` names."""
    return bool(_given.get()) and path.resolve() in _given.get()
