"""merge_configs: DeviceClass configs first, then the claim's; later wins field by field."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from dranet.config import ConfigError, merge_configs, parse_network_config

CASES: list[tuple[str, list[Any], dict[str, Any]]] = [
    ("nothing", [], {}),
    ("one", [{"interface": {"mtu": 9000}}], {"interface": {"mtu": 9000}}),
    (
        "claim scalar wins",
        [{"interface": {"mtu": 9000}}, {"interface": {"mtu": 1500}}],
        {"interface": {"mtu": 1500}},
    ),
    (
        "nested objects merge",
        [{"interface": {"mtu": 9000, "name": "eth1"}}, {"interface": {"addresses": ["10.0.0.2/24"]}}],
        {"interface": {"mtu": 9000, "name": "eth1", "addresses": ["10.0.0.2/24"]}},
    ),
    (
        "deeper nesting merges",
        [{"interface": {"vrf": {"name": "blue", "table": 100}}}, {"interface": {"vrf": {"table": 200}}}],
        {"interface": {"vrf": {"name": "blue", "table": 200}}},
    ),
    (
        "lists are replaced, not appended",
        [
            {
                "routes": [
                    {"destination": "10.0.0.0/8", "scope": 253},
                    {"destination": "10.1.0.0/16", "scope": 253},
                ]
            },
            {"routes": [{"destination": "10.2.0.0/16", "scope": 253}]},
        ],
        {"routes": [{"destination": "10.2.0.0/16", "scope": 253}]},
    ),
    (
        "empty list replaces",
        [{"routes": [{"destination": "10.0.0.0/8", "scope": 253}]}, {"routes": []}],
        {"routes": []},
    ),
    (
        "addresses replaced",
        [
            {"interface": {"addresses": ["10.0.0.2/24", "10.0.0.3/24"]}},
            {"interface": {"addresses": ["10.0.0.9/24"]}},
        ],
        {"interface": {"addresses": ["10.0.0.9/24"]}},
    ),
    (
        "ethtool maps merge by name",
        [{"ethtool": {"features": {"tso": False, "gro": False}}}, {"ethtool": {"features": {"gro": True}}}],
        {"ethtool": {"features": {"tso": False, "gro": True}}},
    ),
    (
        "null removes",
        [{"interface": {"mtu": 9000, "name": "a"}}, {"interface": {"mtu": None}}],
        {"interface": {"name": "a"}},
    ),
    ("null on missing key", [{"profile": "p"}, {"interface": None}], {"profile": "p"}),
    (
        "object replaces scalar",
        [{"interface": 5}, {"interface": {"mtu": 1500}}],
        {"interface": {"mtu": 1500}},
    ),
    ("scalar replaces object", [{"interface": {"mtu": 1500}}, {"interface": "x"}], {"interface": "x"}),
    ("three layers", [{"profile": "a"}, {"profile": "b"}, {"profile": "c"}], {"profile": "c"}),
    (
        "text layers",
        ['{"interface": {"mtu": 9000}}', b'{"interface": {"name": "eth1"}}', ""],
        {"interface": {"mtu": 9000, "name": "eth1"}},
    ),
    ("empty layer keeps", [{"profile": "a"}, {}], {"profile": "a"}),
]


@pytest.mark.parametrize(("layers", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_merge(layers: list[Any], expected: dict[str, Any]) -> None:
    before = copy.deepcopy(layers)
    assert merge_configs(layers) == expected
    assert layers == before  # inputs untouched


def test_result_does_not_alias_inputs() -> None:
    class_cfg = {"interface": {"addresses": ["10.0.0.2/24"], "vrf": {"name": "blue"}}}
    merged = merge_configs([class_cfg])
    merged["interface"]["addresses"].append("10.0.0.3/24")
    merged["interface"]["vrf"]["name"] = "red"
    assert class_cfg == {"interface": {"addresses": ["10.0.0.2/24"], "vrf": {"name": "blue"}}}


def test_class_defaults_then_claim_overrides_then_parse() -> None:
    device_class = {"interface": {"mtu": 9000, "gsoMaxSize": 65536}, "ethtool": {"features": {"tso": True}}}
    claim = {"interface": {"name": "eth1", "mtu": 1500, "addresses": ["10.0.0.2/24"]}}
    cfg = parse_network_config(merge_configs([device_class, claim]))
    assert cfg.interface.mtu == 1500
    assert cfg.interface.gso_max_size == 65536
    assert cfg.interface.name == "eth1"
    assert cfg.ethtool is not None and dict(cfg.ethtool.features) == {"tso": True}


def test_claim_switching_to_dhcp_must_drop_class_addresses() -> None:
    device_class = {"interface": {"addresses": ["10.0.0.2/24"]}}
    with pytest.raises(ConfigError) as info:
        parse_network_config(merge_configs([device_class, {"interface": {"dhcp": True}}]))
    assert info.value.field == "interface.dhcp"
    cfg = parse_network_config(
        merge_configs([device_class, {"interface": {"dhcp": True, "addresses": None}}])
    )
    assert cfg.interface.dhcp and cfg.interface.addresses == ()


@pytest.mark.parametrize("layer", [[1], 5, None])
def test_layer_must_be_an_object(layer: Any) -> None:
    with pytest.raises(ConfigError) as info:
        merge_configs([{}, layer])
    assert info.value.field == "" and "#1" in info.value.reason


def test_bad_text_layer() -> None:
    with pytest.raises(ConfigError) as info:
        merge_configs(["{"])
    assert "invalid JSON" in info.value.reason
