"""Owners (``host:pid:token``) of another machine of the same host name: never judged gone by this one's PIDs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from sync.errors import LockBusyError
from sync.held_lock import destination_lock
from sync.ledger import Ledger, owner_process_gone
from sync.ledger.owners import this_host
from tests.ledger_fixtures import ROOT, dead_owner, ledger_url  # noqa: F401

_AS_MACHINE = """
import os, sys
import sync.ledger.owners as owners
owners.MACHINE_ID, owners.BOOT_ID = sys.argv[1], sys.argv[2]  # the files another machine would read
from sync.ledger import Ledger
with Ledger.connect(os.environ["RFMSYNC_TEST_LEDGER"]) as led:
    led.acquire_lock("sync:mc")
    run = led.start_run("sync", "mc")
    led.note_in_flight("mc", run, {"tag+VIP": ["a@x.uz"]})
    print(run, owners.this_host(), os.getpid())
"""


def _ran_as(url: str, tmp_path: Path, machine_id: str, boot_id: str) -> tuple[int, str]:
    """A process that reads ``machine_id`` and ``boot_id`` as its machine's ids (all else this host's: its host name,
    the PID namespace) holds ``sync:mc``, starts a run of ``mc`` with an add in flight and exits (killed, as far
    as the ledger knows): its run's id and its host part."""
    mid, boot = tmp_path / "machine-id", tmp_path / "boot_id"
    mid.write_text(machine_id + "\n", encoding="ascii")
    boot.write_text(boot_id + "\n", encoding="ascii")
    out = subprocess.run([sys.executable, "-c", _AS_MACHINE, str(mid), str(boot)], cwd=ROOT, check=True, text=True,
                         capture_output=True, env={**os.environ, "RFMSYNC_TEST_LEDGER": url}).stdout.split()
    return int(out[0]), out[1]


def _ids() -> tuple[str, str]:
    """This machine's id and its boot's, as the files hold them."""
    try:
        mid = Path("/etc/machine-id").read_text(encoding="ascii").strip()
        boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        mid = boot = ""
    if not (mid and boot):
        pytest.skip("this machine's /etc/machine-id or boot id cannot be read")
    return mid, boot


def _name_ns() -> str:
    """``hostname/pid-namespace``, as every rfmsync names this host."""
    return f"{socket.gethostname()}/{os.readlink('/proc/self/ns/pid').partition('[')[2].rstrip(']')}"


def test_a_dead_process_of_another_machine_of_this_host_name_is_not_judged_gone(ledger_url, tmp_path):  # noqa: F811
    mid, boot = _ids()
    other = ("f" if mid[0] != "f" else "e") * 32, "0" * 8 + "-1111-2222-3333-" + "4" * 12
    run, host = _ran_as(ledger_url, tmp_path, *other)
    with Ledger.connect(ledger_url) as ledger:
        assert ledger.doubted_ops("mc") == []  # its run may still be sending there: nothing in doubt
        assert ledger.abandon_dead_runs() == [] and ledger.get_run(run)["status"] == "running"
        with pytest.raises(LockBusyError):  # not taken over: it waits for the lock's time to live
            with destination_lock(ledger, "sync:mc"):
                pass
    # the same host name and PID namespace (4026531836 on two hosts alike): only the machine differs
    assert host.startswith(_name_ns()) and host != this_host()


@pytest.mark.parametrize("same_boot", [False, True])
def test_a_dead_process_of_this_machine_is_gone_in_this_boot_and_after_a_reboot(ledger_url, tmp_path,  # noqa: F811
                                                                                same_boot):
    mid, boot = _ids()
    run, host = _ran_as(ledger_url, tmp_path, mid, boot if same_boot else "9" * 32)
    with Ledger.connect(ledger_url) as ledger:
        assert ledger.doubted_ops("mc") == [("a@x.uz", "tag+VIP")]
        assert ledger.abandon_dead_runs() == [run]
        with destination_lock(ledger, "sync:mc"):  # taken over at once
            pass
    assert (host == this_host()) is same_boot


def test_owner_names_of_earlier_versions_are_judged_as_before():
    gone = dead_owner().split(":", 1)[1]
    name_ns = _name_ns()
    assert owner_process_gone(f"{name_ns}:{gone}")  # host name and PID namespace, no machine
    assert owner_process_gone(f"{socket.gethostname()}:{gone}")  # host name alone
    assert not owner_process_gone(f"{socket.gethostname()}/1:{gone}")  # another PID namespace
    assert not owner_process_gone(f"{name_ns}/zz:{gone}") and not owner_process_gone(f"{name_ns}/.:{gone}")
    assert owner_process_gone(dead_owner()) and not owner_process_gone(this_host() + f":{os.getpid()}:x")
