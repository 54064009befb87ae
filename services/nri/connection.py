"""One NRI connection: the socket I/O around framing.py.

A reader thread splits the trunk into mux frames. Requests on the plugin conn (1) are handled by a
bounded pool of threads, never on the reader: the runtime calls Configure before it answers our
RegisterPlugin (that call waits in the plugin's own thread, so the pool is free to answer), and a
slow handler must not hold up the others. Our own calls go out on the runtime conn (2) with odd,
increasing stream ids and wait for their response. All writes go through one lock, so the frames of
one message are never interleaved with another's (not required, but simple).

Pool size: the runtime sends one request per sandbox or container operation in flight, each from
its own CRI call, so our concurrency is the number of pods the node starts or stops at once. Every
handler returns within the runtime's request timeout (handlers.py budgets it), so REQUEST_WORKERS
threads answer at least REQUEST_WORKERS requests per request timeout even when every one of them
is slow, and a request only queues when that many are in flight. Threads start on demand and stay
(at most REQUEST_WORKERS per connection); the pool is shut down with its connection.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from dranet.services.nri import framing
from dranet.services.nri.framing import TtrpcError

log = logging.getLogger(__name__)

# (service, method, payload) -> response payload; raise TtrpcError for an error status.
RequestHandler = Callable[[str, str, bytes], bytes]
REQUEST_WORKERS = 32


class ConnectionClosed(Exception):
    """The runtime closed the connection (or it broke); every pending call fails with this."""


class _Pending:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.body: bytes | None = None


class Connection:
    def __init__(
        self,
        sock: socket.socket,
        handler: RequestHandler,
        *,
        max_frame_payload: int = framing.MAX_FRAME_PAYLOAD,
        name: str = "nri",
        workers: int = REQUEST_WORKERS,
    ) -> None:
        self._sock = sock
        self._handler = handler
        self._max_frame = max_frame_payload
        self._name = name
        self._write_lock = threading.Lock()
        self._lock = threading.Lock()
        self._next_stream = 1
        self._pending: dict[int, _Pending] = {}
        self.closed = threading.Event()
        self.close_reason = ""
        self._reader = threading.Thread(target=self._read_loop, name=f"{name}-reader", daemon=True)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"{name}-req")

    def start(self) -> None:
        self._reader.start()

    # ------------------------------------------------------------ writing

    def _send(self, conn_id: int, message: bytes) -> None:
        data = framing.mux_frames(conn_id, message, self._max_frame)
        with self._write_lock:
            try:
                self._sock.sendall(data)
            except OSError as exc:
                self.close(f"write failed: {exc}")
                raise ConnectionClosed(self.close_reason) from None

    def call(self, service: str, method: str, payload: bytes, timeout: float) -> bytes:
        """Call the runtime's `service`/`method`; returns the response payload.

        Raises TtrpcError (the runtime's status), TimeoutError, or ConnectionClosed."""
        pending = _Pending()
        with self._lock:
            if self.closed.is_set():
                raise ConnectionClosed(self.close_reason)
            stream_id = self._next_stream
            self._next_stream += 2  # client streams are odd and strictly increasing
            self._pending[stream_id] = pending
        try:
            self._send(
                framing.RUNTIME_CONN,
                framing.encode_request(stream_id, service, method, payload, int(timeout * 1e9)),
            )
            if not pending.done.wait(timeout):
                raise TimeoutError(f"no reply to {method} within {timeout:.1f}s")
        finally:
            with self._lock:
                self._pending.pop(stream_id, None)
        if pending.body is None:
            raise ConnectionClosed(self.close_reason)
        return framing.decode_response(pending.body)

    # ------------------------------------------------------------ reading

    def _read_loop(self) -> None:
        mux = framing.MuxDecoder()
        streams = {
            framing.PLUGIN_CONN: framing.MessageDecoder(),
            framing.RUNTIME_CONN: framing.MessageDecoder(),
        }
        reason = "closed by the runtime"
        try:
            while True:
                data = self._sock.recv(65536)
                if not data:
                    break
                for conn_id, payload in mux.feed(data):
                    decoder = streams.get(conn_id)
                    if decoder is None:
                        continue  # like the runtime's mux: frames for unknown conns are dropped
                    for msg in decoder.feed(payload):
                        self._dispatch(conn_id, msg)
        except framing.FramingError as exc:
            reason = f"protocol error: {exc}"
            log.error("closing the NRI connection", extra={"reason": reason})
        except OSError as exc:
            reason = f"read failed: {exc}"
        self.close(reason)

    def _dispatch(self, conn_id: int, msg: framing.Message) -> None:
        if conn_id == framing.RUNTIME_CONN and msg.type == framing.MSG_RESPONSE:
            with self._lock:
                pending = self._pending.get(msg.stream_id)
            if pending is not None:
                pending.body = msg.body
                pending.done.set()
            return
        if conn_id == framing.PLUGIN_CONN and msg.type == framing.MSG_REQUEST:
            try:
                self._pool.submit(self._serve, msg)
            except RuntimeError:  # the pool is shut down: we are closing, the runtime sees it
                pass
            return
        log.warning("ignoring unexpected ttrpc message", extra={"conn": conn_id, "type": msg.type})

    def _serve(self, msg: framing.Message) -> None:
        try:
            req = framing.decode_request(msg.body)
        except framing.FramingError as exc:
            response = framing.encode_response(
                msg.stream_id, code=framing.CODE_INVALID_ARGUMENT, message=str(exc)
            )
        else:
            try:
                payload = self._handler(req.service, req.method, req.payload)
                response = framing.encode_response(msg.stream_id, payload)
            except TtrpcError as exc:
                response = framing.encode_response(msg.stream_id, code=exc.code, message=exc.message)
            except Exception as exc:  # a bug in a handler must not kill the connection
                log.exception("NRI handler failed", extra={"method": req.method})
                response = framing.encode_response(
                    msg.stream_id, code=framing.CODE_INTERNAL, message=f"dranet nri: {req.method}: {exc}"
                )
        try:
            self._send(framing.PLUGIN_CONN, response)
        except ConnectionClosed:
            pass

    # ------------------------------------------------------------ closing

    def close(self, reason: str = "closed by the plugin") -> None:
        with self._lock:
            if self.closed.is_set():
                return
            self.close_reason = reason
            self.closed.set()
            pending = list(self._pending.values())
        for p in pending:
            p.done.set()  # body stays None: the caller raises ConnectionClosed
        # Requests in progress finish on their own (their reply finds the socket closed); queued
        # ones are dropped: the runtime has lost the connection and will not read their replies.
        self._pool.shutdown(wait=False, cancel_futures=True)
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()

    def wait_closed(self, timeout: float | None = None) -> bool:
        return self.closed.wait(timeout)
