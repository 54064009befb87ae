"""The attributes of devices in pods, on disk: a discovery restart keeps publishing them.

A device whose interface moved into a pod is gone from the host's netlink, so a fresh discovery
could not describe it; its last host-side view is written to the state directory while the netns
worker reports it attached, and read back at start (upstream keeps the same snapshot in its
bbolt file, feature gate PersistentResourceSliceAttributes).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

from dranet.atomic import write_atomic

from .model import Device

log = logging.getLogger(__name__)

VERSION = 1


class KeptDevices:
    """One JSON file `{version, devices: [device]}`; written only when its content changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._written: list[dict[str, object]] | None = None

    def load(self) -> dict[str, Device]:
        """The devices last written; {} when there is no file or it cannot be read (logged: the
        devices then drop out of the slice until their pods end, as without the file)."""
        try:
            doc = json.loads(self.path.read_bytes())
            devices = [Device.from_wire(d) for d in doc["devices"]] if doc.get("version") == VERSION else []
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning(
                "cannot read the kept devices; ignoring them",
                extra={"path": str(self.path), "error": str(exc)},
            )
            return {}
        self._written = [d.to_wire() for d in devices]
        return {d.name: d for d in devices}

    def save(self, devices: Mapping[str, Device]) -> None:
        wire = [devices[name].to_wire() for name in sorted(devices)]
        if wire == self._written:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            data = json.dumps({"version": VERSION, "devices": wire}, sort_keys=True).encode()
            write_atomic(self.path, data, 0o600, durable=False)
        except OSError as exc:  # publishing goes on; only a restart would lose these attributes
            log.warning("cannot write the kept devices", extra={"path": str(self.path), "error": str(exc)})
            return
        self._written = wire
