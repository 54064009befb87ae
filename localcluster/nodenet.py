"""Stand-in NICs for the demo and the end-to-end tests: veth pairs whose far ends sit in a "wire" netns.

DEVELOPMENT AND TEST TOOL. Why the NICs' near ends live in the host network namespace: containerd
creates each pod's netns itself (from the host netns) and the netns worker moves interfaces from
the netns it runs in into the pod's. So the honest local set-up runs the four services in the host
netns and restricts discovery and the worker to our own NICs by their name prefix (their --filter /
--allowed-interfaces flags). The far end of each pair sits in a private "wire" netns with an address,
so a pod that got a NIC can reach something (and nothing else): traffic stays inside namespaces
created here. The machine's own interfaces are never touched; remove() deletes exactly what
create() made.

    net = NodeNet.new(count=3)        # names like tlc3f9a0 .. tlc3f9a2, wire netns tlc3f9a-wire
    net.create()
    ... net.nics[0].name, net.nics[0].wire_ip ...
    net.remove()

With node_netns (the DaemonSet's shape, a node stand-in's network namespace), the NICs live in
that netns instead, as macvlans on veth "lower" links whose far ends are in the wire netns:
discovery's default filter hides veth, as upstream's does, and publishes macvlan.
"""

from __future__ import annotations

import ctypes
import ipaddress
import json
import os
import secrets
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000


def in_netns(netns: str, fn: Callable[[], T]) -> T:
    """fn() run by a short-lived thread that setns()es into the named network namespace first ("":
    this one), so a socket it makes lives there; the process's other threads never move."""
    if not netns:
        return fn()
    result: list[Any] = []

    def run() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            with open(f"/run/netns/{netns}") as f:
                if libc.setns(f.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns into {netns}")
            result.append(fn())
        except Exception as exc:
            result.append(exc)

    t = threading.Thread(target=run, name=f"setns-{netns}")
    t.start()
    t.join()
    if isinstance(result[0], Exception):
        raise result[0]
    out: T = result[0]
    return out


class NodeNetError(Exception):
    """An `ip` command failed; the message holds the command and its output."""


@dataclass(frozen=True)
class StandInNic:
    name: str  # the host-side interface: the "NIC" discovery publishes
    peer: str  # its far end, in the wire netns
    subnet: str  # e.g. "10.231.0.0/24": the wire end has .1, a pod may use .2
    wire_ip: str  # the far end's address without prefix
    wire_ip6: str

    def pod_address(self, host: int = 2) -> str:
        net = ipaddress.ip_network(self.subnet)
        return f"{net.network_address + host}/{net.prefixlen}"

    def pod_address6(self, host: int = 2) -> str:
        net = ipaddress.ip_network(self.wire_ip6 + "/64", strict=False)
        return f"{net.network_address + host}/64"


def ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise NodeNetError(f"{' '.join(cmd)}: {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


def link_info(name: str, netns: str | None = None) -> dict[str, Any] | None:
    """`ip -j addr show dev name` as a dict (None when there is no such link)."""
    out = ip("-j", "addr", "show", "dev", name, netns=netns, check=False)
    try:
        items = json.loads(out) if out.strip() else []
    except json.JSONDecodeError:
        return None
    return items[0] if items else None


def netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


@dataclass
class NodeNet:
    """A set of stand-in NICs (veth pairs) and their wire netns."""

    prefix: str  # <= 8 characters; interface names are <prefix><i>
    count: int = 3
    subnet_base: str = "10.231"  # NIC i gets <base>.<i>.0/24 and fd00:231:<i>::/64
    mtu: int = 1500
    nics: list[StandInNic] = field(default_factory=list)
    created: bool = False
    node_netns: str | None = None  # None: the host's netns

    @staticmethod
    def new(
        count: int = 3, prefix: str | None = None, subnet_base: str = "10.231", node_netns: str | None = None
    ) -> NodeNet:
        prefix = prefix or f"tlc{secrets.token_hex(2)}"
        return NodeNet(prefix=prefix, count=count, subnet_base=subnet_base, node_netns=node_netns)

    @property
    def wire_netns(self) -> str:
        return f"{self.prefix}-wire"

    @property
    def name_regex(self) -> str:
        """For the netns worker's --allowed-interfaces."""
        return f"^{self.prefix}[0-9]+$"

    @property
    def discovery_filter(self) -> str:
        """For discovery's --filter (CEL over the attributes, upstream's shape)."""
        return f'attributes["dra.net/ifName"].StringValue.matches("{self.name_regex}")'

    def _plan(self) -> list[StandInNic]:
        if len(self.prefix) > 8:
            raise ValueError(f"prefix {self.prefix!r}: at most 8 characters (interface names are <= 15)")
        return [
            StandInNic(
                name=f"{self.prefix}{i}",
                peer=f"{self.prefix}w{i}",
                subnet=f"{self.subnet_base}.{i}.0/24",
                wire_ip=f"{self.subnet_base}.{i}.1",
                wire_ip6=f"fd00:{self.subnet_base.split('.')[-1]}:{i}::1",
            )
            for i in range(self.count)
        ]

    def create(self) -> list[StandInNic]:
        """Create the wire netns and the pairs; on any failure remove what was made and raise."""
        if os.geteuid() != 0:
            raise NodeNetError("creating network namespaces and veth pairs needs root")
        self.nics = self._plan()
        try:
            ip("netns", "add", self.wire_netns)
            self.created = True
            ip("link", "set", "lo", "up", netns=self.wire_netns)
            for i, nic in enumerate(self.nics):
                self._create_nic(nic, f"{self.prefix}l{i}")
        except Exception:
            self.remove()
            raise
        return self.nics

    def _create_nic(self, nic: StandInNic, lower: str) -> None:
        """A veth pair to the wire netns; with node_netns, its near end is the lower link of the
        macvlan that is the NIC, both in the node netns."""
        node = self.node_netns
        near = lower if node else nic.name
        ip("link", "add", near, "mtu", str(self.mtu), "type", "veth", "peer", "name", nic.peer,
           "netns", self.wire_netns, netns=node)  # fmt: skip
        if node:
            ip("link", "add", nic.name, "link", lower, "type", "macvlan", "mode", "bridge", netns=node)
            ip("link", "set", lower, "up", netns=node)
        ip("addr", "add", f"{nic.wire_ip}/24", "dev", nic.peer, netns=self.wire_netns)
        ip("addr", "add", f"{nic.wire_ip6}/64", "dev", nic.peer, "nodad", netns=self.wire_netns)
        ip("link", "set", nic.peer, "up", netns=self.wire_netns)
        ip("link", "set", nic.name, "up", netns=node)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Host-side state of each NIC that a detach must restore (name, MTU, MAC, addresses, state)."""
        out: dict[str, dict[str, Any]] = {}
        for nic in self.nics:
            info = link_info(nic.name, self.node_netns)
            if info is None:
                continue
            out[nic.name] = {
                "mtu": info.get("mtu"),
                "address": info.get("address"),
                "addresses": sorted(
                    f"{a['local']}/{a['prefixlen']}"
                    for a in info.get("addr_info") or []
                    if a.get("scope") != "link"
                ),
                "up": "UP" in (info.get("flags") or []),
            }
        return out

    def remove(self) -> list[str]:
        """Delete the host ends (which deletes their pairs) and the wire netns; returns what failed."""
        errors = []
        for nic in self.nics or self._plan():
            if link_info(nic.name, self.node_netns) is not None:
                try:  # a macvlan's lower veth goes with the wire netns' end below
                    ip("link", "del", nic.name, netns=self.node_netns)
                except NodeNetError as exc:
                    errors.append(str(exc))
        if netns_exists(self.wire_netns):
            try:
                ip("netns", "del", self.wire_netns)
            except NodeNetError as exc:
                errors.append(str(exc))
        self.created = False
        return errors
