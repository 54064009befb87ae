"""Upstream's e2e claim configurations (tests/upstream_claims/) through our validation: the dra
prepare path, ethtool names checked against a veth's feature table as the worker reads it here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from dranet.services.dra.prepare import prepare_claim

from dranet.config import FeatureTable, parse_network_config

CLAIMS = Path(__file__).parent.parent / "upstream_claims"
# A veth's features on this 6.18 kernel (rx-lro fixed off; the tso group has five members).
VETH = FeatureTable(
    features={
        "rx-checksum": True,
        "rx-gro": False,
        "rx-lro": False,
        "tx-generic-segmentation": True,
        "tx-tcp-segmentation": True,
        "tx-tcp-ecn-segmentation": True,
        "tx-tcp-mangleid-segmentation": True,
        "tx-tcp6-segmentation": True,
        "tx-tcp-accecn-segmentation": True,
    },
    fixed=frozenset({"rx-lro"}),
)


def claim(params: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": "c", "namespace": "default", "uid": "claim-1"},
        "status": {
            "reservedFor": [{"resource": "pods", "name": "p", "uid": "pod-1"}],
            "allocation": {
                "devices": {
                    "results": [
                        {"request": "req", "driver": "dra.net", "pool": "node-a", "device": "dummy0"}
                    ],
                    "config": [
                        {
                            "source": "FromClaim",
                            "requests": [],
                            "opaque": {"driver": "dra.net", "parameters": params},
                        }
                    ],
                }
            },
        },
    }


@pytest.mark.parametrize("path", sorted(CLAIMS.glob("*.json")), ids=lambda p: p.stem)
def test_upstream_claim_config_prepares(path: Path) -> None:
    params = json.loads(path.read_text())
    prepared = prepare_claim(
        claim(params),
        driver="dra.net",
        node_name="node-a",
        inventory={"dummy0": {"name": "dummy0", "ifname": "dummy0", "allocatable": True}}.get,
        features=lambda _ifname: VETH,
    )
    (device,) = prepared.devices
    assert parse_network_config(device.config) == parse_network_config(params)


def test_every_upstream_claim_is_here() -> None:
    assert len(list(CLAIMS.glob("*.json"))) == 15
