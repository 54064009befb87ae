"""The serving side of the bus: a ROUTER socket, a dispatcher thread and a pool of handler threads.

Requests are checked (envelope, version, size, deadline, body shape) before a handler runs; every
failure becomes an error reply and the server keeps serving. Duplicates of a request still in flight
are ignored and duplicates of a finished mutating one get the same reply again from the replay cache,
so a client may resend freely. The cache is bounded in entries and in bytes; a read-only op's reply is
not kept (running it again is harmless). Deadlines are on time.monotonic() (see messages.py).
Every ZeroMQ socket is created and closed by the dispatcher thread; handler threads send replies
through one of them under a lock, so stopping never closes a socket under a thread using it
(libzmq aborts then). stop() lets the requests in flight finish first.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from dranet.bus import endpoints
from dranet.bus.messages import (
    MAX_WIRE_BYTES,
    OPS,
    BusError,
    ErrorCode,
    Request,
    check,
    decode_request,
    encode_reply,
    request_id_of,
)
from dranet.bus.policy import ROLES, Peer, PeerPolicy, parse_peer
from dranet.observability import metrics
from dranet.observability.logging import bind

log = logging.getLogger(__name__)

REQUESTS = metrics.counter(
    "dranet_bus_requests_total", "Bus requests served, by op and outcome", ("service", "op", "outcome")
)
LATENCY = metrics.histogram(
    "dranet_bus_request_duration_seconds",
    "Time from a request's arrival to its reply, by op and outcome",
    ("service", "op", "outcome"),
)
# Ops cheap enough to answer on the dispatcher thread (no hop to the pool).
INLINE_OPS = frozenset({"ping", "snapshot", "echo"})


class ReplayCache:
    """Replies of finished mutating requests by id, oldest evicted first, at most `max_entries`
    and `max_bytes` (ids and replies counted); a reply bigger than the byte bound is not kept."""

    def __init__(self, max_entries: int = 2048, max_bytes: int = 8 * 1024 * 1024) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.bytes = 0
        self._replies: OrderedDict[str, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._replies)

    def get(self, req_id: str) -> bytes | None:
        return self._replies.get(req_id)

    def put(self, req_id: str, reply: bytes) -> None:
        size = len(req_id) + len(reply)
        if size > self.max_bytes or req_id in self._replies:
            return
        self._replies[req_id] = reply
        self.bytes += size
        while len(self._replies) > self.max_entries or self.bytes > self.max_bytes:
            old_id, old = self._replies.popitem(last=False)
            self.bytes -= len(old_id) + len(old)


@dataclass
class RequestContext:
    request_id: str
    op: str
    deadline: float
    peer: Peer | None = None  # the caller, as the kernel saw it connect (SO_PEERCRED)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()


Handler = Callable[[dict[str, Any], RequestContext], Mapping[str, Any]]


def _holds_net_admin(pid: int) -> bool:
    """CAP_NET_ADMIN in the process's effective set now (/proc/<pid>/status); False if unreadable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            eff = next((int(line.split()[1], 16) for line in f if line.startswith("CapEff:")), 0)
    except (OSError, ValueError):
        return False
    return bool(eff >> 12 & 1)  # CAP_NET_ADMIN


class BusServer:
    def __init__(
        self,
        runtime_dir: str | Path,
        service: str,
        handlers: Mapping[str, Handler],
        *,
        workers: int = 8,
        context: zmq.Context[Any] | None = None,
        policy: PeerPolicy | None = None,
    ) -> None:
        """policy: who may call which op (dranet/bus/policy.py); the default knows no service uid,
        so root may call everything and any other uid only the open ops."""
        for op in handlers:
            if op not in OPS:
                raise ValueError(f"op {op!r} is not declared in dranet.bus.messages.OPS")
        self.service = service
        self.handlers = dict(handlers)
        self.policy = policy or PeerPolicy({})
        self.path = endpoints.rpc_path(runtime_dir, service)
        self._ctx = context or zmq.Context.instance()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"bus-{service}")
        self._inflight: set[str] = set()
        self.replay_cache = ReplayCache()
        self._replies_addr = f"inproc://bus-replies-{service}-{id(self)}"
        self._push: zmq.Socket[Any] | None = None  # handler threads' way to the dispatcher
        self._push_lock = threading.Lock()
        self._busy = 0  # requests handed to the pool and not finished
        self._idle = threading.Condition()
        self._draining = threading.Event()
        self._closed_to_new = threading.Event()  # the dispatcher takes no new request any more
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        endpoints.ensure_runtime_dir(self.path.parent)
        self._thread = threading.Thread(target=self._run, name=f"bus-server-{self.service}", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error:
            raise self._error

    def stop(self, drain: float = 10.0) -> None:
        """Stop taking requests, let those in flight finish and get their replies (up to `drain`
        seconds), then close. After this no handler runs, so the service may close what they use."""
        self._draining.set()
        end = time.monotonic() + drain
        if self._thread is not None and self._thread.is_alive():
            # A request the dispatcher is receiving right now still counts: wait until it has
            # stopped listening, or that request's handler could start after the drain below.
            self._closed_to_new.wait(drain)
        with self._idle:
            self._idle.wait_for(lambda: self._busy == 0, timeout=max(end - time.monotonic(), 0))
            if self._busy:
                log.warning("bus: stopping with %d requests still running", self._busy)
        self._stop.set()
        if self._thread:
            self._thread.join()
        self._pool.shutdown(wait=False, cancel_futures=True)
        endpoints.remove_stale(self.path)

    # ------------------------------------------------------------ dispatcher
    def _run(self) -> None:
        try:
            router = self._ctx.socket(zmq.ROUTER)
            router.setsockopt(zmq.LINGER, 0)
            router.setsockopt(zmq.MAXMSGSIZE, MAX_WIRE_BYTES)
            router.setsockopt(zmq.ROUTER_MANDATORY, 0)
            endpoints.remove_stale(self.path)
            router.bind(endpoints.ipc(self.path))
            self.path.chmod(endpoints.SOCKET_MODE)
            replies = self._ctx.socket(zmq.PULL)
            replies.setsockopt(zmq.RCVHWM, 0)
            replies.bind(self._replies_addr)
            push = self._ctx.socket(zmq.PUSH)
            push.setsockopt(zmq.SNDHWM, 0)  # never blocks while `replies` is bound: no lock held long
            push.setsockopt(zmq.LINGER, 0)
            push.connect(self._replies_addr)
            self._push = push
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(replies, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                if self._draining.is_set() and router in dict(poller.sockets):
                    poller.unregister(router)  # new requests wait for the next instance
                    self._closed_to_new.set()
                for sock, _ in poller.poll(100):
                    if sock is router:
                        self._receive(router)
                    else:
                        self._forward(replies, router)
        finally:
            with self._push_lock:
                push.close(0)
                self._push = None
            try:
                while replies.poll(0):  # replies of the drained requests not forwarded yet
                    self._forward(replies, router)
            finally:
                router.close(0)
                replies.close(0)

    def _forward(self, replies: zmq.Socket[Any], router: zmq.Socket[Any]) -> None:
        ident, req_id, op, data = replies.recv_multipart()
        self._finish(req_id.decode(), op.decode(), data)
        router.send_multipart([ident, data])

    def _receive(self, router: zmq.Socket[Any]) -> None:
        frames = router.recv_multipart(copy=False)
        if len(frames) != 2:
            log.warning("bus: dropped a message with %d frames (want identity + body)", len(frames))
            return
        ident, data = frames[0].bytes, frames[1].bytes
        try:
            peer = parse_peer(str(frames[1].get("Peer-Address")))
        except zmq.ZMQError:  # not an ipc:// connection: no credentials
            peer = None
        received = time.monotonic()
        try:
            req = decode_request(data)
        except BusError as err:
            log.warning("bus: refused a malformed request: %s", err.message, extra={"code": err.code})
            REQUESTS.labels(service=self.service, op="?", outcome=err.code).inc()
            router.send_multipart([ident, encode_reply(request_id_of(data), error=err)])
            return
        if not self.policy.allows(req.op, peer, _holds_net_admin):
            refusal = BusError(
                ErrorCode.NOT_ALLOWED,
                f"{self.service} refuses {req.op!r} from {peer or 'an unidentified peer'}: "
                f"that op is for {', '.join(sorted(ROLES.get(req.op, ()))) or 'no one'} "
                f"(bus peer policy, --service-uids)",
            )
            log.warning(
                "bus: refused a request outside the caller's role",
                extra={
                    "op": req.op,
                    "peer_uid": peer.uid if peer else None,
                    "peer_pid": peer.pid if peer else None,
                },
            )
            REQUESTS.labels(service=self.service, op=req.op, outcome=refusal.code).inc()
            router.send_multipart([ident, encode_reply(req.id, error=refusal)])
            return
        cached = self.replay_cache.get(req.id)
        if cached is not None:  # a resend of something answered: same answer, no new work
            router.send_multipart([ident, cached])
            return
        if req.id in self._inflight:  # a resend while we work on it: the reply is coming
            return
        if req.op in INLINE_OPS:
            router.send_multipart([ident, self._finish(req.id, req.op, self._handle(req, received, peer))])
            return
        self._inflight.add(req.id)
        with self._idle:
            self._busy += 1
        self._pool.submit(self._work, ident, req, received, peer)

    def _finish(self, req_id: str, op: str, data: bytes) -> bytes:
        self._inflight.discard(req_id)
        spec = OPS.get(op)
        if spec is not None and not spec.read_only:
            self.replay_cache.put(req_id, data)
        return data

    def _work(self, ident: bytes, req: Request, received: float, peer: Peer | None) -> None:
        try:
            data = self._handle(req, received, peer)
            with self._push_lock:
                if self._push is not None:  # None: stopped after the drain wait; the client resends
                    self._push.send_multipart([ident, req.id.encode(), req.op.encode(), data])
        finally:
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()

    def _handle(self, req: Request, received: float, peer: Peer | None) -> bytes:
        outcome = "ok"
        try:
            with bind(request_id=req.id, op=req.op):
                data = encode_reply(req.id, self._call(req, peer))
        except BusError as err:
            outcome = err.code
            data = encode_reply(req.id, error=err)
        except Exception as exc:  # a handler bug must not take the service down
            outcome = ErrorCode.INTERNAL
            log.exception("bus: handler for %s failed", req.op)
            data = encode_reply(req.id, error=BusError(ErrorCode.INTERNAL, f"{req.op} failed: {exc!r}"))
        REQUESTS.labels(service=self.service, op=req.op, outcome=outcome).inc()
        LATENCY.labels(service=self.service, op=req.op, outcome=outcome).observe(time.monotonic() - received)
        return data

    def _call(self, req: Request, peer: Peer | None) -> Mapping[str, Any]:
        handler = self.handlers.get(req.op)
        if handler is None:
            raise BusError(ErrorCode.UNKNOWN_OP, f"{self.service} does not serve {req.op!r}")
        ctx = RequestContext(req.id, req.op, req.deadline, peer)
        if ctx.remaining() <= 0:
            raise BusError(
                ErrorCode.DEADLINE_EXCEEDED, f"{req.op} arrived {-ctx.remaining():.3f}s after its deadline"
            )
        spec = OPS[req.op]
        check(spec.request, req.body)
        result = handler(req.body, ctx)
        try:
            check(spec.result, result, "result")
        except BusError as err:  # our own bug, not the caller's
            raise BusError(
                ErrorCode.INTERNAL, f"{req.op} produced a malformed reply: {err.message}"
            ) from None
        return result
