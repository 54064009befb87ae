"""Opening a pod's network namespace file, refusing anything else.

A path is accepted only if, after resolving symlinks, it lies under one of the allowed roots, and
the file it names is an nsfs file of a network namespace that is not the worker's own (nor the
host's). /proc/<pid>/ns/net is a "magic" link whose target is not a path: it is accepted as the
last component when its directory resolves under an allowed root.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dranet.services.netns.model import RequestError
from dranet.services.netns.netlink import is_net_namespace

DEFAULT_ROOTS = ("/var/run/netns", "/run/netns", "/proc")
_PROC_NS_DIR = re.compile(r"^/proc/\d+(/task/\d+)?/ns$")
MAX_PATH = 4096


@dataclass(frozen=True)
class NetnsHandle:
    path: str
    fd: int
    id: tuple[int, int]  # (st_dev, st_ino)

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


def netns_id(path: str) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the file at path, or None when it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def names_netns(path: str, ident: tuple[int, int], recorded: str) -> bool:
    """Whether `path` names the netns `ident` (attached under the path `recorded`): by identity
    while the path exists; once it is gone (the runtime deletes a stopped sandbox's netns), by the
    path itself, symlinks resolved, so /var/run/netns/x and /run/netns/x are one sandbox."""
    now = netns_id(path)
    if now is not None:
        return now == ident
    return os.path.realpath(path) == os.path.realpath(recorded)


def alive(
    paths: Iterable[str], roots: Sequence[str], forbidden: Iterable[tuple[int, int]]
) -> dict[str, tuple[int, int]]:
    """The paths that open as a pod netns (as attach would open them), with each one's identity."""
    out: dict[str, tuple[int, int]] = {}
    for path in paths:
        try:
            handle = open_netns(path, roots, forbidden)
        except RequestError:
            continue
        handle.close()
        out[path] = handle.id
    return out


def _nsfs_dev() -> int:
    return os.stat("/proc/self/ns/net").st_dev


def resolve(path: str, roots: Sequence[str]) -> str:
    """The real path a netns path names, if it is under an allowed root; RequestError otherwise."""
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path or len(path) > MAX_PATH:
        raise RequestError("not_allowed", "netns", f"{path!r} is not an absolute path")
    parent = os.path.realpath(os.path.dirname(path))
    base = os.path.basename(path)
    if base == "net" and _PROC_NS_DIR.match(parent):
        real = os.path.join(parent, base)
    else:
        real = os.path.realpath(path)
    for root in roots:
        r = os.path.realpath(root)
        if real == r or real.startswith(r.rstrip("/") + "/"):
            return real
    raise RequestError(
        "not_allowed",
        "netns",
        f"{path!r} resolves to {real!r}, outside the allowed netns roots ({', '.join(roots)}); "
        "pass the runtime's netns path or add its directory with --netns-root",
    )


def open_netns(path: str, roots: Sequence[str], forbidden: Iterable[tuple[int, int]]) -> NetnsHandle:
    real = resolve(path, roots)
    try:
        fd = os.open(real, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise RequestError(
            "not_found", "netns", f"{path!r} does not exist (has the pod sandbox gone?)"
        ) from None
    except OSError as exc:
        raise RequestError("not_allowed", "netns", f"cannot open {path!r}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if st.st_dev != _nsfs_dev() or not is_net_namespace(fd):
            raise RequestError("not_allowed", "netns", f"{path!r} is not a network namespace file")
        ident = (st.st_dev, st.st_ino)
        if ident in set(forbidden):
            raise RequestError("not_allowed", "netns", f"{path!r} is the node's own network namespace")
    except BaseException:
        os.close(fd)
        raise
    return NetnsHandle(path=path, fd=fd, id=ident)
