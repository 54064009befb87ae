"""The bus between the four services: ZeroMQ over ipc:// with msgpack bodies (see docs/bus.md)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dranet.bus.client import BusClient
    from dranet.bus.messages import BusError, ErrorCode
    from dranet.bus.pubsub import Publisher, Subscriber
    from dranet.bus.server import BusServer, RequestContext

__all__ = ["BusClient", "BusError", "BusServer", "ErrorCode", "Publisher", "RequestContext", "Subscriber"]

# Imported on first use: the CDI hook runs on every container start of a claimed pod and needs
# only the client, not the server, pubsub and metrics.
_WHERE = {
    "BusClient": "dranet.bus.client",
    "BusError": "dranet.bus.messages",
    "ErrorCode": "dranet.bus.messages",
    "Publisher": "dranet.bus.pubsub",
    "Subscriber": "dranet.bus.pubsub",
    "BusServer": "dranet.bus.server",
    "RequestContext": "dranet.bus.server",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'dranet.bus' has no attribute {name!r}")
    return getattr(importlib.import_module(_WHERE[name]), name)
