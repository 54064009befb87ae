"""The worker's reads, none of which changes anything: the host's uplinks and the links a request
names (for planning), the answers to the other services' questions (an interface's ethtool table,
the host's tcx programs, which netns are alive, which devices are attached where and in what link
state), and the count of attaches in progress that the slow background reads yield to.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from dranet.services.netns import ebpf
from dranet.services.netns.errors import as_bus_error
from dranet.services.netns.hostcache import HostCache
from dranet.services.netns.ledger import Ledger, NetnsId
from dranet.services.netns.model import (
    ATTACHED,
    JournalEntry,
    RequestError,
    check_ifname,
    netns_ident,
    uplinks,
)
from dranet.services.netns.netlink import Link, LinkBrief, NetlinkError, Route
from dranet.services.netns.nspath import alive
from dranet.services.netns.plan import Allowed, HostView, is_allowed
from dranet.services.netns.podns import Netns

from dranet.bus.messages import BusError
from dranet.uplinks import Uplink, UplinkPolicy

# How long discovery's tcx question (a read of every link, ~5 ms of this process's CPU on a node
# with a hundred links, asked after each link event: a pod's CNI veth is one, just before its
# attach) may wait for the attaches in progress; discovery gives it 0.3 s.
TCX_YIELD_MAX = 0.1


class Queries:
    def __init__(
        self,
        hostns: Netns,
        ledger: Ledger,
        host_cache: HostCache,
        *,
        roots: Sequence[str],
        forbidden: Iterable[NetnsId],
        allowed: Callable[[], Allowed],
        uplink_policy: UplinkPolicy,
    ) -> None:
        """allowed: the worker's current inventory (it changes as discovery's arrives)."""
        self.hostns = hostns
        self.ledger = ledger
        self.host_cache = host_cache
        self.roots = roots
        self._forbidden = forbidden
        self._allowed = allowed
        self.uplink_policy = uplink_policy
        self.tcx_yield_max = TCX_YIELD_MAX
        self._attaching = 0  # attaches in progress (background reads yield to them)
        self._attach_idle = threading.Condition()

    # ------------------------------------------------------------ the host, for planning
    def uplinks(self, links: Sequence[LinkBrief] | None = None) -> dict[int, Uplink]:
        """The node's uplinks now (over the given link graph of the host, or the current one)."""
        return uplinks(
            self.host_cache.links() if links is None else links,
            self.host_cache.default_routes(),  # the rule reads only the main table's
            self.hostns.rtnl.route_lookup,
            self.uplink_policy,
        )

    def host_view(self, devices: Sequence[Mapping[str, Any]]) -> HostView:
        """What planning reads of the host for this request: one dump of the link graph (briefs)
        for the uplink rule and the names, then only the asked interfaces in full, with the routes
        through each (dumps the kernel filters: a node has a veth and routes per pod)."""
        rtnl = self.hostns.rtnl
        briefs = self.host_cache.links()
        by_name: dict[str, LinkBrief] = {}
        for b in briefs:
            for name in (b.name, *b.alt_names):
                by_name.setdefault(name, b)
        asked: list[Link] = []
        routes: list[Route] = []
        for ifname in dict.fromkeys(str(d.get("ifname") or "") for d in devices):
            brief = by_name.get(ifname)
            link = rtnl.get_link(index=brief.index) if brief is not None else None
            if link is None or ifname not in (link.name, *link.alt_names):
                continue  # gone or renamed since the dump: planning says "no interface"
            asked.append(link)
            routes += rtnl.routes(oif=link.index)
        return HostView.of(briefs, routes, self.uplinks(briefs), asked)

    def check_allocatable(self, ifname: str) -> None:
        """Refuse (not_allowed) a host interface outside the inventory of allocatable devices."""
        if not is_allowed(self._allowed(), ifname):
            raise BusError(
                "not_allowed", f"ifname: {ifname!r} is not in the inventory of allocatable devices"
            )

    # ------------------------------------------------------------ the host, for dra and discovery
    def tcx_programs(self) -> dict[str, Any]:
        """The tcx program names of every link of the host (discovery's question). The read pauses
        before each link while an attach runs (up to tcx_yield_max in all): it competes with the pod
        start for this process's GIL, and nothing waits on it but discovery's next scan."""
        until = time.monotonic() + self.tcx_yield_max
        return {"links": ebpf.tcx_by_link(self.hostns, pause=lambda: self._yield_to_attaches(until))}

    @contextmanager
    def start_path(self) -> Iterator[None]:
        """Mark an attach in progress (see tcx_programs)."""
        with self._attach_idle:
            self._attaching += 1
        try:
            yield
        finally:
            with self._attach_idle:
                self._attaching -= 1
                self._attach_idle.notify_all()

    def _yield_to_attaches(self, until: float) -> None:
        with self._attach_idle:
            self._attach_idle.wait_for(lambda: not self._attaching, max(0.0, until - time.monotonic()))

    def ethtool_features(self, ifname: str) -> dict[str, Any]:
        """The ethtool table of an allocatable host interface, for dra's checks at prepare (the
        slow read happens there, not in the attach)."""
        try:
            check_ifname(ifname, "ifname")
        except RequestError as err:
            raise as_bus_error(err) from None
        self.check_allocatable(ifname)
        if self.hostns.rtnl.get_link(name=ifname) is None:
            raise BusError("not_found", f"ifname: no interface {ifname!r} on the node")
        try:
            return self.hostns.ethtool.table(ifname).to_wire()
        except NetlinkError as exc:
            raise as_bus_error(exc, step="ethtool") from None

    # ------------------------------------------------------------ attachments, for nri, dra, the CDI hook
    def attached_in(self, netns_id: str, devices: Sequence[str]) -> dict[str, Any]:
        """Which of `devices` are attached in the netns of this identity (the CDI hook's question)."""
        here = {
            e.device
            for e in self.ledger.entries()
            if e.phase == ATTACHED and netns_ident(e.netns_id) == netns_id
        }
        return {
            "attached": [d for d in devices if d in here],
            "missing": [d for d in devices if d not in here],
        }

    def alive_netns(self, paths: Sequence[str]) -> dict[str, Any]:
        """Which of these paths name a live pod netns, each with its identity: nri asks, as it may
        not see the netns files itself (the DaemonSet mounts them only into the worker)."""
        found = alive(paths, self.roots, self._forbidden)
        return {"alive": [{"netns": p, "id": netns_ident(i)} for p, i in found.items()]}

    def attachments(self, *, live: bool = False) -> dict[str, Any]:
        """Every attachment; live: with each attached link's state, read in its pod netns (one
        RTM_GETLINK per device), for dra's health stream (dra holds no capability to look itself)."""
        entries = self.ledger.entries()
        pods = {e.key: self.ledger.held(e.netns_id) for e in entries}
        out = []
        for e in entries:
            item = e.attachment()
            if live and e.phase == ATTACHED and e.pod_ifname:
                item.update(_live_state(e, pods[e.key]))
            out.append(item)
        return {"attachments": out}


def _live_state(entry: JournalEntry, pod: Netns | None) -> dict[str, Any]:
    """The `list` fields for one attached link: admin_up/oper_up/carrier/operstate, or link_error.
    Runs outside the worker's lock; a netns closed meanwhile is just an error here."""
    if pod is None:
        return {"link_error": "the pod netns is not held by the worker"}
    try:
        state = pod.rtnl.link_state(entry.pod_ifname)
    except Exception as exc:  # closed socket, netlink error: report it, never fail `list`
        return {"link_error": f"cannot read {entry.pod_ifname} in the pod netns: {exc}"}
    if state is None:
        return {"link_error": f"no link {entry.pod_ifname} in the pod netns"}
    return state.to_dict()
