"""A copy under way caught by the file reader: a text file that ends mid-line and is still being written
(:func:`quiet_after_read`). A part of :mod:`connectors.files`' read of a file (the cut character, the NUL tail and
the UTF-16 cut code unit of a copy under way: :mod:`connectors.file_encoding`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from .file_encoding import settled
from .file_paths import FileState, unchanged

#: how long a fresh text file that does not end in a line break is watched after its read (:func:`quiet_after_read`):
#: a copy under way writes every few milliseconds (a 64 KiB block over a 1 MB/s share: 64 ms)
QUIET_SECONDS = 0.5
#: how :func:`quiet_after_read` waits (tests act in the pause instead of racing a thread against the read)
pause: Callable[[float], None] = time.sleep


def quiet_after_read(path: Path, before: FileState) -> bool:
    """Whether ``path``, read whole as :func:`~connectors.file_paths.file_state` found it ``before`` the read, may be
    taken as complete. A copy caught under way ends mid-line (its blocks do not end at line breaks): its last value
    cut (a clients file's ``yo'q``, no, read as ``y``, yes). Many finished exports end without a line break too, so
    that alone proves nothing; a CSV/TSV file that does not end in one and changed in the last
    :data:`SETTLED_SECONDS` is watched :data:`QUIET_SECONDS` more, and one that changes meanwhile is being written
    (read again). A copy stalled for longer cannot be told from a finished file: the order store reads it again
    once it has changed."""
    if path.suffix.lower() in (".xlsx", ".xlsm", ".parquet", ".pq") or before.stat[2] == 0 or settled(path):
        return True
    with open(path, "rb") as f:
        f.seek(max(0, before.stat[2] - 2))
        if set(f.read(2)) & {0x0A, 0x0D}:  # (UTF-16: 0A 00 or 00 0A)
            return True
    pause(QUIET_SECONDS)
    return unchanged(path, before)
