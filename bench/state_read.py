"""A plan's read of a destination's pushed state through the state cache (:meth:`sync.ledger.Ledger.state_parts`).

On a SQLite ledger in ``--dir`` (default: a temporary folder in /dev/shm when it exists) holding ``--rows`` pushed
states of one destination, with a cached copy at the ledger's revision, times ``--repeat`` reads, each by a new
Ledger (a fresh process's plan): first with nothing written since the copy (the no-change plan: the copy is used as
it is, its revision's token comes with the counter's query), then after one 1-row save (the copy one revision behind:
one keyed read of the ledger's token for the copy's revision, and a scan of the rows written since). Prints the
median and the fastest of each, in ms::

    python bench/state_read.py --rows 1m --repeat 9
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sync.ledger import Ledger  # noqa: E402
from sync.model import PushedState  # noqa: E402

DEST = "mc"


def _count(text: str) -> int:
    text = text.lower().replace("_", "")
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("km")) * scale)


def _timed(url: str, repeat: int, expect_read: int) -> list[float]:
    times = []
    for _ in range(repeat):
        with Ledger.connect(url) as ledger:
            start = time.perf_counter()
            parts = ledger.state_parts(DEST)
            times.append(time.perf_counter() - start)
            assert parts.since is not None and parts.read == expect_read, (parts.since, parts.read)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="1m", help="pushed states of the destination (default 1m)")
    parser.add_argument("--repeat", type=int, default=9, help="reads timed per case (default 9)")
    parser.add_argument("--dir", default=None, help="folder for the ledger (default: a temporary one)")
    args = parser.parse_args(argv)
    rows = _count(args.rows)
    shm = Path("/dev/shm")
    folder = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(dir=shm if shm.is_dir() else None))
    url = f"sqlite:///{folder / 'rfmsync.db'}"
    try:
        with Ledger.connect(url) as ledger:
            for start in range(0, rows, 100_000):
                ledger.save_states(DEST, None, [
                    PushedState(f"{i:07d}@example.com", f"c{i}", frozenset({"rfm:a"}), {"N": i})
                    for i in range(start, min(rows, start + 100_000))])
            ledger.state_parts(DEST)  # the copy, at the ledger's revision
        cases = [("no change", _timed(url, args.repeat, 0))]
        with Ledger.connect(url) as ledger:
            ledger.save_states(DEST, None, [PushedState("0000000@example.com", "c", frozenset(), {"N": -1})])
        cases.append(("copy one 1-row save behind", _timed(url, args.repeat, 1)))
    finally:
        if not args.dir:
            shutil.rmtree(folder, ignore_errors=True)
    for name, times in cases:
        print(f"{rows} rows, {name}: median {statistics.median(times) * 1000:.1f} ms, "
              f"fastest {min(times) * 1000:.1f} ms ({len(times)} reads)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
