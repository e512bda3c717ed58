"""Who holds a run, a lock or a claimed event: ``host:pid:token`` names, and whether that process is gone.

A process killed mid-work (kill -9, OOM, power cut) never releases what it holds; a name that says which
process of which host held it lets the next process *on that host* tell a dead holder from a busy one.
The host part is the host name and the PID namespace (``web1/4026531836``): containers given one host name
(docker's ``--hostname``, a pod template) each count process ids of their own, and a PID that is dead in one
is no evidence about a process of another, which keeps its lock until the TTL. Names written by earlier
versions (a host name alone) are still understood as before.
"""

from __future__ import annotations

import os
import socket
import uuid

from connectors.digits import digits


def this_host() -> str:
    """``hostname/pid-namespace`` (the host name alone where the namespace cannot be read)."""
    try:
        ns = os.readlink("/proc/self/ns/pid")  # 'pid:[4026531836]'
    except OSError:
        return socket.gethostname()
    return f"{socket.gethostname()}/{ns.partition('[')[2].rstrip(']') or ns}"


def default_owner() -> str:
    """host:pid:random, unique per lock holder."""
    return f"{this_host()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def process_owner() -> str:
    """host:pid:run, the owner recorded on the runs this process starts."""
    return f"{this_host()}:{os.getpid()}:run"


def owner_process_gone(owner: str | None) -> bool:
    """True when ``owner`` (``host:pid:token``, see :func:`default_owner`) names a process on
    this host (and PID namespace) that no longer exists. Other hosts or namespaces, other formats and unknown
    cases: False (wait for expiry)."""
    host, _, rest = (owner or "").partition(":")
    pid = rest.partition(":")[0]
    if host not in (this_host(), socket.gethostname()) or not digits(pid) or int(pid) <= 0:
        return False
    if int(pid) == os.getpid():
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
