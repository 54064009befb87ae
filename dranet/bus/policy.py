"""Who may call which op: bus peers identified by the kernel, and the allowlist per role. Pure.

The bus is ipc:// only. libzmq reads the connecting process's credentials with SO_PEERCRED when
it accepts the connection and hands them on every message as its "Peer-Address" property,
"<address>:<uid>:<gid>:<pid>": the kernel's word, which no peer can choose. The uid is the
identity: each unprivileged service that can runs under a uid of its own (`--run-as`), and every
service is told which uid each service has (`--service-uids`). uid 0 is also the operator (the
`dranet` tools on the node, the CDI hook the runtime runs).

A uid shared by several services holds the union of their roles; `dranet audit` reports such a
sharing (docs/architecture.md, threat model). Refusals are `not_allowed`, logged and counted by the
server.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

OPERATOR = "operator"
# The operator acting where the worker runs: uid 0 holding CAP_NET_ADMIN (nri, uid 0 without any
# capability, is not one), for the op that makes the worker forget an attachment.
NETWORK_ADMIN = "network-admin"
ANY = frozenset({"*"})

# op -> the roles that may call it. Reads any service may need are open (ping, snapshot);
# everything that changes the network or its authority is one role's.
ROLES: dict[str, frozenset[str]] = {
    "ping": ANY,
    "snapshot": ANY,
    "echo": ANY,  # tests only
    "metrics": ANY,  # each process's Prometheus text, for the pod's HTTP endpoint
    "get_inventory": frozenset({"dra", "netns", "nri", OPERATOR}),
    "pod_devices": frozenset({"nri", OPERATOR}),
    "claims": frozenset({OPERATOR}),
    "plugin_state": frozenset({"discovery", OPERATOR}),
    "attach": frozenset({"nri"}),
    "detach": frozenset({"nri", "dra"}),
    "list": frozenset({"nri", "dra", "discovery", OPERATOR}),
    "netns_alive": frozenset({"nri"}),
    "release": frozenset({NETWORK_ADMIN}),
    "attached_in": frozenset({OPERATOR}),
    "ethtool_features": frozenset({"dra", OPERATOR}),
    "tcx_programs": frozenset({"discovery", OPERATOR}),
    # Devices whose restore could not complete: discovery taints them in the slices.
    "device_health": frozenset({"discovery", OPERATOR}),
    "grant": frozenset({"dra"}),
    "revoke": frozenset({"dra"}),
    # A lease is taken at prepare and given back at unprepare: dra's, like the grant it goes with.
    "dhcp_acquire": frozenset({"dra"}),
    "dhcp_release": frozenset({"dra"}),
}


@dataclass(frozen=True)
class Peer:
    uid: int
    gid: int
    pid: int

    def __str__(self) -> str:
        return f"uid {self.uid} pid {self.pid}"


def parse_peer(address: str | None) -> Peer | None:
    """The credentials in libzmq's Peer-Address of an ipc:// connection, or None without them."""
    if not address:
        return None
    parts = address.rsplit(":", 3)
    if len(parts) != 4:
        return None
    try:
        return Peer(int(parts[1]), int(parts[2]), int(parts[3]))
    except ValueError:
        return None


def parse_service_uids(text: str) -> dict[str, int]:
    """ "discovery=65101,dra=65102" -> {"discovery": 65101, "dra": 65102}; raises ValueError."""
    out: dict[str, int] = {}
    for item in filter(None, (x.strip() for x in text.split(","))):
        name, sep, uid = item.partition("=")
        if not sep or not uid.isdigit() or name not in ("discovery", "dra", "nri", "netns"):
            raise ValueError(f"{item!r}: want SERVICE=UID with SERVICE one of discovery, dra, nri, netns")
        out[name] = int(uid)
    return out


@dataclass(frozen=True)
class PeerPolicy:
    """The uid of each service (a service not named runs as uid 0, like the operator)."""

    uids: Mapping[str, int]

    def uid_of(self, service: str) -> int:
        return self.uids.get(service, 0)

    def roles(self, uid: int) -> frozenset[str]:
        names = {s for s in ("discovery", "dra", "nri", "netns") if self.uid_of(s) == uid}
        return frozenset(names | ({OPERATOR} if uid == 0 else set()))

    def allows(
        self, op: str, peer: Peer | None, net_admin: Callable[[int], bool] = lambda pid: False
    ) -> bool:
        """An op not declared at all is left to the server's unknown_op answer. net_admin(pid):
        whether that process holds CAP_NET_ADMIN now (asked only for NETWORK_ADMIN's ops)."""
        allowed = ROLES.get(op, ANY)
        if allowed == ANY:
            return True
        if peer is None:
            return False
        if NETWORK_ADMIN in allowed and peer.uid == 0 and net_admin(peer.pid):
            return True
        return bool(self.roles(peer.uid) & allowed)

    def shared(self) -> dict[int, list[str]]:
        """uids that several services share: their roles cannot be told apart on the bus."""
        by_uid: dict[int, list[str]] = {}
        for s in ("discovery", "dra", "nri", "netns"):
            by_uid.setdefault(self.uid_of(s), []).append(s)
        return {u: names for u, names in by_uid.items() if len(names) > 1}

    def to_dict(self) -> dict[str, object]:
        return {
            "uids": {s: self.uid_of(s) for s in ("discovery", "dra", "nri", "netns")},
            "shared": {str(u): n for u, n in self.shared().items()},
        }
