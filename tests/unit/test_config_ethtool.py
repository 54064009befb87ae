"""ethtool names in a claim against a device's feature table: upstream's short and long names,
groups, unknown and fixed features (pure)."""

from __future__ import annotations

import pytest

from dranet.config import ConfigError, FeatureTable, check_private_flags, resolve_features
from dranet.config.ethtool import LEGACY_FEATURES, feature_members

# A veth on the 6.18 kernel here (the tcp segmentation group has five members, accecn among them).
VETH = FeatureTable(
    features={
        "rx-checksum": True,
        "rx-gro": False,
        "rx-lro": False,
        "rx-vlan-hw-parse": True,
        "tx-checksum-ip-generic": True,
        "tx-checksum-ipv4": False,
        "tx-generic-segmentation": True,
        "tx-scatter-gather": True,
        "tx-scatter-gather-fraglist": True,
        "tx-tcp-segmentation": True,
        "tx-tcp-ecn-segmentation": True,
        "tx-tcp-mangleid-segmentation": True,
        "tx-tcp6-segmentation": True,
        "tx-tcp-accecn-segmentation": True,
        "tx-udp-segmentation": True,
        "tx-vlan-hw-insert": True,
    },
    fixed=frozenset({"rx-lro", "tx-checksum-ipv4"}),
    private_flags={"legacy-rx": False},
)
TSO_GROUP = [
    "tx-tcp-accecn-segmentation",
    "tx-tcp-ecn-segmentation",
    "tx-tcp-mangleid-segmentation",
    "tx-tcp-segmentation",
    "tx-tcp6-segmentation",
]


def test_every_legacy_name_has_a_short_and_a_long_form() -> None:
    assert len(LEGACY_FEATURES) == 12
    names = [n for short, long, _ in LEGACY_FEATURES for n in (short, long)]
    assert len(set(names)) == 24


@pytest.mark.parametrize("name", ["tso", "tcp-segmentation-offload"])
def test_tcp_segmentation_group_turns_every_member_off(name: str) -> None:
    """accecn included: the old alias list stopped at four members and left it on."""
    assert feature_members(name, VETH.features) == TSO_GROUP
    assert resolve_features({name: False}, VETH) == dict.fromkeys(TSO_GROUP, False)


@pytest.mark.parametrize(
    ("name", "members"),
    [
        ("generic-receive-offload", ["rx-gro"]),
        ("gro", ["rx-gro"]),
        ("rx-checksumming", ["rx-checksum"]),
        ("tx-checksumming", ["tx-checksum-ip-generic", "tx-checksum-ipv4"]),
        ("scatter-gather", ["tx-scatter-gather", "tx-scatter-gather-fraglist"]),
        ("generic-segmentation-offload", ["tx-generic-segmentation"]),
        ("rx-vlan-offload", ["rx-vlan-hw-parse"]),
        ("tx-vlan-offload", ["tx-vlan-hw-insert"]),
        ("rx-gro", ["rx-gro"]),  # the kernel's own name
    ],
)
def test_long_short_and_kernel_names(name: str, members: list[str]) -> None:
    assert feature_members(name, VETH.features) == members


def test_changes_only_what_differs() -> None:
    assert resolve_features({"generic-receive-offload": True, "rx-checksum": True}, VETH) == {"rx-gro": True}


def test_fixed_feature_at_its_value_is_a_no_op() -> None:
    """Upstream's advanced manifest asks large-receive-offload: false, fixed off on veth."""
    assert resolve_features({"large-receive-offload": False}, VETH) == {}


def test_fixed_feature_asked_otherwise_is_refused_with_the_field() -> None:
    with pytest.raises(ConfigError) as err:
        resolve_features({"large-receive-offload": True}, VETH)
    assert err.value.field == "ethtool.features.large-receive-offload"
    assert "rx-lro cannot be changed" in err.value.reason and "fixed off" in err.value.reason


def test_a_group_with_a_fixed_member_that_would_change_is_refused() -> None:
    with pytest.raises(ConfigError) as err:
        resolve_features({"tx": True}, VETH)
    assert err.value.field == "ethtool.features.tx" and "tx-checksum-ipv4" in err.value.reason


@pytest.mark.parametrize("name", ["warp-drive", "udp-fragmentation-offload", "ntuple"])
def test_unknown_feature_is_refused_with_the_field(name: str) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_features({name: True}, VETH)
    assert err.value.field == f"ethtool.features.{name}" and "no such feature" in err.value.reason


def test_private_flags_must_exist() -> None:
    check_private_flags({"legacy-rx": True}, VETH)
    with pytest.raises(ConfigError) as err:
        check_private_flags({"disable-fw-lldp": True}, VETH)
    assert err.value.field == "ethtool.privateFlags.disable-fw-lldp"


def test_wire_round_trip() -> None:
    assert FeatureTable.from_wire(VETH.to_wire()) == VETH
