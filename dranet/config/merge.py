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


def merge_configs(configs: Sequence[Mapping[str, Any] | str | bytes]) -> dict[str, Any]:
    """Merge raw JSON configuration objects in precedence order into one new object.

    Later configurations win field by field: nested objects merge recursively, scalars and lists
    are replaced by the later value, and a ``null`` removes the field set by an earlier one.
    The inputs are not modified. Text items are decoded first (same strict JSON rules).
    """
    merged: dict[str, Any] = {}
    for i, layer in enumerate(configs):
        if isinstance(layer, str | bytes | bytearray):
            layer = load_json(layer) if layer.strip() else {}
        if not isinstance(layer, Mapping):
            raise ConfigError("", f"configuration #{i} must be a JSON object, got {type(layer).__name__}")
        check_nesting(layer)
        _merge_into(merged, layer)
    return merged
