"""Dropping Linux capabilities at start, so the privilege split holds whatever started us.

capset(2) and PR_CAPBSET_DROP act on the calling thread only: call drop_capabilities() first thing,
before any thread (zmq, gRPC) exists, and every later thread inherits the reduced sets.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Iterable

PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

# Names as in linux/capability.h, index = capability number.
CAP_NAMES = (
    "CAP_CHOWN CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH CAP_FOWNER CAP_FSETID CAP_KILL CAP_SETGID CAP_SETUID "
    "CAP_SETPCAP CAP_LINUX_IMMUTABLE CAP_NET_BIND_SERVICE CAP_NET_BROADCAST CAP_NET_ADMIN CAP_NET_RAW "
    "CAP_IPC_LOCK CAP_IPC_OWNER CAP_SYS_MODULE CAP_SYS_RAWIO CAP_SYS_CHROOT CAP_SYS_PTRACE CAP_SYS_PACCT "
    "CAP_SYS_ADMIN CAP_SYS_BOOT CAP_SYS_NICE CAP_SYS_RESOURCE CAP_SYS_TIME CAP_SYS_TTY_CONFIG CAP_MKNOD "
    "CAP_LEASE CAP_AUDIT_WRITE CAP_AUDIT_CONTROL CAP_SETFCAP CAP_MAC_OVERRIDE CAP_MAC_ADMIN CAP_SYSLOG "
    "CAP_WAKE_ALARM CAP_BLOCK_SUSPEND CAP_AUDIT_READ CAP_PERFMON CAP_BPF CAP_CHECKPOINT_RESTORE"
).split()

# The netns worker's two (setns into pod netns files, configure links), and dhclient's two when it
# serves DHCP (`dranet netns --dhcp`): a packet socket to send before it has an address, UDP port 68.
# services/netns/main.py keeps them; `dranet audit` allows exactly these.
WORKER_CAPS = frozenset({"CAP_NET_ADMIN", "CAP_SYS_ADMIN"})
WORKER_DHCP_CAPS = frozenset({"CAP_NET_RAW", "CAP_NET_BIND_SERVICE"})


class CapabilityError(OSError):
    pass


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def cap_number(name: str) -> int:
    try:
        return CAP_NAMES.index(name)
    except ValueError:
        raise CapabilityError(f"unknown capability {name!r}") from None


def names_of(mask: int) -> list[str]:
    """Capability names set in a /proc/<pid>/status style bitmask."""
    return [CAP_NAMES[i] if i < len(CAP_NAMES) else f"CAP_{i}" for i in range(64) if mask >> i & 1]


def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return len(CAP_NAMES) - 1


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def make_undumpable() -> None:
    """Clear the dumpable flag: another process of the same uid without CAP_SYS_PTRACE can then
    neither ptrace this one nor open its /proc/<pid>/root, mem, environ or fds (the ServiceAccount
    token of the main container, a service's bus sockets). An exec or a uid change sets it again,
    so every `dranet` command calls this first thing."""
    if _libc().prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise CapabilityError(err, f"PR_SET_DUMPABLE: {os.strerror(err)}")


def drop_capabilities(keep: Iterable[str] = ()) -> None:
    """Keep only `keep` (effective + permitted), clear the bounding set of the rest, clear ambient
    and inheritable, and set no_new_privs so that no exec can regain anything; not dumpable."""
    keep_nums = {cap_number(n) for n in keep}
    make_undumpable()
    libc = _libc()
    for cap in range(_last_cap() + 1):
        if cap not in keep_nums and libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            if err not in (0, 22):  # EINVAL: the kernel does not know this cap
                # EPERM without CAP_SETPCAP (already unprivileged): the bounding set cannot grow anyway
                if os.geteuid() == 0 and err != 1:
                    raise CapabilityError(err, f"PR_CAPBSET_DROP {cap}: {os.strerror(err)}")
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    mask = 0
    for n in keep_nums:
        mask |= 1 << n
    header = _Header(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)()
    for i in range(2):
        part = (mask >> (32 * i)) & 0xFFFFFFFF
        data[i].effective = data[i].permitted = part
        data[i].inheritable = 0
    if libc.capset(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise CapabilityError(err, f"capset: {os.strerror(err)} (keep={sorted(keep)})")
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise CapabilityError(err, f"PR_SET_NO_NEW_PRIVS: {os.strerror(err)}")


def effective_capabilities(pid: int | str = "self") -> list[str]:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return names_of(int(line.split()[1], 16))
    return []
