"""Who holds a run, a lock or a claimed event: ``host:pid:token`` names, and whether that process is gone.

A process killed mid-work (kill -9, OOM, power cut) never releases what it holds; a name that says which
process of which host held it lets the next process *on that host* tell a dead holder from a busy one.
The host part is the host name, the PID namespace and the machine
(``web1/4026531836/5f2c9a41d07e.8b13e6c0a9f4``): containers given one host name (docker's ``--hostname``, a pod
template) each count process ids of their own, and a PID that is dead in one is no evidence about a process of
another, which keeps its lock until the TTL. Nor is one dead on another machine: two machines of one host name (a
cloud image's default) share the first PID namespace's number too (4026531836 on every Linux), so the machine is
named as well, by its ``/etc/machine-id`` and the boot it is in (``/proc/sys/kernel/random/boot_id``), 12 hex
digits of each (:func:`machine`). A name of this boot is judged by its process, and so is one that names this
host as it names itself (an id it cannot read left out); one of this machine's earlier boot in the first PID
namespace is gone (a reboot ended it); any other (another boot id and another machine id, or a container's PID
namespace, where the machine id may be an image's, baked in for containers on many machines) waits for the TTL. Two
machines cloned with one machine id and one host name are still taken for one machine rebooted: give each its own
(``systemd-machine-id-setup``). Names written by earlier versions (a host name alone, or with its PID namespace)
are still judged as before.
"""

from __future__ import annotations

import os
import socket
import uuid
from functools import lru_cache

from connectors.digits import digits

#: the files :func:`machine` reads: the machine's id (kept across reboots; a cloned image's, or containers', may be
#: one for several machines) and the boot's (new at every boot, one for every container of the running kernel)
MACHINE_ID, BOOT_ID = "/etc/machine-id", "/proc/sys/kernel/random/boot_id"


def _hex12(path: str) -> str:
    """The first 12 hex digits of the id in ``path`` ("" when it cannot be read or holds none)."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            text = f.read(100)
    except OSError:
        return ""
    hexes = "".join(c for c in text.lower() if c in "0123456789abcdef")
    return hexes[:12] if len(hexes) >= 12 else ""


@lru_cache(maxsize=1)
def machine() -> str:
    """``machine.boot`` (:data:`MACHINE_ID`, :data:`BOOT_ID`, 12 hex digits each; a part that cannot be read is
    empty); "" when neither can be read (then names are judged by host name and PID namespace alone, as before)."""
    mid, boot = _hex12(MACHINE_ID), _hex12(BOOT_ID)
    return f"{mid}.{boot}" if mid or boot else ""


def _host() -> str:
    """``hostname/pid-namespace`` (the host name alone where the namespace cannot be read)."""
    try:
        ns = os.readlink("/proc/self/ns/pid")  # 'pid:[4026531836]'
    except OSError:
        return socket.gethostname()
    return f"{socket.gethostname()}/{ns.partition('[')[2].rstrip(']') or ns}"


def this_host() -> str:
    """``hostname/pid-namespace/machine.boot`` (:func:`machine`; left out where neither id can be read)."""
    ident = machine()
    return f"{_host()}/{ident}" if ident else _host()


def default_owner() -> str:
    """host:pid:random, unique per lock holder."""
    return f"{this_host()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def process_owner() -> str:
    """host:pid:run, the owner recorded on the runs this process starts."""
    return f"{this_host()}:{os.getpid()}:run"


#: the number of the first PID namespace (every Linux's): there the machine id is the machine's own, not one baked
#: into a container image that containers on several machines read alike
INITIAL_PID_NS = "4026531836"


def _same_machine(host: str) -> bool | None:
    """Whether the host part ``host`` of an owner names this host name and PID namespace on this machine in this
    boot (True), on this machine in an earlier boot (None: its processes are gone), or anything else (False)."""
    if host in (this_host(), _host(), socket.gethostname()):
        return True  # this host as it names itself (an id that cannot be read left out alike), or an earlier version
    name, _, ident = host.rpartition("/")
    if name != _host() or "." not in ident:
        return False
    mid, _, boot = ident.partition(".")
    my_mid, _, my_boot = machine().partition(".")
    if boot and boot == my_boot:
        return True  # one running kernel: this machine now (a container of it shares the PID namespace named)
    if mid and mid == my_mid and boot and my_boot and name.endswith(f"/{INITIAL_PID_NS}"):
        return None  # this machine before it rebooted (in a container, one image's machine id: wait for the TTL)
    return False


def owner_process_gone(owner: str | None) -> bool:
    """True when ``owner`` (``host:pid:token``, see :func:`default_owner`) names a process on this host (and PID
    namespace, and machine in this boot) that no longer exists, or one of this machine's earlier boot. Other
    hosts, namespaces or machines, other formats and unknown cases: False (wait for expiry)."""
    host, _, rest = (owner or "").partition(":")
    pid = rest.partition(":")[0]
    if not digits(pid) or int(pid) <= 0:
        return False
    same = _same_machine(host)
    if same is None:
        return True
    if not same or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return _is_zombie(int(pid))


def _is_zombie(pid: int) -> bool:
    """A killed process nobody has reaped yet still answers kill(pid, 0) (Linux: state Z in /proc)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] == b"Z"
    except (OSError, IndexError):
        return False
