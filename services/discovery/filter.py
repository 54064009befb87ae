"""The --filter CEL expression over a device's attributes (like upstream dranet).

The expression sees `attributes`: a map from qualified name to an object with upstream's field
names (`StringValue`, `IntValue`, `BoolValue`, `VersionValue`); the fields a value does not have
read as their zero value, as they do in Go. The result decides whether the device is offered:
true offers it, false or a non-bool hides it, and an evaluation error keeps it (and is logged), so
a typo in a filter never empties the node.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import cel

from .model import AttrValue

log = logging.getLogger(__name__)

DEFAULT_FILTER = '!("dra.net/type" in attributes) || attributes["dra.net/type"].StringValue != "veth"'


class FilterError(ValueError):
    """The --filter expression does not compile."""


def _cel_value(value: AttrValue) -> dict[str, Any]:
    out: dict[str, Any] = {"StringValue": "", "IntValue": 0, "BoolValue": False, "VersionValue": ""}
    if isinstance(value, bool):
        out["BoolValue"] = value
    elif isinstance(value, int):
        out["IntValue"] = value
    else:
        out["StringValue"] = value
    return out


class DeviceFilter:
    def __init__(self, expression: str = DEFAULT_FILTER) -> None:
        self.expression = expression.strip() or "true"
        self._always = self.expression == "true"
        try:
            self._program = cel.compile(self.expression)
        except Exception as exc:  # the binding raises ValueError or a Rust panic wrapper
            raise FilterError(
                f"--filter {self.expression!r} does not compile: {exc}; fix the expression"
            ) from exc

    def allows(self, attributes: Mapping[str, AttrValue], *, device: str = "") -> bool:
        if self._always:
            return True
        ctx = {"attributes": {k: _cel_value(v) for k, v in attributes.items()}}
        try:
            result = self._program.execute(ctx)
        except Exception as exc:
            log.warning("filter evaluation failed; device kept", extra={"device": device, "error": str(exc)})
            return True
        return result is True
