"""Plain records passed between the discovery modules (no I/O here)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

AttrValue = str | int | bool


@dataclass(frozen=True)
class Address:
    family: int  # socket.AF_INET / AF_INET6
    cidr: str  # "192.0.2.5/24"
    scope: int  # 0 = global (RT_SCOPE_UNIVERSE)


@dataclass(frozen=True)
class LinkInfo:
    """One netlink link, as much of it as discovery needs."""

    index: int
    name: str
    kind: str = ""  # IFLA_INFO_KIND ("veth", "bridge", "macvlan"); "" for physical devices
    mac: str = ""
    mtu: int = 0
    operstate: str = ""  # "UP", "DOWN", "UNKNOWN", ...
    admin_up: bool = False  # IFF_UP
    carrier: bool = False  # IFLA_CARRIER
    link_type: str = ""  # ARPHRD as a word: "ether", "infiniband", "loopback", "none", ...
    master: int = 0  # IFLA_MASTER (bridge/bond/VRF the link is enslaved to), 0 = none
    parent: int = 0  # IFLA_LINK of this netns (macvlan lower device, local veth peer), 0 = none
    alias: str = ""
    parent_bus: str = ""  # IFLA_PARENT_DEV_BUS_NAME ("pci"), "" when the kernel does not say
    parent_dev: str = ""  # IFLA_PARENT_DEV_NAME ("0000:8a:00.0")
    addresses: tuple[Address, ...] = ()
    tc_filters: tuple[str, ...] = ()  # names of the bpf filters on its clsact ingress/egress
    tcx_programs: tuple[str, ...] = ()  # names of its tcx programs (the netns worker reads them)


@dataclass(frozen=True)
class PciInfo:
    address: str  # "0000:8a:00.0"
    class_code: int = 0  # 0x020000 for an Ethernet controller
    vendor_id: str = ""  # "0x8086"
    device_id: str = ""
    subsystem_id: str = ""  # subsystem_device, "0x0000"
    vendor_name: str = ""  # from pci.ids when found, else ""
    device_name: str = ""
    driver: str = ""  # bound driver, "" when none
    numa_node: int | None = None  # None when the kernel reports -1 or nothing
    pcie_root: str = ""  # "pci0000:00"
    sriov_totalvfs: int = 0
    sriov_numvfs: int = 0
    is_vf: bool = False
    netdevs: tuple[str, ...] = ()
    rdma_devices: tuple[str, ...] = ()


@dataclass
class Device:
    """One inventory device: what the bus reports and what a slice publishes."""

    name: str
    ifname: str = ""
    pci_address: str = ""
    rdma_device: str = ""
    allocatable: bool = True
    attributes: dict[str, AttrValue] = field(default_factory=dict)
    # DeviceTaints in API form (taints.py): why the device should get no new pods now.
    taints: tuple[Mapping[str, str], ...] = ()
    # Shared by many pods (--shared-filter): the API form of its capacities, else empty.
    shared_capacity: dict[str, Any] = field(default_factory=dict)

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "ifname": self.ifname,
            "pci_address": self.pci_address,
            "rdma_device": self.rdma_device,
            "allocatable": self.allocatable,
            "attributes": dict(self.attributes),
        }
        if self.taints:
            out["taints"] = [dict(t) for t in self.taints]
        return out

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> Device:
        attrs = d.get("attributes") or {}
        return cls(
            name=str(d["name"]),
            ifname=str(d.get("ifname") or ""),
            pci_address=str(d.get("pci_address") or ""),
            rdma_device=str(d.get("rdma_device") or ""),
            allocatable=bool(d.get("allocatable", True)),
            attributes={str(k): v for k, v in attrs.items() if isinstance(v, str | int | bool)},
            taints=tuple(
                {str(k): str(v) for k, v in t.items()} for t in d.get("taints") or () if isinstance(t, dict)
            ),
        )
