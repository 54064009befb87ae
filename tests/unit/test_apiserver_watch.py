"""Watch on the local API server stand-in through the official kubernetes client: event order,
resuming from a resourceVersion, 410 for a compacted one, selector transitions, server stop."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, watch

from localcluster.apiserver import LocalAPIServer

# The client's typed results are Optional everywhere; the tests handle them as Any.
ResourceV1Api: Any = client.ResourceV1Api
CoreV1Api: Any = client.CoreV1Api


@pytest.fixture
def server() -> Iterator[LocalAPIServer]:
    srv = LocalAPIServer(watch_history=50)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def api(server: LocalAPIServer, tmp_path: Path) -> client.ApiClient:
    return config.new_client_from_config(str(server.write_kubeconfig(tmp_path / "kubeconfig")))


def slice_obj(name: str, node: str, labels: dict[str, str] | None = None) -> Any:
    return client.V1ResourceSlice.from_dict({
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"driver": "dra.net", "nodeName": node,
                 "pool": {"name": node, "generation": 0, "resourceSliceCount": 1}, "devices": []},
    })


def collect(func: Any, count: int, return_type: Any = None, **kwargs: Any) -> list[tuple[str, str, str]]:
    """(type, name, resourceVersion) of the first `count` events; the timeout only bounds a failing test."""
    w = watch.Watch(return_type=return_type)
    out = []
    for event in w.stream(func, timeout_seconds=10, **kwargs):
        meta = event["object"].metadata
        out.append((event["type"], meta.name, meta.resource_version))
        if len(out) == count:
            w.stop()
    return out


def test_events_arrive_in_order_from_a_list_resource_version(api: client.ApiClient) -> None:
    res = ResourceV1Api(api)
    rv = res.list_resource_slice().metadata.resource_version
    created = res.create_resource_slice(slice_obj("a", "n1"))
    created.spec.pool.generation = 1
    modified = res.replace_resource_slice("a", created)
    res.delete_resource_slice("a")
    events = collect(res.list_resource_slice, 3, resource_version=rv)
    assert [(t, n) for t, n, _ in events] == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
    assert events[1][2] == modified.metadata.resource_version
    rvs = [int(r) for _, _, r in events]
    assert rvs == sorted(rvs) and len(set(rvs)) == 3


def test_resume_from_a_resource_version_skips_older_events(api: client.ApiClient) -> None:
    res = ResourceV1Api(api)
    first = res.create_resource_slice(slice_obj("a", "n1"))
    res.create_resource_slice(slice_obj("b", "n2"))
    events = collect(res.list_resource_slice, 1, resource_version=first.metadata.resource_version)
    assert [(t, n) for t, n, _ in events] == [("ADDED", "b")]


def test_watch_from_zero_starts_with_the_current_objects(api: client.ApiClient) -> None:
    res = ResourceV1Api(api)
    res.create_resource_slice(slice_obj("a", "n1"))
    res.create_resource_slice(slice_obj("b", "n2"))
    res.delete_resource_slice("a")
    events = collect(res.list_resource_slice, 1, resource_version="0")
    assert [(t, n) for t, n, _ in events] == [("ADDED", "b")]


def test_live_events_reach_a_running_watch(api: client.ApiClient) -> None:
    res = ResourceV1Api(api)
    rv = res.list_resource_slice().metadata.resource_version
    got: list[tuple[str, str, str]] = []
    reader = threading.Thread(target=lambda: got.extend(
        collect(res.list_resource_slice, 2, resource_version=rv, field_selector="spec.nodeName=n1")))
    reader.start()
    res.create_resource_slice(slice_obj("other", "n2"))  # filtered out by the field selector
    res.create_resource_slice(slice_obj("a", "n1"))
    res.delete_resource_slice("a")
    reader.join(timeout=15)
    assert [(t, n) for t, n, _ in got] == [("ADDED", "a"), ("DELETED", "a")]


def test_too_old_resource_version_is_gone(api: client.ApiClient) -> None:
    res = ResourceV1Api(api)
    rv = res.list_resource_slice().metadata.resource_version
    for i in range(60):  # more changes than the server's watch history (50)
        res.create_resource_slice(slice_obj(f"s{i}", f"n{i}"))
    with pytest.raises(client.ApiException) as exc:
        collect(res.list_resource_slice, 1, resource_version=rv)
    assert exc.value.status == 410 and "Expired" in exc.value.reason


def test_label_selector_transitions_become_added_and_deleted(api: client.ApiClient) -> None:
    res = ResourceV1Api(api)
    rv = res.list_resource_slice().metadata.resource_version
    res.create_resource_slice(slice_obj("a", "n1"))
    res.patch_resource_slice("a", {"metadata": {"labels": {"team": "net"}}})
    res.patch_resource_slice("a", {"spec": {"pool": {"generation": 1}}})
    res.patch_resource_slice("a", {"metadata": {"labels": {"team": None}}})
    events = collect(res.list_resource_slice, 3, resource_version=rv, label_selector="team=net")
    assert [(t, n) for t, n, _ in events] == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]


def test_namespaced_watch_sees_only_its_namespace(api: client.ApiClient) -> None:
    res = ResourceV1Api(api)
    core = CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="other")))
    rv = res.list_resource_claim_for_all_namespaces().metadata.resource_version
    spec = {"devices": {"requests": [{"name": "nic", "exactly": {"deviceClassName": "dranet"}}]}}
    for ns in ("other", "default"):
        res.create_namespaced_resource_claim(ns, client.ResourceV1ResourceClaim.from_dict(
            {"metadata": {"name": f"c-{ns}"}, "spec": spec}))
    # The client cannot guess the claim model's name (ResourceV1ResourceClaim) from the list type: pass it.
    claim = client.ResourceV1ResourceClaim
    events = collect(res.list_namespaced_resource_claim, 1, claim, namespace="default", resource_version=rv)
    assert [(t, n) for t, n, _ in events] == [("ADDED", "c-default")]
    every = collect(res.list_resource_claim_for_all_namespaces, 2, claim, resource_version=rv)
    assert [n for _, n, _ in every] == ["c-other", "c-default"]


def test_server_stop_ends_open_watches(server: LocalAPIServer, api: client.ApiClient) -> None:
    res = ResourceV1Api(api)
    ended = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            for _ in watch.Watch().stream(res.list_resource_slice, timeout_seconds=30, resource_version="0"):
                pass
        except BaseException as exc:  # a closed connection is an acceptable way to end
            errors.append(exc)
        ended.set()

    reader = threading.Thread(target=run, daemon=True)
    reader.start()
    res.list_resource_slice()  # the server is serving
    server.stop()
    assert ended.wait(timeout=15)
