"""The worker's only door to the kernel: rtnetlink, sysctls and ethtool.

pyroute2 supplies the message classes for what the worker writes; what it reads (link, address and
route dumps, single links) is parsed by the project's read-only reader, dranet.netlink.rtnl, which
decodes only the attributes used (pyroute2 decodes every attribute into objects: several
milliseconds per attach on the start path). The I/O is a plain blocking netlink socket per network
namespace. Why not pyroute2's IPRoute: in pyroute2 0.9 it opens one socket per
calling thread, lazily, in whatever netns that thread is in (so a socket cannot be "opened in the pod
netns" and used elsewhere), and its NetNS forks a process. A socket created by a thread that setns()
into the pod netns stays bound to that netns for its life, so a setns() there and back
(run_in_netns) is the whole cost of reaching a pod netns.

Everything here raises NetlinkError (an OSError with the kernel's errno and extended-ack text).
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pyroute2.ethtool.ioctl import SIOCETHTOOL, EthtoolError, EthtoolValue, IoctlEthtool, NotSupportedError
from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST, NLMSG_DONE
from pyroute2.netlink.rtnl import (
    RTM_DELADDR,
    RTM_DELLINK,
    RTM_DELNEIGH,
    RTM_DELROUTE,
    RTM_DELRULE,
    RTM_GETADDR,
    RTM_GETLINK,
    RTM_GETROUTE,
    RTM_GETRULE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWNEIGH,
    RTM_NEWROUTE,
    RTM_NEWRULE,
)
from pyroute2.netlink.rtnl.fibmsg import fibmsg
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.marshal import MarshalRtnl
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from dranet.config.ethtool import FeatureTable
from dranet.netlink import rtnl as reader
from dranet.netlink.rtnl import LinkBrief

CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703
SOL_NETLINK = 270
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12
RTEXT_FILTER_SKIP_STATS = 1 << 3
IFF_UP = 0x1
IFA_F_NODAD = 0x02
IFA_F_PERMANENT = 0x80
# Address flags a user sets (ip addr ... noprefixroute, home, mngtmpaddr, autojoin); the others
# are the kernel's state (tentative, deprecated, permanent, ...).
IFA_F_SETTABLE = 0x02 | 0x10 | 0x100 | 0x200 | 0x400
INFINITY_LIFE_TIME = 0xFFFFFFFF
RTNH_F_ONLINK = 4
NUD_PERMANENT = 0x80
RT_TABLE_MAIN = 254
RT_TABLE_LOCAL = 255
RTPROT_KERNEL = 2
RTPROT_BOOT = 3
RTN_UNICAST = 1
FR_ACT_TO_TBL = 1
SCOPE_UNIVERSE = 0
SCOPE_LINK = 253
SCOPE_HOST = 254
ETHTOOL_GPFLAGS = 0x27
ETHTOOL_SPFLAGS = 0x28
ETH_SS_PRIV_FLAGS = 2
IFLA_AF_SPEC = 26
IFLA_INET_CONF = 1
NLA_F_NESTED = 1 << 15
IFLA_XDP_FD, IFLA_XDP_FLAGS = 1, 3
RTM_DELTFILTER = 45
RTM_NEWLINKPROP, RTM_DELLINKPROP = 108, 109
# Per-device IPv4 settings (linux/ip.h, enum IPV4_DEVCONF_*): the attribute type inside
# IFLA_INET_CONF when setting, 1-based (the kernel stores value N at data[N - 1]).
IPV4_DEVCONF_FORWARDING = 1
IPV4_DEVCONF_MC_FORWARDING = 2
IPV4_DEVCONF_ARP_ANNOUNCE = 18
IPV4_DEVCONF_ARP_IGNORE = 19

_libc = ctypes.CDLL(None, use_errno=True)
T = TypeVar("T")


class _ifinfmsg(ifinfmsg):
    # pyroute2 0.9 stops at IFLA_ALLMULTI (61); the kernel has IPv4 BIG TCP sizes after it.
    nla_map = (
        *ifinfmsg.nla_map,
        ("IFLA_DEVLINK_PORT", "hex"),
        ("IFLA_GSO_IPV4_MAX_SIZE", "uint32"),
        ("IFLA_GRO_IPV4_MAX_SIZE", "uint32"),
    )
    # pyroute2 compiles nla_map once per class and caches it in these (name-mangled) attributes; a
    # subclass would inherit the parent's cache if something parsed an ifinfmsg before us.
    _nlmsg_base__compiled_nla = False
    _nlmsg_base__t_nla_map = None
    _nlmsg_base__r_nla_map = None


class _Marshal(MarshalRtnl):
    msg_map = {**MarshalRtnl.msg_map, RTM_NEWLINK: _ifinfmsg, RTM_GETLINK: _ifinfmsg}


class NetlinkError(OSError):
    """A kernel refusal: errno plus the kernel's extended-ack message when it gave one."""


# ---------------------------------------------------------------- namespaces


def setns(fd: int) -> None:
    """Move the calling thread into the network namespace `fd` refers to."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise NetlinkError(err, f"setns: {os.strerror(err)}")


def run_in_netns(netns_fd: int | None, fn: Callable[[], T]) -> T:
    """Run fn with the calling thread moved into netns_fd, then back (or here, when None).

    Sockets created by fn stay in that netns after the thread has gone back. setns() moves this
    thread only, and fn is all it runs meanwhile, so no other code runs in the wrong namespace.
    No thread per call (that cost about a millisecond of every attach, and a burst of pod starts
    queued behind it)."""
    if netns_fd is None:
        return fn()
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(netns_fd)
        try:
            return fn()
        finally:
            _return_home(home)
    finally:
        os.close(home)


def _return_home(home: int) -> None:
    try:
        setns(home)
    except NetlinkError as exc:
        # A thread left in a pod's netns would do its later work there (sysctls, sockets): never
        # go on. The supervisor restarts the worker, which finishes from its journal.
        logging.getLogger(__name__).critical("cannot return to the worker's netns (%s); exiting", exc)
        os._exit(70)


def is_net_namespace(fd: int) -> bool:
    """True when fd is an nsfs file of a network namespace (NS_GET_NSTYPE == CLONE_NEWNET)."""
    import fcntl

    try:
        return fcntl.ioctl(fd, NS_GET_NSTYPE) == CLONE_NEWNET
    except OSError:
        return False


# ---------------------------------------------------------------- state as read back


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    mtu: int
    mac: str
    up: bool
    kind: str = ""
    master: int = 0
    parent: int = 0  # IFLA_LINK of this netns (vlan/macvlan lower device, local veth peer); 0 = none
    perm_mac: str = ""
    gso_max_size: int | None = None
    gro_max_size: int | None = None
    gso_ipv4_max_size: int | None = None
    gro_ipv4_max_size: int | None = None
    alt_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class LinkState:
    """A link's live state, for health: administratively up, operationally up, carrier."""

    admin_up: bool
    oper_up: bool
    carrier: bool
    operstate: str  # the kernel's RFC 2863 word: UP, DOWN, LOWERLAYERDOWN, UNKNOWN, ...

    def to_dict(self) -> dict[str, Any]:
        return {
            "admin_up": self.admin_up,
            "oper_up": self.oper_up,
            "carrier": self.carrier,
            "operstate": self.operstate,
        }


@dataclass(frozen=True)
class DevConf:
    """Per-device IP settings: IPv4 by IPV4_DEVCONF_* index, IPv6 by /proc/sys name. The kernel
    resets both to the target netns's defaults when a link changes netns."""

    ipv4: Mapping[int, int] = field(default_factory=dict)
    ipv6: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Address:
    cidr: str  # "10.0.0.2/24" (the local address and the prefix length)
    scope: int = SCOPE_UNIVERSE
    # IPv6 addresses the kernel made itself (link-local) are not snapshotted: it makes them again.
    broadcast: str = ""
    label: str = ""
    peer: str = ""  # the far end of a point-to-point address (IFA_ADDRESS when it is not the local)
    flags: int = 0  # IFA_F_SETTABLE bits
    valid_until: float = 0.0  # wall-clock end of a finite lifetime; 0 = forever
    preferred_until: float = 0.0

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.cidr else socket.AF_INET


@dataclass(frozen=True)
class Route:
    destination: str  # CIDR; "0.0.0.0/0" for default
    gateway: str | None = None
    source: str | None = None
    oif: int = 0
    table: int = RT_TABLE_MAIN
    scope: int = SCOPE_UNIVERSE
    protocol: int = RTPROT_BOOT
    type: int = RTN_UNICAST
    priority: int | None = None  # metric
    multipath_oifs: tuple[int, ...] = ()
    flags: int = 0  # RTNH_F_ONLINK: the gateway is on-link even without a covering prefix
    metrics: tuple[tuple[str, int], ...] = ()  # RTAX_* name -> value (mtu, advmss, ...)

    @property
    def family(self) -> int:
        return socket.AF_INET6 if ":" in self.destination else socket.AF_INET


@dataclass(frozen=True)
class Rule:
    family: int
    table: int
    priority: int | None = None
    source: str | None = None
    destination: str | None = None
    action: int = FR_ACT_TO_TBL


@dataclass(frozen=True)
class Neighbor:
    destination: str
    mac: str
    state: int = NUD_PERMANENT


@dataclass
class LinkChange:
    """Attributes for one RTM_NEWLINK; None means leave as is."""

    name: str | None = None
    mtu: int | None = None
    mac: str | None = None
    up: bool | None = None
    netns_fd: int | None = None
    gso_max_size: int | None = None
    gro_max_size: int | None = None
    gso_ipv4_max_size: int | None = None
    gro_ipv4_max_size: int | None = None
    master: int | None = None
    extra: list[tuple[str, Any]] = field(default_factory=list)


# The kernel's values for each mode and flag (if_link.h), by the names dranet/config/child.py takes.
MACVLAN_MODES = {"private": 1, "vepa": 2, "bridge": 4, "passthru": 8, "source": 16}
IPVLAN_MODES = {"l2": 0, "l3": 1, "l3s": 2}
IPVLAN_FLAGS = {"bridge": 0, "private": 1, "vepa": 2}


@dataclass(frozen=True)
class ChildLink:
    """A child interface to create on a parent (host) link."""

    name: str
    kind: str  # "macvlan" or "ipvlan"
    parent: int  # the parent's ifindex on the host
    mode: str
    flag: str = ""
    mtu: int | None = None
    mac: str = ""

    @property
    def data(self) -> list[tuple[str, int]]:
        if self.kind == "macvlan":
            return [("IFLA_MACVLAN_MODE", MACVLAN_MODES[self.mode])]
        return [("IFLA_IPVLAN_MODE", IPVLAN_MODES[self.mode]), ("IFLA_IPVLAN_FLAGS", IPVLAN_FLAGS[self.flag])]


# ---------------------------------------------------------------- the socket


class Rtnl:
    """A blocking rtnetlink socket bound to one network namespace. One user at a time (locked)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._seq = 0
        self._lock = threading.Lock()
        self._marshal = _Marshal()

    @classmethod
    def open(cls, netns_fd: int | None = None) -> Rtnl:
        def make() -> socket.socket:
            s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
            s.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)
            s.setsockopt(SOL_NETLINK, NETLINK_GET_STRICT_CHK, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            s.bind((0, 0))
            return s

        return cls(run_in_netns(netns_fd, make))

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def request(self, msg: Any, msg_type: int, flags: int) -> list[Any]:
        """Send one request; return the reply messages (dump) or [] (ack). Raises NetlinkError."""

        def encode(seq: int) -> bytes:
            msg["header"]["type"] = msg_type
            msg["header"]["flags"] = flags | NLM_F_REQUEST
            msg["header"]["sequence_number"] = seq
            msg.encode()
            return bytes(msg.data)

        return self._exchange(encode, msg_type, flags)

    def request_raw(self, payload: bytes, msg_type: int, flags: int) -> list[Any]:
        """request() for a body pyroute2 cannot encode (the header is added here)."""

        def encode(seq: int) -> bytes:
            return struct.pack("=IHHII", 16 + len(payload), msg_type, flags | NLM_F_REQUEST, seq, 0) + payload

        return self._exchange(encode, msg_type, flags)

    def _exchange(self, encode: Callable[[int], bytes], msg_type: int, flags: int) -> list[Any]:
        with self._lock:
            self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
            seq = self._seq
            self._sock.send(encode(seq))
            out: list[Any] = []
            # NLM_F_DUMP's bits mean EXCL/CREATE on a NEW request: only a GET (type % 4 == 2) dumps.
            dump = msg_type % 4 == 2 and flags & NLM_F_DUMP == NLM_F_DUMP
            while True:
                data = self._sock.recv(1 << 18)
                done = False
                for reply in self._marshal.parse(data):
                    hdr = reply["header"]
                    if hdr["sequence_number"] != seq:
                        continue  # a late reply to an earlier, interrupted request
                    err = hdr.get("error")
                    if err is not None:
                        code = getattr(err, "code", None) or getattr(err, "errno", None) or errno.EIO
                        text = os.strerror(code)
                        extra = err.args[1] if len(err.args) > 1 and err.args[1] else ""
                        raise NetlinkError(code, f"{text}: {extra}" if extra else text)
                    if hdr["type"] == NLMSG_DONE or (hdr["type"] == 2 and not dump):  # NLMSG_ERROR 0 = ack
                        done = True
                        break
                    out.append(reply)
                    if not dump and not flags & NLM_F_ACK:
                        done = True
                if done:
                    return out

    # ------------------------------------------------------------ links
    def _read(self, mtype: int, body: bytes, *, one: bool = False) -> list[memoryview]:
        """A dump (or, one: a get) whose replies the shared reader parses: no pyroute2 decoding."""
        with self._lock:
            self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
            try:
                return reader.dump(self._sock, self._seq, mtype, body, one=one)
            except OSError as exc:
                raise NetlinkError(exc.errno or errno.EIO, exc.strerror or str(exc)) from None

    def _link_message(self, index: int = 0, name: str | None = None) -> memoryview | None:
        """One RTM_GETLINK by index (or name): the reply, or None when there is no such link."""
        try:
            replies = self._read(RTM_GETLINK, reader.link_request(index, name), one=True)
        except NetlinkError as exc:
            if exc.errno in (errno.ENODEV, errno.ENOENT, errno.EINVAL):
                return None
            raise
        return replies[0] if replies else None

    def _raw_link(self, index: int = 0, name: str | None = None) -> reader.RawLink | None:
        m = self._link_message(index, name)
        return reader.parse_link(m) if m is not None else None

    def get_link(self, *, index: int = 0, name: str | None = None) -> Link | None:
        raw = self._raw_link(index, name)
        return _link(raw) if raw is not None else None

    def link_state(self, name: str) -> LinkState | None:
        """One RTM_GETLINK by name: the link's live state, or None when there is no such link."""
        raw = self._raw_link(name=name)
        if raw is None:
            return None
        admin_up = bool(raw.flags & IFF_UP)
        carrier = raw.carrier
        operstate = (raw.operstate or "UNKNOWN").upper()
        # Drivers that do not track operstate report UNKNOWN; then carrier decides.
        oper_up = operstate == "UP" or (operstate == "UNKNOWN" and admin_up and carrier)
        return LinkState(admin_up=admin_up, oper_up=oper_up, carrier=carrier, operstate=operstate)

    def devconf(self, index: int) -> DevConf | None:
        """The link's per-device IPv4 and IPv6 settings (what /proc/sys/net/ipv{4,6}/conf/<if>/
        shows), from one RTM_GETLINK; None when there is no such link."""
        m = self._link_message(index)
        if m is None:
            return None
        ipv4, ipv6 = reader.parse_devconf(m)
        # mc_forwarding is the kernel's own (read-only in /proc/sys too): never restored.
        ipv4.pop(IPV4_DEVCONF_MC_FORWARDING, None)
        ipv6.pop("mc_forwarding", None)
        return DevConf(ipv4=ipv4, ipv6=ipv6)

    def xdp_programs(self, index: int) -> tuple[tuple[int, int], ...]:
        """(XDP_FLAGS_* mode, program id) of each XDP program on the link."""
        raw = self._raw_link(index)
        return raw.xdp if raw is not None else ()

    def detach_xdp(self, index: int, mode: int) -> None:
        """Remove the link's XDP program of that mode (IFLA_XDP_FD -1); EBUSY when a bpf_link
        holds it."""
        xdp = _nla(IFLA_XDP_FD, struct.pack("=i", -1)) + _nla(IFLA_XDP_FLAGS, struct.pack("=I", mode))
        ifinfo = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, 0, 0)
        self.request_raw(ifinfo + _nla(reader.IFLA_XDP | NLA_F_NESTED, xdp), RTM_NEWLINK, NLM_F_ACK)

    def bpf_filters(self, index: int) -> list[reader.TcBpfFilter]:
        """The bpf filters on the link's clsact ingress and egress blocks."""
        return [
            f
            for direction, parent in reader.TC_PARENTS
            for m in self._read(reader.RTM_GETTFILTER, reader.tc_request(index, parent))
            if (f := reader.parse_bpf_filter(m, direction)) is not None
        ]

    def del_tc_filter(self, index: int, f: reader.TcBpfFilter) -> None:
        parent = dict(reader.TC_PARENTS)[f.direction]
        info = (f.priority << 16) | socket.htons(f.protocol)
        tcmsg = struct.pack("=BxxxiIII", socket.AF_UNSPEC, index, f.handle, parent, info)
        self.request_raw(tcmsg + _nla(reader.TCA_KIND, b"bpf\0"), RTM_DELTFILTER, NLM_F_ACK)

    def links(self) -> list[Link]:
        return [_link(reader.parse_link(m)) for m in self._read(RTM_GETLINK, reader.LINK_DUMP)]

    def link_briefs(self) -> list[LinkBrief]:
        """Every link's index, name, master, lower device and alternative names (one dump, only
        those parsed): the link graph the uplink rule and name lookups need; get_link for more."""
        return [reader.parse_link_brief(m) for m in self._read(RTM_GETLINK, reader.LINK_DUMP)]

    def link_brief(self, index: int) -> LinkBrief | None:
        """One link's brief (as link_briefs gives it) by index, or None when there is none."""
        m = self._link_message(index)
        return reader.parse_link_brief(m) if m is not None else None

    def set_link(self, index: int, change: LinkChange) -> None:
        """Apply every set attribute of `change` in one RTM_NEWLINK.

        With netns_fd the kernel moves the link first and gives it the new name as it enters the
        target netns, so a pod-side name never clashes with a host one; MTU, MAC and sizes follow
        in the same request, already in the target netns."""
        msg = _ifinfmsg()
        msg["index"] = index
        attrs: list[list[Any]] = []
        if change.netns_fd is not None:
            attrs.append(["IFLA_NET_NS_FD", change.netns_fd])
        if change.name is not None:
            attrs.append(["IFLA_IFNAME", change.name])
        if change.mtu is not None:
            attrs.append(["IFLA_MTU", change.mtu])
        if change.mac is not None:
            attrs.append(["IFLA_ADDRESS", change.mac])
        for attr, value in (
            ("IFLA_GSO_MAX_SIZE", change.gso_max_size),
            ("IFLA_GRO_MAX_SIZE", change.gro_max_size),
            ("IFLA_GSO_IPV4_MAX_SIZE", change.gso_ipv4_max_size),
            ("IFLA_GRO_IPV4_MAX_SIZE", change.gro_ipv4_max_size),
        ):
            if value is not None:
                attrs.append([attr, value])
        if change.master is not None:
            attrs.append(["IFLA_MASTER", change.master])
        attrs.extend([list(a) for a in change.extra])
        if change.up is not None:
            msg["flags"] = IFF_UP if change.up else 0
            msg["change"] = IFF_UP
        msg["attrs"] = attrs
        self.request(msg, RTM_NEWLINK, NLM_F_ACK)

    def add_alt_name(self, index: int, name: str) -> None:
        self._alt_name(RTM_NEWLINKPROP, index, name)

    def del_alt_name(self, index: int, name: str) -> None:
        self._alt_name(RTM_DELLINKPROP, index, name)

    def _alt_name(self, msg_type: int, index: int, name: str) -> None:
        """Add or drop one alternative name of the link (`ip link property add/del ... altname`)."""
        props = _nla(reader.IFLA_ALT_IFNAME, name.encode() + b"\0")
        ifinfo = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, 0, 0)
        self.request_raw(ifinfo + _nla(reader.IFLA_PROP_LIST | NLA_F_NESTED, props), msg_type, NLM_F_ACK)

    def set_ipv4_conf(self, index: int, conf: Mapping[int, int]) -> None:
        """Set per-device IPv4 settings (IPV4_DEVCONF_* -> value) in one RTM_NEWLINK, the netlink
        twin of /proc/sys/net/ipv4/conf/<if>/*, which containers often mount read-only.

        Encoded by hand: pyroute2 encodes IFLA_INET_CONF as the flat array the kernel reports, but
        the kernel reads a set as nested attributes, one per setting."""
        values = b"".join(
            _nla(key, struct.pack("=I", value & 0xFFFFFFFF)) for key, value in sorted(conf.items())
        )
        spec = _nla(socket.AF_INET | NLA_F_NESTED, _nla(IFLA_INET_CONF | NLA_F_NESTED, values))
        ifinfo = struct.pack("=BxHiII", socket.AF_UNSPEC, 0, index, 0, 0)
        self.request_raw(ifinfo + _nla(IFLA_AF_SPEC | NLA_F_NESTED, spec), RTM_NEWLINK, NLM_F_ACK)

    def create_link(self, name: str, kind: str, data: list[tuple[str, Any]] | None = None) -> None:
        msg = _ifinfmsg()
        info: list[list[Any]] = [["IFLA_INFO_KIND", kind]]
        if data:
            info.append(["IFLA_INFO_DATA", {"attrs": [list(d) for d in data]}])
        msg["attrs"] = [["IFLA_IFNAME", name], ["IFLA_LINKINFO", {"attrs": info}]]
        self.request(msg, RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)

    def create_child(self, child: ChildLink, netns_fd: int) -> None:
        """A macvlan or ipvlan child of a host link, created directly in the netns of netns_fd
        under its pod name: it never exists on the host."""
        msg = _ifinfmsg()
        info: list[list[Any]] = [["IFLA_INFO_KIND", child.kind]]
        info.append(["IFLA_INFO_DATA", {"attrs": [list(d) for d in child.data]}])
        msg["attrs"] = [
            ["IFLA_IFNAME", child.name],
            ["IFLA_LINK", child.parent],
            ["IFLA_NET_NS_FD", netns_fd],
            ["IFLA_LINKINFO", {"attrs": info}],
        ]
        if child.mtu is not None:
            msg["attrs"].append(["IFLA_MTU", child.mtu])
        if child.mac:
            msg["attrs"].append(["IFLA_ADDRESS", child.mac])
        self.request(msg, RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)

    def delete_link(self, index: int) -> None:
        msg = _ifinfmsg()
        msg["index"] = index
        self.request(msg, RTM_DELLINK, NLM_F_ACK)

    # ------------------------------------------------------------ addresses
    def addresses(self, index: int) -> list[Address]:
        """The link's addresses (strict checking: the kernel dumps only that link's)."""
        now = time.time()
        out = []
        for m in self._read(RTM_GETADDR, reader.addr_request(index)):
            a = reader.parse_addr(m)
            if a is None or a.index != index:
                continue
            out.append(
                Address(
                    f"{a.address}/{a.prefixlen}",
                    a.scope,
                    broadcast=a.broadcast,
                    label=a.label,
                    peer=a.peer,
                    flags=a.flags & IFA_F_SETTABLE,
                    valid_until=0.0 if a.valid == INFINITY_LIFE_TIME else now + a.valid,
                    preferred_until=0.0 if a.preferred == INFINITY_LIFE_TIME else now + a.preferred,
                )
            )
        return out

    def add_address(self, index: int, address: Address, *, replace: bool = False) -> None:
        self._address(RTM_NEWADDR, index, address, NLM_F_CREATE | (0 if replace else NLM_F_EXCL))

    def del_address(self, index: int, address: Address) -> None:
        self._address(RTM_DELADDR, index, address, 0)

    def _address(self, msg_type: int, index: int, address: Address, flags: int) -> None:
        iface = ipaddress.ip_interface(address.cidr)
        msg = ifaddrmsg()
        msg["family"] = address.family
        msg["prefixlen"] = iface.network.prefixlen
        msg["index"] = index
        msg["scope"] = address.scope
        # A claim's address is assigned by its owner: skip IPv6 duplicate detection so routes with
        # this source and the pod's first packets work at once (no "tentative" window).
        ifa_flags = address.flags | (IFA_F_NODAD if address.family == socket.AF_INET6 else 0)
        msg["flags"] = ifa_flags & 0xFF
        attrs: list[list[Any]] = [
            ["IFA_LOCAL", str(iface.ip)],
            ["IFA_ADDRESS", address.peer or str(iface.ip)],
        ]
        if ifa_flags > 0xFF:
            attrs.append(["IFA_FLAGS", ifa_flags])
        if address.broadcast:
            attrs.append(["IFA_BROADCAST", address.broadcast])
        if address.label:
            attrs.append(["IFA_LABEL", address.label])
        if address.valid_until or address.preferred_until:
            now = time.time()
            attrs.append(
                [
                    "IFA_CACHEINFO",
                    {
                        "ifa_preferred": _lifetime(address.preferred_until, now),
                        "ifa_valid": _lifetime(address.valid_until, now),
                        "cstamp": 0,
                        "tstamp": 0,
                    },
                ]
            )
        msg["attrs"] = attrs
        self.request(msg, msg_type, flags | NLM_F_ACK)

    # ------------------------------------------------------------ routes
    def routes(self, *, oif: int | None = None, defaults: bool = False, table: int = 0) -> list[Route]:
        """IPv4 and IPv6 unicast routes of every table (one dump); oif: only those through that
        link, table: only that table's (the kernel filters the dump); defaults: only default
        routes (known from the header: the others are not parsed)."""
        out: list[Route] = []
        try:
            replies = self._read(RTM_GETROUTE, reader.route_request(oif or 0, table))
        except NetlinkError as exc:
            if oif and exc.errno == errno.ENODEV:
                return []  # no such link (any more): no route goes through it
            raise
        for m in replies:
            if not reader.unicast_ip_route(m, default=defaults):
                continue  # known from the header: no need to parse it
            r = _route(reader.parse_route(m))
            if r is None:
                continue
            if oif is not None and r.oif != oif and oif not in r.multipath_oifs:
                continue
            if table and r.table != table:
                continue
            out.append(r)
        return out

    def route_lookup(self, family: int, destination: str) -> Route | None:
        """The route the kernel picks for this netns's own traffic to `destination`, policy rules
        applied (RTM_F_FIB_MATCH: the matched entry with every nexthop; no packet is sent), or None
        when there is none or it is not unicast."""
        try:
            replies = self._read(RTM_GETROUTE, reader.lookup_request(family, destination), one=True)
        except NetlinkError:  # ENETUNREACH, EHOSTUNREACH, EAFNOSUPPORT: no route
            return None
        return _route(reader.parse_route(replies[0])) if replies else None

    def add_route(self, route: Route) -> None:
        self._route(RTM_NEWROUTE, route, NLM_F_CREATE | NLM_F_EXCL)

    def del_route(self, route: Route) -> None:
        self._route(RTM_DELROUTE, route, 0)

    def _route(self, msg_type: int, r: Route, flags: int) -> None:
        net = ipaddress.ip_network(r.destination, strict=False)
        msg = rtmsg()
        msg["family"] = r.family
        msg["dst_len"] = net.prefixlen
        msg["table"] = r.table if r.table < 256 else 252  # RT_TABLE_COMPAT; RTA_TABLE carries it
        msg["proto"] = r.protocol
        msg["scope"] = r.scope
        msg["type"] = r.type
        msg["flags"] = r.flags
        attrs: list[list[Any]] = [["RTA_TABLE", r.table]]
        if net.prefixlen:
            attrs.append(["RTA_DST", str(net.network_address)])
        if r.gateway:
            attrs.append(["RTA_GATEWAY", r.gateway])
        if r.source:
            attrs.append(["RTA_PREFSRC", r.source])
        if r.oif:
            attrs.append(["RTA_OIF", r.oif])
        if r.priority is not None:
            attrs.append(["RTA_PRIORITY", r.priority])
        if r.metrics:
            attrs.append(["RTA_METRICS", {"attrs": [list(m) for m in r.metrics]}])
        msg["attrs"] = attrs
        self.request(msg, msg_type, flags | NLM_F_ACK)

    # ------------------------------------------------------------ rules
    def rules(self) -> list[Rule]:
        out: list[Rule] = []
        for family in (socket.AF_INET, socket.AF_INET6):
            msg = fibmsg()
            msg["family"] = family
            for m in self.request(msg, RTM_GETRULE, NLM_F_DUMP):
                src, dst = m.get_attr("FRA_SRC"), m.get_attr("FRA_DST")
                out.append(
                    Rule(
                        family=m["family"],
                        table=m.get_attr("FRA_TABLE") or m["table"],
                        priority=m.get_attr("FRA_PRIORITY"),
                        source=f"{src}/{m['src_len']}" if src else None,
                        destination=f"{dst}/{m['dst_len']}" if dst else None,
                        action=m["action"],
                    )
                )
        return out

    def add_rule(self, rule: Rule) -> None:
        self._rule(RTM_NEWRULE, rule, NLM_F_CREATE | NLM_F_EXCL)

    def del_rule(self, rule: Rule) -> None:
        self._rule(RTM_DELRULE, rule, 0)

    def _rule(self, msg_type: int, rule: Rule, flags: int) -> None:
        msg = fibmsg()
        msg["family"] = rule.family
        msg["action"] = rule.action
        msg["table"] = rule.table if rule.table < 256 else 252
        attrs: list[list[Any]] = [["FRA_TABLE", rule.table]]
        if rule.priority is not None:
            attrs.append(["FRA_PRIORITY", rule.priority])
        if rule.source:
            n = ipaddress.ip_network(rule.source, strict=False)
            msg["src_len"] = n.prefixlen
            attrs.append(["FRA_SRC", str(n.network_address)])
        if rule.destination:
            n = ipaddress.ip_network(rule.destination, strict=False)
            msg["dst_len"] = n.prefixlen
            attrs.append(["FRA_DST", str(n.network_address)])
        msg["attrs"] = attrs
        self.request(msg, msg_type, flags | NLM_F_ACK)

    # ------------------------------------------------------------ neighbours
    def neighbors(self, index: int) -> list[Neighbor]:
        """The link's IPv4 and IPv6 neighbours with a link-layer address (one dump, filtered by
        the kernel; other families, such as the bridge FDB, are skipped)."""
        out: list[Neighbor] = []
        for m in self._read(reader.RTM_GETNEIGH, reader.neigh_request(index)):
            family, ifindex, state, dst, lladdr = reader.parse_neigh(m)
            if family not in (socket.AF_INET, socket.AF_INET6) or ifindex != index or not lladdr:
                continue
            out.append(Neighbor(dst, lladdr, state))
        return out

    def add_neighbor(self, index: int, neigh: Neighbor) -> None:
        self._neigh(RTM_NEWNEIGH, index, neigh, NLM_F_CREATE | NLM_F_EXCL)

    def del_neighbor(self, index: int, neigh: Neighbor) -> None:
        self._neigh(RTM_DELNEIGH, index, neigh, 0)

    def _neigh(self, msg_type: int, index: int, n: Neighbor, flags: int) -> None:
        msg = ndmsg()
        msg["family"] = socket.AF_INET6 if ":" in n.destination else socket.AF_INET
        msg["ifindex"] = index
        msg["state"] = n.state
        msg["attrs"] = [["NDA_DST", n.destination], ["NDA_LLADDR", n.mac]]
        self.request(msg, msg_type, flags | NLM_F_ACK)


def _lifetime(until: float, now: float) -> int:
    """Seconds left until `until` (0 = forever) for IFA_CACHEINFO; at least 1."""
    return INFINITY_LIFE_TIME if not until else max(1, int(until - now))


def _nla(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _link(r: reader.RawLink) -> Link:
    return Link(
        index=r.index,
        name=r.name,
        mtu=r.mtu,
        mac=r.mac,
        up=bool(r.flags & IFF_UP),
        kind=r.kind,
        master=r.master,
        parent=r.link,
        perm_mac=r.perm_mac,
        gso_max_size=r.gso_max_size,
        gro_max_size=r.gro_max_size,
        gso_ipv4_max_size=r.gso_ipv4_max_size,
        gro_ipv4_max_size=r.gro_ipv4_max_size,
        alt_names=r.alt_names,
    )


def _route(r: reader.RawRoute) -> Route | None:
    if r.type != RTN_UNICAST or r.family not in (socket.AF_INET, socket.AF_INET6):
        return None
    dst = r.dst or ("::" if r.family == socket.AF_INET6 else "0.0.0.0")
    return Route(
        destination=f"{dst}/{r.dst_len}",
        gateway=r.gateway or None,
        source=r.prefsrc or None,
        oif=0 if r.multipath or not r.oifs else r.oifs[0],
        table=r.table,
        scope=r.scope,
        protocol=r.protocol,
        type=r.type,
        priority=r.priority,
        multipath_oifs=r.oifs if r.multipath else (),
        flags=r.flags & RTNH_F_ONLINK,
        metrics=r.metrics,
    )


# ---------------------------------------------------------------- sysctls


READ_ONLY_PROC_SYS = (
    "/proc/sys is read-only in the worker's container (the runtime's default for non-privileged"
    " containers) and the kernel has no netlink setter for this setting; run the netns container"
    " with a writable /proc/sys (see docs/troubleshooting.md) or drop the field from the claim config"
)


def proc_sys_writable() -> bool:
    """False when /proc/sys is mounted read-only here (sysctl writes would fail with EROFS)."""
    try:
        return not os.statvfs("/proc/sys/net").f_flag & os.ST_RDONLY
    except OSError:
        return False


def write_sysctls(netns_fd: int | None, values: Iterable[tuple[str, str]]) -> None:
    """Write /proc/sys/<key> = value for each pair, inside netns_fd (one helper thread for all).

    /proc/sys/net resolves against the netns of the thread that opens the file."""
    items = list(values)
    if not items:
        return

    def write() -> None:
        for key, value in items:
            path = "/proc/sys/" + key.replace(".", "/") if "/" not in key else "/proc/sys/" + key
            try:
                with open(path, "w") as f:
                    f.write(value)
            except OSError as exc:
                if exc.errno == errno.EROFS:
                    raise NetlinkError(errno.EROFS, f"sysctl {key}={value}: {READ_ONLY_PROC_SYS}") from None
                raise NetlinkError(exc.errno or errno.EIO, f"sysctl {key}={value}: {exc.strerror}") from None

    run_in_netns(netns_fd, write)


# ---------------------------------------------------------------- ethtool


class Ethtool:
    """SIOCETHTOOL on a socket of one netns (opened there, usable from any thread)."""

    def __init__(self, netns_fd: int | None = None) -> None:
        self._io: Any = run_in_netns(netns_fd, IoctlEthtool)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._io.close()

    def features(self, ifname: str) -> dict[str, bool]:
        return self.feature_states(ifname)[0]

    def table(self, ifname: str, *, private_flags: bool = True) -> FeatureTable:
        """The device's features, its fixed ones and (when asked) its private flags."""
        features, fixed = self.feature_states(ifname)
        return FeatureTable(features, fixed, self.private_flags(ifname) if private_flags else {})

    def feature_states(self, ifname: str) -> tuple[dict[str, bool], frozenset[str]]:
        """(every feature -> on, the fixed ones: those the driver cannot change)."""
        with self._lock:
            try:
                self._io.change_ifname(ifname)
                feats = self._io.get_features()
            except (OSError, EthtoolError) as exc:
                raise NetlinkError(
                    getattr(exc, "errno", None) or errno.EOPNOTSUPP, f"ethtool get features: {exc}"
                ) from None
            names = [name for name in feats.keys() if name]
            return (
                {name: bool(feats[name]) for name in names},
                frozenset(name for name in names if not feats.is_available(name)),
            )

    def set_features(self, ifname: str, wanted: dict[str, bool]) -> None:
        """Set features by kernel name, only those that differ (asking a driver to "change" a fixed
        feature to its own value is refused too). NetlinkError: EINVAL for an unknown feature,
        EOPNOTSUPP for a fixed one or one the driver did not apply."""
        with self._lock:
            try:
                self._io.change_ifname(ifname)
                feats = self._io.get_features()
                changes = 0
                for name, on in wanted.items():
                    if name not in feats:
                        raise NetlinkError(errno.EINVAL, f"ethtool: {ifname} has no feature {name!r}")
                    if bool(feats[name]) == on:
                        continue
                    if not feats.is_available(name):
                        raise NetlinkError(
                            errno.EOPNOTSUPP, f"ethtool: feature {name!r} is fixed on {ifname}"
                        )
                    feats[name] = on
                    changes += 1
                if changes:
                    self._io.set_features(feats)
            except NetlinkError:
                raise
            except EthtoolError:
                raise NetlinkError(
                    errno.EOPNOTSUPP, f"ethtool: {ifname} did not apply every feature of {sorted(wanted)}"
                ) from None
            except OSError as exc:
                raise NetlinkError(exc.errno or errno.EIO, f"ethtool set features: {exc}") from None

    def private_flags(self, ifname: str) -> dict[str, bool]:
        with self._lock:
            try:
                self._io.change_ifname(ifname)
                names = self._io.get_stringset(set_id=ETH_SS_PRIV_FLAGS)
            except (OSError, NotSupportedError):
                return {}  # no private flags on this driver
            value = self._pflags(ETHTOOL_GPFLAGS, 0)
            return {n: bool(value >> i & 1) for i, n in enumerate(names)}

    def set_private_flags(self, ifname: str, wanted: dict[str, bool]) -> None:
        with self._lock:
            self._io.change_ifname(ifname)
            try:
                names = self._io.get_stringset(set_id=ETH_SS_PRIV_FLAGS)
            except (OSError, NotSupportedError):
                names = []
            value = self._pflags(ETHTOOL_GPFLAGS, 0)
            for name, on in wanted.items():
                if name not in names:
                    raise NetlinkError(errno.EINVAL, f"ethtool: {ifname} has no private flag {name!r}")
                bit = 1 << names.index(name)
                value = value | bit if on else value & ~bit
            self._pflags(ETHTOOL_SPFLAGS, value)

    def _pflags(self, cmd: int, value: int) -> int:
        import fcntl

        v = EthtoolValue(cmd=cmd, data=value)
        self._io.ifreq.value = ctypes.pointer(v)
        try:
            fcntl.ioctl(self._io.sock, SIOCETHTOOL, self._io.ifreq)
        except OSError as exc:
            raise NetlinkError(exc.errno or errno.EIO, f"ethtool private flags: {exc.strerror}") from None
        return int(v.data)
