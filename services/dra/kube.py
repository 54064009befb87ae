"""ResourceClaim reads and status writes through the official kubernetes client (resource.k8s.io/v1).

Claims are read as raw JSON (the API's own camelCase field names), which is what prepare.py and
status.py work on; no model conversion on the hot path.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any, cast

from kubernetes import client
from kubernetes.client.rest import ApiException
from urllib3.exceptions import HTTPError

from .model import PrepareError


class KubeClaims:
    """`api_client` is an ApiClient or a function building one, called on first use: dra starts (and
    answers ping) even when the kubeconfig is missing; each call then fails with the reason."""

    def __init__(
        self, api_client: client.ApiClient | Callable[[], client.ApiClient], *, timeout: float = 10.0
    ) -> None:
        self._factory = api_client if callable(api_client) else None
        self._api: client.ResourceV1Api | None = (
            None if callable(api_client) else client.ResourceV1Api(api_client)
        )
        self._lock = threading.Lock()
        self.config_error = ""
        # (connect, read) seconds: the kubelet allows 45 s for a whole prepare call.
        self.timeout = (min(timeout, 5.0), timeout)

    @property
    def api(self) -> client.ResourceV1Api:
        with self._lock:
            if self._api is None:
                assert self._factory is not None
                try:
                    self._api = client.ResourceV1Api(self._factory())
                    self.config_error = ""
                except Exception as exc:  # the kubernetes config loader raises several types
                    self.config_error = f"cannot configure the API client: {exc}; check --kubeconfig"
                    raise PrepareError(self.config_error, retriable=True) from None
            return self._api

    def get_claim(self, namespace: str, name: str) -> dict[str, Any]:
        try:
            resp: Any = self.api.read_namespaced_resource_claim(
                name, namespace, _preload_content=False, _request_timeout=self.timeout
            )
            return dict(json.loads(resp.data))
        except ApiException as exc:
            if exc.status == 404:
                raise PrepareError(f"ResourceClaim {namespace}/{name} not found in the API server") from None
            raise PrepareError(
                f"reading ResourceClaim {namespace}/{name} failed: HTTP {exc.status} {exc.reason}; "
                "the kubelet will retry",
                retriable=True,
            ) from None
        except (HTTPError, OSError) as exc:
            raise PrepareError(
                f"the API server is unreachable ({type(exc).__name__}: {exc}); the kubelet will retry",
                retriable=True,
            ) from None

    def get_claim_or_none(self, namespace: str, name: str) -> dict[str, Any] | None:
        """For background work: None when the claim is gone; other failures raise."""
        try:
            resp: Any = self.api.read_namespaced_resource_claim(
                name, namespace, _preload_content=False, _request_timeout=self.timeout
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return dict(json.loads(resp.data))

    def list_claims(self) -> list[dict[str, Any]]:
        """Every ResourceClaim of the cluster (to find this node's after a lost checkpoint)."""
        resp: Any = self.api.list_resource_claim_for_all_namespaces(
            _preload_content=False, _request_timeout=self.timeout
        )
        return list(json.loads(resp.data).get("items") or [])

    def apply_status(
        self, namespace: str, name: str, uid: str, devices: list[dict[str, Any]], manager: str
    ) -> bool:
        """Server-side apply of status.devices (our entries only) as field manager `manager`, forced,
        with the UID as a precondition. False when the claim is gone (404) or was re-created (409:
        with force, the only conflict left is the UID precondition)."""
        body: dict[str, Any] = {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": {"name": name, "namespace": namespace, "uid": uid},
        }
        if devices:
            body["status"] = {"devices": devices}
        try:
            self.api.patch_namespaced_resource_claim_status(
                name,
                namespace,
                cast(Any, body),
                field_manager=manager,
                force=True,
                _content_type="application/apply-patch+yaml",
                _preload_content=False,
                _request_timeout=self.timeout,
            )
        except ApiException as exc:
            if exc.status in (404, 409):
                return False
            raise
        return True
