"""Import a module on a background thread while the caller's thread waits on DuckDB.

Every command runs in a fresh interpreter, and the predictions' module brings scipy (its optimizer and special
functions): about half a second of imports, paid before any model work. DuckDB releases the GIL while it runs a
query, so the import can proceed during the queries that come first (opening the store, reading the export,
the purchase-day totals); the caller's own ``import`` later finds the module loaded, or waits for it (Python's
per-module import lock), and raises the import's error itself if there is one.
"""

from __future__ import annotations

import importlib
import sys
import threading


def import_in_background(module: str) -> threading.Thread | None:
    """Start importing ``module`` on a daemon thread (None when it is imported already)."""
    if module in sys.modules:
        return None

    def load() -> None:
        try:
            importlib.import_module(module)
        except BaseException:  # noqa: BLE001 - the caller's own import raises it where it is handled
            pass

    thread = threading.Thread(target=load, name=f"import {module}", daemon=True)
    thread.start()
    return thread
