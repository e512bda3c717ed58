"""A copy under way caught by the file reader: a fresh text file whose last line has no line break yet
(:func:`copy_under_way`). A part of :mod:`connectors.files`' read of a file (the cut character, the NUL tail and
the UTF-16 cut code unit of a copy under way: :mod:`connectors.file_encoding`)."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

from . import file_encoding
from .errors import TransientError
from .file_paths import FileState

#: the default of ``[source] quiet_seconds``: how long a CSV/TSV file whose last line has no line break must have
#: been left unchanged before it is read as complete. A copy stalls for seconds (a share's retries, a busy disk): a
#: half-second watch took a copy paused longer for a finished file, its last value cut (``yo'q``, no, read as
#: ``y``, yes)
QUIET_SECONDS = 60


def copy_under_way(path: Path, before: FileState, quiet: int = QUIET_SECONDS) -> None:
    """A :class:`TransientError` (exit 3; ``serve`` tries again) when ``path``, as :func:`~connectors.file_paths.
    file_state` found it ``before`` its read, is a CSV/TSV file whose last line has no line break and that changed
    (its mtime, or on POSIX its later ctime, by this machine's clock :data:`~connectors.file_encoding.clock`) less
    than ``quiet`` seconds ago: a copy or an export still under way, whose last value may be cut short. The message
    names the file and when it will be read. One left alone that long is read as it is (many finished exports end
    without a line break); one that ends in a line break is read at once (a copy stalled right after one holds whole
    rows only, and the order store reads the file again once it changes). ``quiet = 0``: never waited for."""
    size = before.stat[2]
    if quiet <= 0 or size == 0 or path.suffix.lower() in (".xlsx", ".xlsm", ".parquet", ".pq"):
        return
    changed = max(before.stat[3], before.ctime_ns if os.name == "posix" else 0) / 1e9
    now = file_encoding.clock()
    if now - changed >= quiet:
        return
    with open(path, "rb") as f:
        f.seek(max(0, size - 2))
        if set(f.read(2)) & {0x0A, 0x0D}:  # (UTF-16: 0A 00 or 00 0A)
            return
    at = datetime.fromtimestamp(changed + quiet, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    ago = f"{now - changed:.0f} s ago" if changed <= now else "later than this machine's clock (a wrong clock?)"
    raise TransientError(f"{path}: its last line has no line break and the file changed {ago}: a copy or export "
                         f"still under way? (its last value may be cut short); nothing was stored: it is read once it "
                         f"ends in a line break or has not changed for {quiet} s, from {at} ([source] quiet_seconds)")
