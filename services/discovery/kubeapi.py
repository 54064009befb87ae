"""ResourceSlice and Node calls through the official kubernetes client's typed API (resource.k8s.io/v1).

The same client style as dra's: the typed `ResourceV1Api` / `CoreV1Api` methods and the client's
`watch.Watch`. Bodies go in as the plain JSON dicts slices.py builds, and responses come back as JSON
(`_preload_content=False`): building the client's model objects for every response would cost
~0.2 s and tens of MiB per 1,000 devices on each full sync, and the publisher compares JSON anyway.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any, cast

from kubernetes import client, watch

REQUEST_TIMEOUT = 10.0


def _json(resp: Any) -> dict[str, Any]:
    return dict(json.loads(resp.data or b"{}"))


class KubeJSON:
    def __init__(self, api_client: Any) -> None:
        self.api = api_client
        self.resource = client.ResourceV1Api(api_client)
        self.core = client.CoreV1Api(api_client)

    def list_slices(self, field_selector: str) -> dict[str, Any]:
        return _json(
            self.resource.list_resource_slice(
                field_selector=field_selector, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            )
        )

    def create_slice(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        return _json(
            self.resource.create_resource_slice(
                cast(Any, obj), _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            )
        )

    def replace_slice(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        return _json(
            self.resource.replace_resource_slice(
                obj["metadata"]["name"],
                cast(Any, obj),
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
        )

    def delete_slice(self, name: str, uid: str = "", resource_version: str = "") -> None:
        """Delete one slice; with uid/resourceVersion preconditions (409 when it changed)."""
        pre = {k: v for k, v in (("uid", uid), ("resourceVersion", resource_version)) if v}
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": pre} if pre else None
        self.resource.delete_resource_slice(
            name, body=cast(Any, body), _preload_content=False, _request_timeout=REQUEST_TIMEOUT
        )

    def read_node(self, name: str) -> dict[str, Any]:
        return _json(self.core.read_node(name, _preload_content=False, _request_timeout=REQUEST_TIMEOUT))

    def watch_slices(self, field_selector: str, resource_version: str, seconds: int) -> WatchStream:
        return WatchStream(self, field_selector, resource_version, seconds)


class WatchStream:
    """Watch events ({type, object} with the object as JSON) from the client's watch; close() stops
    it from another thread. A 410 (too old) ends it with ApiException(410)."""

    def __init__(self, kube: KubeJSON, field_selector: str, resource_version: str, seconds: int) -> None:
        self._watch = watch.Watch()
        self._events = self._watch.stream(
            kube.resource.list_resource_slice,
            field_selector=field_selector,
            resource_version=resource_version,
            timeout_seconds=seconds,  # also turns off the client's own retries: we list and resume
            allow_watch_bookmarks=True,
            _request_timeout=(REQUEST_TIMEOUT, seconds + 30),
        )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for event in self._events:
            yield {"type": event["type"], "object": event["raw_object"]}

    def close(self) -> None:
        self._watch.stop()  # shuts the socket down: unblocks a reader in another thread
