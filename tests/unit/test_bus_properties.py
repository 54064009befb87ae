"""Property-based tests of the bus envelope (hypothesis): what is encoded decodes to the same
request or reply, and no bytes whatsoever make the decoders raise anything but BusError."""

from __future__ import annotations

import time
from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from dranet.bus.messages import (
    OPS,
    BusError,
    check,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
    new_request,
    request_id_of,
)

SETTINGS = settings(deadline=None, database=None, max_examples=300)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
bodies = st.dictionaries(st.text(max_size=8), values, max_size=5)
# envelopes with the right keys and any values, with some keys missing or extra
envelope_keys = st.sampled_from(["v", "id", "op", "deadline", "body"]) | st.text(max_size=4)
envelopes = st.dictionaries(envelope_keys, values | st.just(2), max_size=7)


@SETTINGS
@given(op=st.sampled_from(sorted(OPS)) | st.text(max_size=30), body=bodies, timeout=st.floats(0.001, 3000))
def test_request_round_trip(op: str, body: dict[str, Any], timeout: float) -> None:
    before = time.monotonic()
    req = new_request(op, body, timeout)
    after = time.monotonic()
    got = decode_request(encode_request(req))
    assert (got.id, got.op, got.deadline, got.body, got.v) == (req.id, req.op, req.deadline, body, req.v)
    assert before + timeout <= got.deadline <= after + timeout  # on the monotonic clock


@SETTINGS
@given(req_id=st.text(max_size=64), result=bodies, code=st.text(max_size=20), message=st.text(max_size=50))
def test_reply_round_trip(req_id: str, result: dict[str, Any], code: str, message: str) -> None:
    ok = decode_reply(encode_reply(req_id, result))
    assert (ok.id, ok.result, ok.error) == (req_id, result, None)
    err = decode_reply(encode_reply(req_id, error=BusError(code, message)))
    assert err.id == req_id and err.result is None and err.error is not None
    assert (err.error.code, err.error.message) == (code, message)


def _decodes_or_bus_error(data: bytes) -> None:
    try:
        decode_request(data)
    except BusError:
        pass
    assert isinstance(request_id_of(data), str)
    try:
        decode_reply(data)
    except BusError:
        pass


@SETTINGS
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_crash_the_decoders(data: bytes) -> None:
    _decodes_or_bus_error(data)


@SETTINGS
@given(envelopes)
def test_arbitrary_envelopes_never_crash_the_decoders(raw: dict[str, Any]) -> None:
    data = msgpack.packb(raw, use_bin_type=True)
    _decodes_or_bus_error(data)
    for cut in (1, len(data) // 2, len(data) - 1):  # and every truncation of it
        _decodes_or_bus_error(data[:cut])


@SETTINGS
@given(op=st.sampled_from(sorted(OPS)), value=values)
def test_shape_checks_raise_only_bus_errors(op: str, value: Any) -> None:
    for shape in (OPS[op].request, OPS[op].result):
        try:
            check(shape, value)
        except BusError as err:
            assert err.code == "bad_request"


@SETTINGS
@given(req_id=st.text(min_size=1, max_size=64), rest=st.binary(max_size=50))
def test_the_id_is_recovered_from_a_request_broken_after_it(req_id: str, rest: bytes) -> None:
    head = b"\x85" + msgpack.packb("id") + msgpack.packb(req_id)
    assert request_id_of(head + rest) == req_id
