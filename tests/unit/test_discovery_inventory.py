import socket
import struct

from dranet.services.discovery.inventory import merge_kept
from dranet.services.discovery.model import Device

from dranet.netlink import rtnl


def test_attached_device_that_left_the_host_is_kept_with_last_attributes() -> None:
    last = Device("eth1", "eth1", attributes={"dra.net/ifName": "eth1", "dra.net/mtu": 9000})
    out = merge_kept([Device("eth2", "eth2")], {"eth1": last}, {"eth1"})
    assert [d.name for d in out] == ["eth1", "eth2"]
    kept = out[0]
    assert kept.ifname == "" and kept.allocatable and kept.attributes == last.attributes
    assert last.ifname == "eth1"  # the remembered copy is not changed


def test_live_values_win_for_a_partly_visible_device() -> None:
    last = Device("pci-0000-8a-00-0", "eth1", attributes={"dra.net/ifName": "eth1", "dra.net/numaNode": 0})
    live = Device("pci-0000-8a-00-0", "", attributes={"dra.net/numaNode": 1})
    out = merge_kept([live], {live.name: last}, {live.name})
    assert out[0].attributes == {"dra.net/ifName": "eth1", "dra.net/numaNode": 1}


def test_not_attached_vanished_device_goes() -> None:
    last = Device("eth1", "eth1")
    assert merge_kept([], {"eth1": last}, set()) == []
    assert merge_kept([], {}, {"unknown"}) == []


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * ((-length) % 4)


def _msg(mtype: int, body: bytes) -> bytes:
    length = 16 + len(body)
    return struct.pack("=IHHII", length, mtype, 2, 1, 0) + body


def test_rtnl_parses_link_addr_route() -> None:
    linkinfo = _attr(rtnl.IFLA_INFO_KIND, b"macvlan\0")
    link = struct.pack("=BxHiII", 0, 1, 7, 0, 0) + b"".join(
        [
            _attr(rtnl.IFLA_IFNAME, b"mv0\0"),
            # attributes the parser skips unread, among those it reads
            _attr(rtnl.IFLA_AF_SPEC | 0x8000, _attr(socket.AF_INET, b"\1" * 120)),
            _attr(99, b"x"),
            _attr(rtnl.IFLA_ADDRESS, bytes.fromhex("020000000007")),
            _attr(rtnl.IFLA_MTU, struct.pack("=I", 1400)),
            _attr(rtnl.IFLA_LINK, struct.pack("=I", 2)),
            _attr(rtnl.IFLA_MASTER, struct.pack("=I", 9)),
            _attr(rtnl.IFLA_OPERSTATE, bytes([6])),
            _attr(rtnl.IFLA_LINKINFO, linkinfo),
            _attr(rtnl.IFLA_PARENT_DEV_BUS_NAME, b"pci\0"),
            _attr(rtnl.IFLA_PARENT_DEV_NAME, b"0000:00:03.0\0"),
        ]
    )
    addr = struct.pack("=BBBBI", socket.AF_INET, 24, 0, 0, 7) + _attr(
        rtnl.IFA_LOCAL, socket.inet_aton("10.1.2.3")
    )
    hop = struct.pack("=HBBi", 8, 0, 0, 3) + struct.pack("=HBBi", 8, 0, 0, 4)
    route = struct.pack("=BBBBBBBBI", socket.AF_INET, 0, 0, 0, 254, 3, 0, 1, 0) + _attr(
        rtnl.RTA_MULTIPATH, hop
    )
    data = _msg(rtnl.RTM_NEWLINK, link) + _msg(rtnl.RTM_NEWADDR, addr) + _msg(rtnl.RTM_NEWROUTE, route)
    msgs = list(rtnl.iter_messages(data))
    assert [t for t, _ in msgs] == [rtnl.RTM_NEWLINK, rtnl.RTM_NEWADDR, rtnl.RTM_NEWROUTE]
    lk = rtnl.parse_link(msgs[0][1])
    assert (lk.index, lk.name, lk.kind, lk.mac, lk.mtu, lk.link, lk.master, lk.operstate) == (
        7,
        "mv0",
        "macvlan",
        "02:00:00:00:00:07",
        1400,
        2,
        9,
        "UP",
    )
    assert (lk.parent_bus, lk.parent_dev) == ("pci", "0000:00:03.0")
    ad = rtnl.parse_addr(msgs[1][1])
    assert ad is not None and (ad.index, ad.address, ad.prefixlen) == (7, "10.1.2.3", 24)
    rt = rtnl.parse_route(msgs[2][1])
    assert (rt.table, rt.dst_len, rt.oifs, rt.type) == (254, 0, (3, 4), 1)
    assert rtnl.unicast_ip_route(msgs[2][1])
    local = struct.pack("=BBBBBBBBI", socket.AF_INET, 32, 0, 0, 255, 2, 254, 2, 0)
    other_family = struct.pack("=BBBBBBBBI", socket.AF_BRIDGE, 0, 0, 0, 254, 3, 0, 1, 0)
    assert not rtnl.unicast_ip_route(memoryview(local)) and not rtnl.unicast_ip_route(
        memoryview(other_family)
    )


def test_rtnl_error_message_raises() -> None:
    import pytest

    data = _msg(rtnl.NLMSG_ERROR, struct.pack("=i", -16) + b"\0" * 16)
    with pytest.raises(rtnl.NetlinkError):
        list(rtnl.iter_messages(data))
