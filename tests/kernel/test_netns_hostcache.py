"""The worker's host cache (services/netns/hostcache.py) equals fresh dumps after every kind of
change a node sees, without dumping again where notifications tell it all; a lost notification,
or one that may concern a default route, dumps again."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterator

import pytest
from dranet.services.netns.hostcache import HostCache, HostReads
from dranet.services.netns.netlink import Rtnl, run_in_netns
from dranet.services.netns.testbed import Testbed, ip

from dranet.uplinks import RT_TABLE_MAIN

pytestmark = [pytest.mark.kernel, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for netns")]


def open_cache(fd: int, rtnl: Rtnl, resync: float = 60.0) -> HostCache:
    reads = HostReads(
        links=rtnl.link_briefs,
        link=rtnl.link_brief,
        default_routes=lambda: rtnl.routes(defaults=True, table=RT_TABLE_MAIN),
    )
    return HostCache(HostCache.open_events(lambda make: run_in_netns(fd, make)), reads, resync=resync)


@pytest.fixture
def node(testbed: Callable[[str], Testbed]) -> Iterator[tuple[Testbed, Rtnl, HostCache, int]]:
    tb = testbed("thc")
    fd = os.open(tb.node_path, os.O_RDONLY)
    rtnl = Rtnl.open(fd)
    cache = open_cache(fd, rtnl)
    try:
        yield tb, rtnl, cache, fd
    finally:
        cache.close()
        rtnl.close()
        os.close(fd)


def same_as_dump(rtnl: Rtnl, cache: HostCache) -> None:
    key = lambda b: b.index  # noqa: E731
    assert sorted(cache.links(), key=key) == sorted(rtnl.link_briefs(), key=key)
    assert sorted(map(repr, cache.default_routes())) == sorted(
        map(repr, rtnl.routes(defaults=True, table=RT_TABLE_MAIN))
    )


def test_follows_every_kind_of_link_change_without_dumping(
    node: tuple[Testbed, Rtnl, HostCache, int],
) -> None:
    tb, rtnl, cache, _ = node
    same_as_dump(rtnl, cache)
    ns = tb.node
    tb.add_nic("thc-a")
    tb.add_nic("thc-b")
    same_as_dump(rtnl, cache)
    ip("link", "property", "add", "dev", "thc-a", "altname", "thc-a-alt", ns=ns)
    ip("link", "set", "thc-b", "name", "thc-b2", ns=ns)
    same_as_dump(rtnl, cache)
    # A bridge port: the kernel also sends AF_BRIDGE notifications (RTM_DELLINK on leaving the
    # bridge), which describe the port and must not drop the link or its altnames.
    ip("link", "add", "thc-br", "type", "bridge", ns=ns)
    ip("link", "set", "thc-a", "master", "thc-br", ns=ns)
    ip("link", "set", "thc-a", "up", ns=ns)
    same_as_dump(rtnl, cache)
    ip("link", "set", "thc-a", "nomaster", ns=ns)
    same_as_dump(rtnl, cache)
    assert any(b.name == "thc-a" and b.alt_names == ("thc-a-alt",) for b in cache.links())
    ip("link", "add", "link", "thc-b2", "name", "thc-mv", "type", "macvlan", ns=ns)
    pod = tb.add_netns()
    ip("link", "set", "thc-b2", "netns", pod, ns=ns)  # a move out: gone from the host's table
    ip("link", "del", "thc-br", ns=ns)
    # The macvlan's lower device left: the macvlan now names a foreign link, though the kernel
    # sent no notification for it.
    same_as_dump(rtnl, cache)
    assert not any(b.name in ("thc-b2", "thc-br") for b in cache.links())
    # A veth peer coming in (thc-a's, from the wire netns: now local), then leaving again.
    peer = tb.peers["thc-a"]
    ip("link", "set", peer, "netns", ns, ns=tb.wire)
    same_as_dump(rtnl, cache)
    ip("link", "set", peer, "netns", tb.wire, ns=ns)
    same_as_dump(rtnl, cache)
    # ... and the macvlan's lower device back: local again.
    ip("link", "set", "thc-b2", "netns", ns, ns=pod)
    same_as_dump(rtnl, cache)
    mv = next(b for b in cache.links() if b.name == "thc-mv")
    assert mv.parent == next(b.index for b in cache.links() if b.name == "thc-b2")
    assert cache.dumps == {"links": 1, "routes": 1}, "every change came from a notification"


def test_default_routes_follow_the_changes_the_kernel_makes_silently(
    node: tuple[Testbed, Rtnl, HostCache, int],
) -> None:
    tb, rtnl, cache, _ = node
    ns = tb.node
    tb.add_nic("thc-up", addresses=("10.93.0.2/24", "fd00:93::2/64"))
    same_as_dump(rtnl, cache)
    ip("route", "add", "default", "via", "10.93.0.1", "metric", "10", ns=ns)
    ip("-6", "route", "add", "default", "via", "fd00:93::1", "dev", "thc-up", ns=ns)
    same_as_dump(rtnl, cache)
    assert len(cache.default_routes()) == 2
    # Other links and routes (a pod's veth, its route) leave the default routes alone: no dump.
    dumps = cache.dumps["routes"]
    tb.add_nic("thc-pod", addresses=("10.94.0.2/24",))
    ip("route", "add", "10.95.0.0/16", "via", "10.94.0.1", ns=ns)
    same_as_dump(rtnl, cache)
    assert cache.dumps["routes"] == dumps
    # The kernel drops the IPv4 default route of a link that goes down without a notification.
    ip("link", "set", "thc-up", "down", ns=ns)
    same_as_dump(rtnl, cache)
    ip("link", "set", "thc-up", "up", ns=ns)
    ip("route", "add", "default", "via", "10.93.0.1", "metric", "10", ns=ns)
    same_as_dump(rtnl, cache)
    # ... and of a link that loses the address its gateway is reached by.
    ip("addr", "del", "10.93.0.2/24", "dev", "thc-up", ns=ns)
    same_as_dump(rtnl, cache)
    assert all(r.family == socket.AF_INET6 for r in cache.default_routes())
    assert cache.dumps["links"] == 1


def test_a_lost_notification_dumps_again(node: tuple[Testbed, Rtnl, HostCache, int]) -> None:
    tb, rtnl, cache, _ = node
    same_as_dump(rtnl, cache)
    # The smallest receive buffer holds a notification or two: a burst overflows it (ENOBUFS).
    cache._events.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
    for k in range(8):
        tb.add_nic(f"thc-o{k}")
    # Room again for what the kernel still says about them (IPv6 comes up a moment later).
    cache._events.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    same_as_dump(rtnl, cache)
    assert cache.dumps == {"links": 2, "routes": 2}
    same_as_dump(rtnl, cache)
    assert cache.dumps == {"links": 2, "routes": 2}


def test_dumps_again_after_the_resync_period(node: tuple[Testbed, Rtnl, HostCache, int]) -> None:
    _, rtnl, _, fd = node
    fresh = open_cache(fd, rtnl, resync=0.0)
    try:
        fresh.links()
        fresh.links()
        assert fresh.dumps == {"links": 2, "routes": 2}
    finally:
        fresh.close()
