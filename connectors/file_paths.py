"""The files a file source's pattern (``orders``, ``contacts``) matches, or a clear error naming what is wrong."""

from __future__ import annotations

import glob
import os
from pathlib import Path

from .errors import ConfigError, TransientError
from .suggest import did_you_mean


def matching_files(pattern: str, base_dir: Path) -> list[Path]:
    """The files ``pattern`` (relative to ``base_dir``, or absolute) matches, sorted. A match that is a link to
    nothing (its target removed, or on a network share not mounted) stops the read, naming it: skipping it would
    leave its orders out, or remove the rows read from it before, without a word. Matching nothing: ConfigError."""
    full = pattern if os.path.isabs(pattern) else str(base_dir / pattern)
    matched = glob.glob(full)
    dangling = sorted(p for p in matched if os.path.islink(p) and not os.path.exists(p))
    if dangling:
        more = f" (and {len(dangling) - 1} more)" if len(dangling) > 1 else ""
        raise TransientError(f"{dangling[0]}{more}: a link to {os.readlink(dangling[0])}, which is not there (a "
                             "network share not mounted?); nothing was read: run again once it is, or remove the link")
    found = sorted(Path(p) for p in matched if os.path.isfile(p))
    if not found:
        near = [p.name for p in Path(full).parent.glob("*") if p.is_file()] if Path(full).parent.is_dir() else []
        hint = did_you_mean(Path(pattern).name, near) if not glob.has_magic(pattern) else ""
        raise ConfigError(f"no file matches {pattern!r} (looked in {base_dir}){hint}")
    return found
