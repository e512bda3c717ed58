"""A copy under way caught by the file reader: a fresh text file whose last line has no line break yet
(:func:`copy_under_way`). A part of :mod:`connectors.files`' read of a file (the cut character, the NUL tail and
the UTF-16 cut code unit of a copy under way: :mod:`connectors.file_encoding`)."""

from __future__ import annotations

import os
from pathlib import Path

from . import file_encoding
from .errors import TransientError
from .file_encoding import CLOCK_SLACK, clock_ahead, ctime_later, utc
from .file_paths import FileState, given, read_as_given  # noqa: F401 (read_as_given re-exported: sync.cli.init)

#: the default of ``[source] quiet_seconds``: how long a CSV/TSV file whose last line has no line break must have
#: been left unchanged before it is read as complete. A copy stalls for seconds (a share's retries, a busy disk): a
#: half-second watch took a copy paused longer for a finished file, its last value cut (``yo'q``, no, read as
#: ``y``, yes)
QUIET_SECONDS = 60


def copy_under_way(path: Path, before: FileState, quiet: int = QUIET_SECONDS, failed: Exception | None = None) -> None:
    """A :class:`TransientError` (exit 3; ``serve`` tries again) when ``path``, as :func:`~connectors.file_paths.
    file_state` found it ``before`` its read, is a CSV/TSV file whose last line has no line break and that changed
    (its mtime, or on POSIX its later ctime, by this machine's clock :data:`~connectors.file_encoding.clock`) less
    than ``quiet`` seconds ago: a copy or an export still under way, whose last value may be cut short. The message
    names the file, when it will be read and the way out for a finished file; ``failed``, the error its read ended
    in (a copy stalled inside a quoted field), is named after it. One left alone that long is read as it is (many
    finished exports end without a line break); one that ends in a line break is read at once (a copy stalled right
    after one holds whole rows only, and the order store reads the file again once it changes). ``quiet = 0``, or
    a file :func:`read_as_given`: never waited for. A time ahead of this machine's clock by more than
    :data:`~connectors.file_encoding.CLOCK_SLACK` (a device stamping its local time as UTC) is not counted: an mtime
    ahead, the wait counts from the ctime, set by this machine or the share when the file was written; no time left
    (Windows has no ctime), the file's age is unknown and it is read (a wait would last as long as the clock is
    wrong)."""
    size = before.stat[2]
    if quiet <= 0 or size == 0 or path.suffix.lower() in (".xlsx", ".xlsm", ".parquet", ".pq"):
        return
    if given(path):
        return
    now = file_encoding.clock()
    mtime = before.stat[3] / 1e9
    ctime = before.ctime_ns / 1e9 if os.name == "posix" else None
    times = [t for t in (mtime, ctime) if t is not None and t <= now + CLOCK_SLACK]
    if not times:
        return
    changed = max(times)
    if now - changed >= quiet - 1e-3:  # (a stat's float times and its ns / 1e9 may differ in the last bit)
        return
    with open(path, "rb") as f:
        f.seek(max(0, size - 2))
        if set(f.read(2)) & {0x0A, 0x0D}:  # (UTF-16: 0A 00 or 00 0A)
            return
    raise TransientError(_message(path, now, mtime, changed, quiet, failed))


def _message(path: Path, now: float, mtime: float, changed: float, quiet: int, failed: Exception | None) -> str:
    ago = f"{now - changed:.0f} s ago" if changed <= now else f"{changed - now:.0f} s ahead of this machine's clock"
    why = ""
    if mtime > now + CLOCK_SLACK:
        why = "; " + clock_ahead(mtime, f"the {quiet} s count from its change time (ctime), {utc(changed)}")
    elif changed > mtime + CLOCK_SLACK:
        why = "; " + ctime_later(changed, mtime, f"the {quiet} s")
    read = f"; reading it as it is failed: {failed}" if failed else ""
    return (f"{path}: its last line has no line break and the file changed {ago}: a copy or export still under way? "
            f"(its last value may be cut short){read}; nothing was stored: it is read once it ends in a line break or "
            f"has not changed for {quiet} s, from {utc(changed + quiet)} ([source] quiet_seconds){why}. A finished "
            f"file saved without a final line break (a spreadsheet's CSV download): add one at its end, or set "
            f"[source] quiet_seconds = 0, and run the same command again")
