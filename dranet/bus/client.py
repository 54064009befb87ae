"""The calling side of the bus: a DEALER socket per thread, resends until the deadline.

A reply can be lost (the server restarted, the connection dropped); the client resends the same
request (same id) with growing intervals until its deadline. The server answers a resend of a
finished request from its replay cache and ignores a resend of one in flight, so a resend never
does the work twice in one server life, and every op is idempotent across restarts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import zmq

from dranet.bus import endpoints
from dranet.bus.messages import (
    MAX_WIRE_BYTES,
    OPS,
    BusError,
    ErrorCode,
    decode_reply,
    encode_request,
    new_request,
)

_FIRST_RESEND = 0.25
_MAX_RESEND = 1.0


class BusClient:
    def __init__(
        self,
        runtime_dir: str | Path,
        service: str,
        *,
        timeout: float = 5.0,
        context: zmq.Context[Any] | None = None,
    ) -> None:
        self.service = service
        self.timeout = timeout
        self._endpoint = endpoints.ipc(endpoints.rpc_path(runtime_dir, service))
        self._ctx = context or zmq.Context.instance()
        self._local = threading.local()
        self._sockets: list[zmq.Socket[Any]] = []
        self._lock = threading.Lock()
        self._closed = False

    def _socket(self) -> zmq.Socket[Any]:
        if self._closed:
            raise BusError(ErrorCode.UNAVAILABLE, f"the client for {self.service} is closed")
        sock = getattr(self._local, "sock", None)
        if sock is None:
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_WIRE_BYTES)
            sock.setsockopt(zmq.RECONNECT_IVL, 50)
            sock.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
            sock.connect(self._endpoint)
            self._local.sock = sock
            with self._lock:
                self._sockets.append(sock)
        return sock

    def call(
        self, op: str, body: Mapping[str, Any] | None = None, *, timeout: float | None = None
    ) -> dict[str, Any]:
        """Send `op` and return its result; raises BusError (the server's, or `timeout`)."""
        try:
            return self._call(op, body, timeout)
        except zmq.ZMQError as exc:  # the socket was closed under us (shutdown in another thread)
            raise BusError(ErrorCode.UNAVAILABLE, f"call to {self.service} {op} aborted: {exc}") from None

    def _call(self, op: str, body: Mapping[str, Any] | None, timeout: float | None) -> dict[str, Any]:
        timeout = self.timeout if timeout is None else timeout
        req = new_request(op, body, timeout)
        data = encode_request(req)
        spec = OPS.get(op)
        resend = spec is None or spec.idempotent
        sock = self._socket()
        interval = _FIRST_RESEND
        next_send = 0.0
        while True:
            now = time.time()
            left = req.deadline - now
            if left <= 0:
                raise BusError(
                    ErrorCode.TIMEOUT,
                    f"no reply from {self.service} to {op} within {timeout:.3f}s; "
                    f"is the {self.service} service running? (try `dranet status`)",
                )
            if now >= next_send:
                try:
                    sock.send(data, zmq.NOBLOCK)
                except zmq.Again:
                    pass  # not connected yet: try again at the next interval
                next_send = now + interval if resend else float("inf")
                interval = min(interval * 2, _MAX_RESEND)
            wait = min(left, next_send - time.time())
            if sock.poll(max(0, int(wait * 1000)) + 1, zmq.POLLIN):
                reply = decode_reply(sock.recv())
                if reply.id != req.id:
                    continue  # a late reply to an earlier call that timed out
                if reply.error is not None:
                    raise reply.error
                return reply.result or {}

    def close(self) -> None:
        self._closed = True
        with self._lock:
            for sock in self._sockets:
                sock.close(0)
            self._sockets.clear()
        self._local = threading.local()
