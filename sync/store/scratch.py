"""The scratch folder of an ingest (UTF-8 copies of exports in another encoding: as large as the export).

A process killed while it reads (kill -9, the OOM killer) leaves its folder behind, and a server restarted in a
loop on a big export would fill the temp disk with copies. Each folder notes its owner: host name, PID namespace,
pid and the process's start time (so a reused pid is not taken for it); the next ingest removes the folders whose
owner is of this host and namespace and no longer runs. Folders of live processes, other hosts or namespaces, or
without a note are left alone. (Not :mod:`sync.ledger.owners`: a scoring run imports no ledger.)
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from connectors.digits import digits

log = logging.getLogger(__name__)

PREFIX = "rfmsync-"
OWNER_FILE = ".owner"


@contextmanager
def scratch_dir() -> Iterator[Path]:
    """A new scratch folder (removed when the block ends), after removing those of killed processes."""
    sweep_scratch()
    with tempfile.TemporaryDirectory(prefix=PREFIX) as tmp:
        (Path(tmp) / OWNER_FILE).write_text(_owner(os.getpid()) or "", encoding="utf-8")
        yield Path(tmp)


def sweep_scratch(root: Path | None = None) -> list[Path]:
    """Remove the scratch folders left by processes of this host that no longer exist; returns them."""
    removed = []
    for folder in Path(root or tempfile.gettempdir()).glob(f"{PREFIX}*"):
        if folder.is_symlink() or not folder.is_dir():  # never ours (rmtree refuses a link anyway)
            continue
        try:
            owner = (folder / OWNER_FILE).read_text(encoding="utf-8").strip()
        except OSError:  # not ours, another version's, or being removed
            continue
        if _gone(owner):
            shutil.rmtree(folder, ignore_errors=True)
            if folder.exists():  # refused (permissions, a file in use): said so, not claimed removed
                log.warning("cannot remove %s, the scratch folder of a killed rfmsync process (%s)", folder, owner)
                continue
            log.info("removed %s, the scratch folder of a killed rfmsync process (%s)", folder, owner)
            removed.append(folder)
    return removed


def _owner(pid: int) -> str | None:
    """``host namespace pid start-time`` of a running process, None when it does not run (or is a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        namespace = os.readlink("/proc/self/ns/pid")
    except (OSError, IndexError):
        return None
    if fields[0] == b"Z":
        return None
    return f"{socket.gethostname()} {namespace} {pid} {fields[19].decode()}"


def _gone(owner: str) -> bool:
    parts = owner.split()
    if len(parts) != 4 or not digits(parts[2]) or _owner(os.getpid()) is None:
        return False  # not a note of ours, or no /proc here: leave it
    host, namespace, pid, _ = parts
    mine = (_owner(os.getpid()) or "").split()
    if [host, namespace] != mine[:2]:
        return False  # another host's or container's
    return _owner(int(pid)) != owner
