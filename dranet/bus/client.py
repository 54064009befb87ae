"""The calling side of the bus: DEALER sockets from a small pool, resends until the deadline.

A reply can be lost (the server restarted, the connection dropped); the client resends the same
request (same id) with growing intervals until its deadline. The server answers a resend of a
finished request from its replay cache (mutating ops) or runs it again (read-only ops), and
ignores a resend of one in flight, so a resend never does a mutation twice in one server life, and
every op is idempotent across restarts.

Sockets: a call checks a socket out of the client's pool (or opens one) and holds it alone for the
call, so replies never cross between concurrent calls. At the end the socket goes back to the pool,
which keeps at most `max_idle`; any beyond are closed. A call that ended without its reply (timeout,
abort) closes its socket instead: a late reply or a queued resend dies with it. So a client holds at
most max_idle sockets plus one per call in progress, whatever the number of threads that used it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import zmq

from dranet.backoff import Backoff
from dranet.bus import endpoints
from dranet.bus.messages import (
    MAX_MESSAGE_BYTES,
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
MAX_IDLE_SOCKETS = 4


class BusClient:
    def __init__(
        self,
        runtime_dir: str | Path,
        service: str,
        *,
        timeout: float = 5.0,
        context: zmq.Context[Any] | None = None,
        max_idle: int = MAX_IDLE_SOCKETS,
    ) -> None:
        self.service = service
        self.timeout = timeout
        self.max_idle = max_idle
        self._endpoint = endpoints.ipc(endpoints.rpc_path(runtime_dir, service))
        self._ctx = context or zmq.Context.instance()
        self._idle: list[zmq.Socket[Any]] = []
        self._busy: set[zmq.Socket[Any]] = set()
        self._stale: set[zmq.Socket[Any]] = set()  # in calls, connected before reconnect()
        self._lock = threading.Lock()
        self._closed = False

    def open_sockets(self) -> int:
        """Sockets this client holds now (idle and in calls)."""
        with self._lock:
            return len(self._idle) + len(self._busy)

    def _checkout(self) -> zmq.Socket[Any]:
        with self._lock:
            if self._closed:
                raise BusError(ErrorCode.UNAVAILABLE, f"the client for {self.service} is closed")
            if self._idle:
                sock = self._idle.pop()
                self._busy.add(sock)
                return sock
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_WIRE_BYTES)
        sock.setsockopt(zmq.RECONNECT_IVL, 50)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, 500)
        sock.connect(self._endpoint)
        with self._lock:
            if self._closed:
                sock.close(0)
                raise BusError(ErrorCode.UNAVAILABLE, f"the client for {self.service} is closed")
            self._busy.add(sock)
        return sock

    def _checkin(self, sock: zmq.Socket[Any], *, reusable: bool) -> None:
        with self._lock:
            self._busy.discard(sock)
            if sock in self._stale:
                self._stale.discard(sock)
                reusable = False
            if reusable and not self._closed and len(self._idle) < self.max_idle:
                self._idle.append(sock)
                return
        sock.close(0)

    def call(
        self, op: str, body: Mapping[str, Any] | None = None, *, timeout: float | None = None
    ) -> dict[str, Any]:
        """Send `op` and return its result; raises BusError (the server's, or `timeout`)."""
        timeout = self.timeout if timeout is None else timeout
        req = new_request(op, body, timeout)
        data = encode_request(req)
        if len(data) > MAX_MESSAGE_BYTES:
            raise BusError(
                ErrorCode.TOO_LARGE, f"{op} request of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}"
            )
        sock = self._checkout()
        answered = False
        try:
            result = self._exchange(sock, op, req.id, req.deadline, data, timeout)
            answered = True
            return result
        except BusError as err:
            answered = err.code != ErrorCode.TIMEOUT  # the server's own error reply
            raise
        except zmq.ZMQError as exc:  # the socket was closed under us (shutdown in another thread)
            raise BusError(ErrorCode.UNAVAILABLE, f"call to {self.service} {op} aborted: {exc}") from None
        finally:
            self._checkin(sock, reusable=answered)

    def _exchange(
        self, sock: zmq.Socket[Any], op: str, req_id: str, deadline: float, data: bytes, timeout: float
    ) -> dict[str, Any]:
        spec = OPS.get(op)
        resend = spec is None or spec.idempotent
        resends = Backoff(_FIRST_RESEND, _MAX_RESEND)
        next_send = 0.0
        while True:
            now = time.monotonic()
            left = deadline - now
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
                next_send = now + resends.next() if resend else float("inf")
            wait = min(left, next_send - time.monotonic())
            if sock.poll(max(0, int(wait * 1000)) + 1, zmq.POLLIN):
                reply = decode_reply(sock.recv())
                if reply.id != req_id:
                    continue  # cannot happen on a socket held by one call; be safe anyway
                if reply.error is not None:
                    raise reply.error
                return reply.result or {}

    def reconnect(self) -> None:
        """Use only new connections from now on: the server knows a caller by the credentials of
        the process when it connected (SO_PEERCRED), so after a switch of uid every old
        connection would still speak as the old uid. Idle sockets close now, those in calls when
        their call ends."""
        with self._lock:
            idle, self._idle = self._idle, []
            self._stale |= self._busy
        for sock in idle:
            sock.close(0)

    def close(self) -> None:
        """Close the idle sockets and refuse new calls (`unavailable`). A call in progress closes
        its own socket when it ends, by its deadline at the latest: a ZeroMQ socket is never
        touched by two threads."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for sock in idle:
            sock.close(0)
