"""A throw-away "node" for tests and benchmarks: network namespaces with veth NICs, never the host's.

A node netns stands in for the host, a wire netns holds the far ends of its veth "NICs", and pod
netns are made with `ip netns add` (so they live under /run/netns like a runtime's). Every name
starts with the caller's prefix plus a random suffix; close() deletes all of it.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from typing import Any


def ip(*args: str, ns: str | None = None, check: bool = True) -> str:
    cmd = ["ip", *(["-n", ns] if ns else []), *args]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {res.stderr.strip()}")
    return res.stdout


def ip_json(*args: str, ns: str | None = None) -> Any:
    out = ip("-j", *args, ns=ns)
    return json.loads(out) if out.strip() else []


class Testbed:
    __test__ = False  # not a pytest test class

    def __init__(self, prefix: str = "tnw") -> None:
        self.prefix = prefix
        self.tag = secrets.token_hex(3)
        self.node = f"{prefix}-node-{self.tag}"
        self.wire = f"{prefix}-wire-{self.tag}"
        self.namespaces: list[str] = []
        self.peers: dict[str, str] = {}  # NIC -> its far end in the wire netns
        self._n = 0
        for ns in (self.node, self.wire):
            self.add_netns(ns)
        ip("link", "set", "lo", "up", ns=self.node)

    @property
    def node_path(self) -> str:
        return f"/run/netns/{self.node}"

    def add_netns(self, name: str | None = None) -> str:
        if name is None:
            self._n += 1
            name = f"{self.prefix}-pod{self._n}-{self.tag}"
        ip("netns", "add", name)
        self.namespaces.append(name)
        return name

    def del_netns(self, name: str) -> None:
        ip("netns", "del", name, check=False)
        if name in self.namespaces:
            self.namespaces.remove(name)

    def add_nic(
        self, name: str, *, addresses: tuple[str, ...] = (), up: bool = True, mtu: int | None = None
    ) -> str:
        """A veth "NIC" in the node netns; its peer sits in the wire netns."""
        self._n += 1
        peer = f"w{self._n}{self.tag}"[:15]
        ip("link", "add", name, "netns", self.node, "type", "veth", "peer", "name", peer, "netns", self.wire)
        self.peers[name] = peer
        for a in addresses:
            ip("addr", "add", a, "dev", name, *(["nodad"] if ":" in a else []), ns=self.node)
        if mtu:
            ip("link", "set", name, "mtu", str(mtu), ns=self.node)
        if up:
            ip("link", "set", name, "up", ns=self.node)
            ip("link", "set", peer, "up", ns=self.wire)
        return name

    def add_uplink(self, name: str) -> str:
        """A NIC carrying the node's default route (the worker must never move it)."""
        self.add_nic(name, addresses=("192.168.77.2/24",))
        ip("route", "add", "default", "via", "192.168.77.1", ns=self.node)
        return name

    def add_macvlan(self, name: str, bridge: str) -> str:
        """A macvlan NIC on a bridge in the node netns (the bridge has a veth member so it is up)."""
        if not self._exists(bridge):
            ip("link", "add", bridge, "type", "bridge", ns=self.node)
            ip("link", "set", bridge, "up", ns=self.node)
        ip("link", "add", name, "link", bridge, "type", "macvlan", "mode", "bridge", ns=self.node)
        return name

    def _exists(self, name: str) -> bool:
        return bool(ip("link", "show", "dev", name, ns=self.node, check=False).strip())

    def link(self, name: str, ns: str | None = None) -> dict[str, Any] | None:
        if not ip("link", "show", "dev", name, ns=ns or self.node, check=False).strip():
            return None
        data = ip_json("-d", "link", "show", "dev", name, ns=ns or self.node)
        return data[0] if data else None

    def addresses(self, name: str, ns: str | None = None) -> list[str]:
        data = ip_json("addr", "show", "dev", name, ns=ns or self.node)
        return sorted(
            f"{a['local']}/{a['prefixlen']}"
            for a in (data[0]["addr_info"] if data else [])
            if not (a["family"] == "inet6" and a.get("scope") == "link")
        )

    def routes(self, name: str, ns: str | None = None, table: str = "all") -> list[dict[str, Any]]:
        out = []
        for fam in ("-4", "-6"):
            out += [
                r
                for r in ip_json(fam, "route", "show", "table", table, ns=ns or self.node)
                if r.get("dev") == name
                and r.get("type", "unicast") == "unicast"
                and not str(r.get("dst", "")).startswith("fe80")
            ]
        return out

    def close(self) -> None:
        for ns in reversed(self.namespaces):
            ip("netns", "del", ns, check=False)
        self.namespaces.clear()
