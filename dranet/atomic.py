"""Replacing a file atomically: a reader (the kubelet helper's peers, the runtime's CDI cache) sees
the old content or the new, never a torn file. Shared by dra (checkpoint, CDI specs) and discovery
(the attributes of devices in pods)."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, data: bytes, mode: int, *, durable: bool = True) -> None:
    """Write `data` to a hidden temp file beside `path`, rename it over `path`. Raises OSError;
    nothing is half-written and no temp file is left behind. durable: fsync the file before the
    rename and the directory after it, so that the new content survives a machine crash."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)  # the umask must not loosen or tighten it
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
    except OSError:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    if not durable:
        return
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)  # make the rename itself durable
    finally:
        os.close(dfd)
