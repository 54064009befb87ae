"""The character devices a container needs to use an RDMA device, read from sysfs.

One reader for the two processes that need them: the netns worker (after an attach, into the
attachment and its journal entry) and nri (a container of a pod it did not see attached). Both run
with the node's /sys (hostNetwork) and need no /dev access.

For RDMA device `mlx5_0` these are /dev/infiniband/uverbsN, umadN and issmN whose sysfs class
entry (/sys/class/infiniband_verbs/*, /sys/class/infiniband_mad/*) names `mlx5_0` in its `ibdev`
file, plus the shared /dev/infiniband/rdma_cm. Major/minor come from each class entry's `dev` file
("231:0"). These class entries stay visible on the host after an exclusive-mode move of the RDMA
device (/sys/class/infiniband/<dev> may not). The sysfs root is a parameter so tests use a
synthetic tree (this kernel has no RDMA).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# the sysfs classes whose entries are per-RDMA-device char devices (uverbsN; umadN and issmN)
_PER_DEVICE_CLASSES = ("infiniband_verbs", "infiniband_mad")


@dataclass(frozen=True)
class CharDevice:
    path: str
    major: int
    minor: int
    type: str = "c"

    def to_dict(self) -> dict[str, Any]:
        """The wire form (the worker's attachments, nri's records): char_devices_from reads it back."""
        return {"path": self.path, "type": self.type, "major": self.major, "minor": self.minor}


def _read_dev(entry: Path) -> tuple[int, int] | None:
    try:
        major, minor = (entry / "dev").read_text().strip().split(":")
        return int(major), int(minor)
    except (OSError, ValueError):
        return None


def char_devices(
    rdma_device: str, sysfs_root: str | Path = "/sys", dev_root: str = "/dev"
) -> list[CharDevice]:
    """The char devices of `rdma_device` under dev_root/infiniband, rdma_cm last; none when sysfs
    knows no node of the device."""
    root = Path(sysfs_root) / "class"
    found: list[CharDevice] = []
    for cls in _PER_DEVICE_CLASSES:
        base = root / cls
        if not base.is_dir():
            continue
        for entry in sorted(base.iterdir()):
            try:
                if (entry / "ibdev").read_text().strip() != rdma_device:
                    continue  # another RDMA device's node
            except OSError:
                continue
            dev = _read_dev(entry)
            if dev is not None:
                found.append(CharDevice(f"{dev_root}/infiniband/{entry.name}", *dev))
    if found:
        cm = _read_dev(root / "misc" / "rdma_cm")
        if cm is not None:
            found.append(CharDevice(f"{dev_root}/infiniband/rdma_cm", *cm))
    return found


def char_devices_from(records: Iterable[Mapping[str, Any]]) -> list[CharDevice]:
    """Char devices listed explicitly in prepared devices or attachments (field `char_devices`)."""
    out: list[CharDevice] = []
    for rec in records:
        for cd in rec.get("char_devices") or []:
            try:
                out.append(
                    CharDevice(str(cd["path"]), int(cd["major"]), int(cd["minor"]), str(cd.get("type", "c")))
                )
            except (KeyError, TypeError, ValueError):
                continue
    return out


def dedupe(devices: Iterable[CharDevice]) -> list[CharDevice]:
    """The devices without repeats of a path (the first one of each path kept)."""
    seen: dict[str, CharDevice] = {}
    for d in devices:
        seen.setdefault(d.path, d)
    return list(seen.values())
