"""NRI mux + ttrpc framing, byte for byte (no sockets)."""

from __future__ import annotations

import struct

import pytest
from dranet.services.nri import framing

from dranet._generated import nri_pb2, ttrpc_pb2


def test_register_plugin_worked_example_is_79_bytes() -> None:
    payload = nri_pb2.RegisterPluginRequest(plugin_name="dra.net", plugin_idx="00").SerializeToString()
    assert payload == b"\x0a\x07dra.net\x12\x0200"
    msg = framing.encode_request(1, "nri.pkg.api.v1alpha1.Runtime", "RegisterPlugin", payload)
    body = b"\x0a\x1cnri.pkg.api.v1alpha1.Runtime\x12\x0eRegisterPlugin\x1a\x0d" + payload
    assert len(body) == 61
    assert msg == b"\x00\x00\x00\x3d\x00\x00\x00\x01\x01\x00" + body
    wire = framing.mux_frames(framing.RUNTIME_CONN, msg)
    assert wire[:8] == b"\x00\x00\x00\x02\x00\x00\x00\x47"
    assert len(wire) == 79


def test_timeout_is_carried_in_the_request() -> None:
    msg = framing.encode_request(3, "s", "m", b"", timeout_ns=2_000_000_000)
    req = framing.decode_request(msg[framing.TTRPC_HEADER.size :])
    assert (req.service, req.method, req.payload, req.timeout_ns) == ("s", "m", b"", 2_000_000_000)


def test_success_response_carries_an_empty_status() -> None:
    msg = framing.encode_response(5, b"\x10\x0f")
    length, stream, mtype, flags = framing.TTRPC_HEADER.unpack_from(msg)
    assert (stream, mtype, flags) == (5, framing.MSG_RESPONSE, 0)
    assert msg[10:] == b"\x0a\x00\x12\x02\x10\x0f"  # status {} , payload
    assert length == 6
    assert framing.decode_response(msg[10:]) == b"\x10\x0f"


def test_error_response_has_code_and_message() -> None:
    msg = framing.encode_response(7, code=framing.CODE_UNKNOWN, message="no")
    assert msg[10:] == b"\x0a\x06\x08\x02\x12\x02no"
    with pytest.raises(framing.TtrpcError) as err:
        framing.decode_response(msg[10:])
    assert (err.value.code, err.value.message) == (2, "no")


def test_response_without_status_is_success() -> None:
    body = ttrpc_pb2.Response(payload=b"x").SerializeToString()
    assert framing.decode_response(body) == b"x"


def test_mux_splits_at_4096_bytes() -> None:
    data = bytes(range(256)) * 40  # 10240 bytes
    wire = framing.mux_frames(1, data)
    sizes = []
    off = 0
    while off < len(wire):
        conn, n = struct.unpack_from(">II", wire, off)
        assert conn == 1
        sizes.append(n)
        off += 8 + n
    assert sizes == [4096, 4096, 2048]
    assert len(wire) == len(data) + 3 * 8


def test_mux_exactly_4096_is_one_frame() -> None:
    assert len(framing.mux_frames(2, b"a" * 4096)) == 4104
    assert len(framing.mux_frames(2, b"a" * 4097)) == 4104 + 9


def test_decoders_reassemble_across_any_split() -> None:
    big = b"p" * 9000
    msgs = framing.encode_request(1, "svc", "M", big) + framing.encode_response(2, b"ok")
    wire = framing.mux_frames(1, msgs)
    mux = framing.MuxDecoder()
    dec = framing.MessageDecoder()
    out: list[framing.Message] = []
    for i in range(0, len(wire), 7):  # fed 7 bytes at a time
        for conn, payload in mux.feed(wire[i : i + 7]):
            assert conn == 1
            out += dec.feed(payload)
    assert [(m.stream_id, m.type) for m in out] == [(1, framing.MSG_REQUEST), (2, framing.MSG_RESPONSE)]
    assert framing.decode_request(out[0].body).payload == big


def test_conn_zero_and_oversize_are_protocol_errors() -> None:
    with pytest.raises(framing.FramingError):
        framing.MuxDecoder().feed(struct.pack(">II", 0, 1) + b"x")
    with pytest.raises(framing.FramingError):
        framing.MuxDecoder(max_payload=10).feed(struct.pack(">II", 1, 11))
    with pytest.raises(framing.FramingError):
        framing.MessageDecoder().feed(struct.pack(">IIBB", (4 << 20) + 1, 1, 1, 0))


def test_garbage_body_is_a_framing_error() -> None:
    with pytest.raises(framing.FramingError):
        framing.decode_request(b"\xff\xff\xff")
