"""Layering of raw configurations: DeviceClass configs first, then the claim's; later wins."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from dranet.config.decode import check_nesting, load_json
from dranet.config.errors import ConfigError


def _merge_into(base: dict[str, Any], layer: Mapping[str, Any]) -> None:
    for key, value in layer.items():
        if value is None:
            # JSON merge patch (RFC 7386): null removes what an earlier layer set.
            base.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge_into(base[key], value)
        elif isinstance(value, Mapping):
            base[key] = {}
            _merge_into(base[key], value)
        else:
            # Scalars and lists are replaced whole: a claim's routes replace the class's routes.
            base[key] = copy.deepcopy(value)


# Fields that say one thing under two names: a layer that sets one replaces what an earlier layer
# set under the other (upstream's addressing replaced the dhcp boolean, kubernetes-sigs/dranet#241),
# so a claim's {"dhcp": false} or {"addressing": "Static"} overrides a provider's DHCP (#316).
_ALIASES = (("interface", "dhcp", "addressing"), ("interface", "addressing", "dhcp"))


def _drop_aliases(base: dict[str, Any], layer: Mapping[str, Any]) -> None:
    for obj, name, other in _ALIASES:
        given, held = layer.get(obj), base.get(obj)
        if isinstance(given, Mapping) and isinstance(held, dict) and given.get(name) is not None:
            if other not in given:
                held.pop(other, None)


def merge_configs(configs: Sequence[Mapping[str, Any] | str | bytes]) -> dict[str, Any]:
    """Merge raw JSON configuration objects in precedence order into one new object.

    Later configurations win field by field: nested objects merge recursively, scalars and lists
    are replaced by the later value, and a ``null`` removes the field set by an earlier one.
    ``interface.dhcp`` and ``interface.addressing`` count as one field (the later layer's wins).
    The inputs are not modified. Text items are decoded first (same strict JSON rules).
    """
    merged: dict[str, Any] = {}
    for i, layer in enumerate(configs):
        if isinstance(layer, str | bytes | bytearray):
            layer = load_json(layer) if layer.strip() else {}
        if not isinstance(layer, Mapping):
            raise ConfigError("", f"configuration #{i} must be a JSON object, got {type(layer).__name__}")
        check_nesting(layer)
        _drop_aliases(merged, layer)
        _merge_into(merged, layer)
    return merged
