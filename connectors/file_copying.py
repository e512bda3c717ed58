"""A copy under way caught by the file reader: a text file that ends mid-line and is still being written
(:func:`quiet_after_read`). A part of :mod:`connectors.files`' read of a file (the cut character, the NUL tail and
the UTF-16 cut code unit of a copy under way: :mod:`connectors.file_encoding`)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

from . import file_encoding
from .file_paths import FileState, unchanged

#: how long a file must have been left alone to be taken as no copy under way: a copy writes every few milliseconds
#: (a 64 KiB block over a 1 MB/s share: 64 ms)
QUIET_SECONDS = 0.5
#: only a file changed in the last this many seconds (by this machine's clock, :data:`~connectors.file_encoding.clock`)
#: is watched: the watch catches a writer at work now, and one that wrote nothing for this long is none (a copy
#: stalled longer cannot be told from a finished file either way: the order store reads it again once it changes).
#: A folder copied or unzipped in minutes ago is not watched at all
WATCH_SECONDS = 10
#: how :func:`quiet_after_read` waits (tests act in the pause instead of racing a thread against the read)
pause: Callable[[float], None] = time.sleep


def quiet_after_read(path: Path, before: FileState) -> bool:
    """Whether ``path``, read whole as :func:`~connectors.file_paths.file_state` found it ``before`` the read, may be
    taken as complete. A copy caught under way ends mid-line (its blocks do not end at line breaks): its last value
    cut (a clients file's ``yo'q``, no, read as ``y``, yes). Many finished exports end without a line break too, so
    that alone proves nothing; a CSV/TSV file that does not end in one and changed (its mtime, or on POSIX its later
    ctime) in the last :data:`WATCH_SECONDS` must be left alone :data:`QUIET_SECONDS` from that change: when it
    changed less than that before now, the reader waits :data:`QUIET_SECONDS` once, and one that changed meanwhile
    is being written (read again). The wait counts for every file changed before it: a folder of such files copied
    in just before a run costs one wait, not one per file."""
    if path.suffix.lower() in (".xlsx", ".xlsm", ".parquet", ".pq") or before.stat[2] == 0:
        return True
    changed = max(before.stat[3], before.ctime_ns if os.name == "posix" else 0) / 1e9  # (changed_at, as found)
    if file_encoding.clock() - changed >= WATCH_SECONDS:
        return True
    with open(path, "rb") as f:
        f.seek(max(0, before.stat[2] - 2))
        if set(f.read(2)) & {0x0A, 0x0D}:  # (UTF-16: 0A 00 or 00 0A)
            return True
    if file_encoding.clock() - changed < QUIET_SECONDS:
        pause(QUIET_SECONDS)
    return unchanged(path, before)
