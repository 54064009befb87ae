"""Unix socket files for the kubelet: names, stale-file replacement, removal."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import grpc

log = logging.getLogger(__name__)


def registration_socket_name(driver_name: str, pod_uid: str = "") -> str:
    """<driver>-reg.sock, or <driver>-<pod uid>-reg.sock so two driver pods can overlap in an update."""
    return f"{driver_name}-{pod_uid}-reg.sock" if pod_uid else f"{driver_name}-reg.sock"


def dra_socket_name(pod_uid: str = "") -> str:
    return f"dra-{pod_uid}.sock" if pod_uid else "dra.sock"


def remove_socket(path: Path) -> None:
    """Remove a socket file we own; anything else at that path is left alone and reported."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(f"{path} exists and is not a socket; remove it by hand if it is stale")
    try:
        path.unlink(missing_ok=True)
    except PermissionError:  # bound as root, stopping as --run-as: the next start replaces it
        log.warning(
            "cannot remove the socket after the switch of uid; the next start replaces it",
            extra={"path": str(path)},
        )


def bind_unix(server: grpc.Server, path: Path) -> None:
    """Listen on a unix socket, replacing a stale socket file left by a crash."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        log.info("replacing stale socket", extra={"socket": str(path)})
        remove_socket(path)
    server.add_insecure_port(f"unix://{path}")
