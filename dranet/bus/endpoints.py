"""Where each service's sockets live, and their permissions."""

from __future__ import annotations

import os
from pathlib import Path

SERVICES = ("discovery", "dra", "nri", "netns")
DIR_MODE = 0o750  # only the driver's own user and group reach the bus
SOCKET_MODE = 0o660


def rpc_path(runtime_dir: str | os.PathLike[str], service: str) -> Path:
    return Path(runtime_dir) / f"{service}.sock"


def events_path(runtime_dir: str | os.PathLike[str], service: str) -> Path:
    return Path(runtime_dir) / f"{service}-events.sock"


def ipc(path: Path) -> str:
    return f"ipc://{path}"


def ensure_runtime_dir(runtime_dir: str | os.PathLike[str]) -> Path:
    """Create the runtime dir (0750) if needed and tighten its mode if someone loosened it."""
    path = Path(runtime_dir)
    path.mkdir(parents=True, exist_ok=True)
    if path.stat().st_mode & 0o777 != DIR_MODE:
        path.chmod(DIR_MODE)
    return path


def remove_stale(path: Path) -> None:
    """Remove a socket file left by a crashed process; bind() would fail on it otherwise. A service
    that switched to its own uid (--run-as) cannot remove the socket it bound as root at stop: the
    next start, as root, replaces it."""
    try:
        path.unlink()
    except (FileNotFoundError, PermissionError):
        pass
