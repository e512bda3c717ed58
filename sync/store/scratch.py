"""The scratch folder of an ingest (UTF-8 copies of exports in another encoding: as large as the export).

A process killed while it reads (kill -9, the OOM killer) leaves its folder behind, and a server restarted in a
loop on a big export would fill the temp disk with copies. Each folder notes its owner (``host:pid:token``,
:func:`sync.ledger.default_owner`); the next ingest removes the folders of owners that no longer exist on this host
(:func:`sync.ledger.owner_process_gone`). Folders of live processes, other hosts or namespaces, or without a note
are left alone.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..ledger.owners import default_owner, owner_process_gone

log = logging.getLogger(__name__)

PREFIX = "rfmsync-"
OWNER_FILE = ".owner"


@contextmanager
def scratch_dir() -> Iterator[Path]:
    """A new scratch folder (removed when the block ends), after removing those of killed processes."""
    sweep_scratch()
    with tempfile.TemporaryDirectory(prefix=PREFIX) as tmp:
        (Path(tmp) / OWNER_FILE).write_text(default_owner(), encoding="utf-8")
        yield Path(tmp)


def sweep_scratch(root: Path | None = None) -> list[Path]:
    """Remove the scratch folders left by processes of this host that no longer exist; returns them."""
    removed = []
    for folder in Path(root or tempfile.gettempdir()).glob(f"{PREFIX}*"):
        try:
            owner = (folder / OWNER_FILE).read_text(encoding="utf-8").strip()
        except OSError:  # not ours, another version's, or being removed
            continue
        if owner_process_gone(owner):
            shutil.rmtree(folder, ignore_errors=True)
            log.info("removed %s, the scratch folder of a killed rfmsync process (%s)", folder, owner)
            removed.append(folder)
    return removed
