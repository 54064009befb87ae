"""What every attach reads of the host netns, kept by the kernel's notifications: the link graph
(names, altnames, masters, lower devices) and the main table's default routes.

An attach applies the uplink rule (dranet/uplinks.py) to the node's whole link graph and default
routes. Dumps of them grow with the node: a veth per pod (hundreds on a busy node), a route per pod
with some CNIs; several milliseconds of the pod start path. This cache dumps once, then applies
the notifications that arrived since the last read: a read costs the changes since the previous
pod, not the node's size. No thread: the notifications wait in the socket until the next read.

Links. A notification carries the link's whole state (the kernel fills it as it fills a dump's
reply), so applying one is idempotent and applying them in order after a dump converges. A resync
drains the socket before it dumps, so nothing older than the dump is applied after it.
Bridge-port notifications (family AF_BRIDGE, also on RTNLGRP_LINK, RTM_DELLINK when a port leaves
its bridge) describe a port, not a link, and are skipped. One thing changes without a
notification: whether a link's lower device (IFLA_LINK) is local. When a lower device or a veth
peer leaves, its dependents here name a foreign link; when it comes back, a local one again. So a
link leaving re-reads the links that named it, and a link arriving re-reads the link it names (a
veth's other end) and those whose foreign IFLA_LINK has its index (a move keeps the index when it
is free there). Left: a lower device that comes back under another index; the periodic full
resync (RESYNC_SECONDS) bounds that.

Default routes. They change rarely, so any notification that may concern them dumps them again
(the main table only, filtered by the kernel): a default route added or deleted in any table, and
an IPv4 address or link change on a link a cached default route goes through, since the kernel
removes IPv4 routes of a link that goes down, or loses the address they need, without a
notification.

A receive queue that overflowed (ENOBUFS: notifications lost) dumps both again.
"""

from __future__ import annotations

import errno
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from dranet.services.netns.netlink import Route

from dranet.netlink.rtnl import (
    RTM_DELADDR,
    RTM_DELLINK,
    RTM_DELROUTE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWROUTE,
    RTMGRP_IPV4_IFADDR,
    RTMGRP_IPV4_ROUTE,
    RTMGRP_IPV6_ROUTE,
    RTMGRP_LINK,
    LinkBrief,
    RtnlSocket,
    iter_messages,
    parse_link_brief,
)

_IFINFO = struct.Struct("=BxHi")  # ifinfomsg: family, pad, type, index
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefixlen, flags, scope, index
_RTM_DST_LEN = 1  # rtmsg: family, dst_len, ...
RESYNC_SECONDS = 60.0
GROUPS = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE

__all__ = ["HostCache", "HostReads"]


@dataclass(frozen=True)
class HostReads:
    """How the cache reads the netns when it must: full dumps, and one link by index."""

    links: Callable[[], list[LinkBrief]]
    link: Callable[[int], LinkBrief | None]
    default_routes: Callable[[], list[Route]]  # the main table's default routes


class HostCache:
    """One netns's link briefs and main-table default routes, current as of each read. Thread-safe."""

    def __init__(self, events: RtnlSocket, reads: HostReads, *, resync: float = RESYNC_SECONDS) -> None:
        """events: a socket of that netns bound to GROUPS (see open_events)."""
        events.sock.setblocking(False)
        self._events = events
        self._reads = reads
        self._resync = resync
        self._links: dict[int, LinkBrief] | None = None
        self._routes: list[Route] | None = None
        self._dumped = 0.0
        self._lock = threading.Lock()
        self.dumps = {"links": 0, "routes": 0}  # full dumps so far: for tests

    @staticmethod
    def open_events(make: Callable[[Callable[[], socket.socket]], socket.socket]) -> RtnlSocket:
        """The notification socket, created by `make` (which runs the factory in the netns)."""
        sock = make(lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0))
        return RtnlSocket(GROUPS, sock=sock)

    def links(self) -> list[LinkBrief]:
        with self._lock:
            self._catch_up()
            assert self._links is not None
            return list(self._links.values())

    def default_routes(self) -> list[Route]:
        """The main table's default routes (what the uplink rule reads of the routes)."""
        with self._lock:
            self._catch_up()
            assert self._routes is not None
            return list(self._routes)

    def close(self) -> None:
        self._events.close()

    def _catch_up(self) -> None:
        if time.monotonic() - self._dumped > self._resync:
            self._links = self._routes = None
        if self._links is not None and not self._apply_pending():
            self._links = self._routes = None  # notifications were lost: the state is unknown
        if self._links is None:
            self._discard_pending()
            self._links = {b.index: b for b in self._reads.links()}
            self._dumped = time.monotonic()
            self.dumps["links"] += 1
        if self._routes is None:
            self._routes = self._reads.default_routes()
            self.dumps["routes"] += 1

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
        links = self._links
        assert links is not None
        datagrams = self._datagrams()
        if datagrams is None:
            return False
        route_oifs = {i for r in self._routes or () for i in (r.oif, *r.multipath_oifs) if i}
        stale: set[int] = set()  # links whose IFLA_LINK changed sides without a notification
        for data in datagrams:
            for mtype, payload in iter_messages(data):
                if mtype in (RTM_NEWROUTE, RTM_DELROUTE):
                    if payload[_RTM_DST_LEN] == 0:
                        self._routes = None
                    continue
                if mtype in (RTM_NEWADDR, RTM_DELADDR):
                    if _IFADDR.unpack_from(payload, 0)[4] in route_oifs:
                        self._routes = None
                    continue
                if mtype not in (RTM_NEWLINK, RTM_DELLINK):
                    continue
                family, _type, index = _IFINFO.unpack_from(payload, 0)
                if family != socket.AF_UNSPEC:
                    continue  # a bridge port's notification, not the link's
                if index in route_oifs:
                    self._routes = None
                if mtype == RTM_DELLINK:
                    links.pop(index, None)
                    stale.update(i for i, b in links.items() if b.parent == index)
                    continue
                brief = parse_link_brief(payload)
                if index not in links:
                    stale.update(i for i, b in links.items() if b.foreign_parent == index)
                    if brief.parent in links:  # a veth peer arriving: the other end sees it
                        stale.add(brief.parent)
                links[index] = brief
        for index in stale:
            fresh = self._reads.link(index)
            if fresh is None:
                links.pop(index, None)
            else:
                links[index] = fresh
        return True
