"""Shared benchmark helpers: sizes, timing, peak RSS of a fresh child process, plain-text tables.

Each measured run happens in its own interpreter (``python bench/x.py --child ...``) so peak RSS is that run's
alone and no cache survives between runs. The child prints one JSON line prefixed with ``RESULT `` as its last
output; :func:`run_child` parses it and adds the wall time and peak RSS seen from the parent.
"""

from __future__ import annotations

import functools
import json
import os
import resource
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

RESULT_PREFIX = "RESULT "
_SUFFIX = {"k": 1_000, "m": 1_000_000, "g": 1_000_000_000}


def parse_size(text: str) -> int:
    """``"1m"`` → 1_000_000, ``"250k"`` → 250_000, ``"1.5m"`` → 1_500_000, ``"5000"`` → 5000."""
    t = text.strip().lower().replace("_", "")
    if not t:
        raise ValueError("empty size")
    mult = _SUFFIX.get(t[-1], 1)
    num = t[:-1] if t[-1] in _SUFFIX else t
    try:
        value = float(num) * mult
    except ValueError:
        raise ValueError(f"not a size: {text!r} (use e.g. 1m, 250k, 5000)") from None
    if value < 1 or value != int(value):
        raise ValueError(f"not a positive whole size: {text!r}")
    return int(value)


def size_label(n: int) -> str:
    for suffix, mult in (("g", 1_000_000_000), ("m", 1_000_000), ("k", 1_000)):
        if n >= mult and n % mult == 0:
            return f"{n // mult}{suffix}"
    return str(n)


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def human_bytes(n: float | None) -> str:
    """1536 MiB → '1.50 GB'; below 1 GiB in whole MB (binary units)."""
    if n is None:
        return "-"
    if n >= 1024 ** 3:
        return f"{n / 1024 ** 3:.2f} GB"
    return f"{n / 1024 ** 2:.0f} MB"


@dataclass
class Stopwatch:
    seconds: float = 0.0
    marks: dict[str, float] = field(default_factory=dict)


@contextmanager
def stopwatch() -> Iterator[Stopwatch]:
    """``with stopwatch() as sw: ...`` → ``sw.seconds`` (wall, perf_counter)."""
    sw = Stopwatch()
    t0 = time.perf_counter()
    try:
        yield sw
    finally:
        sw.seconds = time.perf_counter() - t0


def emit_result(payload: dict[str, Any]) -> None:
    """Child side: print the result line (adds this process's peak RSS)."""
    payload = dict(payload, peak_rss=peak_rss_bytes())
    print(RESULT_PREFIX + json.dumps(payload, ensure_ascii=False, default=str), flush=True)


class ChildFailed(RuntimeError):
    pass


@functools.cache  # once per bench process
def compile_project() -> None:
    """Write the project's bytecode once, before the first timed child, as an installed package has it (pip
    compiles on install). Without it, a shell with ``PYTHONDONTWRITEBYTECODE=1`` (this development machine's)
    makes every child compile each module changed since its last ``.pyc`` again: ~0.07 s a run after a merge.
    Checked by the source's hash, not its mtime and size: an edit in the same second that keeps the size (a merge,
    a test's own edit) is never run as the old code."""
    import compileall
    import py_compile
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    for package in ("connectors", "segmentation", "sync", "bench"):
        compileall.compile_dir(str(root / package), quiet=1,
                               invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH)


def run_child(argv: Sequence[str], *, cwd: str | None = None, env: dict[str, str] | None = None,
              timeout: float | None = None) -> dict[str, Any]:
    """Run ``argv`` as a fresh process; return its RESULT payload plus ``process_seconds``.

    Raises :class:`ChildFailed` with the tail of stderr when the child fails or prints no result.
    """
    compile_project()
    full_env = dict(os.environ, **(env or {}))
    t0 = time.perf_counter()
    proc = subprocess.run(list(argv), cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise ChildFailed(f"{' '.join(argv[:4])} … exited {proc.returncode}:\n{tail}")
    result = json.loads(lines[-1][len(RESULT_PREFIX):])
    result["process_seconds"] = wall
    return result


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """A plain, aligned text table; ``columns`` = [(key, header)]; all-numeric columns right-aligned."""
    cells = [[("" if r.get(k) is None else str(r.get(k))) for k, _ in columns] for r in rows]
    heads = [h for _, h in columns]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(heads)]

    right = [bool(col) and all(_numeric(v) for v in col if v) for col in zip(*cells)] or [False] * len(heads)

    def fmt(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right)).rstrip()

    lines = [fmt(heads), "  ".join("-" * w for w in widths)]
    lines.extend(fmt(c) for c in cells)
    return "\n".join(lines)


def _numeric(v: str) -> bool:
    s = v.replace(",", "").replace(" ", "").rstrip("×xsBKMG").strip()
    try:
        float(s)
    except ValueError:
        return False
    return True
