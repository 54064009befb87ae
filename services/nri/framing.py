"""NRI wire framing, pure: the connection multiplexer and ttrpc messages. No sockets here.

Layer 1, the mux: one unix stream carries logical connections, each write framed as
  uint32 BE conn id | uint32 BE payload length | payload.
Conn 1 carries the Plugin service (the runtime calls us), conn 2 the Runtime service (we call
RegisterPlugin). containerd reads each logical connection through a 4 KiB buffer and drops a plugin
that sends a bigger frame, so we never send more than MAX_FRAME_PAYLOAD bytes in one frame. A frame
boundary is not a message boundary: each conn is a byte stream.

Layer 2, ttrpc: a 10-byte header
  uint32 BE body length | uint32 BE stream id | u8 type (1 request, 2 response) | u8 flags
then a protobuf ttrpc.Request or ttrpc.Response body.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from dranet._generated import ttrpc_pb2

MUX_HEADER = struct.Struct(">II")
TTRPC_HEADER = struct.Struct(">IIBB")
PLUGIN_CONN = 1  # the runtime is the ttrpc client, we serve Plugin
RUNTIME_CONN = 2  # we are the ttrpc client, the runtime serves Runtime
MAX_FRAME_PAYLOAD = 4096
MAX_MESSAGE_BODY = 4 << 20  # ttrpc's own limit

MSG_REQUEST = 1
MSG_RESPONSE = 2
MSG_DATA = 3

# gRPC status codes used on the wire
CODE_OK = 0
CODE_UNKNOWN = 2
CODE_INVALID_ARGUMENT = 3
CODE_DEADLINE_EXCEEDED = 4
CODE_UNIMPLEMENTED = 12
CODE_INTERNAL = 13
CODE_UNAVAILABLE = 14


class FramingError(Exception):
    """The peer sent bytes that break the protocol; the trunk must be closed."""


class TtrpcError(Exception):
    """A ttrpc status other than OK: sent as a response, or received for one of our calls."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"ttrpc status {code}: {message}")
        self.code = code
        self.message = message


# ---------------------------------------------------------------- mux


def mux_frames(conn_id: int, data: bytes, max_payload: int = MAX_FRAME_PAYLOAD) -> bytes:
    """`data` for one logical connection as mux frames of at most `max_payload` bytes each."""
    if not data:
        return MUX_HEADER.pack(conn_id, 0)
    out = bytearray()
    for off in range(0, len(data), max_payload):
        chunk = data[off : off + max_payload]
        out += MUX_HEADER.pack(conn_id, len(chunk))
        out += chunk
    return bytes(out)


class MuxDecoder:
    """Splits the trunk's byte stream back into (conn id, payload) frames."""

    def __init__(self, max_payload: int = MAX_MESSAGE_BODY + 1024) -> None:
        self._buf = bytearray()
        self._max = max_payload

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf += data
        frames: list[tuple[int, bytes]] = []
        while len(self._buf) >= MUX_HEADER.size:
            conn_id, length = MUX_HEADER.unpack_from(self._buf)
            if conn_id == 0:
                raise FramingError("mux frame for reserved connection 0")
            if length > self._max:
                raise FramingError(f"mux frame of {length} bytes exceeds {self._max}")
            end = MUX_HEADER.size + length
            if len(self._buf) < end:
                break
            frames.append((conn_id, bytes(self._buf[MUX_HEADER.size : end])))
            del self._buf[:end]
        return frames


# ---------------------------------------------------------------- ttrpc messages


@dataclass(frozen=True)
class Message:
    stream_id: int
    type: int
    flags: int
    body: bytes


def encode_message(stream_id: int, msg_type: int, body: bytes, flags: int = 0) -> bytes:
    if len(body) > MAX_MESSAGE_BODY:
        raise FramingError(f"ttrpc body of {len(body)} bytes exceeds {MAX_MESSAGE_BODY}")
    return TTRPC_HEADER.pack(len(body), stream_id, msg_type, flags) + body


class MessageDecoder:
    """Reassembles ttrpc messages from one logical connection's byte stream."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        self._buf += data
        return list(self._drain())

    def _drain(self) -> Iterator[Message]:
        while len(self._buf) >= TTRPC_HEADER.size:
            length, stream_id, msg_type, flags = TTRPC_HEADER.unpack_from(self._buf)
            if length > MAX_MESSAGE_BODY:
                raise FramingError(f"ttrpc message of {length} bytes exceeds {MAX_MESSAGE_BODY}")
            end = TTRPC_HEADER.size + length
            if len(self._buf) < end:
                return
            body = bytes(self._buf[TTRPC_HEADER.size : end])
            del self._buf[:end]
            yield Message(stream_id, msg_type, flags, body)


# ---------------------------------------------------------------- requests and responses


@dataclass(frozen=True)
class Request:
    service: str
    method: str
    payload: bytes
    timeout_ns: int


def encode_request(stream_id: int, service: str, method: str, payload: bytes, timeout_ns: int = 0) -> bytes:
    """A complete ttrpc request message (header + body)."""
    req = ttrpc_pb2.Request(service=service, method=method, payload=payload, timeout_nano=timeout_ns)
    return encode_message(stream_id, MSG_REQUEST, req.SerializeToString())


def decode_request(body: bytes) -> Request:
    req = ttrpc_pb2.Request()
    try:
        req.ParseFromString(body)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise FramingError(f"malformed ttrpc request: {exc}") from None
    return Request(req.service, req.method, req.payload, req.timeout_nano)


def encode_response(stream_id: int, payload: bytes = b"", code: int = CODE_OK, message: str = "") -> bytes:
    """A complete ttrpc response message. Like the Go server, success carries an empty status."""
    resp = ttrpc_pb2.Response(payload=payload)
    resp.status.SetInParent()
    if code != CODE_OK:
        resp.status.code = code
        resp.status.message = message
    return encode_message(stream_id, MSG_RESPONSE, resp.SerializeToString())


def decode_response(body: bytes) -> bytes:
    """The payload of a response; raises TtrpcError for a non-OK status."""
    resp = ttrpc_pb2.Response()
    try:
        resp.ParseFromString(body)
    except Exception as exc:
        raise FramingError(f"malformed ttrpc response: {exc}") from None
    if resp.HasField("status") and resp.status.code != CODE_OK:
        raise TtrpcError(resp.status.code, resp.status.message)
    return bytes(resp.payload)
