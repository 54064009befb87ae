"""dra's inventory cache: filled by get_inventory, replaced by "inventory" notifications, asked on a miss."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from dranet.services.dra.inventory import InventoryCache
from dranet.services.dra.model import PrepareError

from dranet.bus import BusError


class FakeDiscovery:
    def __init__(self) -> None:
        self.devices: list[dict[str, Any]] = [{"name": "eth1", "ifname": "eth1"}]
        self.calls = 0
        self.down = False

    def call(
        self, op: str, body: Mapping[str, Any] | None = None, *, timeout: float | None = None
    ) -> dict[str, Any]:
        assert op == "get_inventory"
        self.calls += 1
        if self.down:
            raise BusError("timeout", "no reply from discovery")
        return {"generation": self.calls, "devices": list(self.devices)}


def test_first_lookup_asks_discovery_then_uses_the_cache() -> None:
    d = FakeDiscovery()
    inv = InventoryCache(d, min_refresh_interval=3600)
    assert inv.lookup("eth1") == {"name": "eth1", "ifname": "eth1"}
    assert inv.lookup("eth1") is not None
    assert d.calls == 1


def test_notification_replaces_the_cache() -> None:
    d = FakeDiscovery()
    inv = InventoryCache(d, min_refresh_interval=3600)
    inv.on_message("inventory", {"generation": 7, "devices": [{"name": "eth2", "ifname": "enp2s0"}]})
    assert inv.lookup("eth2") == {"name": "eth2", "ifname": "enp2s0"}
    assert inv.generation == 7 and d.calls == 0
    inv.on_message("other-topic", {"devices": []})
    assert inv.lookup("eth2") is not None


def test_miss_refreshes_at_most_once_per_interval() -> None:
    d = FakeDiscovery()
    inv = InventoryCache(d, min_refresh_interval=3600)
    assert inv.lookup("eth9") is None  # first load
    d.devices.append({"name": "eth9", "ifname": "eth9"})
    assert inv.lookup("eth9") is None  # rate-limited: still the cached answer
    assert d.calls == 1
    fast = InventoryCache(d, min_refresh_interval=0)
    assert fast.lookup("eth9") is not None


def test_discovery_down_is_a_retriable_prepare_error() -> None:
    d = FakeDiscovery()
    d.down = True
    with pytest.raises(PrepareError) as exc:
        InventoryCache(d).lookup("eth1")
    assert exc.value.retriable and "discovery" in exc.value.message
