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
    print(run, owners.this_host(), os.getpid(), flush=True)
    sys.stdin.read()  # alive (holding it) until the test closes its stdin
"""

_JUDGE = """
import os, sys
import sync.ledger.owners as owners
owners.MACHINE_ID, owners.BOOT_ID = sys.argv[1], sys.argv[2]
from sync.errors import LockBusyError
from sync.held_lock import destination_lock
from sync.ledger import Ledger
with Ledger.connect(os.environ["RFMSYNC_TEST_LEDGER"]) as led:
    abandoned = led.abandon_dead_runs()
    try:
        with destination_lock(led, "sync:mc"):
            taken = True
    except LockBusyError:
        taken = False
    print(abandoned, taken)
"""


def _id_files(tmp_path: Path, machine_id: str | None, boot_id: str | None) -> list[str]:
    """Files holding ``machine_id`` and ``boot_id`` as a machine's (None: a path that cannot be read)."""
    out = []
    for name, text in (("machine-id", machine_id), ("boot_id", boot_id)):
        path = tmp_path / name
        if text is not None:
            path.write_text(text + "\n", encoding="ascii")
        out.append(str(path))
    return out


def _holding(url: str, tmp_path: Path, machine_id: str | None, boot_id: str | None) -> subprocess.Popen:
    """A process that reads ``machine_id`` and ``boot_id`` as its machine's ids (all else this host's: its host name,
    the PID namespace) holds ``sync:mc`` and starts a run of ``mc`` with an add in flight; it stays alive until its
    stdin is closed (the first line of its output: its run's id, its host part and its PID)."""
    return subprocess.Popen([sys.executable, "-c", _AS_MACHINE, *_id_files(tmp_path, machine_id, boot_id)], cwd=ROOT,
                            text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env={**os.environ, "RFMSYNC_TEST_LEDGER": url})


def _ran_as(url: str, tmp_path: Path, machine_id: str | None, boot_id: str | None) -> tuple[int, str]:
    """:func:`_holding`'s process, exited (killed, as far as the ledger knows): its run's id and its host part."""
    proc = _holding(url, tmp_path, machine_id, boot_id)
    out, _ = proc.communicate("", timeout=60)
    assert proc.returncode == 0
    run, host, _ = out.split()
    return int(run), host


def _ids() -> tuple[str, str]:
    """This machine's id and its boot's, as the files hold them."""
    try:
        mid = Path("/etc/machine-id").read_text(encoding="ascii").strip()
        boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        mid = boot = ""
    if not (mid and boot):
        pytest.skip("this machine's /etc/machine-id or boot id cannot be read: owners here name no machine (judged "
                    "by host name and PID namespace, as before), so there is no machine or boot to tell apart")
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


def test_a_dead_process_of_this_machine_in_this_boot_is_gone(ledger_url, tmp_path):  # noqa: F811
    mid, boot = _ids()
    run, host = _ran_as(ledger_url, tmp_path, mid, boot)
    with Ledger.connect(ledger_url) as ledger:
        assert ledger.doubted_ops("mc") == [("a@x.uz", "tag+VIP")]
        assert ledger.abandon_dead_runs() == [run]
        with destination_lock(ledger, "sync:mc"):  # taken over at once
            pass
    assert host == this_host()


def test_a_run_of_this_machine_s_earlier_boot_is_gone_whatever_its_pid(ledger_url, tmp_path):  # noqa: F811
    mid, _ = _ids()
    if not _name_ns().endswith("/4026531836"):
        pytest.skip("not in the first PID namespace: there an earlier boot's owner waits for the TTL")
    holder = _holding(ledger_url, tmp_path, mid, "9" * 32)  # its PID alive here: the boot alone says gone
    try:
        run = int(holder.stdout.readline().split()[0])
        with Ledger.connect(ledger_url) as ledger:
            assert ledger.doubted_ops("mc") == [("a@x.uz", "tag+VIP")]
            assert ledger.abandon_dead_runs() == [run]
            with destination_lock(ledger, "sync:mc"):  # taken over at once
                pass
    finally:
        holder.communicate("", timeout=60)


@pytest.mark.parametrize("unreadable", ["boot_id", "machine-id"])
def test_this_host_s_dead_process_is_gone_where_one_id_cannot_be_read(ledger_url, tmp_path,  # noqa: F811
                                                                      unreadable):
    mid, boot = _ids()
    ids = (mid, None) if unreadable == "boot_id" else (None, boot)
    run, host = _ran_as(ledger_url, tmp_path, *ids)  # /proc/sys not mounted, or no /etc/machine-id
    out = subprocess.run([sys.executable, "-c", _JUDGE, *_id_files(tmp_path, *ids)], cwd=ROOT, check=True, text=True,
                         capture_output=True, env={**os.environ, "RFMSYNC_TEST_LEDGER": ledger_url}).stdout
    assert out.split() == [f"[{run}]", "True"]  # judged by its PID (dead) and taken over at once, as before
    assert host.startswith(_name_ns() + "/")


_IN_A_CONTAINER = """
import os, sys
import sync.ledger.owners as owners
mid = owners.machine().partition(".")[0]
print(owners.this_host(), owners.owner_process_gone(f"{owners._host()}/{mid}.{'9' * 12}:{os.getpid()}:x"))
"""


def test_in_a_pid_namespace_of_its_own_another_boot_s_owner_waits_for_the_ttl():
    """Containers of one image (its machine id baked in) on two machines, one host name, one PID namespace number:
    a live run of the other machine is not taken over (its owner names another boot and the same machine)."""
    _ids()
    try:
        out = subprocess.run(["unshare", "--pid", "--fork", sys.executable, "-c", _IN_A_CONTAINER], cwd=ROOT,
                             text=True, capture_output=True, timeout=60)
    except FileNotFoundError:
        pytest.skip("no unshare(1) here to make a PID namespace")
    if out.returncode != 0:
        pytest.skip(f"cannot make a PID namespace here (unshare: {out.stderr.strip()[:200]})")
    host, gone = out.stdout.split()
    assert not host.startswith(_name_ns() + "/") and gone == "False"


def test_owner_names_of_earlier_versions_are_judged_as_before():
    gone = dead_owner().split(":", 1)[1]
    name_ns = _name_ns()
    assert owner_process_gone(f"{name_ns}:{gone}")  # host name and PID namespace, no machine
    assert owner_process_gone(f"{socket.gethostname()}:{gone}")  # host name alone
    assert not owner_process_gone(f"{socket.gethostname()}/1:{gone}")  # another PID namespace
    assert not owner_process_gone(f"{name_ns}/zz:{gone}") and not owner_process_gone(f"{name_ns}/.:{gone}")
    assert owner_process_gone(dead_owner()) and not owner_process_gone(this_host() + f":{os.getpid()}:x")
