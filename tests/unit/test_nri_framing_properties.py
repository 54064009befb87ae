"""Property-based tests of the NRI mux and ttrpc framing (hypothesis): messages survive any split of
the byte stream, and garbage gives FramingError (or TtrpcError for a response), nothing else."""

from __future__ import annotations

import itertools

from dranet.services.nri import framing
from hypothesis import given, settings
from hypothesis import strategies as st

SETTINGS = settings(deadline=None, database=None, max_examples=300)

messages = st.lists(
    st.tuples(
        st.sampled_from([framing.PLUGIN_CONN, framing.RUNTIME_CONN]),
        st.integers(0, 2**32 - 1),  # stream id
        st.integers(0, 255),  # type
        st.integers(0, 255),  # flags
        st.binary(max_size=300),
    ),
    max_size=8,
)


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@SETTINGS
@given(msgs=messages, max_payload=st.integers(1, 4096), cuts=st.lists(st.integers(0, 10**6), max_size=20))
def test_messages_survive_any_split_of_the_stream(
    msgs: list[tuple[int, int, int, int, bytes]], max_payload: int, cuts: list[int]
) -> None:
    wire = b"".join(
        framing.mux_frames(conn, framing.encode_message(stream, typ, body, flags), max_payload)
        for conn, stream, typ, flags, body in msgs
    )
    mux = framing.MuxDecoder()
    decoders = {framing.PLUGIN_CONN: framing.MessageDecoder(), framing.RUNTIME_CONN: framing.MessageDecoder()}
    got: list[tuple[int, int, int, int, bytes]] = []
    for chunk in _split(wire, cuts):
        for conn, payload in mux.feed(chunk):
            assert len(payload) <= max_payload
            got += [(conn, m.stream_id, m.type, m.flags, m.body) for m in decoders[conn].feed(payload)]
    assert got == msgs


@SETTINGS
@given(
    stream=st.integers(0, 2**32 - 1),
    service=st.text(max_size=40),
    method=st.text(max_size=40),
    payload=st.binary(max_size=200),
    timeout=st.integers(0, 2**63 - 1),
)
def test_request_and_response_round_trip(
    stream: int, service: str, method: str, payload: bytes, timeout: int
) -> None:
    msg = framing.MessageDecoder().feed(framing.encode_request(stream, service, method, payload, timeout))
    assert len(msg) == 1 and msg[0].stream_id == stream and msg[0].type == framing.MSG_REQUEST
    req = framing.decode_request(msg[0].body)
    assert (req.service, req.method, req.payload, req.timeout_ns) == (service, method, payload, timeout)
    resp = framing.MessageDecoder().feed(framing.encode_response(stream, payload))[0]
    assert framing.decode_response(resp.body) == payload


@SETTINGS
@given(garbage=st.binary(max_size=400), cuts=st.lists(st.integers(0, 10**6), max_size=10))
def test_garbage_gives_framing_error_and_nothing_else(garbage: bytes, cuts: list[int]) -> None:
    mux, decoder = framing.MuxDecoder(), framing.MessageDecoder()
    try:
        for chunk in _split(garbage, cuts):
            for _conn, payload in mux.feed(chunk):
                decoder.feed(payload)
    except framing.FramingError:
        pass
    try:
        for msg in framing.MessageDecoder().feed(garbage):
            framing.decode_request(msg.body)
    except framing.FramingError:
        pass
    try:
        framing.decode_request(garbage)
    except framing.FramingError:
        pass
    try:
        framing.decode_response(garbage)
    except (framing.FramingError, framing.TtrpcError):
        pass
