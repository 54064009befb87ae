"""The worker's host link table (services/netns/hostlinks.py) equals a fresh dump after every
kind of change a node sees, without dumping again; an overflow of its notifications dumps again."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest
from dranet.services.netns.hostlinks import LinkTable
from dranet.services.netns.netlink import Rtnl, run_in_netns
from dranet.services.netns.testbed import Testbed, ip

pytestmark = [pytest.mark.kernel, pytest.mark.skipif(os.geteuid() != 0, reason="needs root for netns")]


@pytest.fixture
def node() -> Iterator[tuple[Testbed, Rtnl, LinkTable]]:
    tb = Testbed("thl")
    fd = os.open(tb.node_path, os.O_RDONLY)
    rtnl = Rtnl.open(fd)
    table = LinkTable(
        LinkTable.open_events(lambda make: run_in_netns(fd, make)), rtnl.link_briefs, rtnl.link_brief
    )
    try:
        yield tb, rtnl, table
    finally:
        table.close()
        rtnl.close()
        os.close(fd)
        tb.close()


def same_as_dump(rtnl: Rtnl, table: LinkTable) -> None:
    key = lambda b: b.index  # noqa: E731
    assert sorted(table.briefs(), key=key) == sorted(rtnl.link_briefs(), key=key)


def test_follows_every_kind_of_link_change_without_dumping(node: tuple[Testbed, Rtnl, LinkTable]) -> None:
    tb, rtnl, table = node
    same_as_dump(rtnl, table)
    assert table.dumps == 1
    ns = tb.node
    tb.add_nic("thl-a")
    tb.add_nic("thl-b")
    same_as_dump(rtnl, table)
    ip("link", "property", "add", "dev", "thl-a", "altname", "thl-a-alt", ns=ns)
    ip("link", "set", "thl-b", "name", "thl-b2", ns=ns)
    same_as_dump(rtnl, table)
    # A bridge port: the kernel also sends AF_BRIDGE notifications (RTM_DELLINK on leaving the
    # bridge), which describe the port and must not drop the link or its altnames.
    ip("link", "add", "thl-br", "type", "bridge", ns=ns)
    ip("link", "set", "thl-a", "master", "thl-br", ns=ns)
    ip("link", "set", "thl-a", "up", ns=ns)
    same_as_dump(rtnl, table)
    ip("link", "set", "thl-a", "nomaster", ns=ns)
    same_as_dump(rtnl, table)
    assert any(b.name == "thl-a" and b.alt_names == ("thl-a-alt",) for b in table.briefs())
    ip("link", "add", "link", "thl-b2", "name", "thl-mv", "type", "macvlan", ns=ns)
    pod = tb.add_netns()
    ip("link", "set", "thl-b2", "netns", pod, ns=ns)  # a move out: gone from the host's table
    ip("link", "del", "thl-br", ns=ns)
    # The macvlan's lower device left: the macvlan now names a foreign link, though the kernel
    # sent no notification for it.
    same_as_dump(rtnl, table)
    # A veth peer coming in (thl-a's, from the wire netns: now local), then leaving again.
    peer = tb.peers["thl-a"]
    ip("link", "set", peer, "netns", ns, ns=tb.wire)
    same_as_dump(rtnl, table)
    ip("link", "set", peer, "netns", tb.wire, ns=ns)
    same_as_dump(rtnl, table)
    assert not any(b.name in ("thl-b2", "thl-br") for b in table.briefs())
    # ... and back: local again.
    ip("link", "set", "thl-b2", "netns", ns, ns=pod)
    same_as_dump(rtnl, table)
    mv = next(b for b in table.briefs() if b.name == "thl-mv")
    assert mv.parent == next(b.index for b in table.briefs() if b.name == "thl-b2")
    assert table.dumps == 1, "every change came from a notification"


def test_a_lost_notification_dumps_again(node: tuple[Testbed, Rtnl, LinkTable]) -> None:
    tb, rtnl, table = node
    same_as_dump(rtnl, table)
    # The smallest receive buffer holds a notification or two: a burst overflows it (ENOBUFS).
    table._events.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
    for k in range(8):
        tb.add_nic(f"thl-o{k}")
    same_as_dump(rtnl, table)
    assert table.dumps == 2
    same_as_dump(rtnl, table)
    assert table.dumps == 2


def test_dumps_again_after_the_resync_period(node: tuple[Testbed, Rtnl, LinkTable]) -> None:
    tb, rtnl, _ = node
    fd = os.open(tb.node_path, os.O_RDONLY)
    events = LinkTable.open_events(lambda make: run_in_netns(fd, make))
    fresh = LinkTable(events, rtnl.link_briefs, rtnl.link_brief, resync=0.0)
    try:
        same_as_dump(rtnl, fresh)
        same_as_dump(rtnl, fresh)
        assert fresh.dumps == 2
    finally:
        fresh.close()
        os.close(fd)
