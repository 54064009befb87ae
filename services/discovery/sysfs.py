"""PCI, NUMA, SR-IOV and RDMA facts read from sysfs under a configurable root (--sysfs-root).

Tests lay out synthetic trees (relative symlinks, like the kernel's) for topologies this machine
does not have. Every read is best effort: a missing or unreadable file means "unknown", never an
exception, because devices come and go while we read.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from .model import PciInfo
from .naming import is_pci_address

log = logging.getLogger(__name__)

NETWORK_CLASS = 0x02
# A PCI NIC bound to one of these can never show a netdev, so it is not a network device for us.
USERSPACE_DRIVERS = frozenset({"vfio-pci", "uio_pci_generic", "igb_uio", "pci-stub"})
PCI_IDS_PATHS = ("/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids", "/usr/share/pci.ids")
_BDF_IN_PATH = re.compile(r"[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]")


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return ""


def _read_int(path: Path, base: int = 10) -> int | None:
    text = _read(path)
    try:
        return int(text, base) if text else None
    except ValueError:
        return None


def _listdir(path: Path) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


class Sysfs:
    def __init__(self, root: str | Path = "/sys", pci_ids: str | Path | None = None) -> None:
        self.root = Path(root)
        self._pci_ids = PciIds(pci_ids)

    # ------------------------------------------------------------------ netdevs

    def netdev_exists(self, ifname: str) -> bool:
        return (self.root / "class/net" / ifname).exists()

    def netdev_matches(self, ifname: str, ifindex: int) -> bool:
        """True when sysfs shows a netdev of this name with this ifindex."""
        return _read_int(self.root / "class/net" / ifname / "ifindex") == ifindex

    def netdev_pci_address(self, ifname: str) -> str:
        """The PCI address behind a netdev (the last BDF in its device path), "" for none."""
        return self._last_bdf(self.root / "class/net" / ifname)

    def netdev_is_virtual(self, ifname: str) -> bool | None:
        """True when the netdev lives under devices/virtual; None when sysfs does not show it."""
        path = self.root / "class/net" / ifname
        if not path.exists():
            return None
        real = os.path.realpath(path)
        return f"{os.sep}devices{os.sep}virtual{os.sep}" in real

    def netdev_rdma_device(self, ifname: str) -> str:
        names = _listdir(self.root / "class/net" / ifname / "device/infiniband")
        if names:
            return names[0]
        for rdma in _listdir(self.root / "class/infiniband"):
            if (self.root / "class/infiniband" / rdma / "device/net" / ifname).exists():
                return rdma
        return ""

    # ------------------------------------------------------------------ PCI

    def pci_network_devices(self) -> list[str]:
        """Addresses of PCI network controllers (class 0x02) bound to a kernel network driver."""
        out = []
        for addr in _listdir(self.root / "bus/pci/devices"):
            dev = self.root / "bus/pci/devices" / addr
            cls = _read_int(dev / "class", 16)
            if cls is None or cls >> 16 != NETWORK_CLASS:
                continue
            driver = self._driver(dev)
            if driver and driver not in USERSPACE_DRIVERS:
                out.append(addr)
        return out

    def pci_info(self, address: str) -> PciInfo | None:
        dev = self.root / "bus/pci/devices" / address
        if not is_pci_address(address) or not dev.exists():
            return None
        vendor = _read(dev / "vendor")
        device = _read(dev / "device")
        numa = _read_int(dev / "numa_node")
        return PciInfo(
            address=address,
            class_code=_read_int(dev / "class", 16) or 0,
            vendor_id=vendor,
            device_id=device,
            subsystem_id=_read(dev / "subsystem_device"),
            vendor_name=self._pci_ids.vendor(vendor),
            device_name=self._pci_ids.device(vendor, device),
            driver=self._driver(dev),
            numa_node=numa if numa is not None and numa >= 0 else None,
            pcie_root=self._pcie_root(dev),
            sriov_totalvfs=_read_int(dev / "sriov_totalvfs") or 0,
            sriov_numvfs=_read_int(dev / "sriov_numvfs") or 0,
            is_vf=(dev / "physfn").exists(),
            netdevs=tuple(_listdir(dev / "net")),
            rdma_devices=tuple(_listdir(dev / "infiniband")),
        )

    # ------------------------------------------------------------------ RDMA

    def rdma_devices(self) -> dict[str, str]:
        """Every RDMA device -> its PCI address ("" when it has none, e.g. a software device)."""
        return {
            name: self._last_bdf(self.root / "class/infiniband" / name / "device")
            for name in _listdir(self.root / "class/infiniband")
        }

    # ------------------------------------------------------------------ helpers

    def _driver(self, dev: Path) -> str:
        link = dev / "driver"
        return os.path.basename(os.path.realpath(link)) if link.exists() else ""

    def _last_bdf(self, path: Path) -> str:
        if not path.exists():
            return ""
        for part in reversed(Path(os.path.realpath(path)).parts):
            if _BDF_IN_PATH.fullmatch(part):
                return part
        return ""

    def _pcie_root(self, dev: Path) -> str:
        # The first component under devices/ of the device's real path: "pci0000:00".
        real = Path(os.path.realpath(dev))
        try:
            rel = real.relative_to(Path(os.path.realpath(self.root)) / "devices")
        except ValueError:
            return ""
        first = rel.parts[0] if rel.parts else ""
        return first if first.startswith("pci") else ""


class PciIds:
    """Vendor and device names from a pci.ids file, looked up on demand (the file is ~1.5 MB).
    The image ships Debian's (package pci.ids, /usr/share/misc/pci.ids); $PCIDB_PATH, upstream's
    variable, names another."""

    def __init__(self, path: str | Path | None = None) -> None:
        candidates = [str(path)] if path else [os.environ.get("PCIDB_PATH", ""), *PCI_IDS_PATHS]
        self.path = next((p for p in candidates if p and os.path.isfile(p)), "")
        self._cache: dict[tuple[str, str], str] = {}
        if not self.path:
            log.warning(
                "no PCI ID database: pciVendor and pciDevice will be 'unknown'; install Debian's "
                "package pci.ids or set PCIDB_PATH to a pci.ids file",
                extra={"looked_in": [c for c in candidates if c]},
            )

    def vendor(self, vendor_id: str) -> str:
        return self._lookup(vendor_id, "")

    def device(self, vendor_id: str, device_id: str) -> str:
        return self._lookup(vendor_id, device_id) if device_id else ""

    def _lookup(self, vendor_id: str, device_id: str) -> str:
        key = (vendor_id.lower().removeprefix("0x"), device_id.lower().removeprefix("0x"))
        if not self.path or not key[0]:
            return ""
        if key not in self._cache:
            self._cache[key] = self._scan(*key)
        return self._cache[key]

    def _scan(self, vendor: str, device: str) -> str:
        in_vendor = False
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    if not line.strip() or line.startswith("#"):
                        continue
                    if not line.startswith("\t"):
                        if in_vendor:
                            return ""
                        if line[:4].lower() == vendor:
                            if not device:
                                return line[4:].strip()
                            in_vendor = True
                    elif in_vendor and not line.startswith("\t\t") and line[1:5].lower() == device:
                        return line[5:].strip()
        except OSError:
            return ""
        return ""
