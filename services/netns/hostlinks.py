"""The host netns's link graph (names, altnames, masters, lower devices), kept by notifications.

Every attach reads the node's whole link graph (the uplink rule, name and altname lookups). A dump
of it grows with the node: a veth per pod, hundreds on a busy node, several milliseconds of the pod
start path. This table dumps once, then applies the kernel's link notifications (RTNLGRP_LINK) that
arrived since the last read: a read costs the changes since the previous pod, not the node's size.
No thread: the notifications wait in the socket until the next read drains them.

Correctness rests on three facts:
- a notification carries the link's whole state (the kernel fills it as it fills a dump's reply),
  so applying one is idempotent, and applying them in order after a dump converges;
- a resync drains the socket before it dumps, so no notification older than the dump is applied
  after it;
- a receive queue that overflowed (ENOBUFS: notifications lost) makes the next read dump again.
Bridge-port notifications (family AF_BRIDGE, also on RTNLGRP_LINK, RTM_DELLINK when a port leaves
its bridge) describe a port, not a link, and are skipped.

One thing changes without a notification: whether a link's lower device (IFLA_LINK) is local. When
a lower device or a veth peer leaves the netns, its dependents here now name a foreign link; when it
comes back, they name a local one again. So a link leaving re-reads the links that named it, and a
link arriving re-reads the link it names (a veth's other end) and those whose foreign IFLA_LINK has
its index (a move keeps the index when it is free there). Left: a lower device (of a vlan or
macvlan here) that comes back under another index; a full dump every RESYNC_SECONDS bounds that.
"""

from __future__ import annotations

import errno
import socket
import struct
import threading
import time
from collections.abc import Callable

from dranet.netlink.rtnl import (
    RTM_DELLINK,
    RTM_NEWLINK,
    RTMGRP_LINK,
    LinkBrief,
    RtnlSocket,
    iter_messages,
    parse_link_brief,
)

_FAMILY_AND_INDEX = struct.Struct("=BxHi")  # ifinfomsg: family, pad, type, index
RESYNC_SECONDS = 60.0

__all__ = ["LinkTable"]


class LinkTable:
    """One netns's links as briefs, current as of each read. Thread-safe."""

    def __init__(
        self,
        events: RtnlSocket,
        dump: Callable[[], list[LinkBrief]],
        get: Callable[[int], LinkBrief | None],
        *,
        resync: float = RESYNC_SECONDS,
    ) -> None:
        """events: a socket of that netns bound to RTNLGRP_LINK (see open_events); dump: a full
        dump of the same netns's link briefs; get: one link's brief by index (None: no such link)."""
        events.sock.setblocking(False)
        self._events = events
        self._dump = dump
        self._get = get
        self._resync = resync
        self._links: dict[int, LinkBrief] | None = None
        self._dumped = 0.0
        self._lock = threading.Lock()
        self.dumps = 0  # full dumps so far (the first, one per overflow or resync): for tests

    @staticmethod
    def open_events(make: Callable[[Callable[[], socket.socket]], socket.socket]) -> RtnlSocket:
        """The notification socket, created by `make` (which runs the factory in the netns)."""
        sock = make(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0))
        return RtnlSocket(RTMGRP_LINK, sock=sock)

    def briefs(self) -> list[LinkBrief]:
        with self._lock:
            if time.monotonic() - self._dumped > self._resync:
                self._links = None
            if self._links is not None and not self._apply_pending():
                self._links = None  # notifications were lost: the state is unknown
            if self._links is None:
                self._discard_pending()
                self._links = {b.index: b for b in self._dump()}
                self._dumped = time.monotonic()
                self.dumps += 1
            return list(self._links.values())

    def close(self) -> None:
        self._events.close()

    def _datagrams(self) -> list[bytes] | None:
        """Every datagram waiting in the socket; None when the kernel dropped some."""
        out: list[bytes] = []
        while True:
            try:
                out.append(self._events.sock.recv(1 << 20))
            except BlockingIOError:
                return out
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    return None
                raise

    def _discard_pending(self) -> None:
        while self._datagrams() is None:
            pass  # an overflow reported while discarding: keep discarding until empty

    def _apply_pending(self) -> bool:
        assert self._links is not None
        datagrams = self._datagrams()
        if datagrams is None:
            return False
        links = self._links
        stale: set[int] = set()  # links whose IFLA_LINK changed sides without a notification
        for data in datagrams:
            for mtype, payload in iter_messages(data):
                if mtype not in (RTM_NEWLINK, RTM_DELLINK):
                    continue
                family, _type, index = _FAMILY_AND_INDEX.unpack_from(payload, 0)
                if family != socket.AF_UNSPEC:
                    continue  # a bridge port's notification, not the link's
                if mtype == RTM_DELLINK:
                    links.pop(index, None)
                    stale.update(i for i, b in links.items() if b.parent == index)
                else:
                    brief = parse_link_brief(payload)
                    if index not in links:
                        stale.update(i for i, b in links.items() if b.foreign_parent == index)
                        if brief.parent in links:  # a veth peer arriving: the other end sees it
                            stale.add(brief.parent)
                    links[index] = brief
        for index in stale:
            brief = self._get(index)
            if brief is None:
                links.pop(index, None)
            else:
                links[index] = brief
        return True
