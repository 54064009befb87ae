"""Claims written the way upstream's examples write them parse, and every config round-trips."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from dranet.config import (
    NetworkConfig,
    network_config_to_dict,
    parse_network_config,
    vrf_default_table,
)

# The `parameters` of opaque configs shaped like upstream's test manifests and examples
# (rename + static address, advanced link settings, BIG TCP, VRF and PBR through a router pod,
# a TPU-style node, a profile-only IPAM claim), as YAML the way a user writes them.
EXAMPLES = {
    "basic": """
interface:
  name: "eth99"
  addresses: ["169.254.169.13/24"]
""",
    "advanced": """
interface:
  name: "dranet0"
  addresses: ["169.254.169.14/24"]
  mtu: 4321
  hardwareAddr: "00:11:22:33:44:55"
ethtool:
  features:
    tcp-segmentation-offload: false
    generic-receive-offload: false
    large-receive-offload: false
""",
    "bigtcp": """
interface:
  name: "dranet1"
  mtu: 8896
  gsoMaxSize: 65536
  groMaxSize: 65536
  gsoIPv4MaxSize: 65536
  groIPv4MaxSize: 65536
""",
    "arp": """
interface:
  arpIgnore: 1
  arpAnnounce: 2
""",
    "route": """
interface:
  addresses: ["192.168.50.5/24"]
routes:
  - destination: "10.20.0.0/16"
    gateway: "192.168.50.1"
  - destination: "192.168.60.0/24"
    scope: 253
""",
    "vrf-pod": """
interface:
  name: "eth1"
  addresses: ["10.10.10.1/24"]
  vrf:
    name: "test-vrf"
routes:
  - destination: "0.0.0.0/0"
    gateway: "10.10.10.2"
""",
    "vrf-router": """
interface:
  name: "eth2"
  addresses: ["10.10.20.2/24"]
  forwarding: true
  vrf:
    name: "test-vrf"
""",
    "pbr-pod": """
interface:
  name: "eth1"
  addresses: ["192.168.100.10/24"]
rules:
  - source: "192.168.100.0/24"
    table: 100
    priority: 32000
  - destination: "192.168.200.0/24"
    table: 100
    priority: 32000
routes:
  - destination: "0.0.0.0/0"
    table: 100
    gateway: "192.168.100.2"
""",
    "pbr-router": """
interface:
  name: "eth1"
  addresses: ["192.168.100.2/24"]
  forwarding: true
""",
    "neighbors": """
neighbors:
  - destination: "192.168.1.1"
    hardwareAddr: "aa:bb:cc:dd:ee:ff"
  - destination: "fd00::1"
    hardwareAddr: "aa:bb:cc:dd:ee:01"
""",
    "tpu": """
interface:
  mtu: 8896
  gsoMaxSize: 65536
  groMaxSize: 65536
ethtool:
  privateFlags:
    enable-max-rx-buffer-size: true
""",
    "ebpf": """
interface:
  disableEbpfPrograms: true
""",
    "dhcp": """
interface:
  dhcp: true
""",
    "profile": """
profile: whereabouts-profile
""",
}


def load(name: str) -> dict[str, Any]:
    doc = yaml.safe_load(EXAMPLES[name])
    assert isinstance(doc, dict)
    return doc


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_parses_and_round_trips(name: str) -> None:
    cfg = parse_network_config(load(name))
    as_dict = network_config_to_dict(cfg)
    assert parse_network_config(as_dict) == cfg
    assert parse_network_config(json.dumps(as_dict)) == cfg
    assert network_config_to_dict(parse_network_config(as_dict)) == as_dict


def test_advanced_values() -> None:
    cfg = parse_network_config(load("advanced"))
    assert cfg.interface.name == "dranet0"
    assert cfg.interface.mtu == 4321
    assert cfg.interface.hardware_addr == "00:11:22:33:44:55"
    assert cfg.ethtool is not None
    assert dict(cfg.ethtool.features) == {
        "tcp-segmentation-offload": False,
        "generic-receive-offload": False,
        "large-receive-offload": False,
    }


def test_bigtcp_values() -> None:
    i = parse_network_config(load("bigtcp")).interface
    assert (i.mtu, i.gso_max_size, i.gro_max_size, i.gso_ipv4_max_size, i.gro_ipv4_max_size) == (
        8896,
        65536,
        65536,
        65536,
        65536,
    )


def test_vrf_pods_share_the_table() -> None:
    pod, router = parse_network_config(load("vrf-pod")), parse_network_config(load("vrf-router"))
    assert pod.interface.vrf is not None and router.interface.vrf is not None
    assert pod.interface.vrf.table == router.interface.vrf.table == vrf_default_table("test-vrf")
    assert router.interface.forwarding is True


def test_pbr_values() -> None:
    cfg = parse_network_config(load("pbr-pod"))
    assert [(r.source, r.destination, r.table, r.priority) for r in cfg.rules] == [
        ("192.168.100.0/24", None, 100, 32000),
        (None, "192.168.200.0/24", 100, 32000),
    ]
    assert cfg.routes[0].table == 100 and cfg.routes[0].gateway == "192.168.100.2"


# to_dict output for hand-built documents: what is emitted, what is left out.
TO_DICT: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({}, {}),
    ({"interface": {}}, {}),
    ({"interface": {"dhcp": False, "disableEbpfPrograms": False}}, {}),
    ({"interface": {"forwarding": False}}, {"interface": {"forwarding": False}}),
    ({"interface": {"name": ""}, "profile": ""}, {}),
    (
        {"interface": {"hardwareAddr": "AA-BB-CC-DD-EE-F0"}},
        {"interface": {"hardwareAddr": "aa:bb:cc:dd:ee:f0"}},
    ),
    (
        {"interface": {"vrf": {"name": "blue"}}},
        {"interface": {"vrf": {"name": "blue", "table": vrf_default_table("blue")}}},
    ),
    (
        {"routes": [{"destination": "10.1.2.3/8", "gateway": "192.0.2.1", "scope": 0, "table": 0}]},
        {"routes": [{"destination": "10.0.0.0/8", "gateway": "192.0.2.1"}]},
    ),
    ({"rules": [{"priority": 0}]}, {"rules": [{"priority": 0}]}),
    ({"rules": [{}]}, {"rules": [{}]}),
    ({"ethtool": {}}, {"ethtool": {}}),
    ({"ethtool": {"features": {}, "privateFlags": {"x": True}}}, {"ethtool": {"privateFlags": {"x": True}}}),
]


@pytest.mark.parametrize(("doc", "expected"), TO_DICT)
def test_to_dict(doc: dict[str, Any], expected: dict[str, Any]) -> None:
    cfg = parse_network_config(doc)
    assert network_config_to_dict(cfg) == expected
    assert parse_network_config(expected) == cfg


def test_round_trip_everything_at_once() -> None:
    doc = {
        "profile": "p1",
        "interface": {
            "name": "net1",
            "addresses": ["10.0.0.2/24", "fd00::2/64"],
            "mtu": 9000,
            "hardwareAddr": "02:00:00:00:00:01",
            "gsoMaxSize": 65536,
            "groMaxSize": 65536,
            "gsoIPv4MaxSize": 65536,
            "groIPv4MaxSize": 65536,
            "disableEbpfPrograms": True,
            "forwarding": True,
            "arpIgnore": 8,
            "arpAnnounce": 0,
        },
        "routes": [
            {"destination": "10.1.0.0/16", "gateway": "10.0.0.1", "source": "10.0.0.2", "table": 100},
            {"destination": "10.9.0.0/16", "scope": 253},
            {"destination": "::/0", "gateway": "fe80::1"},
        ],
        "rules": [{"priority": 100, "source": "10.0.0.0/24", "destination": "10.1.0.0/16", "table": 100}],
        "neighbors": [{"destination": "10.0.0.1", "hardwareAddr": "02:00:00:00:00:02"}],
        "ethtool": {"features": {"rx-gro-hw": False}, "privateFlags": {"legacy-rx": True}},
    }
    cfg = parse_network_config(doc)
    assert network_config_to_dict(cfg) == doc
    assert parse_network_config(network_config_to_dict(cfg)) == cfg
    assert cfg != NetworkConfig()
