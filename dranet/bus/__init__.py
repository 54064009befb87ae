"""The bus between the four services: ZeroMQ over ipc:// with msgpack bodies (see docs/bus.md)."""

from dranet.bus.client import BusClient
from dranet.bus.messages import BusError, ErrorCode
from dranet.bus.pubsub import Publisher, Subscriber
from dranet.bus.server import BusServer, RequestContext

__all__ = ["BusClient", "BusError", "BusServer", "ErrorCode", "Publisher", "RequestContext", "Subscriber"]
