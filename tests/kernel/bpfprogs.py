"""Minimal eBPF programs for the kernel tests, loaded and attached the way users do it.

Each program is two instructions (r0 = verdict; exit), loaded with bpf(2) (dranet.bpf's call), so
no compiler or object file is needed. Attached as upstream's e2e does: a tc filter with
direct-action on clsact ingress (named like tc names an object file's section), a tcx program
(BPF_PROG_ATTACH, as `bpftool net attach tcx_ingress`, or a bpf_link), and XDP over netlink.
"""

from __future__ import annotations

import ctypes
import os
import struct

from dranet.services.netns.netlink import run_in_netns
from pyroute2 import IPRoute

from dranet.bpf import (
    BPF_LINK_CREATE,
    BPF_PROG_ATTACH,
    BPF_PROG_LOAD,
    BPF_PROG_TYPE_SCHED_CLS,
    BPF_PROG_TYPE_XDP,
    BPF_TCX_EGRESS,
    BPF_TCX_INGRESS,
    bpf_attr,
    bpf_call,
)

BPF_XDP = 37  # enum bpf_attach_type
TC_ACT_OK = 0
XDP_PASS = 2


def load(prog_type: int, name: str, verdict: int, expected_attach_type: int = 0) -> int:
    """A loaded program's fd: `r0 = verdict; exit`."""
    insns = struct.pack("<BBhi", 0xB7, 0, 0, verdict) + struct.pack("<BBhi", 0x95, 0, 0, 0)
    code = ctypes.create_string_buffer(insns, len(insns))
    license = ctypes.create_string_buffer(b"GPL")
    attr = bpf_attr(
        (0, "I", prog_type),
        (4, "I", 2),
        (8, "Q", ctypes.addressof(code)),
        (16, "Q", ctypes.addressof(license)),
        (48, "16s", name.encode()),
        (68, "I", expected_attach_type),
    )
    return bpf_call(BPF_PROG_LOAD, attr, f"load {name}")


__all__ = [
    "BPF_TCX_EGRESS",
    "BPF_TCX_INGRESS",
    "add_tc_filter",
    "attach_tcx",
    "attach_xdp",
    "ifindex",
    "in_netns",
]


def in_netns(ns: str, fn):  # type: ignore[no-untyped-def]
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        return run_in_netns(fd, fn)
    finally:
        os.close(fd)


def ifindex(ns: str, ifname: str) -> int:
    return int(in_netns(ns, lambda: socket_ifindex(ifname)))


def socket_ifindex(ifname: str) -> int:
    import socket

    return socket.if_nametoindex(ifname)


def add_tc_filter(ns: str, ifname: str, name: str) -> None:
    """clsact on the interface and a direct-action bpf filter on ingress named `name`."""
    fd = load(BPF_PROG_TYPE_SCHED_CLS, "cls_main", TC_ACT_OK)
    try:

        def add() -> None:
            with IPRoute() as ipr:
                idx = ipr.link_lookup(ifname=ifname)[0]
                ipr.tc("add", "clsact", idx)
                ipr.tc(
                    "add-filter", "bpf", idx, ":1", fd=fd, name=name, parent="ffff:fff2", direct_action=True
                )

        in_netns(ns, add)
    finally:
        os.close(fd)


def attach_tcx(ns: str, ifname: str, name: str, attach_type: int, *, link: bool = False) -> int:
    """A tcx program named `name`; with link=True through a bpf_link, whose fd is returned (it holds
    the attachment: close it only to detach), else attached as bpftool does (returns -1)."""
    fd = load(BPF_PROG_TYPE_SCHED_CLS, name, TC_ACT_OK, attach_type)
    idx = ifindex(ns, ifname)
    try:
        if link:
            attr = bpf_attr((0, "I", fd), (4, "I", idx), (8, "I", attach_type))
            return int(in_netns(ns, lambda: bpf_call(BPF_LINK_CREATE, attr, f"link {name}")))
        attr = bpf_attr((0, "I", idx), (4, "I", fd), (8, "I", attach_type))
        in_netns(ns, lambda: bpf_call(BPF_PROG_ATTACH, attr, f"attach {name}"))
        return -1
    finally:
        os.close(fd)


def attach_xdp(ns: str, ifname: str, name: str, *, link: bool = False) -> int:
    """An XDP program named `name`: over netlink (returns -1), or with link=True through a
    bpf_link, whose fd is returned (closing it detaches the program)."""
    fd = load(BPF_PROG_TYPE_XDP, name, XDP_PASS, BPF_XDP if link else 0)
    try:
        if link:
            attr = bpf_attr((0, "I", fd), (4, "I", ifindex(ns, ifname)), (8, "I", BPF_XDP))
            return int(in_netns(ns, lambda: bpf_call(BPF_LINK_CREATE, attr, f"link {name}")))

        def attach() -> None:
            with IPRoute() as ipr:
                idx = ipr.link_lookup(ifname=ifname)[0]
                ipr.link("set", index=idx, xdp_fd=fd)

        in_netns(ns, attach)
        return -1
    finally:
        os.close(fd)
