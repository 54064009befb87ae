"""Upstream's newer claim fields: `interface.addressing` (kubernetes-sigs/dranet#241, replacing the
`dhcp` boolean) and an explicit false or 0 that overrides a provider's value (#316). Each is
accepted with upstream's meaning or refused with the field and the reason, never ignored."""

from __future__ import annotations

from typing import Any

import pytest
from dranet.services.dra.prepare import PrepareError, prepare_claim

from dranet.config import ConfigError, merge_configs, network_config_to_dict, parse_network_config

from .test_dra_prepare import DRIVER, INVENTORY, NODE, claim_json, config


@pytest.mark.parametrize(
    ("interface", "dhcp"),
    [
        ({"addressing": "Static"}, False),
        ({"addressing": "Static", "addresses": ["10.0.0.2/24"]}, False),
        ({"addressing": "DHCP"}, True),
        ({"addressing": ""}, False),  # upstream: empty is the default, Static
        ({"addressing": None, "dhcp": True}, True),
        ({"dhcp": True}, True),  # the deprecated form still means DHCP
        ({"dhcp": False}, False),
    ],
)
def test_addressing_modes(interface: dict[str, Any], dhcp: bool) -> None:
    cfg = parse_network_config({"interface": interface})
    assert cfg.interface.dhcp is dhcp
    # The canonical form every process after dra reads (checkpoint, grant, provider).
    assert parse_network_config(network_config_to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    ("interface", "field", "reason"),
    [
        ({"addressing": "Unnumbered"}, "interface.addressing", "only for a sub-interface"),
        ({"addressing": "dhcp"}, "interface.addressing", "did you mean 'DHCP'?"),
        ({"addressing": "SLAAC"}, "interface.addressing", "not an addressing mode"),
        ({"addressing": True}, "interface.addressing", "string"),
        ({"addressing": "DHCP", "dhcp": True}, "interface.dhcp", "deprecated"),
        ({"addressing": "Static", "dhcp": False}, "interface.dhcp", "deprecated"),
        ({"addressing": "DHCP", "addresses": ["10.0.0.2/24"]}, "interface.addressing", "mutually exclusive"),
        ({"dhcp": True, "addresses": ["10.0.0.2/24"]}, "interface.dhcp", "mutually exclusive"),
    ],
)
def test_addressing_refusals_name_the_field(interface: dict[str, Any], field: str, reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_network_config({"interface": interface})
    assert err.value.field == field
    assert reason in str(err.value)


def test_a_later_layer_replaces_dhcp_with_addressing_and_back() -> None:
    """dhcp and addressing are one field across layers: the later layer's wins, whichever name
    each used (otherwise a provider's dhcp and a claim's addressing would be refused together)."""
    provider = {"interface": {"dhcp": True, "mtu": 1400}}
    merged = merge_configs([provider, {"interface": {"addressing": "Static", "addresses": ["10.0.0.2/24"]}}])
    assert merged == {"interface": {"mtu": 1400, "addressing": "Static", "addresses": ["10.0.0.2/24"]}}
    merged = merge_configs([{"interface": {"addressing": "DHCP"}}, {"interface": {"dhcp": False}}])
    assert merged == {"interface": {"dhcp": False}}
    assert merge_configs([{"interface": {"addressing": "DHCP"}}, {"interface": {"mtu": 1300}}]) == {
        "interface": {"addressing": "DHCP", "mtu": 1300}
    }


def prepared_config(provider: dict[str, Any], claim: dict[str, Any]) -> dict[str, Any]:
    """The configuration dra prepares when a profile provider answers `provider` under the claim's."""
    out = prepare_claim(
        claim_json(configs=[config(claim)]),
        driver=DRIVER,
        node_name=NODE,
        inventory=INVENTORY.get,
        providers=lambda ids, cfg: [provider],
    )
    return out.devices[0].config


@pytest.mark.parametrize(
    ("provider", "claim", "want"),
    [
        ({"interface": {"forwarding": True}}, {"interface": {"forwarding": False}}, {"forwarding": False}),
        ({"interface": {"disableEbpfPrograms": True}}, {"interface": {"disableEbpfPrograms": False}}, {}),
        ({"interface": {"arpIgnore": 2}}, {"interface": {"arpIgnore": 0}}, {"arpIgnore": 0}),
        ({"interface": {"arpAnnounce": 2}}, {"interface": {"arpAnnounce": 0}}, {"arpAnnounce": 0}),
        ({"interface": {"dhcp": True}}, {"interface": {"dhcp": False}}, {}),
        ({"interface": {"addressing": "DHCP"}}, {"interface": {"dhcp": False}}, {}),
        ({"interface": {"dhcp": True}}, {"interface": {"addressing": "Static"}}, {}),
    ],
)
def test_explicit_false_or_zero_in_the_claim_overrides_the_provider(
    provider: dict[str, Any], claim: dict[str, Any], want: dict[str, Any]
) -> None:
    """kubernetes-sigs/dranet#316: a false or 0 the user wrote is a value, not "unset"."""
    assert prepared_config(provider, {"profile": "p", **claim}).get("interface", {}) == want


def test_provider_addressing_is_refused_like_the_claims() -> None:
    with pytest.raises(PrepareError) as err:
        prepared_config({"interface": {"addressing": "Unnumbered"}}, {"profile": "p"})
    assert "merged with the provider's" in err.value.message and "interface.addressing" in err.value.message
