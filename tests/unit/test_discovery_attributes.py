import socket

from dranet.services.discovery.attributes import (
    MAX_ATTRIBUTES,
    LinkFacts,
    enforce_limits,
    is_qualified_name,
    join_limited,
    link_attributes,
    pci_attributes,
    rdma_attributes,
    truncate_utf8,
)
from dranet.services.discovery.model import Address, AttrValue, LinkInfo, PciInfo


def test_link_attributes_upstream_names() -> None:
    link = LinkInfo(
        index=3,
        name="eth1",
        kind="",
        mac="aa:bb:cc:dd:ee:ff",
        mtu=9000,
        operstate="UP",
        link_type="ether",
        alias="uplink-b",
        addresses=(
            Address(socket.AF_INET, "10.0.0.2/24", 0),
            Address(socket.AF_INET6, "2001:db8::2/64", 0),
            Address(socket.AF_INET6, "fe80::1/64", 253),
        ),
    )
    attrs = link_attributes(LinkFacts(link, virtual=False))
    assert attrs == {
        "dra.net/ifName": "eth1",
        "dra.net/virtual": False,
        "dra.net/type": "device",
        "dra.net/mac": "aa:bb:cc:dd:ee:ff",
        "dra.net/mtu": 9000,
        "dra.net/state": "up",
        "dra.net/encapsulation": "ether",
        "dra.net/alias": "uplink-b",
        "dra.net/ipv4": "10.0.0.2/24",
        "dra.net/ipv6": "2001:db8::2/64",
        "dra.net/ebpf": False,
    }


def test_ebpf_attributes_as_upstream() -> None:
    """`ebpf` on every netdev; tc filter and tcx program names sorted, comma-joined, only when
    there are some, cut at a name boundary within 64 bytes."""
    link = LinkInfo(
        index=3,
        name="dummy0",
        tc_filters=("dummy_bpf.o:[classifier]", "dummy_bpf.o:[classifier]"),
        tcx_programs=("handle_ingress", "handle_egress"),
    )
    attrs = link_attributes(LinkFacts(link, virtual=True))
    assert attrs["dra.net/ebpf"] is True
    assert attrs["dra.net/tcFilterNames"] == "dummy_bpf.o:[classifier]"
    assert attrs["dra.net/tcxProgramNames"] == "handle_egress,handle_ingress"
    only_tcx = link_attributes(LinkFacts(LinkInfo(index=4, name="d1", tcx_programs=("p",)), True))
    assert only_tcx["dra.net/ebpf"] is True and "dra.net/tcFilterNames" not in only_tcx
    many = tuple(f"prog_{i:02d}_abcdefgh" for i in range(8))
    cut = link_attributes(LinkFacts(LinkInfo(index=5, name="d2", tcx_programs=many), True))
    value = cut["dra.net/tcxProgramNames"]
    assert isinstance(value, str) and len(value) <= 64 and value.split(",") == list(many[:3])


def test_address_lists_cut_at_a_boundary_within_64_bytes() -> None:
    addrs = tuple(Address(socket.AF_INET, f"10.0.{i}.1/24", 0) for i in range(20))
    attrs = link_attributes(LinkFacts(LinkInfo(index=1, name="kube-ipvs0", addresses=addrs), True))
    v4 = attrs["dra.net/ipv4"]
    assert isinstance(v4, str)
    assert len(v4.encode()) <= 64
    assert all(part.endswith("/24") for part in v4.split(","))
    assert v4.split(",") == sorted(a.cidr for a in addrs)[: len(v4.split(","))]


def test_join_limited_exactly_at_limit() -> None:
    item = "a" * 31
    assert join_limited([item, item]) == item + "," + item  # 63 bytes
    assert join_limited([item, item + "bb"]) == item  # 65 would not fit
    assert join_limited(["x" * 65]) == ""


def test_truncate_utf8_never_splits_a_character() -> None:
    assert truncate_utf8("a" * 64) == "a" * 64
    s = "é" * 40  # 80 bytes
    cut = truncate_utf8(s)
    assert len(cut.encode()) <= 64 and cut == "é" * 32
    s = "a" + "é" * 40
    assert truncate_utf8(s) == "a" + "é" * 31


def test_pci_attributes() -> None:
    pci = PciInfo(
        address="0000:8a:00.0",
        vendor_id="0x15b3",
        device_id="0x101d",
        subsystem_id="0x0016",
        numa_node=1,
        pcie_root="pci0000:80",
        sriov_totalvfs=8,
        sriov_numvfs=2,
    )
    attrs = pci_attributes(pci)
    assert attrs["dra.net/pciAddress"] == "0000:8a:00.0"
    assert attrs["dra.net/pciVendor"] == attrs["dra.net/pciDevice"] == "unknown"  # no names: ghw's word
    assert attrs["dra.net/pciSubsystem"] == "0016"  # bare lowercase hex, as upstream
    assert attrs["dra.net/numaNode"] == 1
    assert attrs["resource.kubernetes.io/numaNode"] == 1
    assert attrs["resource.kubernetes.io/pcieRoot"] == "pci0000:80"
    assert attrs["dra.net/sriov"] is True and attrs["dra.net/sriovVfs"] == 2
    assert "dra.net/isSriovVf" not in attrs
    vf = pci_attributes(PciInfo(address="0000:8a:00.2", is_vf=True, vendor_name="Mellanox Technologies"))
    assert vf["dra.net/isSriovVf"] is True and vf["dra.net/sriov"] is False
    assert vf["dra.net/pciVendor"] == "Mellanox Technologies"
    assert "resource.kubernetes.io/numaNode" not in vf


def test_rdma_attributes() -> None:
    assert rdma_attributes("") == {"dra.net/rdma": False}
    assert rdma_attributes("mlx5_0") == {"dra.net/rdma": True, "dra.net/rdmaDevice": "mlx5_0"}


def test_qualified_names() -> None:
    for ok in ["dra.net/ifName", "resource.kubernetes.io/pcieRoot", "plain", "a" * 32, "x.y/" + "b" * 32]:
        assert is_qualified_name(ok), ok
    for bad in [
        "",
        "dra.net/",
        "/x",
        "dra.net/if-name",
        "Dra.Net/x",
        "a" * 33,
        "d/" + "b" * 33,
        "a/b/c",
        "x" * 64 + "/a",
        "dra.net/9lives",
        "plain\n",
        "dra.net\n/x",
    ]:
        assert not is_qualified_name(bad), bad


def test_enforce_limits_at_and_over() -> None:
    attrs: dict[str, AttrValue] = {f"dra.net/a{i}": i for i in range(MAX_ATTRIBUTES)}
    assert enforce_limits(attrs) == attrs  # exactly 32 is fine
    attrs["dra.net/ifName"] = "eth0"  # 33: the lowest priority unknown one goes
    out = enforce_limits(attrs)
    assert len(out) == MAX_ATTRIBUTES and out["dra.net/ifName"] == "eth0"
    assert enforce_limits({"dra.net/s": "x" * 64})["dra.net/s"] == "x" * 64
    assert enforce_limits({"dra.net/s": "x" * 65})["dra.net/s"] == "x" * 64
    assert enforce_limits({"bad name": 1, "dra.net/big": 2**63, "dra.net/ok": True}) == {"dra.net/ok": True}


def test_enforce_limits_counts_capacities() -> None:
    attrs = {f"dra.net/a{i}": i for i in range(MAX_ATTRIBUTES)}
    assert len(enforce_limits(attrs, capacities=2)) == MAX_ATTRIBUTES - 2


def test_known_attributes_beat_unknown_ones() -> None:
    attrs: dict[str, AttrValue] = {f"vendor.example.com/x{i}": i for i in range(40)}
    attrs.update(
        {"dra.net/ifName": "eth0", "dra.net/mtu": 1500, "resource.kubernetes.io/pcieRoot": "pci0000:00"}
    )
    out = enforce_limits(attrs)
    assert {"dra.net/ifName", "dra.net/mtu", "resource.kubernetes.io/pcieRoot"} <= set(out)
    assert len(out) == MAX_ATTRIBUTES
