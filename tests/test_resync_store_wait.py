"""A webhook resync waits for the order store as long as it is told (``store_wait_seconds``), in every read."""

from __future__ import annotations

import subprocess
import sys

import pytest

from connectors.records import Contact
from sync.config import load_config
from sync.errors import LockBusyError
from sync.ledger import open_ledger
from sync.pipeline import store_path
from sync.serve.resync import resync
from sync.settings import load_settings

from tests.test_serve_resync import AS_OF, DEST, orders_for, synced_shop

_HOLD_STORE = "import duckdb, sys; con = duckdb.connect(sys.argv[1]); print('ready', flush=True); sys.stdin.read()"


def test_the_shared_address_check_of_a_replanned_resync_waits_for_the_store_only_as_long_as_told(
        tmp_path, mailchimp_fake, monkeypatch):
    """A resync of the other customer of a shared address waits for the destination (a cron sync holds it); the
    sync writes the destination and ends, and a process (a `duckdb` shell, another rfmsync) opens the store. The
    resync, planned again under the lock, asks the store who gives the address: it waits ``store_wait_seconds``
    (1 s), as its first store read does, not a fixed 60 s with the destination lock held."""
    path = synced_shop(tmp_path / "shop", mailchimp_fake, monkeypatch, customers=120)
    cfg, settings = load_config(path), load_settings()
    holder: list[subprocess.Popen] = []
    with open_ledger(cfg, settings) as ledger:
        state = ledger.load_state(DEST)
        shared = next(k for k, s in sorted(state.items()) if s.tags == {"VIP"})
        other, third = [s.customer_id for k, s in sorted(state.items()) if s.tags == {"Winback"}][:2]
        resync(cfg, ledger, settings, contacts=[Contact(other, email=shared)], as_of=AS_OF)  # a family account
        sync = ledger.lock(f"sync:{DEST}")
        sync.__enter__()  # the cron sync

        def meanwhile(seconds: float) -> None:
            if holder:
                return
            sync.__exit__(None, None, None)
            resync(cfg, ledger, settings, orders_for([third], "CRON"), as_of=AS_OF)  # it wrote the destination
            holder.append(subprocess.Popen([sys.executable, "-c", _HOLD_STORE, str(store_path(cfg))],
                                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
            assert holder[0].stdout.readline().strip() == "ready"  # type: ignore[union-attr]

        try:
            with pytest.raises(LockBusyError, match=r"order store .* \(waited 1s\)"):
                resync(cfg, ledger, settings, orders_for([other], "FAM", amount="100"), as_of=AS_OF,
                       store_wait_seconds=1, lock_wait_seconds=2, sleep=meanwhile)
        finally:
            for proc in holder:
                proc.kill()
                proc.wait(10)
                proc.stdin.close()  # type: ignore[union-attr]
                proc.stdout.close()  # type: ignore[union-attr]
    assert holder, "the resync never waited for the destination"
