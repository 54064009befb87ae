"""The bpf(2) calls the driver makes: which tcx programs an interface has, and detaching them.

A thin ctypes layer over the syscall (no library to keep in step with the kernel). The calls
resolve an interface index in the caller's network namespace, so they run in the namespace of the
interface (netlink.run_in_netns). Querying needs CAP_NET_ADMIN, reading a program by id
CAP_SYS_ADMIN: only the netns worker makes them; discovery asks it over the bus.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct
from dataclasses import dataclass

# bpf(2) commands (include/uapi/linux/bpf.h, enum bpf_cmd).
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_PROG_QUERY = 16
BPF_LINK_CREATE = 28
BPF_LINK_GET_FD_BY_ID = 30
BPF_LINK_GET_NEXT_ID = 31
BPF_LINK_DETACH = 34
# enum bpf_attach_type
BPF_TCX_INGRESS = 46
BPF_TCX_EGRESS = 47
TCX_DIRECTIONS = (("ingress", BPF_TCX_INGRESS), ("egress", BPF_TCX_EGRESS))
# enum bpf_link_type
BPF_LINK_TYPE_XDP = 6
# enum bpf_prog_type
BPF_PROG_TYPE_SCHED_CLS = 3
BPF_PROG_TYPE_XDP = 6

_ATTR_SIZE = 128  # larger than every attr layout used here; the kernel takes trailing zeros
_PROG_INFO_SIZE = 96  # bpf_prog_info up to and including name[16] (offset 64)
_LINK_INFO_SIZE = 64
_MAX_PROGS = 64
_NR_BPF = {"x86_64": 321, "aarch64": 280, "ppc64le": 361, "s390x": 351}

_libc = ctypes.CDLL(None, use_errno=True)


class BpfError(OSError):
    """A bpf(2) call failed: errno and what was asked."""


def bpf_call(cmd: int, attr: ctypes.Array[ctypes.c_char], what: str) -> int:
    nr = _NR_BPF.get(platform.machine())
    if nr is None:
        raise BpfError(errno.ENOSYS, f"bpf: unsupported architecture {platform.machine()}")
    ret = _libc.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), attr, ctypes.c_uint(len(attr)))
    if ret < 0:
        err = ctypes.get_errno()
        raise BpfError(err, f"bpf {what}: {os.strerror(err)}")
    return int(ret)


def bpf_attr(*fields: tuple[int, str, int]) -> ctypes.Array[ctypes.c_char]:
    """A zeroed bpf_attr with (offset, struct format, value) fields."""
    buf = ctypes.create_string_buffer(_ATTR_SIZE)
    for offset, fmt, value in fields:
        struct.pack_into(fmt, buf, offset, value)
    return buf


def _addr(buf: ctypes.Array[ctypes.c_char]) -> int:
    return ctypes.addressof(buf)


@dataclass(frozen=True)
class TcxProgram:
    direction: str  # "ingress" | "egress"
    prog_id: int
    link_id: int  # 0 when attached without a bpf_link (BPF_PROG_ATTACH)
    name: str  # the program's name ("" when it could not be read)


def tcx_programs(ifindex: int) -> list[TcxProgram]:
    """The tcx programs on an interface of the caller's netns, ingress then egress, in run order."""
    out: list[TcxProgram] = []
    for direction, attach_type in TCX_DIRECTIONS:
        ids = ctypes.create_string_buffer(4 * _MAX_PROGS)
        links = ctypes.create_string_buffer(4 * _MAX_PROGS)
        attr = bpf_attr(
            (0, "I", ifindex),
            (4, "I", attach_type),
            (16, "Q", _addr(ids)),
            (24, "I", _MAX_PROGS),
            (40, "Q", _addr(links)),
        )
        bpf_call(BPF_PROG_QUERY, attr, f"query tcx {direction} of ifindex {ifindex}")
        count = min(struct.unpack_from("I", attr, 24)[0], _MAX_PROGS)
        for i in range(count):
            prog_id = struct.unpack_from("I", ids, 4 * i)[0]
            link_id = struct.unpack_from("I", links, 4 * i)[0]
            out.append(TcxProgram(direction, prog_id, link_id, prog_name(prog_id)))
    return out


def prog_name(prog_id: int) -> str:
    """A loaded program's name (bpf_prog_info.name), "" when it is gone."""
    try:
        fd = bpf_call(BPF_PROG_GET_FD_BY_ID, bpf_attr((0, "I", prog_id)), f"open program {prog_id}")
    except BpfError:
        return ""
    try:
        info = ctypes.create_string_buffer(_PROG_INFO_SIZE)
        attr = bpf_attr((0, "I", fd), (4, "I", _PROG_INFO_SIZE), (8, "Q", _addr(info)))
        bpf_call(BPF_OBJ_GET_INFO_BY_FD, attr, f"info of program {prog_id}")
        return info.raw[64:80].split(b"\0", 1)[0].decode("ascii", "replace")
    finally:
        os.close(fd)


def detach_tcx(ifindex: int, prog: TcxProgram) -> None:
    """Detach one tcx program: its link when it has one, else the program itself."""
    attach_type = dict(TCX_DIRECTIONS)[prog.direction]
    if prog.link_id:
        detach_link(prog.link_id)
        return
    fd = bpf_call(BPF_PROG_GET_FD_BY_ID, bpf_attr((0, "I", prog.prog_id)), f"open program {prog.prog_id}")
    try:
        attr = bpf_attr((0, "I", ifindex), (4, "I", fd), (8, "I", attach_type))
        bpf_call(BPF_PROG_DETACH, attr, f"detach tcx {prog.direction} program {prog.prog_id}")
    finally:
        os.close(fd)


def detach_link(link_id: int) -> None:
    fd = bpf_call(BPF_LINK_GET_FD_BY_ID, bpf_attr((0, "I", link_id)), f"open link {link_id}")
    try:
        bpf_call(BPF_LINK_DETACH, bpf_attr((0, "I", fd)), f"detach link {link_id}")
    finally:
        os.close(fd)


def xdp_link_of(prog_id: int, ifindex: int) -> int:
    """The id of the XDP bpf_link that holds prog_id on ifindex, 0 when none (attached by netlink).
    Link ids are global; the program id (from this netns's link dump) pins it to this interface."""
    start = 0
    while True:
        attr = bpf_attr((0, "I", start))
        try:
            bpf_call(BPF_LINK_GET_NEXT_ID, attr, "next link")
        except BpfError as exc:
            if exc.errno == errno.ENOENT:
                return 0
            raise
        start = struct.unpack_from("I", attr, 4)[0]
        try:
            fd = bpf_call(BPF_LINK_GET_FD_BY_ID, bpf_attr((0, "I", start)), f"open link {start}")
        except BpfError:
            continue  # gone meanwhile
        try:
            info = ctypes.create_string_buffer(_LINK_INFO_SIZE)
            attr = bpf_attr((0, "I", fd), (4, "I", _LINK_INFO_SIZE), (8, "Q", _addr(info)))
            bpf_call(BPF_OBJ_GET_INFO_BY_FD, attr, f"info of link {start}")
        finally:
            os.close(fd)
        link_type, link_id, link_prog = struct.unpack_from("III", info, 0)
        link_ifindex = struct.unpack_from("I", info, 16)[0]  # bpf_link_info.xdp.ifindex
        if link_type == BPF_LINK_TYPE_XDP and link_prog == prog_id and link_ifindex == ifindex:
            return int(link_id)
