"""Pure parts of the local API server stand-in (selectors, patches, store) and its command line."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from localcluster import apipatch, apiselectors
from localcluster.apiserver import LocalAPIServer
from localcluster.apistore import APIStore, StoreError

# The client's typed results are Optional everywhere; the tests handle them as Any.
CoreV1Api: Any = client.CoreV1Api


@pytest.mark.parametrize(("selector", "labels", "want"), [
    ("", {}, True),
    ("a=b", {"a": "b"}, True),
    ("a==b", {"a": "c"}, False),
    ("a!=b", {}, True),
    ("a in (x, y),b", {"a": "y", "b": ""}, True),
    ("a notin (x)", {"a": "x"}, False),
    ("!a", {"a": "1"}, False),
    ("example.com/role=nic,tier", {"example.com/role": "nic", "tier": "1"}, True),
])
def test_label_selector(selector: str, labels: dict[str, str], want: bool) -> None:
    assert apiselectors.parse_label_selector(selector)(labels) is want


def test_label_selector_rejects_bad_keys() -> None:
    with pytest.raises(apiselectors.SelectorError):
        apiselectors.parse_label_selector("-bad=x")


def test_field_selector_paths_and_missing_fields() -> None:
    allowed = ["spec.nodeName", "spec.pool.name"]
    match = apiselectors.parse_field_selector("spec.nodeName=,spec.pool.name!=x", allowed)
    assert match({"spec": {"pool": {"name": "n1"}}})
    assert not match({"spec": {"nodeName": "n1"}})
    with pytest.raises(apiselectors.SelectorError):
        apiselectors.parse_field_selector("spec.other=1", ["spec.nodeName"])


def test_merge_patch() -> None:
    target = {"a": {"b": 1, "c": 2}, "l": [1, 2]}
    out = apipatch.merge_patch(target, {"a": {"b": None, "d": 3}, "l": [3]})
    assert out == {"a": {"c": 2, "d": 3}, "l": [3]}
    assert target == {"a": {"b": 1, "c": 2}, "l": [1, 2]}  # the input is not changed


def test_json_patch_ops_and_errors() -> None:
    doc = {"a": [1, 2], "b": {"c": 1}}
    out = apipatch.json_patch(doc, [
        {"op": "add", "path": "/a/-", "value": 3},
        {"op": "replace", "path": "/b/c", "value": 2},
        {"op": "copy", "from": "/b", "path": "/d"},
        {"op": "move", "from": "/a/0", "path": "/e"},
        {"op": "remove", "path": "/b"},
        {"op": "test", "path": "/e", "value": 1},
        {"op": "add", "path": "/x~1y", "value": True},
    ])
    assert out == {"a": [2, 3], "d": {"c": 2}, "e": 1, "x/y": True}
    with pytest.raises(apipatch.PatchError):
        apipatch.json_patch(doc, [{"op": "remove", "path": "/missing"}])
    with pytest.raises(apipatch.PatchError):
        apipatch.json_patch(doc, [{"op": "test", "path": "/a/0", "value": 9}])


def test_store_history_compaction_gives_410() -> None:
    store = APIStore(history=3)
    rt = store.types["/nodes"]
    start = store.resource_version
    for i in range(5):
        store.create(rt, "", {"metadata": {"name": f"n{i}"}})
    with pytest.raises(StoreError) as exc:
        store.events_after(start, 0)
    assert exc.value.code == 410 and exc.value.reason == "Expired"
    latest = store.resource_version
    assert [e.obj["metadata"]["name"] for e in store.events_after(latest - 2, 0)] == ["n3", "n4"]


def test_send_initial_events_ends_with_a_bookmark() -> None:
    with LocalAPIServer() as srv:
        url = (f"{srv.url}/api/v1/namespaces?watch=true&sendInitialEvents=true"
               "&resourceVersionMatch=NotOlderThan&timeoutSeconds=1")
        with urllib.request.urlopen(url, timeout=10) as resp:
            events = [json.loads(line) for line in resp.read().splitlines() if line]
    assert [e["type"] for e in events][-1] == "BOOKMARK"
    assert events[-1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert {e["object"]["metadata"]["name"] for e in events[:-1]} >= {"default", "kube-system"}


def test_discovery_endpoints() -> None:
    with LocalAPIServer() as srv:
        def get(path: str) -> dict:
            with urllib.request.urlopen(srv.url + path, timeout=10) as resp:
                return json.loads(resp.read())
        assert get("/apis")["groups"][0]["preferredVersion"]["groupVersion"] == "resource.k8s.io/v1"
        names = {r["name"] for r in get("/apis/resource.k8s.io/v1")["resources"]}
        assert {"resourceslices", "resourceclaims", "resourceclaims/status", "deviceclasses"} <= names
        assert "pods" in {r["name"] for r in get("/api/v1")["resources"]}


def test_refused_request_body_does_not_break_keep_alive() -> None:
    with LocalAPIServer() as srv:
        conn = http.client.HTTPConnection(srv.url.removeprefix("http://"), timeout=10)
        conn.request("POST", "/apis/resource.k8s.io/v1/widgets", body=b'{"metadata": {"name": "x"}}',
                     headers={"Content-Type": "application/json"})
        first = conn.getresponse()
        assert first.status == 404 and json.loads(first.read())["reason"] == "NotFound"
        conn.request("GET", "/api/v1/namespaces/default")  # same connection
        second = conn.getresponse()
        assert second.status == 200 and json.loads(second.read())["metadata"]["name"] == "default"
        conn.close()


def test_command_line_serves_until_sigterm(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    proc = subprocess.Popen(
        [sys.executable, "-m", "localcluster.apiserver", "--port", "0",
         "--kubeconfig-out", str(kubeconfig)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "serving at http://127.0.0.1:" in line
        api = config.new_client_from_config(str(kubeconfig))
        assert CoreV1Api(api).read_namespace("kube-system").metadata.name == "kube-system"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
