"""Synthetic sysfs trees for topologies this machine does not have: PCI, NUMA, SR-IOV, RDMA, IB-only."""

import os
import socket
from pathlib import Path

import pytest
from dranet.services.discovery.devices import ScanOptions, build_devices
from dranet.services.discovery.filter import DeviceFilter
from dranet.services.discovery.model import Address, Device, LinkInfo
from dranet.services.discovery.netlinkscan import NetSnapshot
from dranet.services.discovery.sysfs import PciIds, Sysfs

from dranet.uplinks import MAIN_DEFAULT, Uplink


def _link(path: Path, target: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(os.path.relpath(target, path.parent), path)


class Tree:
    """Lays out a sysfs tree the way the kernel does (real dirs under devices/, relative symlinks)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "class/net").mkdir(parents=True)
        (root / "bus/pci/devices").mkdir(parents=True)

    def pci(
        self, path: str, cls: str = "0x020000", driver: str = "mlx5_core", numa: int = 0, **files: str
    ) -> Path:
        dev = self.root / "devices" / path
        dev.mkdir(parents=True)
        bdf = dev.name
        values = {
            "class": cls,
            "vendor": "0x15b3",
            "device": "0x101d",
            "subsystem_device": "0x0016",
            "numa_node": str(numa),
            **files,
        }
        for name, value in values.items():
            (dev / name).write_text(value + "\n")
        if driver:
            drv = self.root / "bus/pci/drivers" / driver
            drv.mkdir(parents=True, exist_ok=True)
            _link(dev / "driver", drv)
        _link(self.root / "bus/pci/devices" / bdf, dev)
        return dev

    def netdev(self, parent: Path, name: str, ifindex: int) -> None:
        d = parent / "net" / name
        d.mkdir(parents=True)
        (d / "ifindex").write_text(f"{ifindex}\n")
        if parent.name != "net":
            _link(d / "device", parent)
        _link(self.root / "class/net" / name, d)

    def virtual_netdev(self, name: str, ifindex: int) -> None:
        d = self.root / "devices/virtual/net" / name
        d.mkdir(parents=True)
        (d / "ifindex").write_text(f"{ifindex}\n")
        _link(self.root / "class/net" / name, d)

    def rdma(self, parent: Path | None, name: str) -> None:
        base = parent if parent is not None else self.root / "devices/virtual"
        d = base / "infiniband" / name
        d.mkdir(parents=True)
        if parent is not None:
            _link(d / "device", parent)
        _link(self.root / "class/infiniband" / name, d)


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    t = Tree(tmp_path / "sys")
    # PF with a netdev, SR-IOV and RoCE on NUMA node 1 behind a root port.
    pf = t.pci("pci0000:80/0000:80:01.0/0000:8a:00.0", numa=1, sriov_totalvfs="8", sriov_numvfs="2")
    t.netdev(pf, "eth1", 3)
    t.rdma(pf, "mlx5_0")
    # A VF whose netdev is not in this namespace (moved into a pod, or not created).
    vf = t.pci("pci0000:80/0000:80:01.0/0000:8a:00.2", numa=1)
    _link(vf / "physfn", pf)
    # Bound to vfio-pci: never a netdev, never ours. A GPU: not a network controller.
    t.pci("pci0000:00/0000:00:05.0", driver="vfio-pci")
    t.pci("pci0000:00/0000:00:06.0", cls="0x030000", driver="nvidia")
    # A NIC with no driver bound.
    t.pci("pci0000:00/0000:00:07.0", driver="")
    # IB-only (eRDMA-like, PCI class 0x00ff) on no NUMA node.
    erdma = t.pci("pci0000:3a/0000:3b:00.0", cls="0x00ff00", driver="erdma", numa=-1)
    t.rdma(erdma, "erdma_0")
    # A software RDMA device with no PCI function, and a plain virtual netdev.
    t.rdma(None, "rxe_0")
    t.virtual_netdev("veth0", 5)
    return t


def test_pci_facts(tree: Tree) -> None:
    sysfs = Sysfs(tree.root)
    assert sysfs.pci_network_devices() == ["0000:8a:00.0", "0000:8a:00.2"]
    pf = sysfs.pci_info("0000:8a:00.0")
    assert pf is not None
    assert pf.numa_node == 1 and pf.pcie_root == "pci0000:80" and pf.driver == "mlx5_core"
    assert (pf.sriov_totalvfs, pf.sriov_numvfs, pf.is_vf) == (8, 2, False)
    assert pf.netdevs == ("eth1",) and pf.rdma_devices == ("mlx5_0",)
    vf = sysfs.pci_info("0000:8a:00.2")
    assert vf is not None and vf.is_vf and vf.netdevs == ()
    erdma = sysfs.pci_info("0000:3b:00.0")
    assert erdma is not None and erdma.numa_node is None and erdma.pcie_root == "pci0000:3a"
    assert sysfs.pci_info("0000:99:00.0") is None


def test_netdev_facts(tree: Tree) -> None:
    sysfs = Sysfs(tree.root)
    assert sysfs.netdev_matches("eth1", 3) and not sysfs.netdev_matches("eth1", 4)
    assert sysfs.netdev_pci_address("eth1") == "0000:8a:00.0"
    assert sysfs.netdev_is_virtual("eth1") is False
    assert sysfs.netdev_is_virtual("veth0") is True
    assert sysfs.netdev_is_virtual("nope") is None
    assert sysfs.netdev_rdma_device("eth1") == "mlx5_0"
    assert sysfs.rdma_devices() == {"erdma_0": "0000:3b:00.0", "mlx5_0": "0000:8a:00.0", "rxe_0": ""}


def test_inventory_from_synthetic_tree(tree: Tree) -> None:
    links = [
        LinkInfo(index=1, name="lo", link_type="loopback"),
        LinkInfo(
            index=2,
            name="eth0",
            mac="02:00:00:00:00:01",
            mtu=1500,
            operstate="UP",
            link_type="ether",
            parent_bus="pci",
            parent_dev="0000:00:03.0",
            addresses=(Address(socket.AF_INET, "192.0.2.2/24", 0),),
        ),
        LinkInfo(index=3, name="eth1", mac="02:00:00:00:00:02", mtu=9000, operstate="UP", link_type="ether"),
        LinkInfo(index=5, name="veth0", kind="veth", link_type="ether"),
        LinkInfo(index=6, name="mlx5_6", kind="macvlan", parent=3, link_type="ether"),
    ]
    snap = NetSnapshot(links=links, uplinks={2: Uplink(2, "eth0", MAIN_DEFAULT, "the main default")})
    # the VF 0000:8a:00.2 has a kernel driver but no netdev here and no RDMA device: attached to
    # a pod by the worker, it is still the node's device; otherwise its netdev lives in another
    # netns (the machine's, seen from a node's pod) and nothing here can hand it out
    withheld: set[str] = set()
    devices = {
        d.name: d
        for d in build_devices(snap, Sysfs(tree.root), ScanOptions(), attached={"pci-0000-8a-00-2"})
    }
    others = build_devices(snap, Sysfs(tree.root), ScanOptions(), withheld=withheld)
    assert {d.name for d in others} == set(devices) - {"pci-0000-8a-00-2"}
    assert withheld == {"0000:8a:00.2"}
    assert sorted(devices) == sorted(
        [
            "pci-0000-00-03-0",
            "pci-0000-8a-00-0",
            "pci-0000-8a-00-2",
            "pci-0000-3b-00-0",
            "net-oj4gkxzq",
            "veth0",
            "net-nvwhqnk7gy",
        ]
    )
    # the uplink (a PCI NIC that only netlink knows about) is listed but not allocatable
    up = devices["pci-0000-00-03-0"]
    assert up.ifname == "eth0" and not up.allocatable and up.attributes["dra.net/ipv4"] == "192.0.2.2/24"
    pf = devices["pci-0000-8a-00-0"]
    assert pf.ifname == "eth1" and pf.allocatable and pf.rdma_device == "mlx5_0"
    a = pf.attributes
    assert a["dra.net/ifName"] == "eth1" and a["dra.net/mtu"] == 9000 and a["dra.net/virtual"] is False
    assert a["resource.kubernetes.io/numaNode"] == 1 and a["resource.kubernetes.io/pcieRoot"] == "pci0000:80"
    assert a["dra.net/sriov"] is True and a["dra.net/sriovVfs"] == 2
    assert a["dra.net/rdma"] is True and a["dra.net/rdmaDevice"] == "mlx5_0"
    vf = devices["pci-0000-8a-00-2"]
    assert vf.ifname == "" and vf.attributes["dra.net/isSriovVf"] is True
    ib = devices["pci-0000-3b-00-0"]
    assert ib.rdma_device == "erdma_0" and ib.attributes["dra.net/rdma"] is True
    assert "resource.kubernetes.io/numaNode" not in ib.attributes
    rxe = devices["net-oj4gkxzq"]  # "rxe_0" is not a DNS label
    assert rxe.rdma_device == "rxe_0" and rxe.pci_address == ""
    veth = devices["veth0"]
    assert veth.attributes["dra.net/virtual"] is True and not veth.allocatable  # default filter
    mv = devices["net-nvwhqnk7gy"]  # macvlan named "mlx5_6", not in sysfs: virtual from netlink
    assert mv.ifname == "mlx5_6" and mv.attributes["dra.net/virtual"] is True and mv.allocatable


def test_exclude_patterns_and_filter(tree: Tree) -> None:
    links = [
        LinkInfo(index=5, name="veth0", kind="veth"),
        LinkInfo(index=7, name="cni0", kind="bridge"),
        LinkInfo(index=8, name="flannel.1", kind="vxlan"),
    ]
    snap = NetSnapshot(links=links)
    got = {d.ifname: d.allocatable for d in build_devices(snap, Sysfs(tree.root), ScanOptions()) if d.ifname}
    assert got == {"veth0": False, "cni0": False, "flannel.1": False}
    opts = ScanOptions(exclude=(), filter=DeviceFilter("true"))
    got = {d.ifname: d.allocatable for d in build_devices(snap, Sysfs(tree.root), opts) if d.ifname}
    assert got == {"veth0": True, "cni0": True, "flannel.1": True}


def test_pci_ids_lookup(tmp_path: Path) -> None:
    ids = tmp_path / "pci.ids"
    ids.write_text(
        "# comment\n15b3  Mellanox Technologies\n\t101d  MT2892 Family [ConnectX-6 Dx]\n"
        "\t\t15b3 0016  subsystem\n8086  Intel Corporation\n"
    )
    db = PciIds(ids)
    assert db.vendor("0x15b3") == "Mellanox Technologies"
    assert db.device("0x15b3", "0x101d") == "MT2892 Family [ConnectX-6 Dx]"
    assert db.device("0x15b3", "0x9999") == ""
    assert PciIds(tmp_path / "missing").vendor("0x15b3") == ""


def test_missing_tree_is_empty(tmp_path: Path) -> None:
    sysfs = Sysfs(tmp_path / "nothing")
    assert sysfs.pci_network_devices() == [] and sysfs.rdma_devices() == {}
    snap = NetSnapshot(links=[LinkInfo(index=2, name="eth0")])
    assert [d.name for d in build_devices(snap, sysfs, ScanOptions())] == ["eth0"]


# Debian's PCI ID database (package pci.ids), what the image ships; `make system-deps` installs it.
DEBIAN_PCI_IDS = Path("/usr/share/misc/pci.ids")


def debian_pci_ids() -> Path:
    if not DEBIAN_PCI_IDS.is_file():
        pytest.fail(f"{DEBIAN_PCI_IDS} is missing: `make system-deps` installs Debian's package pci.ids")
    return DEBIAN_PCI_IDS


def test_pci_attributes_as_upstream_publishes_them(tmp_path: Path) -> None:
    """The same sysfs tree gives upstream's values: pciVendor and pciDevice are the database's names
    (ghw's), "unknown" for an id it does not list, cut at 64 bytes; pciSubsystem is the subsystem
    device id in bare lowercase hex. So a DeviceClass written for upstream selects the same NICs."""
    t = Tree(tmp_path / "sys")
    cx6 = t.pci("pci0000:00/0000:00:02.0/0000:03:00.0")  # 15b3:101d, subsystem 0016
    efa = t.pci(
        "pci0000:00/0000:00:05.0", driver="efa", vendor="0x1d0f", device="0xefa1", subsystem_device="0xEFA1"
    )
    odd = t.pci("pci0000:00/0000:00:06.0", driver="ena", vendor="0x1d0f", device="0xfff7")
    nobody = t.pci("pci0000:00/0000:00:07.0", driver="x", vendor="0x0bad", device="0x0001")
    links = []
    for i, (dev, name) in enumerate(((cx6, "eth1"), (efa, "eth2"), (odd, "eth3"), (nobody, "eth4"))):
        t.netdev(dev, name, 10 + i)
        links.append(LinkInfo(index=10 + i, name=name, link_type="ether"))
    opts = ScanOptions(exclude=(), filter=DeviceFilter("true"))
    devices = build_devices(NetSnapshot(links=links), Sysfs(t.root, pci_ids=debian_pci_ids()), opts)
    got = {
        d.ifname: tuple(d.attributes.get(f"dra.net/{k}") for k in ("pciVendor", "pciDevice", "pciSubsystem"))
        for d in devices
    }
    assert got == {
        "eth1": ("Mellanox Technologies", "MT2892 Family [ConnectX-6 Dx]", "0016"),
        "eth2": ("Amazon.com, Inc.", "Elastic Fabric Adapter (EFA)", "efa1"),
        "eth3": ("Amazon.com, Inc.", "unknown", "0016"),
        "eth4": ("unknown", "unknown", "0016"),
    }
    # the selector of upstream's AWS DeviceClass
    import cel

    efa_class = "device.attributes[\"dra.net\"].pciDevice == 'Elastic Fabric Adapter (EFA)'"
    def in_dra_net(d: Device) -> dict[str, object]:
        return {k.removeprefix("dra.net/"): v for k, v in d.attributes.items() if k.startswith("dra.net/")}

    selected = [
        d.ifname
        for d in devices
        if cel.evaluate(efa_class, {"device": {"attributes": {"dra.net": in_dra_net(d)}}})
    ]
    assert selected == ["eth2"]
