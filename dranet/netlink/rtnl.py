"""The project's read-only rtnetlink reader: dump links, addresses, routes and tc bpf filters,
look a route up; receive events.

Discovery and the netns worker read a few attributes per message. pyroute2 decodes every
attribute of every message into Python objects, which for 1,000 links costs ~0.3 s and ~50 MiB
(and ~2 ms per pod on the worker's start path); this parser keeps only what is needed (and asks
the kernel to leave out link statistics), so a full dump of 1,000 links takes a few milliseconds.
It never sends anything but dump requests and route lookups (which change nothing and send no
packet); `dump` also serves a socket opened elsewhere (the
worker's, which writes with pyroute2's message classes).
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

NETLINK_ROUTE = 0
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_GETQDISC, RTM_GETTFILTER = 38, 46
RTM_GETNEIGH = 30
NDA_DST, NDA_LLADDR, NDA_IFINDEX = 1, 2, 8
LINK_EVENTS = frozenset({RTM_NEWLINK, RTM_DELLINK})
ADDR_EVENTS = frozenset({RTM_NEWADDR, RTM_DELADDR})
ROUTE_EVENTS = frozenset({RTM_NEWROUTE, RTM_DELROUTE})

RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV4_ROUTE = 0x1, 0x10, 0x40
RTMGRP_IPV6_IFADDR, RTMGRP_IPV6_ROUTE = 0x100, 0x400
# Policy rules decide which table the node's traffic uses, so they change which links are uplinks.
# RTNLGRP_IPV4_RULE = 8 and RTNLGRP_IPV6_RULE = 19, as bind() bits (group n is bit n - 1).
RTMGRP_IPV4_RULE, RTMGRP_IPV6_RULE = 1 << 7, 1 << 18
EVENT_GROUPS = (
    RTMGRP_LINK
    | RTMGRP_IPV4_IFADDR
    | RTMGRP_IPV4_ROUTE
    | RTMGRP_IPV6_IFADDR
    | RTMGRP_IPV6_ROUTE
    | RTMGRP_IPV4_RULE
    | RTMGRP_IPV6_RULE
)

IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER = 1, 3, 4, 5, 10
IFLA_OPERSTATE, IFLA_LINKINFO, IFLA_IFALIAS, IFLA_EXT_MASK = 16, 18, 20, 29
IFLA_CARRIER, IFLA_GSO_MAX_SIZE, IFLA_PROP_LIST, IFLA_ALT_IFNAME, IFLA_PERM_ADDRESS = 33, 41, 52, 53, 54
IFLA_PARENT_DEV_NAME, IFLA_PARENT_DEV_BUS_NAME, IFLA_GRO_MAX_SIZE = 56, 57, 58
IFLA_GSO_IPV4_MAX_SIZE, IFLA_GRO_IPV4_MAX_SIZE = 63, 64
IFLA_LINK_NETNSID = 37
IFLA_XDP = 43
IFLA_XDP_ATTACHED, IFLA_XDP_PROG_ID = 2, 4
IFLA_XDP_DRV_PROG_ID, IFLA_XDP_SKB_PROG_ID, IFLA_XDP_HW_PROG_ID = 5, 6, 7
# XDP_ATTACHED_* -> the XDP_FLAGS_* mode that detaches it (DRV_MODE 4, SKB_MODE 2, HW_MODE 8).
XDP_MODE_FLAGS = {1: 4, 2: 2, 3: 8}
XDP_PROG_ID_MODES = {IFLA_XDP_DRV_PROG_ID: 4, IFLA_XDP_SKB_PROG_ID: 2, IFLA_XDP_HW_PROG_ID: 8}
IFLA_INFO_KIND = 1
IFLA_AF_SPEC, IFLA_INET_CONF, IFLA_INET6_CONF = 26, 1, 2
# IPv6 per-device settings by DEVCONF_* index (linux/ipv6.h), as /proc/sys/net/ipv6/conf/<if>/ names.
IPV6_DEVCONF_NAMES = (
    "forwarding",
    "hop_limit",
    "mtu",
    "accept_ra",
    "accept_redirects",
    "autoconf",
    "dad_transmits",
    "router_solicitations",
    "router_solicitation_interval",
    "router_solicitation_delay",
    "use_tempaddr",
    "temp_valid_lft",
    "temp_prefered_lft",
    "regen_max_retry",
    "max_desync_factor",
    "max_addresses",
    "force_mld_version",
    "accept_ra_defrtr",
    "accept_ra_pinfo",
    "accept_ra_rtr_pref",
    "router_probe_interval",
    "accept_ra_rt_info_max_plen",
    "proxy_ndp",
    "optimistic_dad",
    "accept_source_route",
    "mc_forwarding",
    "disable_ipv6",
    "accept_dad",
    "force_tllao",
    "ndisc_notify",
)
RTEXT_FILTER_SKIP_STATS = 1 << 3
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL, IFA_BROADCAST, IFA_CACHEINFO, IFA_FLAGS = 1, 2, 3, 4, 6, 8
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_PREFSRC, RTA_METRICS = 1, 4, 5, 6, 7, 8
RTA_MULTIPATH, RTA_TABLE = 9, 15
RTN_UNICAST = 1
RTM_F_FIB_MATCH = 0x2000  # answer a lookup with the matched FIB entry (every nexthop), not one path
# RTAX_* (linux/rtnetlink.h), by number; the names are what pyroute2 encodes.
RTAX_NAMES = (
    "RTAX_UNSPEC",
    "RTAX_LOCK",
    "RTAX_MTU",
    "RTAX_WINDOW",
    "RTAX_RTT",
    "RTAX_RTTVAR",
    "RTAX_SSTHRESH",
    "RTAX_CWND",
    "RTAX_ADVMSS",
    "RTAX_REORDERING",
    "RTAX_HOPLIMIT",
    "RTAX_INITCWND",
    "RTAX_FEATURES",
    "RTAX_RTO_MIN",
    "RTAX_INITRWND",
    "RTAX_QUICKACK",
    "RTAX_CC_ALGO",
    "RTAX_FASTOPEN_NO_COOKIE",
)
RTAX_CC_ALGO = 16  # a string, not a number
TCA_KIND, TCA_OPTIONS = 1, 2
TCA_BPF_NAME, TCA_BPF_ID = 7, 11
# The clsact (or ingress) qdisc's filter blocks: parent ffff:fff2 (ingress) and ffff:fff3 (egress).
TC_PARENTS = (("ingress", 0xFFFFFFF2), ("egress", 0xFFFFFFF3))

OPERSTATES = ("UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP")

_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")
_RTATTR = struct.Struct("=HH")
_TCMSG = struct.Struct("=BxxxiIII")
_RTNEXTHOP = struct.Struct("=HBBi")
_NDMSG = struct.Struct("=BxxxiHBB")
_U32 = struct.Struct("=I")


class NetlinkError(OSError):
    """A netlink dump failed; the scan is retried at the next event or resync."""


@dataclass(frozen=True)
class RawLink:
    index: int
    ifi_type: int
    name: str
    kind: str
    mac: str
    mtu: int
    operstate: str
    master: int
    link: int  # IFLA_LINK when it is an index of this netns; 0 when none or in another netns
    alias: str
    parent_bus: str
    parent_dev: str
    flags: int = 0  # IFF_*
    carrier: bool = False
    perm_mac: str = ""
    alt_names: tuple[str, ...] = ()
    gso_max_size: int | None = None
    gro_max_size: int | None = None
    gso_ipv4_max_size: int | None = None
    gro_ipv4_max_size: int | None = None
    xdp: tuple[tuple[int, int], ...] = ()  # (XDP_FLAGS_* mode, program id) of each XDP program


@dataclass(frozen=True)
class LinkBrief:
    """What the uplink rule and name lookups read of a link (parse_link_brief parses only this)."""

    index: int
    name: str
    master: int = 0
    parent: int = 0  # IFLA_LINK when it is an index of this netns; 0 when none or in another netns
    alt_names: tuple[str, ...] = ()
    foreign_parent: int = 0  # IFLA_LINK when it is an index of another netns (a veth's moved peer)


@dataclass(frozen=True)
class RawAddr:
    index: int
    family: int
    prefixlen: int
    scope: int
    address: str  # ours: IFA_LOCAL when there is one (IPv4), else IFA_ADDRESS
    peer: str = ""  # IFA_ADDRESS when it differs from IFA_LOCAL (point-to-point)
    broadcast: str = ""
    label: str = ""
    flags: int = 0  # IFA_F_* (IFA_FLAGS when given, else the header's 8 bits)
    valid: int = 0xFFFFFFFF  # seconds left; 0xFFFFFFFF = forever
    preferred: int = 0xFFFFFFFF


@dataclass(frozen=True)
class TcBpfFilter:
    """A bpf filter (cls_bpf) on a clsact block: its name as tc gave it (an object file's
    "file.o:[section]"; "" when none) and its program's id."""

    direction: str  # "ingress" | "egress"
    name: str
    prog_id: int
    handle: int
    priority: int
    protocol: int


@dataclass(frozen=True)
class RawRoute:
    family: int
    dst_len: int
    table: int
    type: int
    oifs: tuple[int, ...]  # RTA_OIF, then each nexthop's for a multipath route
    dst: str = ""  # "" for a default route
    gateway: str = ""
    prefsrc: str = ""
    scope: int = 0
    protocol: int = 0
    flags: int = 0  # rtm_flags (RTNH_F_ONLINK, ...)
    priority: int | None = None
    multipath: bool = False
    metrics: tuple[tuple[str, int], ...] = ()  # RTAX_* name -> value


def _align(n: int) -> int:
    return (n + 3) & ~3


def _attrs(
    data: bytes | memoryview, offset: int, end: int, wanted: frozenset[int] | None = None
) -> Iterator[tuple[int, memoryview]]:
    """The (type, value) of each attribute from offset to end; wanted: only these types (the others
    are skipped unsliced: a link message has ~40 attributes and a parser reads ~15)."""
    view = memoryview(data)
    unpack = _RTATTR.unpack_from
    while offset + 4 <= end:
        length, kind = unpack(view, offset)
        if length < 4:
            return
        kind &= 0x3FFF
        if wanted is None or kind in wanted:
            yield kind, view[offset + 4 : offset + length]
        offset += _align(length)


def _cstr(value: memoryview) -> str:
    return bytes(value).split(b"\0", 1)[0].decode(errors="replace")


def _mac(value: memoryview) -> str:
    return ":".join(f"{b:02x}" for b in bytes(value))


def _u32(value: memoryview) -> int:
    return int(_U32.unpack_from(value)[0])


_LINK_ATTRS = frozenset(
    {
        IFLA_IFNAME,
        IFLA_ADDRESS,
        IFLA_MTU,
        IFLA_MASTER,
        IFLA_LINK,
        IFLA_LINK_NETNSID,
        IFLA_OPERSTATE,
        IFLA_IFALIAS,
        IFLA_PARENT_DEV_NAME,
        IFLA_PARENT_DEV_BUS_NAME,
        IFLA_LINKINFO,
        IFLA_CARRIER,
        IFLA_PERM_ADDRESS,
        IFLA_PROP_LIST,
        IFLA_GSO_MAX_SIZE,
        IFLA_GRO_MAX_SIZE,
        IFLA_GSO_IPV4_MAX_SIZE,
        IFLA_GRO_IPV4_MAX_SIZE,
        IFLA_XDP,
    }
)


def parse_link(msg: memoryview) -> RawLink:
    _family, ifi_type, index, flags, _change = _IFINFOMSG.unpack_from(msg, 0)
    name = kind = mac = alias = parent_bus = parent_dev = perm_mac = ""
    mtu = master = link = 0
    operstate = ""
    carrier = False
    foreign_link = False
    alt: list[str] = []
    sizes: dict[int, int] = {}
    xdp: tuple[tuple[int, int], ...] = ()
    for kind_id, value in _attrs(msg, _IFINFOMSG.size, len(msg), _LINK_ATTRS):
        if kind_id == IFLA_IFNAME:
            name = _cstr(value)
        elif kind_id == IFLA_ADDRESS:
            mac = _mac(value)
        elif kind_id == IFLA_MTU:
            mtu = _U32.unpack_from(value)[0]
        elif kind_id == IFLA_MASTER:
            master = _U32.unpack_from(value)[0]
        elif kind_id == IFLA_LINK:
            link = _U32.unpack_from(value)[0]
        elif kind_id == IFLA_LINK_NETNSID:
            foreign_link = True  # IFLA_LINK is an index in that other netns, never one of ours
        elif kind_id == IFLA_OPERSTATE:
            state = value[0]
            operstate = OPERSTATES[state] if state < len(OPERSTATES) else str(state)
        elif kind_id == IFLA_IFALIAS:
            alias = _cstr(value)
        elif kind_id == IFLA_PARENT_DEV_NAME:
            parent_dev = _cstr(value)
        elif kind_id == IFLA_PARENT_DEV_BUS_NAME:
            parent_bus = _cstr(value)
        elif kind_id == IFLA_LINKINFO:
            for sub, sval in _attrs(value, 0, len(value)):
                if sub == IFLA_INFO_KIND:
                    kind = _cstr(sval)
        elif kind_id == IFLA_CARRIER:
            carrier = bool(value[0])
        elif kind_id == IFLA_PERM_ADDRESS:
            perm_mac = _mac(value)
        elif kind_id == IFLA_PROP_LIST:
            alt += [_cstr(v) for sub, v in _attrs(value, 0, len(value)) if sub == IFLA_ALT_IFNAME]
        elif kind_id in (
            IFLA_GSO_MAX_SIZE,
            IFLA_GRO_MAX_SIZE,
            IFLA_GSO_IPV4_MAX_SIZE,
            IFLA_GRO_IPV4_MAX_SIZE,
        ):
            sizes[kind_id] = _u32(value)
        elif kind_id == IFLA_XDP:
            xdp = parse_xdp(value)
    return RawLink(
        index,
        ifi_type,
        name,
        kind,
        mac,
        mtu,
        operstate,
        master,
        0 if foreign_link else link,
        alias,
        parent_bus,
        parent_dev,
        flags=flags,
        carrier=carrier,
        perm_mac=perm_mac,
        alt_names=tuple(alt),
        gso_max_size=sizes.get(IFLA_GSO_MAX_SIZE),
        gro_max_size=sizes.get(IFLA_GRO_MAX_SIZE),
        gso_ipv4_max_size=sizes.get(IFLA_GSO_IPV4_MAX_SIZE),
        gro_ipv4_max_size=sizes.get(IFLA_GRO_IPV4_MAX_SIZE),
        xdp=xdp,
    )


def parse_link_brief(msg: memoryview) -> LinkBrief:
    """parse_link's index, name, master, lower device and alternative names, and nothing else: a
    tenth of its time (the netns worker dumps every link of the node on each attach, and a node
    has a veth per pod)."""
    index = _IFINFOMSG.unpack_from(msg, 0)[2]
    name = ""
    master = link = 0
    foreign_link = False
    alt: tuple[str, ...] = ()
    unpack, u32 = _RTATTR.unpack_from, _U32.unpack_from
    offset, end = _IFINFOMSG.size, len(msg)
    while offset + 4 <= end:  # _attrs inlined: this loop is the whole cost
        length, kind_id = unpack(msg, offset)
        if length < 4:
            break
        kind_id &= 0x3FFF
        if kind_id == IFLA_IFNAME:
            name = _cstr(msg[offset + 4 : offset + length])
        elif kind_id == IFLA_MASTER:
            master = u32(msg, offset + 4)[0]
        elif kind_id == IFLA_LINK:
            link = u32(msg, offset + 4)[0]
        elif kind_id == IFLA_LINK_NETNSID:
            foreign_link = True
        elif kind_id == IFLA_PROP_LIST:
            props = msg[offset + 4 : offset + length]
            alt = tuple(_cstr(v) for sub, v in _attrs(props, 0, len(props)) if sub == IFLA_ALT_IFNAME)
        offset += _align(length)
    if foreign_link:
        return LinkBrief(index, name, master, 0, alt, link)
    return LinkBrief(index, name, master, link, alt)


def parse_xdp(value: memoryview) -> tuple[tuple[int, int], ...]:
    """IFLA_XDP: the (detaching mode flag, program id) of the one program, or of each one when
    programs are attached in several modes (XDP_ATTACHED_MULTI)."""
    attached, single, per_mode = 0, 0, []
    for kind_id, v in _attrs(value, 0, len(value)):
        if kind_id == IFLA_XDP_ATTACHED:
            attached = v[0]
        elif kind_id == IFLA_XDP_PROG_ID:
            single = _u32(v)
        elif kind_id in XDP_PROG_ID_MODES:
            per_mode.append((XDP_PROG_ID_MODES[kind_id], _u32(v)))
    if attached in XDP_MODE_FLAGS and single:
        return ((XDP_MODE_FLAGS[attached], single),)
    return tuple(per_mode) if attached else ()


_AF_SPEC = frozenset({IFLA_AF_SPEC})


def parse_devconf(msg: memoryview) -> tuple[dict[int, int], dict[str, int]]:
    """A link message's per-device settings: IPv4 by IPV4_DEVCONF_* number (1-based), IPv6 by
    /proc/sys name (the kernel's arrays in IFLA_AF_SPEC; IPv6 values are signed)."""
    ipv4: dict[int, int] = {}
    ipv6: dict[str, int] = {}
    for _kind, spec in _attrs(msg, _IFINFOMSG.size, len(msg), _AF_SPEC):
        for family, conf in _attrs(spec, 0, len(spec)):
            for sub, array in _attrs(conf, 0, len(conf)):
                if family == socket.AF_INET and sub == IFLA_INET_CONF:
                    values = struct.unpack_from(f"={len(array) // 4}I", array)
                    ipv4.update((n + 1, v) for n, v in enumerate(values))
                elif family == socket.AF_INET6 and sub == IFLA_INET6_CONF:
                    values6 = struct.unpack_from(f"={len(array) // 4}i", array)
                    ipv6.update(zip(IPV6_DEVCONF_NAMES, values6, strict=False))
    return ipv4, ipv6


def parse_addr(msg: memoryview) -> RawAddr | None:
    family, prefixlen, flags, scope, index = _IFADDRMSG.unpack_from(msg, 0)
    address = local = broadcast = None
    label = ""
    valid = preferred = 0xFFFFFFFF
    for kind_id, value in _attrs(msg, _IFADDRMSG.size, len(msg)):
        if kind_id == IFA_ADDRESS:
            address = bytes(value)
        elif kind_id == IFA_LOCAL:
            local = bytes(value)
        elif kind_id == IFA_BROADCAST:
            broadcast = bytes(value)
        elif kind_id == IFA_LABEL:
            label = _cstr(value)
        elif kind_id == IFA_FLAGS:
            flags = _u32(value)
        elif kind_id == IFA_CACHEINFO:
            preferred, valid = struct.unpack_from("=II", value)
    # For IPv4 point-to-point links IFA_ADDRESS is the peer; IFA_LOCAL is ours.
    raw = local if family == socket.AF_INET and local else address
    if not raw:
        return None
    peer = address if local and address and address != local else None
    return RawAddr(
        index,
        family,
        prefixlen,
        scope,
        socket.inet_ntop(family, raw),
        peer=socket.inet_ntop(family, peer) if peer else "",
        broadcast=socket.inet_ntop(family, broadcast) if broadcast else "",
        label=label,
        flags=flags,
        valid=valid,
        preferred=preferred,
    )


def unicast_ip_route(msg: memoryview, *, default: bool = False) -> bool:
    """Whether a route message is an IPv4 or IPv6 unicast route (default: and a default route,
    prefix length 0), from its header alone (a dump's other entries need no parsing)."""
    family, dst_len, *_rest, rtype, _flags = _RTMSG.unpack_from(msg, 0)
    return rtype == RTN_UNICAST and family in (socket.AF_INET, socket.AF_INET6) and not (default and dst_len)


def parse_route(msg: memoryview) -> RawRoute:
    family, dst_len, _src_len, _tos, table, proto, scope, rtype, flags = _RTMSG.unpack_from(msg, 0)
    oifs: list[int] = []
    dst = gateway = prefsrc = ""
    priority: int | None = None
    multipath = False
    metrics: list[tuple[str, int]] = []
    for kind_id, value in _attrs(msg, _RTMSG.size, len(msg)):
        if kind_id == RTA_TABLE:
            table = _U32.unpack_from(value)[0]
        elif kind_id == RTA_OIF:
            oifs.append(_U32.unpack_from(value)[0])
        elif kind_id == RTA_DST:
            dst = socket.inet_ntop(family, bytes(value))
        elif kind_id == RTA_GATEWAY:
            gateway = socket.inet_ntop(family, bytes(value))
        elif kind_id == RTA_PREFSRC:
            prefsrc = socket.inet_ntop(family, bytes(value))
        elif kind_id == RTA_PRIORITY:
            priority = _u32(value)
        elif kind_id == RTA_METRICS:
            metrics += [
                (RTAX_NAMES[sub], _u32(v))
                for sub, v in _attrs(value, 0, len(value))
                if sub < len(RTAX_NAMES) and sub != RTAX_CC_ALGO and len(v) == 4
            ]
        elif kind_id == RTA_MULTIPATH:
            multipath = True
            off = 0
            while off + _RTNEXTHOP.size <= len(value):
                length, _f, _h, ifindex = _RTNEXTHOP.unpack_from(value, off)
                if length < _RTNEXTHOP.size:
                    break
                oifs.append(ifindex)
                off += _align(length)
    return RawRoute(
        family,
        dst_len,
        table,
        rtype,
        tuple(oifs),
        dst=dst,
        gateway=gateway,
        prefsrc=prefsrc,
        scope=scope,
        protocol=proto,
        flags=flags,
        priority=priority,
        multipath=multipath,
        metrics=tuple(metrics),
    )


def parse_neigh(msg: memoryview) -> tuple[int, int, int, str, str]:
    """(family, ifindex, NUD state, destination, link-layer address) of a neighbour message; the
    strings are "" when absent."""
    family, ifindex, state, _flags, _type = _NDMSG.unpack_from(msg, 0)
    dst = lladdr = ""
    for kind_id, value in _attrs(msg, _NDMSG.size, len(msg), _NEIGH_ATTRS):
        if kind_id == NDA_DST and family in (socket.AF_INET, socket.AF_INET6):
            dst = socket.inet_ntop(family, bytes(value))
        elif kind_id == NDA_LLADDR:
            lladdr = _mac(value)
    return family, ifindex, state, dst, lladdr


_NEIGH_ATTRS = frozenset({NDA_DST, NDA_LLADDR})


def parse_tc_kind(msg: memoryview) -> tuple[int, int, int, int, str, memoryview | None]:
    """A qdisc or filter message: (ifindex, handle, parent, info, kind, its TCA_OPTIONS)."""
    _family, ifindex, handle, parent, info = _TCMSG.unpack_from(msg, 0)
    kind, options = "", None
    for kind_id, value in _attrs(msg, _TCMSG.size, len(msg)):
        if kind_id == TCA_KIND:
            kind = _cstr(value)
        elif kind_id == TCA_OPTIONS:
            options = value
    return ifindex, handle, parent, info, kind, options


def parse_bpf_filter(msg: memoryview, direction: str) -> TcBpfFilter | None:
    """A filter message as a TcBpfFilter; None for other filter kinds and for the chain's head."""
    _ifindex, handle, _parent, info, kind, options = parse_tc_kind(msg)
    if kind != "bpf" or options is None:
        return None
    name, prog_id = "", 0
    for kind_id, value in _attrs(options, 0, len(options)):
        if kind_id == TCA_BPF_NAME:
            name = _cstr(value)
        elif kind_id == TCA_BPF_ID:
            prog_id = _u32(value)
    # tcm_info: priority in the upper 16 bits, protocol (network order) in the lower.
    protocol = socket.ntohs(info & 0xFFFF)
    return TcBpfFilter(direction, name, prog_id, handle, info >> 16, protocol)


def iter_messages(data: bytes, seq: int | None = None) -> Iterator[tuple[int, memoryview]]:
    """(type, payload) for each netlink message in a datagram (only those answering `seq`, when
    given: a late reply to an earlier, interrupted request is skipped); NetlinkError on an error."""
    view = memoryview(data)
    offset = 0
    while offset + _NLMSGHDR.size <= len(view):
        length, mtype, _flags, mseq, _pid = _NLMSGHDR.unpack_from(view, offset)
        if length < _NLMSGHDR.size:
            return
        if seq is not None and mseq != seq:
            offset += _align(length)
            continue
        payload = view[offset + _NLMSGHDR.size : offset + length]
        if mtype == NLMSG_ERROR:
            code = -struct.unpack_from("=i", payload)[0]
            if code:
                raise NetlinkError(code, f"netlink: {os.strerror(code)}")
        yield mtype, payload
        offset += _align(length)


# Dump request bodies: every link (without statistics), every address, every route.
LINK_DUMP = (
    _IFINFOMSG.pack(0, 0, 0, 0, 0) + _RTATTR.pack(8, IFLA_EXT_MASK) + _U32.pack(RTEXT_FILTER_SKIP_STATS)
)
ADDR_DUMP = _IFADDRMSG.pack(0, 0, 0, 0, 0)
ROUTE_DUMP = _RTMSG.pack(0, 0, 0, 0, 0, 0, 0, 0, 0)


def dump(sock: socket.socket, seq: int, mtype: int, body: bytes, *, one: bool = False) -> list[memoryview]:
    """Send one dump request (sequence number seq) and return the payload of every reply; one:
    a plain get instead (one reply). The caller serialises use of the socket. NetlinkError when
    the kernel refuses it."""
    flags = NLM_F_REQUEST | (0 if one else NLM_F_DUMP)
    sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), mtype, flags, seq, 0) + body)
    out: list[memoryview] = []
    while True:
        data = sock.recv(1 << 20)
        for rtype, payload in iter_messages(data, seq):
            if rtype == NLMSG_DONE or rtype == NLMSG_ERROR:  # (an error 0 is an ack)
                return out
            out.append(payload)
            if one:
                return out


def link_request(index: int = 0, name: str | None = None) -> bytes:
    """The body of an RTM_GETLINK for one link by index (or name), without statistics."""
    body = (
        _IFINFOMSG.pack(0, 0, index, 0, 0)
        + _RTATTR.pack(8, IFLA_EXT_MASK)
        + _U32.pack(RTEXT_FILTER_SKIP_STATS)
    )
    if name is not None and not index:
        raw = name.encode() + b"\0"
        body += _RTATTR.pack(4 + len(raw), IFLA_IFNAME) + raw + b"\0" * (-len(raw) % 4)
    return body


def route_request(oif: int = 0, table: int = 0) -> bytes:
    """The body of an RTM_GETROUTE dump of every table, of the routes through link oif only and
    of table `table` only when set (strict checking: the kernel filters by RTA_OIF, every nexthop
    of a multipath route, and by RTA_TABLE)."""
    body = ROUTE_DUMP
    if oif:
        body += _RTATTR.pack(8, RTA_OIF) + _U32.pack(oif)
    if table:
        body += _RTATTR.pack(8, RTA_TABLE) + _U32.pack(table)
    return body


def neigh_request(index: int) -> bytes:
    """The body of an RTM_GETNEIGH dump of both families, of one link's entries (strict checking
    filters by NDA_IFINDEX, not by the header)."""
    return _NDMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _RTATTR.pack(8, NDA_IFINDEX) + _U32.pack(index)


def lookup_request(family: int, destination: str) -> bytes:
    """The body of an RTM_GETROUTE (a get, not a dump) asking which route the kernel picks for
    this netns's own traffic to `destination`, the policy rules applied as for a socket that has
    not chosen a source: the matched entry with every nexthop (RTM_F_FIB_MATCH)."""
    dst = socket.inet_pton(family, destination)
    head = _RTMSG.pack(family, len(dst) * 8, 0, 0, 0, 0, 0, 0, RTM_F_FIB_MATCH)
    return head + _RTATTR.pack(4 + len(dst), RTA_DST) + dst


def tc_request(index: int = 0, parent: int = 0) -> bytes:
    """The body of an RTM_GETQDISC (every link's, index 0) or RTM_GETTFILTER (one link's, under
    parent) dump."""
    return _TCMSG.pack(0, index, 0, parent, 0)


def addr_request(index: int = 0) -> bytes:
    """The body of an RTM_GETADDR dump, of one link's addresses when index is set (strict
    checking filters by the header's index)."""
    return _IFADDRMSG.pack(0, 0, 0, 0, index)


class RtnlSocket:
    """One NETLINK_ROUTE socket. Dumps are serialized; events need a separate socket (groups)."""

    def __init__(self, groups: int = 0, *, sock: socket.socket | None = None) -> None:
        self.sock = sock or socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        self.sock.bind((0, groups))
        self._seq = 0
        self._lock = threading.Lock()

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def _dump(self, mtype: int, body: bytes, *, one: bool = False) -> list[memoryview]:
        with self._lock:
            self._seq += 1
            return dump(self.sock, self._seq, mtype, body, one=one)

    def links(self) -> list[RawLink]:
        return [parse_link(m) for m in self._dump(RTM_GETLINK, LINK_DUMP)]

    def link(self, name: str) -> RawLink | None:
        """One link by name (an RTM_GETLINK, not a dump), or None when there is none."""
        try:
            replies = self._dump(RTM_GETLINK, link_request(name=name), one=True)
        except NetlinkError as exc:
            if exc.errno in (errno.ENODEV, errno.ENOENT):
                return None
            raise
        return parse_link(replies[0]) if replies else None

    def addresses(self) -> list[RawAddr]:
        parsed = (parse_addr(m) for m in self._dump(RTM_GETADDR, ADDR_DUMP))
        return [a for a in parsed if a is not None]

    def routes(self) -> list[RawRoute]:
        return [parse_route(m) for m in self._dump(RTM_GETROUTE, ROUTE_DUMP)]

    def clsact_links(self) -> set[int]:
        """The links with a clsact or ingress qdisc: the only ones that can have tc bpf filters."""
        out = set()
        for m in self._dump(RTM_GETQDISC, tc_request()):
            ifindex, _handle, _parent, _info, kind, _options = parse_tc_kind(m)
            if kind in ("clsact", "ingress"):
                out.add(ifindex)
        return out

    def bpf_filters(self, index: int) -> list[TcBpfFilter]:
        """The bpf filters on a link's clsact ingress and egress blocks."""
        out = []
        for direction, parent in TC_PARENTS:
            for m in self._dump(RTM_GETTFILTER, tc_request(index, parent)):
                f = parse_bpf_filter(m, direction)
                if f is not None:
                    out.append(f)
        return out

    def lookup(self, family: int, destination: str) -> RawRoute | None:
        """The route the kernel picks for this netns's traffic to `destination` (lookup_request),
        or None when there is none."""
        try:
            replies = self._dump(RTM_GETROUTE, lookup_request(family, destination), one=True)
        except NetlinkError:  # ENETUNREACH, EHOSTUNREACH, EAFNOSUPPORT (no IPv6): no route
            return None
        return parse_route(replies[0]) if replies else None

    def read_events(self) -> list[int] | None:
        """Message types of one datagram of events, or None when the kernel dropped events."""
        try:
            data = self.sock.recv(1 << 20)
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:  # our receive queue overflowed: state is unknown
                return None
            raise
        return [mtype for mtype, _ in iter_messages(data)]


CLONE_NEWNET = 0x40000000


def _setns(fd: int, nstype: int) -> None:
    # os.setns arrived in Python 3.12; call libc directly on 3.11.
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def open_in_netns(netns: str | Path | None, groups: int = 0) -> RtnlSocket:
    """A socket bound to the network namespace `netns` (a name under /run/netns or a path).

    A netlink socket belongs to the namespace it was created in; a short-lived thread enters the
    namespace, creates it and exits, so the calling thread never changes namespace.
    """
    if netns is None:
        return RtnlSocket(groups)
    path = Path(netns) if os.sep in str(netns) else Path("/run/netns") / str(netns)
    result: list[socket.socket | BaseException] = []

    def make() -> None:
        try:
            with open(path) as f:
                _setns(f.fileno(), CLONE_NEWNET)
            result.append(socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE))
        except BaseException as exc:
            result.append(exc)

    t = threading.Thread(target=make, name="netns-socket")
    t.start()
    t.join()
    if isinstance(result[0], BaseException):
        raise result[0]
    return RtnlSocket(groups, sock=result[0])
