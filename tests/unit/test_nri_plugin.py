"""The plugin's lifecycle and wire behaviour against a fake runtime on a unix socket in tmp_path
(tests/fake_nri_runtime.py: Configure before the RegisterPlugin reply, the largest frame recorded)."""

from __future__ import annotations

import struct
import threading
from pathlib import Path
from typing import Any

import pytest
from dranet.services.nri import framing
from dranet.services.nri.connection import REQUEST_WORKERS
from dranet.services.nri.handlers import PodHandlers
from dranet.services.nri.plugin import EVENT_MASK, NriPlugin, PluginOptions

from dranet._generated import nri_pb2
from dranet.bus.messages import BusError

from ..fake_nri_runtime import FakeRuntime, pod
from .test_nri_handlers import FakeDra, FakeNetns, dev


def wait_for(cond: Any, timeout: float = 10.0) -> bool:
    ev = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if cond():
            return True
        ev.wait(0.01)
    return bool(cond())


def state_change(event: int, p: nri_pb2.PodSandbox) -> bytes:
    return nri_pb2.StateChangeEvent(event=event, pod=p).SerializeToString()  # type: ignore[arg-type]


@pytest.fixture
def runtime(tmp_path: Path) -> Any:
    rt = FakeRuntime(tmp_path / "nri.sock")
    yield rt
    rt.close()


def start(runtime: FakeRuntime, dra: FakeDra, netns: FakeNetns) -> tuple[NriPlugin, PodHandlers]:
    handlers = PodHandlers(dra, netns)
    plugin = NriPlugin(
        handlers,
        PluginOptions(
            socket_path=str(runtime.path), name="dranet", index="07", backoff_initial=0.01, backoff_max=0.05
        ),
    )
    plugin.start()
    return plugin, handlers


def test_lifecycle_register_configure_sync_events(runtime: FakeRuntime) -> None:
    netns = FakeNetns()
    dra = FakeDra({"u1": [dev("eth1")], "bad": [dev("eth2")]})
    plugin, handlers = start(runtime, dra, netns)
    try:
        conf = runtime.accept_and_register(request_timeout_ms=3000)
        assert conf.events == EVENT_MASK == 0xF
        assert (
            runtime.registrations[0].plugin_name == "dranet" and runtime.registrations[0].plugin_idx == "07"
        )
        assert plugin.connected.wait(5) and plugin.runtime_name == "fake" and plugin.runtime_version == "9.9"
        assert handlers.request_timeout == 3.0

        # split synchronize: more=true is echoed, the pods of every part are reconciled at the end
        part = nri_pb2.SynchronizeResponse.FromString(
            runtime.call(
                "Synchronize", nri_pb2.SynchronizeRequest(pods=[pod("old1")], more=True).SerializeToString()
            )
        )
        assert part.more is True
        last = nri_pb2.SynchronizeResponse.FromString(
            runtime.call(
                "Synchronize", nri_pb2.SynchronizeRequest(pods=[pod("old2")], more=False).SerializeToString()
            )
        )
        assert last.more is False
        assert plugin.synchronized.wait(5)

        # a big pod (annotations over 4096 bytes) arrives in one large frame and is parsed
        big = pod("u1", big="x" * 10000)
        runtime.call("StateChange", state_change(nri_pb2.RUN_POD_SANDBOX, big))
        attach = [c for c in netns.calls if c[0] == "attach"][-1]
        assert attach[1]["netns"] == "/var/run/netns/cni-x" and attach[2] <= 2.5

        # an error fails the event with our message, and the connection stays up
        netns.attach_error = BusError("invalid_config", "routes[0].gateway: not an address")
        with pytest.raises(framing.TtrpcError) as err:
            runtime.call("StateChange", state_change(nri_pb2.RUN_POD_SANDBOX, pod("bad")))
        assert err.value.code == framing.CODE_UNKNOWN and "routes[0].gateway" in err.value.message
        netns.attach_error = None

        runtime.call("StateChange", state_change(nri_pb2.STOP_POD_SANDBOX, pod("u1")))
        runtime.call("StateChange", state_change(nri_pb2.REMOVE_POD_SANDBOX, pod("u1", netns="")))
        assert "u1" not in netns.attached

        with pytest.raises(framing.TtrpcError) as err:
            runtime.call("UpdateContainer", b"")
        assert err.value.code == framing.CODE_UNIMPLEMENTED
        assert plugin.connected.is_set()
    finally:
        plugin.stop()


def test_large_responses_are_split_into_4096_byte_frames(runtime: FakeRuntime) -> None:
    chars = [{"path": f"/dev/infiniband/uverbs{i}", "major": 231, "minor": i} for i in range(300)]
    netns = FakeNetns()
    plugin, _ = start(runtime, FakeDra({"r1": [dev("eth1", char_devices=chars)]}), netns)
    try:
        runtime.accept_and_register()
        runtime.call("StateChange", state_change(nri_pb2.RUN_POD_SANDBOX, pod("r1")))
        req = nri_pb2.CreateContainerRequest(pod=pod("r1"), container=nri_pb2.Container(id="c1", name="app"))
        resp = nri_pb2.CreateContainerResponse.FromString(
            runtime.call("CreateContainer", req.SerializeToString())
        )
        devices = resp.adjust.linux.devices
        assert len(devices) == 300
        d = devices[5]
        assert (d.path, d.type, d.major, d.minor) == ("/dev/infiniband/uverbs5", "c", 231, 5)
        assert d.HasField("file_mode") and d.file_mode.value == 0o666
        assert d.HasField("uid") and d.uid.value == 0 and d.HasField("gid") and d.gid.value == 0
        assert len(resp.SerializeToString()) > 4096
        assert runtime.max_frame == 4096
    finally:
        plugin.stop()


def test_reconnects_after_the_runtime_drops_it(runtime: FakeRuntime) -> None:
    plugin, _ = start(runtime, FakeDra(), FakeNetns())
    try:
        runtime.accept_and_register()
        assert plugin.connected.wait(5)
        runtime.drop()
        runtime.accept_and_register()  # the plugin came back by itself
        assert len(runtime.registrations) == 2
        assert wait_for(lambda: plugin.connections == 2) and plugin.connected.wait(5)
    finally:
        plugin.stop()


def test_plugin_waits_for_a_runtime_that_is_not_there_yet(tmp_path: Path) -> None:
    path = tmp_path / "late.sock"
    handlers = PodHandlers(FakeDra(), FakeNetns())
    plugin = NriPlugin(handlers, PluginOptions(socket_path=str(path), backoff_initial=0.01, backoff_max=0.05))
    plugin.start()
    try:
        threading.Event().wait(0.1)
        rt = FakeRuntime(path)
        try:
            rt.accept_and_register()
            assert plugin.connected.wait(5)
        finally:
            rt.close()
    finally:
        plugin.stop()


def test_bad_index_is_refused() -> None:
    with pytest.raises(ValueError, match="two digits"):
        NriPlugin(PodHandlers(FakeDra(), FakeNetns()), PluginOptions(index="1"))


def test_protocol_error_closes_the_connection(runtime: FakeRuntime) -> None:
    plugin, _ = start(runtime, FakeDra(), FakeNetns())
    try:
        runtime.accept_and_register()
        assert wait_for(lambda: plugin.connections == 1)
        assert runtime.sock is not None
        runtime.sock.sendall(struct.pack(">II", 0, 0))  # conn 0 is reserved
        runtime.accept_and_register()  # closed, then reconnected
        assert wait_for(lambda: plugin.connections == 2)
    finally:
        plugin.stop()


class BlockingDra(FakeDra):
    """pod_devices waits until released, for the pods whose uid starts with "slow"."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.waiting = 0
        self._lock = threading.Lock()

    def pod_devices(self, pod_uid: str, timeout: float) -> list[dict[str, Any]]:
        if pod_uid.startswith("slow"):
            with self._lock:
                self.waiting += 1
            self.release.wait(10)
        return super().pod_devices(pod_uid, timeout)


def run_request(uid: str) -> bytes:
    return nri_pb2.RunPodSandboxRequest(pod=pod(uid)).SerializeToString()


def test_a_slow_handler_does_not_hold_up_the_others(runtime: FakeRuntime) -> None:
    dra = BlockingDra()
    plugin, _ = start(runtime, dra, FakeNetns())
    try:
        runtime.accept_and_register()
        slow = runtime.send_request("RunPodSandbox", run_request("slow-1"))
        assert wait_for(lambda: dra.waiting == 1)
        runtime.call("RunPodSandbox", run_request("fast-1"), timeout=5)  # answered while slow-1 waits
        dra.release.set()
        runtime.wait_response(slow)
    finally:
        dra.release.set()
        plugin.stop()


def test_requests_are_served_by_a_bounded_pool(runtime: FakeRuntime) -> None:
    dra = BlockingDra()
    plugin, _ = start(runtime, dra, FakeNetns())
    try:
        runtime.accept_and_register()
        before = threading.active_count()
        streams = [runtime.send_request("RunPodSandbox", run_request(f"slow-{i}")) for i in range(200)]
        assert wait_for(lambda: dra.waiting >= REQUEST_WORKERS)
        threading.Event().wait(0.2)  # time for any further thread to start
        peak = threading.active_count()
        dra.release.set()
        for s in streams:
            runtime.wait_response(s)
        assert dra.waiting == 200
        assert peak - before <= REQUEST_WORKERS, f"{peak - before} threads for 200 requests in flight"
    finally:
        dra.release.set()
        plugin.stop()
