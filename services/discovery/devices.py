"""Assemble the inventory: netlink links + sysfs facts -> devices, with the exclusions applied.

Pure apart from the Sysfs reader it is given (tests pass one rooted at a synthetic tree).
Order of the result: sorted by device name, so slices and their names are deterministic.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

from dranet.providers import DeviceIdentifiers
from dranet.uplinks import UplinkPolicy

from .attributes import LinkFacts, enforce_limits, link_attributes, pci_attributes, rdma_attributes
from .filter import DeviceFilter
from .model import AttrValue, Device, LinkInfo, PciInfo
from .naming import is_pci_address, netdev_device_name, pci_device_name
from .netlinkscan import NetSnapshot
from .sharing import Sharing
from .sysfs import Sysfs

log = logging.getLogger(__name__)

# CNI and container-runtime devices that are never a pod's NIC (upstream only skips three names).
DEFAULT_EXCLUDE = (
    "lo",
    "cni0",
    "docker0",
    "flannel.*",
    "flannel-v6.*",
    "cilium_*",
    "lxc*",
    "vxlan.calico",
    "vxlan-v6.calico",
    "cali*",
    "tunl0",
    "kube-ipvs0",
    "kube-bridge",
    "weave",
    "vethwe-*",
    "antrea-*",
    "genev_sys_*",
    "ovs-system",
    "nodelocaldns",
)


@dataclass
class ScanOptions:
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE  # fnmatch patterns on interface names
    filter: DeviceFilter = field(default_factory=DeviceFilter)
    uplink_policy: UplinkPolicy = field(default_factory=UplinkPolicy)  # the API server, --uplink-interfaces
    # --cloud-provider: attributes by device identity (dranet/providers); ours win on a clash
    cloud: Callable[[DeviceIdentifiers], Mapping[str, AttrValue]] | None = None
    sharing: Sharing = field(default_factory=Sharing)  # --shared-filter: NICs many pods share


@dataclass(frozen=True)
class NetdevSysfs:
    """Sysfs facts about one netdev; cached per (ifindex, name) by the caller."""

    pci_address: str
    virtual: bool | None
    rdma_device: str


def netdev_sysfs(sysfs: Sysfs, link: LinkInfo) -> NetdevSysfs:
    # /sys/class/net shows the netdevs of the namespace sysfs was mounted in; trust it only when
    # the ifindex matches, so a same-named link elsewhere never lends its facts.
    if not sysfs.netdev_matches(link.name, link.index):
        return NetdevSysfs("", None, "")
    return NetdevSysfs(
        sysfs.netdev_pci_address(link.name),
        sysfs.netdev_is_virtual(link.name),
        sysfs.netdev_rdma_device(link.name),
    )


def _excluded_by_name(ifname: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(ifname, p) for p in patterns)


def build_devices(
    snap: NetSnapshot,
    sysfs: Sysfs,
    options: ScanOptions,
    facts_cache: dict[tuple[int, str], NetdevSysfs] | None = None,
    attached: Collection[str] = (),
    withheld: set[str] | None = None,
) -> list[Device]:
    """Every device of the node; `allocatable` is False for uplinks (`snap.uplinks`), excluded names
    and filtered ones.

    A PCI NIC whose netdev is not in this netns and that has no RDMA device is listed only when it
    is in `attached` (device names the worker has in pods): otherwise its netdev lives in another
    network namespace (e.g. the machine's, seen from a node's pod) and nothing here can hand it out.
    Such NICs' addresses are added to `withheld`, for the caller to report.

    `facts_cache` keeps per-netdev sysfs facts between scans (keyed by ifindex and name, so a
    renamed or re-created link is read again); entries of vanished links are dropped.
    """
    uplinks = snap.uplinks
    cache = facts_cache if facts_cache is not None else {}
    live = {(lk.index, lk.name) for lk in snap.links}
    for key in [k for k in cache if k not in live]:
        del cache[key]
    devices: dict[str, Device] = {}
    pci_cache: dict[str, PciInfo | None] = {}

    def pci(address: str) -> PciInfo | None:
        if address not in pci_cache:
            pci_cache[address] = sysfs.pci_info(address)
        return pci_cache[address]

    def add(dev: Device) -> None:
        if dev.name in devices:
            log.warning("device name collision; second device skipped", extra={"device": dev.name})
            return
        devices[dev.name] = dev

    claimed_pci: set[str] = set()
    for link in sorted(snap.links, key=lambda lk: lk.index):
        if link.link_type == "loopback" or not link.name:
            continue
        nf = cache.get((link.index, link.name))
        if nf is None:
            nf = cache[(link.index, link.name)] = netdev_sysfs(sysfs, link)
        address = link.parent_dev if link.parent_bus == "pci" and is_pci_address(link.parent_dev) else ""
        address = address or nf.pci_address
        virtual = nf.virtual if nf.virtual is not None else not (link.parent_bus or address)
        attrs: dict[str, AttrValue] = {}
        info = pci(address) if address else None
        if info is not None:
            attrs.update(pci_attributes(info))
        rdma = nf.rdma_device or (info.rdma_devices[0] if info and info.rdma_devices else "")
        attrs.update(rdma_attributes(rdma))
        attrs.update(link_attributes(LinkFacts(link, virtual)))
        if address and address not in claimed_pci:
            claimed_pci.add(address)
            name = pci_device_name(address)
        else:
            name = netdev_device_name(link.name)
        allocatable = link.index not in uplinks and not _excluded_by_name(link.name, options.exclude)
        add(Device(name, link.name, address, rdma, allocatable, attrs))

    # PCI NICs without a netdev here (bound to a driver; netdev in a pod, in another netns or not
    # created yet): the worker can hand out an RDMA device, or give back what it attached.
    for address in sysfs.pci_network_devices():
        if address in claimed_pci:
            continue
        info = pci(address)
        if info is None:
            continue
        rdma = info.rdma_devices[0] if info.rdma_devices else ""
        if not rdma and pci_device_name(address) not in attached:
            if withheld is not None:
                withheld.add(address)
            continue
        claimed_pci.add(address)
        attrs = {**pci_attributes(info), **rdma_attributes(rdma)}
        add(Device(pci_device_name(address), "", address, rdma, True, attrs))

    # RDMA devices no netdev or PCI NIC accounts for (IB-only HCAs, eRDMA with PCI class 0x00ff).
    known_rdma = {d.rdma_device for d in devices.values() if d.rdma_device}
    for rdma, address in sysfs.rdma_devices().items():
        if rdma in known_rdma or (address and address in claimed_pci):
            continue
        attrs = rdma_attributes(rdma)
        info = pci(address) if address else None
        if info is not None:
            attrs = {**pci_attributes(info), **attrs}
            claimed_pci.add(address)
        name = pci_device_name(address) if info is not None else netdev_device_name(rdma)
        add(Device(name, "", address if info else "", rdma, True, attrs))

    out = []
    for name in sorted(devices):
        dev = devices[name]
        if options.cloud is not None:
            dev.attributes = {**options.cloud(identifiers(dev)), **dev.attributes}
        dev.attributes = enforce_limits(dev.attributes, device=name)
        if dev.allocatable and not options.filter.allows(dev.attributes, device=name):
            dev.allocatable = False
        if dev.allocatable and dev.ifname and options.sharing.shared(dev.attributes, device=name):
            dev.shared_capacity = options.sharing.capacity()
        out.append(dev)
    return out


def identifiers(dev: Device) -> DeviceIdentifiers:
    """What a cloud provider matches a device by (its MAC, PCI address, interface name)."""
    mac = dev.attributes.get("dra.net/mac")
    return DeviceIdentifiers(
        name=dev.ifname or dev.name,
        mac_address=mac if isinstance(mac, str) else "",
        pci_address=dev.pci_address,
    )
