"""The bus over real sockets: round trips, deadlines, restarts, notifications, bad input, permissions."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import msgpack
import pytest
import zmq

from dranet.bus import (
    BusClient,
    BusError,
    BusServer,
    ErrorCode,
    Publisher,
    RequestContext,
    Subscriber,
    endpoints,
)
from dranet.bus.messages import (
    MAX_MESSAGE_BYTES,
    check_notification,
    decode_request,
    encode_request,
    new_request,
)
from dranet.bus.server import ReplayCache

HERE = Path(__file__).parent.parent


def start_server(runtime_dir: Path, log: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "busserver_main.py"),
            "--runtime-dir",
            str(runtime_dir),
            "--log",
            str(log),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


@pytest.fixture
def server(tmp_path: Path):
    log = tmp_path / "exec.log"
    proc = start_server(tmp_path / "run", log)
    yield tmp_path / "run", log, proc
    proc.terminate()
    proc.wait(5)


def test_round_trip(server: Any) -> None:
    rd, _, _ = server
    client = BusClient(rd, "t", timeout=2)
    assert client.call("echo", {"x": [1, "a", {"b": None}]}) == {"x": [1, "a", {"b": None}]}
    client.close()


def test_unknown_op_is_a_typed_error(server: Any) -> None:
    client = BusClient(server[0], "t", timeout=2)
    with pytest.raises(BusError) as err:
        client.call("attach", {"pod_uid": "p", "netns": "/x", "devices": []})
    assert err.value.code == ErrorCode.UNKNOWN_OP


def test_client_gives_up_at_its_deadline(server: Any) -> None:
    client = BusClient(server[0], "t")
    start = time.monotonic()
    with pytest.raises(BusError) as err:
        client.call("echo", {"sleep": 2}, timeout=0.3)
    assert err.value.code == ErrorCode.TIMEOUT
    assert "t" in err.value.message and "dranet status" in err.value.message
    assert time.monotonic() - start < 1.9  # it did not wait for the handler


def _raw(
    rd: Path, payload: bytes | list[bytes], timeout_ms: int = 2000, service: str = "t"
) -> dict[str, Any] | None:
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoints.ipc(endpoints.rpc_path(rd, service)))
    if isinstance(payload, list):
        sock.send_multipart(payload)
    else:
        sock.send(payload)
    try:
        if sock.poll(timeout_ms):
            reply: dict[str, Any] = msgpack.unpackb(sock.recv())
            return reply
        return None
    finally:
        sock.close()


def test_server_refuses_work_past_its_deadline(server: Any) -> None:
    rd, log, _ = server
    req = new_request("echo", {"x": 1}, timeout=-1)
    reply = _raw(rd, encode_request(req))
    assert reply and reply["ok"] is False and reply["error"]["code"] == "deadline_exceeded"
    assert not log.exists() or req.id not in log.read_text()


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"\xc1\xff garbage", "bad_request"),
        (msgpack.packb([1, 2, 3]), "bad_request"),
        (msgpack.packb({"v": 2, "id": "a", "op": "echo", "deadline": "soon", "body": {}}), "bad_request"),
        (
            msgpack.packb({"v": 2, "id": "a", "op": "echo", "deadline": time.monotonic() + 5, "body": [1]}),
            "bad_request",
        ),
        (
            msgpack.packb({"v": 2, "id": 7, "op": "echo", "deadline": time.monotonic() + 5, "body": {}}),
            "bad_request",
        ),
        (
            msgpack.packb({"v": 99, "id": "a", "op": "echo", "deadline": time.monotonic() + 5, "body": {}}),
            "unsupported_version",
        ),
        (
            msgpack.packb({"v": 2, "id": "a", "op": "rm -rf", "deadline": time.monotonic() + 5, "body": {}}),
            "unknown_op",
        ),
        (
            msgpack.packb(
                {
                    "v": 2,
                    "id": "a",
                    "op": "echo",
                    "deadline": time.monotonic() + 5,
                    "body": {"x": "y" * (MAX_MESSAGE_BYTES + 10)},
                }
            ),
            "too_large",
        ),
    ],
    ids=[
        "garbage",
        "not-a-map",
        "bad-deadline",
        "body-not-map",
        "id-not-str",
        "version",
        "unknown-op",
        "huge",
    ],
)
def test_malformed_input_gets_an_error_reply_and_the_server_keeps_serving(
    server: Any, payload: bytes, code: str
) -> None:
    rd = server[0]
    reply = _raw(rd, payload)
    assert reply is not None and reply["ok"] is False and reply["error"]["code"] == code, reply
    assert BusClient(rd, "t", timeout=2).call("echo", {"still": "up"}) == {"still": "up"}


def test_wrong_frame_count_and_oversize_wire_are_dropped(server: Any) -> None:
    rd = server[0]
    assert _raw(rd, [b"a", b"b", b"c"], timeout_ms=300) is None
    assert _raw(rd, b"x" * (17 * 1024 * 1024), timeout_ms=500) is None  # zmq cuts the peer off
    assert BusClient(rd, "t", timeout=2).call("echo", {"n": 1}) == {"n": 1}


def test_socket_permissions(server: Any) -> None:
    rd = server[0]
    assert stat.S_IMODE(rd.stat().st_mode) == 0o750
    for name in ("t.sock", "t-events.sock"):
        st = (rd / name).stat()
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o660


def test_server_restart_mid_stream_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    rd, log = tmp_path / "run", tmp_path / "exec.log"
    proc = start_server(rd, log)
    client = BusClient(rd, "t", timeout=10)
    results: list[int] = []
    errors: list[BaseException] = []

    def stream() -> None:
        try:
            for i in range(200):
                results.append(client.call("echo", {"i": i, "sleep": 0.005})["i"])
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=stream)
    t.start()
    while len(results) < 50:
        time.sleep(0.01)
    proc.kill()
    proc.wait()
    time.sleep(0.3)
    proc = start_server(rd, log)
    t.join(60)
    proc.terminate()
    proc.wait(5)
    assert not errors
    assert results == list(range(200))  # every call answered once, in order
    runs = Counter(tuple(line.split()) for line in log.read_text().splitlines())
    assert max(runs.values()) == 1  # no request ran twice in one server life
    pids = {pid for pid, _ in runs}
    assert len(pids) == 2


def test_subscriber_gets_snapshot_on_join_then_updates_and_survives_publisher_restart(tmp_path: Path) -> None:
    rd, log = tmp_path / "run", tmp_path / "exec.log"
    proc = start_server(rd, log)
    client = BusClient(rd, "t", timeout=5)
    client.call("echo", {"set": 5})  # happened before the subscriber existed
    seen: list[dict[str, Any]] = []
    sub = Subscriber(rd, "t", ["echo"], lambda topic, body: seen.append(body))
    sub.start()
    assert sub.synced.wait(5)
    assert seen[-1] == {"value": 5}
    client.call("echo", {"set": 6})
    _wait(lambda: seen[-1] == {"value": 6})
    proc.kill()
    proc.wait()
    proc = start_server(rd, log)  # restarted publisher: state is 0 again
    _wait(lambda: seen[-1] == {"value": 0})
    client.call("echo", {"set": 7})
    _wait(lambda: seen[-1] == {"value": 7})
    sub.close()
    proc.terminate()
    proc.wait(5)


def _wait(cond: Any, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_server_refuses_undeclared_ops(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not declared"):
        BusServer(tmp_path, "x", {"no_such_op": lambda b, c: {}})


def test_concurrent_clients(server: Any) -> None:
    rd = server[0]
    client = BusClient(rd, "t", timeout=5)
    out: dict[int, Any] = {}

    def worker(n: int) -> None:
        out[n] = [client.call("echo", {"n": n, "k": k})["k"] for k in range(20)]

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(v == list(range(20)) for v in out.values()) and len(out) == 8
    assert os.path.exists(endpoints.rpc_path(rd, "t"))


# ---------------------------------------------------------------- robustness (issue 10/12)


def test_a_request_broken_after_its_id_gets_an_error_reply_with_that_id(server: Any) -> None:
    rd = server[0]
    head = b"\x85" + msgpack.packb("v") + msgpack.packb(2) + msgpack.packb("id") + msgpack.packb("req-7")
    reply = _raw(rd, head + b"\xc1\xc1 the rest is garbage")
    assert reply is not None and reply["ok"] is False and reply["error"]["code"] == "bad_request"
    assert reply["id"] == "req-7"


def test_a_wall_clock_step_neither_expires_nor_extends_a_call(monkeypatch: pytest.MonkeyPatch) -> None:
    real = time.time
    start = time.monotonic()
    data = encode_request(new_request("echo", {}, timeout=5))
    for step in (3600.0, -3600.0):  # NTP steps the clock forward, then back
        monkeypatch.setattr(time, "time", lambda step=step: real() + step)
        ctx = RequestContext("r", "echo", decode_request(data).deadline)
        assert 5.0 - (time.monotonic() - start) <= ctx.remaining() <= 5.0


def test_a_deadline_not_on_this_hosts_monotonic_clock_is_refused() -> None:
    raw = {"v": 2, "id": "a", "op": "echo", "deadline": time.time() + 5, "body": {}}  # unix time
    with pytest.raises(BusError) as err:
        decode_request(msgpack.packb(raw))
    assert err.value.code == "bad_request" and "monotonic" in err.value.message


def test_only_mutating_ops_are_replayed_from_the_cache(tmp_path: Path) -> None:
    runs: Counter[str] = Counter()

    def handler(body: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        runs[ctx.op] += 1
        return {"devices": []} if ctx.op == "pod_devices" else {"released": []}

    srv = BusServer(tmp_path, "t", {"pod_devices": handler, "detach": handler})
    srv.start()
    try:
        for op, body in (("pod_devices", {"pod_uid": "p"}), ("detach", {"pod_uid": "p"})):
            data = encode_request(new_request(op, body, timeout=5))
            for _ in range(2):  # the same request (same id) twice: a resend after a lost reply
                reply = _raw(tmp_path, data, service="t")
                assert reply is not None and reply["ok"] is True, reply
        assert runs == {"pod_devices": 2, "detach": 1}
    finally:
        srv.stop()


def test_the_replay_cache_is_bounded_in_bytes(tmp_path: Path) -> None:
    srv = BusServer(tmp_path, "t", {"echo": lambda body, ctx: body})
    srv.start()
    client = BusClient(tmp_path, "t", timeout=10)
    try:
        for i in range(24):  # 24 replies of 1 MiB each
            assert client.call("echo", {"i": i, "pad": "x" * (1 << 20)})["i"] == i
        cache = srv.replay_cache
        assert 0 < len(cache) and cache.bytes <= cache.max_bytes < 24 << 20
    finally:
        client.close()
        srv.stop()


def test_replay_cache_evicts_oldest_and_skips_what_cannot_fit() -> None:
    cache = ReplayCache(max_entries=3, max_bytes=100)
    for i in range(5):
        cache.put(f"id{i}", b"x" * 10)
    assert len(cache) == 3 and cache.get("id0") is None and cache.get("id4") == b"x" * 10
    cache.put("big", b"y" * 200)
    assert cache.get("big") is None
    cache.put("mid", b"z" * 90)
    assert cache.get("mid") is not None and cache.bytes <= 100 and len(cache) == 1


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_client_sockets_do_not_grow_with_calling_threads(server: Any) -> None:
    client = BusClient(server[0], "t", timeout=5)
    client.call("echo", {})
    before = _open_fds()
    for i in range(300):  # one short-lived thread per call, as a request-per-thread server does
        t = threading.Thread(target=client.call, args=("echo", {"i": i}))
        t.start()
        t.join()
    assert _open_fds() - before <= 4
    client.close()


def test_a_timed_out_call_closes_its_socket(server: Any) -> None:
    client = BusClient(server[0], "t", timeout=5)
    client.call("echo", {})
    assert client.open_sockets() == 1
    with pytest.raises(BusError):
        client.call("echo", {"sleep": 1}, timeout=0.2)
    assert client.open_sockets() == 0  # its late reply cannot reach a later call
    assert client.call("echo", {"n": 2}) == {"n": 2}
    client.close()


def test_topics_are_declared_and_checked() -> None:
    with pytest.raises(ValueError, match="not declared"):
        Subscriber("/nonexistent", "t", ["no_such_topic"], lambda topic, body: None)
    with pytest.raises(BusError, match="not declared"):
        check_notification("no_such_topic", {})
    with pytest.raises(BusError, match=r"attachments\.device: expected str"):
        check_notification("attachments", {"pod_uid": "p", "device": 1, "state": "attached"})
    with pytest.raises(BusError, match=r"pod_events snapshot\.events"):
        check_notification("pod_events", {"events": {}}, snapshot=True)
    check_notification("attachments", {"pod_uid": "p", "device": "d", "state": "attached", "new": 1})


def test_a_publisher_refuses_a_body_that_does_not_fit_its_topic(tmp_path: Path) -> None:
    pub = Publisher(tmp_path, "t", {"echo": dict})
    try:
        with pytest.raises(BusError) as err:
            pub.publish("attachments", {"pod_uid": "p"})
        assert err.value.code == "internal" and "attachments.device: required" in err.value.message
        with pytest.raises(BusError):
            pub.publish("nope", {})
        pub.publish("echo", {"anything": 1})
    finally:
        pub.close()
    with pytest.raises(ValueError, match="not declared"):
        Publisher(tmp_path, "t", {"nope": dict})


def test_a_subscriber_drops_a_notification_that_does_not_fit_its_topic(tmp_path: Path) -> None:
    state = {"seq": 0, "snapshots": 0}

    def snapshot(body: dict[str, Any], ctx: RequestContext) -> dict[str, Any]:
        state["snapshots"] += 1
        return {"epoch": "e1", "seq": state["seq"], "body": {"attachments": []}}

    srv = BusServer(tmp_path, "t", {"snapshot": snapshot})
    srv.start()
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(endpoints.ipc(endpoints.events_path(tmp_path, "t")))
    seen: list[dict[str, Any]] = []
    sub = Subscriber(tmp_path, "t", ["attachments"], lambda topic, body: seen.append(body))
    sub.start()
    try:
        assert sub.synced.wait(5) and seen == [{"attachments": []}]
        state["seq"] = 1
        bad = msgpack.packb({"epoch": "e1", "seq": 1, "body": {"pod_uid": "p", "device": 7}})
        end = time.monotonic() + 5
        while state["snapshots"] < 2 and time.monotonic() < end:  # until it arrives (slow joiner)
            pub.send_multipart([b"attachments", bad])
            time.sleep(0.05)
        assert state["snapshots"] == 2  # dropped, and the state fetched again instead
        _wait(lambda: len(seen) == 2)
        assert all("pod_uid" not in body for body in seen)
    finally:
        sub.close()
        pub.close()
        srv.stop()


def test_no_handler_runs_after_stop_returns_even_for_a_request_being_received(tmp_path: Path) -> None:
    # stop() promises the service may then close what handlers use (the worker closes its netlink
    # sockets). A request the dispatcher was in the middle of receiving must not run past it.
    receiving = threading.Event()
    handler_ends: list[float] = []

    class SlowReceive(BusServer):
        def _receive(self, router: Any) -> None:
            receiving.set()
            time.sleep(0.3)  # stop() is called while we are here
            super()._receive(router)

    def handler(body: dict[str, Any], ctx: Any) -> dict[str, Any]:
        time.sleep(0.2)  # work that uses what the service closes after stop()
        handler_ends.append(time.monotonic())
        return {"released": []}

    srv = SlowReceive(tmp_path, "t", {"detach": handler})
    srv.start()
    client = BusClient(tmp_path, "t", timeout=2)
    caller = threading.Thread(target=lambda: _ignore_bus_error(client.call, "detach", {"pod_uid": "p"}))
    caller.start()
    assert receiving.wait(5)
    srv.stop()
    stop_returned = time.monotonic()
    caller.join(5)
    client.close()
    time.sleep(0.3)
    assert all(end <= stop_returned for end in handler_ends), "a handler ran on after stop() returned"


def _ignore_bus_error(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except BusError:
        pass


def test_a_services_ping_reply_is_a_valid_ping_result(tmp_path: Path) -> None:
    """The reply every service's ping gives passes the bus's own reply check (the server refuses a
    reply that does not: `dranet status` would then see every service down)."""
    import argparse

    from dranet.bus.messages import OPS, check
    from dranet.service import ServiceHost
    from dranet.settings import add_common_flags

    parser = argparse.ArgumentParser()
    add_common_flags(parser)
    args = parser.parse_args([f"--runtime-dir={tmp_path}", f"--state-dir={tmp_path}"])
    host = ServiceHost("dra", args, drop_caps=False, install_signals=False)
    reply = host._ping({}, None)  # type: ignore[arg-type]
    check(OPS["ping"].result, reply, "result")
    assert reply["pid_ns"] == os.readlink("/proc/self/ns/pid")
