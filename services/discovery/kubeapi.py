"""Raw-JSON calls through the official kubernetes client's ApiClient.

The generated typed APIs validate every request body with pydantic and build model objects for
every response: for 1,000 devices that costs ~0.4 s and tens of MiB on the first sync. Discovery
already builds plain JSON bodies (slices.py), so it sends them through the same ApiClient
(kubeconfig, auth, TLS, proxies and retries unchanged) with `param_serialize` + `call_api`.

The typed API was tried (client 37, JSON in and out with `_preload_content=False`): per call it
costs the same, but importing the API modules does not: `ResourceV1Api` ~1 s and `CoreV1Api` (for
the Node) ~4.8 s on a loaded 2-core machine, paid on the first publish, which came up to 6 s later.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

REQUEST_TIMEOUT = 10.0
SLICES = "/apis/resource.k8s.io/v1/resourceslices"


class KubeJSON:
    def __init__(self, api_client: Any) -> None:
        self.api = api_client

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: Mapping[str, Any] | None = None,
        timeout: Any = None,
    ) -> Any:
        params = self.api.param_serialize(
            method=method,
            resource_path=path,
            query_params=[(k, v) for k, v in (query or {}).items() if v is not None],
            header_params={"Accept": "application/json", "Content-Type": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        resp = self.api.call_api(*params, _request_timeout=timeout or REQUEST_TIMEOUT)
        if not 200 <= resp.status <= 299:
            resp.read()
            raise ApiException.from_response(http_resp=resp, body=None, data=None)
        return resp

    def request(
        self, method: str, path: str, body: Any = None, query: Mapping[str, Any] | None = None
    ) -> Any:
        return json.loads(self._call(method, path, body, query).read() or b"{}")

    def list_slices(self, field_selector: str) -> dict[str, Any]:
        return dict(self.request("GET", SLICES, query={"fieldSelector": field_selector}))

    def create_slice(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self.request("POST", SLICES, body=obj))

    def replace_slice(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        return dict(self.request("PUT", f"{SLICES}/{obj['metadata']['name']}", body=obj))

    def delete_slice(self, name: str, uid: str = "", resource_version: str = "") -> None:
        """Delete one slice; with uid/resourceVersion preconditions (409 when it changed)."""
        pre = {k: v for k, v in (("uid", uid), ("resourceVersion", resource_version)) if v}
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": pre} if pre else None
        self.request("DELETE", f"{SLICES}/{name}", body=body)

    def read_node(self, name: str) -> dict[str, Any]:
        return dict(self.request("GET", f"/api/v1/nodes/{name}"))

    def watch_slices(self, field_selector: str, resource_version: str, seconds: int) -> WatchStream:
        resp = self._call(
            "GET",
            SLICES,
            query={
                "watch": "true",
                "fieldSelector": field_selector,
                "resourceVersion": resource_version,
                "timeoutSeconds": seconds,
                "allowWatchBookmarks": "true",
            },
            timeout=(REQUEST_TIMEOUT, seconds + 30),
        )
        return WatchStream(resp.response)


class WatchStream:
    """Watch events (dicts with type and object) from a streaming response; close() stops it."""

    def __init__(self, response: Any) -> None:
        self.response = response

    def __iter__(self) -> Iterator[dict[str, Any]]:
        buf = b""
        for chunk in self.response.stream(64 * 1024, decode_content=True):
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.strip():
                    yield json.loads(line)
        if buf.strip():
            yield json.loads(buf)

    def close(self) -> None:
        try:
            self.response.shutdown()  # urllib3 >= 2.3: unblocks a reader in another thread
        except Exception:
            pass
        try:
            self.response.release_conn()
        except Exception:
            pass
