"""eBPF programs on an interface: reading them (discovery's tcx names) and `disableEbpfPrograms`.

Three ways a program sits on a netdev: a bpf filter on its clsact qdisc (tc), a tcx program (with
or without a bpf_link) and an XDP program (by netlink or a bpf_link). tc filters go with the
clsact qdisc when the kernel moves the link to another netns; tcx and XDP programs stay. At attach,
with `disableEbpfPrograms: true`, the worker reads them on the host before the move and detaches
what is left in the pod after it, as upstream does in the pod; nothing re-attaches them at
release (upstream neither), so a claim that disables them takes them off the device for good.
"""

from __future__ import annotations

import errno
from collections.abc import Callable

from dranet.services.netns.netlink import NetlinkError, run_in_netns
from dranet.services.netns.podns import Netns

from dranet import bpf


def describe(kind: str, direction: str, name: str, prog_id: int) -> str:
    """How the claim status names a detached program: "tc ingress dummy_bpf.o:[classifier]",
    "tcx egress handle_egress", "xdp xdp_pass" (the program id when it has no name)."""
    where = f"{kind} {direction}".strip()
    return f"{where} {name or f'program {prog_id}'}"


def tc_programs(ns: Netns, ifindex: int) -> list[str]:
    """The tc bpf filters of a link, described (they do not survive a netns move)."""
    return [describe("tc", f.direction, f.name, f.prog_id) for f in ns.rtnl.bpf_filters(ifindex)]


def tcx_names(ns: Netns, ifindex: int) -> list[str]:
    """The names of a link's tcx programs (bpf(2) in the link's netns)."""
    return [p.name for p in run_in_netns(ns.fd, lambda: bpf.tcx_programs(ifindex))]


def tcx_by_link(ns: Netns, pause: Callable[[], None] = lambda: None) -> dict[str, list[str]]:
    """The names of the tcx programs of every link of ns that has some (discovery's question).
    pause: called before the dump and before each link (the worker waits there while it attaches)."""
    pause()
    links = ns.rtnl.link_briefs()

    def read() -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for link in links:
            pause()
            try:
                names = [p.name for p in bpf.tcx_programs(link.index)]
            except bpf.BpfError:
                continue  # gone meanwhile, or a kind of link tcx does not apply to
            if names:
                out[link.name] = names
        return out

    return run_in_netns(ns.fd, read)


def detach_all(ns: Netns, ifindex: int) -> list[str]:
    """Detach every tc bpf filter, tcx program and XDP program of a link; what was detached."""
    out: list[str] = []
    for f in ns.rtnl.bpf_filters(ifindex):
        ns.rtnl.del_tc_filter(ifindex, f)
        out.append(describe("tc", f.direction, f.name, f.prog_id))
    for p in run_in_netns(ns.fd, lambda: bpf.tcx_programs(ifindex)):
        run_in_netns(ns.fd, lambda p=p: bpf.detach_tcx(ifindex, p))  # type: ignore[misc]
        out.append(describe("tcx", p.direction, p.name, p.prog_id))
    for mode, prog_id in ns.rtnl.xdp_programs(ifindex):
        name = run_in_netns(ns.fd, lambda prog_id=prog_id: bpf.prog_name(prog_id))  # type: ignore[misc]
        try:
            ns.rtnl.detach_xdp(ifindex, mode)
        except NetlinkError as exc:
            if exc.errno != errno.EBUSY:
                raise
            # Held by a bpf_link: netlink may not remove it, detaching the link does.
            link_id = run_in_netns(ns.fd, lambda prog_id=prog_id: bpf.xdp_link_of(prog_id, ifindex))  # type: ignore[misc]
            if not link_id:
                raise
            run_in_netns(ns.fd, lambda link_id=link_id: bpf.detach_link(link_id))  # type: ignore[misc]
        out.append(describe("xdp", "", name, prog_id))
    return out
