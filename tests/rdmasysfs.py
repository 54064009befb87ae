"""A synthetic sysfs with RDMA devices, laid out as the kernel does (this kernel has no RDMA).

The device's files live under its PCI device directory; /sys/class/{infiniband,infiniband_verbs,
infiniband_mad,net} hold links into it, and rdma_cm is /sys/class/misc/rdma_cm. The tests of the
worker (which finds a device by /sys/class/infiniband/<dev> and a netdev's device by
/sys/class/net/<if>/device/infiniband) and of the char-device reader (dranet/rdma.py, which reads
the class entries) share it.
"""

from __future__ import annotations

import os
from pathlib import Path

RDMA_CM = "10:58"


def _link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(target, link.parent))


def add_rdma_device(
    sysfs: Path, pci: str, rdma_dev: str, nodes: dict[str, str], netdev: str | None = None
) -> Path:
    """RDMA device `rdma_dev` of PCI function `pci` with char-device `nodes` (e.g. {"uverbs0":
    "231:192", "umad0": "231:0", "issm0": "231:64"}), and its netdev if any; rdma_cm too. The PCI
    directory is returned."""
    device = sysfs / "devices" / "pci0000:00" / pci
    (device / "infiniband" / rdma_dev).mkdir(parents=True)
    _link(device / "infiniband" / rdma_dev / "device", device)
    _link(sysfs / "class" / "infiniband" / rdma_dev, device / "infiniband" / rdma_dev)
    for node, numbers in nodes.items():
        cls = "infiniband_verbs" if node.startswith("uverbs") else "infiniband_mad"
        entry = device / cls / node
        entry.mkdir(parents=True)
        (entry / "dev").write_text(numbers + "\n")
        (entry / "ibdev").write_text(rdma_dev + "\n")
        _link(sysfs / "class" / cls / node, entry)
    if netdev is not None:
        (device / "net" / netdev).mkdir(parents=True)
        _link(device / "net" / netdev / "device", device)
        _link(sysfs / "class" / "net" / netdev, device / "net" / netdev)
    cm = sysfs / "class" / "misc" / "rdma_cm"
    if not cm.exists():
        cm.mkdir(parents=True)
        (cm / "dev").write_text(RDMA_CM + "\n")
    return device
