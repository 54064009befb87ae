"""A network namespace the worker holds open: its fd, and its netlink and ethtool sockets.

The sockets are opened on first use, inside the namespace (see netlink.run_in_netns), and stay
bound to it. The host's namespace is one of these too, so every kernel step takes explicit
handles: the host's and the pod's.
"""

from __future__ import annotations

import os

from dranet.services.netns.netlink import Ethtool, Rtnl
from dranet.services.netns.nspath import NetnsHandle


class Netns:
    def __init__(self, handle: NetnsHandle) -> None:
        self.handle = handle
        self._rtnl: Rtnl | None = None
        self._ethtool: Ethtool | None = None

    @classmethod
    def open_path(cls, path: str) -> Netns:
        """A namespace by path, without the pod-path checks (for the worker's own host netns)."""
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        st = os.fstat(fd)
        return cls(NetnsHandle(path=path, fd=fd, id=(st.st_dev, st.st_ino)))

    @property
    def fd(self) -> int:
        return self.handle.fd

    @property
    def rtnl(self) -> Rtnl:
        if self._rtnl is None:
            self._rtnl = Rtnl.open(self.handle.fd)
        return self._rtnl

    @property
    def ethtool(self) -> Ethtool:
        if self._ethtool is None:
            self._ethtool = Ethtool(self.handle.fd)
        return self._ethtool

    def close(self) -> None:
        if self._rtnl:
            self._rtnl.close()
        if self._ethtool:
            self._ethtool.close()
        self.handle.close()
