"""Kubernetes Events for failures: nri's pod events -> Events on the pod, prepare failures -> an Event
on the ResourceClaim; written once per event id, retried while the API server is down."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dranet.services.dra.events import (
    REASON_ATTACH_FAILED,
    REASON_LATE_ATTACHED,
    REASON_PREPARE_FAILED,
    EventRecorder,
    event_object,
    from_pod_event,
)
from dranet.services.nri.main import RecentEvents
from kubernetes import client as kclient
from kubernetes import config as kconfig

from dranet.service import ServiceHost
from localcluster.apiserver import LocalAPIServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "conformance"))
from dra_kubelet import Harness, service_args, wait_for


def failed(n: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": f"boot1-{n}",
        "event": "attach_failed",
        "pod_uid": f"uid-{n}",
        "pod": f"default/pod-{n}",
        "devices": ["eth1"],
        "code": "kernel_error",
        "reason": "eth1: step 'move' failed: File exists (interface.name: ...)",
        "time": time.time(),
        **extra,
    }


# ------------------------------------------------------------------ pure


def test_pod_event_mapping() -> None:
    spec = from_pod_event(failed(1))
    assert spec is not None
    assert (spec.type, spec.reason, spec.namespace, spec.key) == (
        "Warning",
        REASON_ATTACH_FAILED,
        "default",
        "boot1-1",
    )
    assert dict(spec.involved) == {
        "kind": "Pod",
        "apiVersion": "v1",
        "namespace": "default",
        "name": "pod-1",
        "uid": "uid-1",
    }
    assert "eth1" in spec.message and "File exists" in spec.message and "kernel_error" in spec.message
    budget = from_pod_event(
        failed(2, code="timeout", reason="the attach did not finish within the 1.50s budget")
    )
    assert budget is not None and "budget" in budget.message and budget.type == "Warning"
    late = from_pod_event(failed(3, event="late_attach_failed"))
    assert late is not None and late.reason == REASON_ATTACH_FAILED and "late attach" in late.message
    done = from_pod_event({**failed(4, event="late_attached"), "code": None, "reason": None})
    assert done is not None and (done.type, done.reason) == ("Normal", REASON_LATE_ATTACHED)
    assert from_pod_event(failed(5, event="attached")) is None
    assert from_pod_event(failed(6, event="detached")) is None
    assert from_pod_event(failed(7, pod="uid-7")) is None  # a pod we cannot name


def test_event_object_is_named_after_the_key() -> None:
    spec = from_pod_event(failed(1, reason="x" * 5000))
    assert spec is not None
    obj = event_object(spec, "node-a")
    assert obj["metadata"]["name"].startswith("pod-1.") and obj["metadata"]["namespace"] == "default"
    assert obj["metadata"]["name"] == event_object(spec, "node-a")["metadata"]["name"]
    assert len(obj["message"]) == 1024
    assert obj["source"] == {"component": "dranet", "host": "node-a"} and obj["count"] == 1


def test_recent_events_snapshot_keeps_the_last_ones_with_unique_ids() -> None:
    recent = RecentEvents(size=3)
    sent = [recent.add({"event": "attach_failed", "n": i}) for i in range(5)]
    assert len({e["id"] for e in sent}) == 5
    assert [e["n"] for e in recent.snapshot()["events"]] == [2, 3, 4]
    assert RecentEvents().add({})["id"] != sent[0]["id"]  # a restarted nri never reuses an id


# ------------------------------------------------------------------ against the local API server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[LocalAPIServer, kclient.CoreV1Api]]:
    srv = LocalAPIServer()
    srv.start()
    api_client = kconfig.new_client_from_config(config_file=str(srv.write_kubeconfig(tmp_path / "kc")))
    try:
        yield srv, kclient.CoreV1Api(api_client)
    finally:
        srv.stop()


def events_in(core: kclient.CoreV1Api, namespace: str = "default") -> list[Any]:
    return list(core.list_namespaced_event(namespace).items)


def recorder(core: kclient.CoreV1Api, **kw: Any) -> EventRecorder:
    rec = EventRecorder(lambda: core, node="node-a", initial_backoff=0.05, max_backoff=0.2, **kw)
    rec.start()
    return rec


def test_events_written_once_and_deduplicated_on_snapshot_replay(
    server: tuple[LocalAPIServer, kclient.CoreV1Api],
) -> None:
    _, core = server
    rec = recorder(core)
    try:
        rec.on_message("pod_events", failed(1))
        rec.on_message("pod_events", failed(2, event="attached"))  # no Event for a success
        wait_for(rec.idle, what="written")
        (ev,) = events_in(core)
        assert (ev.type, ev.reason, ev.involved_object.kind, ev.involved_object.name) == (
            "Warning",
            REASON_ATTACH_FAILED,
            "Pod",
            "pod-1",
        )
        assert ev.involved_object.uid == "uid-1" and "File exists" in ev.message
        # nri's snapshot re-delivers what was already seen, plus one new event
        rec.on_message("pod_events", {"events": [failed(1), failed(2, event="attached"), failed(3)]})
        wait_for(lambda: rec.idle() and len(events_in(core)) == 2, what="the new one written")
        time.sleep(0.2)
        assert sorted(e.involved_object.name for e in events_in(core)) == ["pod-1", "pod-3"]
    finally:
        rec.close()
    # dra restarted: a new recorder gets the same snapshot; the Events exist already (409)
    again = recorder(core)
    try:
        again.on_message("pod_events", {"events": [failed(1), failed(3)]})
        wait_for(again.idle, what="replay handled")
        assert len(events_in(core)) == 2
    finally:
        again.close()


def test_old_events_in_a_snapshot_are_not_written(server: tuple[LocalAPIServer, kclient.CoreV1Api]) -> None:
    _, core = server
    rec = recorder(core)
    try:
        rec.on_message("pod_events", {"events": [failed(1, time=time.time() - 7200), failed(2)]})
        wait_for(lambda: rec.idle() and len(events_in(core)) == 1, what="written")
        assert events_in(core)[0].involved_object.name == "pod-2"
    finally:
        rec.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_api_server_down_then_up(tmp_path: Path) -> None:
    srv = LocalAPIServer(port=free_port())
    srv.start()
    api_client = kconfig.new_client_from_config(config_file=str(srv.write_kubeconfig(tmp_path / "kc")))
    core = kclient.CoreV1Api(api_client)
    srv.stop()
    rec = recorder(core)
    try:
        rec.on_message("pod_events", failed(1))
        rec.claim_failed("default", "claim-1", "cuid-1", "device node/eth9 is not in this node's inventory")
        wait_for(lambda: all(p.attempts >= 2 for p in rec._pending.values()), what="retries")
        srv.start()
        wait_for(rec.idle, what="written once the API server is back")
        kinds = sorted((e.involved_object.kind, e.reason) for e in events_in(core))
        assert kinds == [("Pod", REASON_ATTACH_FAILED), ("ResourceClaim", REASON_PREPARE_FAILED)]
    finally:
        rec.close()
        srv.stop()


def test_a_refused_event_is_dropped_not_retried() -> None:
    calls: list[int] = []

    class Refusing:
        def create_namespaced_event(self, *_a: Any, **_kw: Any) -> None:
            calls.append(1)
            raise kclient.ApiException(status=403, reason="Forbidden")

    rec = EventRecorder(lambda: Refusing(), node="n", initial_backoff=0.01)
    rec.start()
    try:
        rec.on_message("pod_events", failed(1))
        wait_for(rec.idle, what="dropped")
        time.sleep(0.1)
        assert calls == [1]
    finally:
        rec.close()


# ------------------------------------------------------------------ in the dra service


def test_dra_writes_pod_events_from_nri_and_claim_prepare_failures() -> None:
    h = Harness()
    nri = ServiceHost("nri", service_args(h.root), drop_caps=False, install_signals=False)
    recent = RecentEvents()
    recent.add(failed(1))  # happened before dra started: comes with the snapshot
    nri.serve({}, snapshots={"pod_events": recent.snapshot})
    try:
        h.start_dra()
        core = kclient.CoreV1Api(h.cluster.api_client)

        def reasons() -> list[tuple[str, str, str]]:
            return sorted((e.involved_object.kind, e.involved_object.name, e.reason) for e in events_in(core))

        wait_for(lambda: reasons() == [("Pod", "pod-1", REASON_ATTACH_FAILED)], what="snapshot event")
        nri.publish("pod_events", recent.add(failed(2, event="late_attach_failed")))
        wait_for(lambda: len(reasons()) == 2, what="published event")
        claim = h.cluster.create_claim(devices=["eth9"])  # not in the inventory: prepare fails
        err = h.kubelet.prepare(h.endpoint, [claim])[claim[1]][1]
        assert err
        h.kubelet.prepare(h.endpoint, [claim])  # the kubelet retries: still one Event
        wait_for(lambda: ("ResourceClaim", claim[2], REASON_PREPARE_FAILED) in reasons(), what="claim event")
        time.sleep(0.3)
        assert len(reasons()) == 3
        (ev,) = [e for e in events_in(core) if e.reason == REASON_PREPARE_FAILED]
        assert ev.message == err and ev.involved_object.uid == claim[1]
    finally:
        h.close()
        nri.close()


def test_restore_incomplete_is_a_warning_on_the_claim() -> None:
    """The worker gave a device back without all of its settings: a Warning on the claim."""
    from dranet.services.dra.events import REASON_RESTORE_INCOMPLETE, from_attachment

    body = {
        "pod_uid": "p1",
        "device": "eth1",
        "claim_uid": "c1",
        "state": "restore_incomplete",
        "error": {
            "code": "restore_incomplete",
            "message": "eth1 is back on the host ... 'restore-rules' failed",
        },
    }
    spec = from_attachment(body, ("default", "claim-1", "c1"))
    assert spec is not None and spec.type == "Warning" and spec.reason == REASON_RESTORE_INCOMPLETE
    assert spec.involved["kind"] == "ResourceClaim" and spec.involved["name"] == "claim-1"
    assert "restore-rules" in spec.message
    assert from_attachment(body, ("default", "claim-1", "c1")).key == spec.key  # type: ignore[union-attr]
    assert from_attachment({**body, "state": "detached"}, ("default", "claim-1", "c1")) is None
    assert from_attachment(body, None) is None
