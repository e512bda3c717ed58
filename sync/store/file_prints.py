"""A file's fingerprint in the order store (:mod:`sync.store.files`): its size, mtime and a hash of its first and
last 64 KiB (plus a hash of every byte with ``verify``), taken of the bytes a read read (:func:`read_printed`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

import duckdb

from connectors.file_guesses import collecting
from connectors.file_paths import CHUNK, READ_ATTEMPTS, being_written, head_tail, unchanged, vanished
from connectors.file_staging import LoadedFile
from connectors.files import FileSource

from .file_gone import same_bytes


@dataclass(frozen=True)
class Fingerprint:
    size: int
    mtime_ns: int
    head_tail: str  # blake2b of the first and last 64 KiB
    full: str | None = None  # blake2b of the whole file (``verify``)


def fingerprint(path: Path, full: bool = False) -> Fingerprint:
    """The file's fingerprint; ``full`` hashes every byte (slow on a big export, but sees any edit)."""
    st = path.stat()
    quick = hashlib.blake2b(digest_size=16)
    whole = hashlib.blake2b(digest_size=16) if full else None
    with open(path, "rb") as f:
        head_tail(f, st.st_size, quick)
        if whole is not None:
            f.seek(0)
            while block := f.read(1 << 20):
                whole.update(block)
    return Fingerprint(st.st_size, st.st_mtime_ns, quick.hexdigest(), whole.hexdigest() if whole else None)


def copied_files(prints: dict[tuple[str, Path], Fingerprint], no_oid: dict[tuple[str, Path], int | None]
                 ) -> list[tuple[str, str]]:
    """(earlier, later) for each orders file with rows without an order id (``no_oid``: how many) and the same
    bytes as one before it (``prints``' order): the same size and head and tail, then the same hash of every byte
    (read only for such a pair, past 128 KiB). A copy whose rows all have an order id doubles nothing."""
    alike: dict[tuple[int, str], list[Path]] = {}
    for (role, path), fp in prints.items():
        if role == "orders" and no_oid.get((role, path)):
            alike.setdefault((fp.size, fp.head_tail), []).append(path)
    out = []
    for (size, _), paths in alike.items():
        if len(paths) < 2:  # (the usual case: nothing more is read)
            continue
        first: dict[str | None, Path] = {}
        for path in paths:
            try:
                whole = prints[("orders", path)].full or (fingerprint(path, full=True).full if size > 2 * CHUNK
                                                          else None)
            except OSError:  # gone since it was read: no copy of anything now
                continue
            earlier = first.setdefault(whole, path)
            if earlier != path:
                out.append((str(earlier), str(path)))
    return out


def early_print(path: Path, row: dict | None, verify: bool, cfg: str) -> Fingerprint:
    """The fingerprint that decides whether ``path`` is read (its catalogue ``row``; ``cfg``, the source's config
    hash): with ``verify``, the whole-file hash only of a file whose quick fingerprint and config are the row's and
    whose row holds a whole-file hash to compare it with (any other is read anyway, and hashed after its read: a
    first ``--verify`` read every byte of each file once more for nothing)."""
    fp = fingerprint(path)
    hashed = verify and row is not None and row["full_hash"] and row["config"] == cfg
    return fingerprint(path, full=True) if hashed and same_bytes(row, fp) else fp


def read_printed(source: FileSource, con: duckdb.DuckDBPyConnection, key: tuple[str, Path], table: str,
                 tmp: Path, verify: bool) -> tuple[LoadedFile, Fingerprint]:
    """Read the file and fingerprint the bytes read: those the read found before and after it (a file rewritten
    since the run's first fingerprints, ``cp -p`` setting its old mtime back once done, must not be stored as
    half a file under the whole file's fingerprint, never read again). With ``verify``, its whole-file hash is
    taken after the read, of the same file (else it is read again; after ``READ_ATTEMPTS``, a retry-later error)."""
    for _ in range(READ_ATTEMPTS):
        with collecting() as said:  # told by every run that reads its rows (kept with the file: sync.store.files)
            lf = replace(source.read_file(con, key[1], key[0], table, tmp), said=tuple(said))
        state = lf.state
        fp = Fingerprint(state.stat[2], state.stat[3], state.ends)
        if not verify:
            return lf, fp
        try:
            full = fingerprint(key[1], full=True).full
            if unchanged(key[1], state):
                return lf, replace(fp, full=full)
        except FileNotFoundError:
            raise vanished(key[1]) from None
    raise being_written(key[1])
