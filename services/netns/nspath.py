"""Opening a pod's network namespace file, refusing anything else.

Canonicalise first, then allow. A path must already be in canonical form (absolute; no trailing
'/', '//', '.' or '..'), because the worker later watches the very path it was given: a path that
opens but does not stat would look like a deleted netns. It is then resolved (symlinks followed)
and accepted only if it lies under one of the allowed roots and names an nsfs file of a network
namespace that is not the worker's own (nor the host's).

/proc/<pid>/ns/<kind> are "magic" links whose target is no path ("net:[4026531840]"): a path
that resolves to one is taken as that link, accepted for kind `net` only, and only when /proc is
an allowed root (it is not by default: runtimes pass bind-mounted files such as
/var/run/netns/cni-...). Whatever cannot be resolved (e.g. readlink refused by the kernel) is
not_allowed, never an internal error.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dranet.services.netns.model import RequestError
from dranet.services.netns.netlink import is_net_namespace

# Where containerd and CRI-O put pod netns files (/var/run is /run on most distributions).
DEFAULT_ROOTS = ("/var/run/netns", "/run/netns")
_PROC_NS_DIR = re.compile(r"/proc/\d+(/task/\d+)?/ns")
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


def own_netns(host: tuple[int, int]) -> set[tuple[int, int]]:
    """The netns a pod path must never name: the node's (host), ours and pid 1's."""
    own = {host}
    for path in ("/proc/self/ns/net", "/proc/1/ns/net"):
        ident = netns_id(path)
        if ident:
            own.add(ident)
    return own


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


def _not_allowed(reason: str) -> RequestError:
    return RequestError("not_allowed", "netns", reason)


def _real(path: str) -> str:
    """The path with every symlink resolved; a /proc/<pid>/ns/<kind> magic link stays itself."""
    parent, base = os.path.split(path)
    try:
        parent = os.path.realpath(parent)
        if not _PROC_NS_DIR.fullmatch(parent):
            # Resolves a symlink to a magic link to "/proc/<pid>/ns/<kind>:[<inode>]".
            parent, base = os.path.split(os.path.realpath(path))
    except OSError as exc:  # e.g. readlink of another process's /proc links without CAP_SYS_PTRACE
        raise _not_allowed(f"cannot resolve {path!r}: {exc.strerror}") from None
    if _PROC_NS_DIR.fullmatch(parent):
        kind = base.split(":[", 1)[0]
        if kind != "net":
            raise _not_allowed(f"{path!r} is a {kind!r} namespace, not a network namespace")
        base = kind
    return os.path.join(parent, base)


def resolve(path: str, roots: Sequence[str]) -> str:
    """The real path a netns path names, if it is under an allowed root; RequestError otherwise."""
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path or len(path) > MAX_PATH:
        raise _not_allowed(f"{path!r} is not an absolute path")
    if path.startswith("//") or os.path.normpath(path) != path:
        raise _not_allowed(
            f"{path!r} is not in canonical form (a trailing '/', '//', '.' or '..'); "
            "pass the runtime's netns path as it is"
        )
    real = _real(path)
    for root in roots:
        r = os.path.realpath(root)
        if real == r or real.startswith(r.rstrip("/") + "/"):
            return real
    raise _not_allowed(
        f"{path!r} resolves to {real!r}, outside the allowed netns roots ({', '.join(roots)}); "
        "pass the runtime's netns path or add its directory with --netns-root",
    )


def open_netns(path: str, roots: Sequence[str], forbidden: Iterable[tuple[int, int]]) -> NetnsHandle:
    real = resolve(path, roots)
    try:
        # O_NONBLOCK: a FIFO planted under a root must not hang the worker in open().
        fd = os.open(real, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise RequestError(
            "not_found", "netns", f"{path!r} does not exist (has the pod sandbox gone?)"
        ) from None
    except OSError as exc:
        raise _not_allowed(f"cannot open {path!r}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if st.st_dev != _nsfs_dev() or not is_net_namespace(fd):
            raise _not_allowed(f"{path!r} is not a network namespace file")
        ident = (st.st_dev, st.st_ino)
        if ident in set(forbidden):
            raise _not_allowed(f"{path!r} is the node's own network namespace")
    except BaseException:
        os.close(fd)
        raise
    return NetnsHandle(path=path, fd=fd, id=ident)
