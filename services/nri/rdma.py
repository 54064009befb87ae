"""The character devices a container needs to use an RDMA device, read from sysfs.

For RDMA device `mlx5_0` these are /dev/infiniband/uverbsN (and umadN, issmN) whose sysfs class
entry names `mlx5_0` in its `ibdev` file, plus the shared /dev/infiniband/rdma_cm. Major/minor come
from each class entry's `dev` file ("231:0"). The sysfs root is a parameter so tests use a
synthetic tree (this kernel has no RDMA).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

# sysfs class -> the prefix of its device nodes under /dev/infiniband
_PER_DEVICE_CLASSES = ("infiniband_verbs", "infiniband_mad")
DEV_DIR = "/dev/infiniband"


@dataclass(frozen=True)
class CharDevice:
    path: str
    major: int
    minor: int
    type: str = "c"

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "type": self.type, "major": self.major, "minor": self.minor}


def _read_dev(entry: Path) -> tuple[int, int] | None:
    try:
        major, minor = (entry / "dev").read_text().strip().split(":")
        return int(major), int(minor)
    except (OSError, ValueError):
        return None


def rdma_char_devices(rdma_device: str, sysfs_root: str | Path = "/sys") -> list[CharDevice]:
    """The char devices of `rdma_device` (empty if sysfs knows none), rdma_cm included."""
    root = Path(sysfs_root) / "class"
    found: list[CharDevice] = []
    for cls in _PER_DEVICE_CLASSES:
        base = root / cls
        if not base.is_dir():
            continue
        for entry in sorted(base.iterdir()):
            try:
                if (entry / "ibdev").read_text().strip() != rdma_device:
                    continue
            except OSError:
                continue
            dev = _read_dev(entry)
            if dev is not None:
                found.append(CharDevice(f"{DEV_DIR}/{entry.name}", *dev))
    if found:
        cm = _read_dev(root / "misc" / "rdma_cm")
        if cm is not None:
            found.append(CharDevice(f"{DEV_DIR}/rdma_cm", *cm))
    return found


def char_devices_from(records: list[dict[str, Any]]) -> list[CharDevice]:
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


def dedupe(devices: list[CharDevice]) -> list[CharDevice]:
    seen: dict[str, CharDevice] = {}
    for d in devices:
        seen.setdefault(d.path, d)
    return list(seen.values())
