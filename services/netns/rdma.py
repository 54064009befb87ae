"""RDMA for the worker: which RDMA device backs a netdev, and the exclusive-mode link move into a
pod netns (RDMA netlink, NLDEV). pyroute2 has no RDMA family, so this one speaks the few messages it
needs directly; sysfs paths go through a configurable root for tests. The device's char devices
are dranet/rdma.py's (nri reads them too).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from pathlib import Path

from dranet.services.netns.netlink import NetlinkError

NETLINK_RDMA = 20
RDMA_NL_NLDEV = 5
RDMA_NLDEV_CMD_GET = 1
RDMA_NLDEV_CMD_SET = 2
RDMA_NLDEV_CMD_SYS_GET = 6
RDMA_NLDEV_ATTR_DEV_INDEX = 1
RDMA_NLDEV_ATTR_DEV_NAME = 2
RDMA_NLDEV_SYS_ATTR_NETNS_MODE = 66
RDMA_NLDEV_NET_NS_FD = 68
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 1, 4, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3


def present(name: str, sysfs_root: str | Path = "/sys") -> bool:
    """Whether the node has RDMA device `name` (<sysfs>/class/infiniband/<name>)."""
    return (Path(sysfs_root) / "class" / "infiniband" / name).is_dir()


def rdma_device_of(ifname: str, sysfs_root: str | Path = "/sys") -> str:
    """The RDMA device (e.g. mlx5_0) of a netdev, from <sysfs>/class/net/<if>/device/infiniband/."""
    d = Path(sysfs_root) / "class" / "net" / ifname / "device" / "infiniband"
    try:
        names = sorted(p.name for p in d.iterdir())
    except OSError:
        return ""
    return names[0] if names else ""


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("HH", length, kind) + payload + b"\0" * ((4 - length % 4) % 4)


def _attrs(data: bytes) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    off = 0
    while off + 4 <= len(data):
        length, kind = struct.unpack_from("HH", data, off)
        if length < 4:
            break
        out[kind & 0x3FFF] = data[off + 4 : off + length]
        off += (length + 3) & ~3
    return out


class RdmaNetlink:
    def __init__(self) -> None:
        try:
            self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_RDMA)
        except OSError as exc:
            if exc.errno == errno.EPROTONOSUPPORT:
                raise NetlinkError(exc.errno, "this kernel has no RDMA netlink (no RDMA support)") from None
            raise
        self._sock.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def _request(self, cmd: int, attrs: bytes, flags: int) -> list[dict[int, bytes]]:
        self._seq += 1
        mtype = (RDMA_NL_NLDEV << 10) + cmd
        self._sock.send(
            struct.pack("IHHII", 16 + len(attrs), mtype, flags | NLM_F_REQUEST, self._seq, 0) + attrs
        )
        out: list[dict[int, bytes]] = []
        while True:
            data = self._sock.recv(1 << 16)
            off = 0
            while off + 16 <= len(data):
                length, mtype_r, _flags, seq, _pid = struct.unpack_from("IHHII", data, off)
                body = data[off + 16 : off + length]
                off += (length + 3) & ~3
                if seq != self._seq:
                    continue
                if mtype_r == NLMSG_ERROR:
                    (code,) = struct.unpack_from("i", body)
                    if code:
                        raise NetlinkError(-code, f"rdma netlink: {os.strerror(-code)}")
                    return out
                if mtype_r == NLMSG_DONE:
                    return out
                out.append(_attrs(body))
                if not flags & (NLM_F_ACK | NLM_F_DUMP):
                    return out

    def netns_exclusive(self) -> bool:
        """True when the RDMA subsystem is in exclusive netns mode (devices belong to one netns)."""
        replies = self._request(RDMA_NLDEV_CMD_SYS_GET, b"", 0)
        mode = replies[0].get(RDMA_NLDEV_SYS_ATTR_NETNS_MODE) if replies else None
        return bool(mode and mode[0] == 0)  # 0 = exclusive, 1 = shared

    def index_of(self, name: str) -> int:
        for dev in self._request(RDMA_NLDEV_CMD_GET, b"", NLM_F_DUMP):
            if dev.get(RDMA_NLDEV_ATTR_DEV_NAME, b"").rstrip(b"\0").decode() == name:
                return int(struct.unpack("I", dev[RDMA_NLDEV_ATTR_DEV_INDEX])[0])
        raise NetlinkError(errno.ENODEV, f"no RDMA device {name!r}")

    def move(self, name: str, netns_fd: int) -> None:
        """Move an RDMA device to the netns of netns_fd (exclusive mode only)."""
        index = self.index_of(name)
        attrs = _attr(RDMA_NLDEV_ATTR_DEV_INDEX, struct.pack("I", index)) + _attr(
            RDMA_NLDEV_NET_NS_FD, struct.pack("I", netns_fd)
        )
        self._request(RDMA_NLDEV_CMD_SET, attrs, NLM_F_ACK)


def move_if_exclusive(name: str, netns_fd: int) -> None:
    """Move RDMA device `name` to the netns of netns_fd when the subsystem is in exclusive mode
    (in shared mode every netns sees every RDMA device: nothing to move)."""
    nl = RdmaNetlink()
    try:
        if nl.netns_exclusive():
            nl.move(name, netns_fd)
    finally:
        nl.close()


def rdma_available() -> bool:
    try:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_RDMA)
    except OSError:
        return False
    s.close()
    return True
