"""Upstream's webhook provider protocol, client side: JSON over HTTP, on TCP or a unix socket.

  GET  /health                -> {"cloudProvider": bool, "profileProvider": bool}
  POST /GetDeviceAttributes   DeviceIdentifiers -> {qualified name: DeviceAttribute}
  POST /GetDeviceConfig       DeviceIdentifiers -> NetworkConfig (baseline)
  POST /GetProfileConfig      {"device", "claim_uid", "config"} -> NetworkConfig of the profile
  POST /ReleaseProfileConfig  {"device", "claim_uid", "config"} -> 200 when freed (or never held)

A non-200 answer is the provider's refusal: 4xx (bad request, unknown profile, conflict, pool
exhausted) fails the same way on a retry; 5xx, a timeout or no connection may pass later.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from dranet.providers.model import AttrValue, DeviceIdentifiers, ProviderError, attribute_value

DEFAULT_TIMEOUT = 10.0  # upstream's client timeout


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class WebhookProvider:
    """Both provider roles, as the webhook's /health declares them."""

    def __init__(self, url: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https", "unix"):
            raise ValueError(f"webhook URL {url!r}: use http://, https:// or unix:///path")
        self.url = url
        self.timeout = timeout
        self._parts = parts
        self._base = "" if parts.scheme == "unix" else parts.path.rstrip("/")
        self.cloud_provider = False
        self.profile_provider = False

    def _connection(self) -> http.client.HTTPConnection:
        p = self._parts
        if p.scheme == "unix":
            return _UnixConnection(p.path, self.timeout)
        if p.scheme == "https":
            return http.client.HTTPSConnection(p.netloc, timeout=self.timeout)
        return http.client.HTTPConnection(p.netloc, timeout=self.timeout)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        what = f"webhook {self.url} {path}"
        conn = self._connection()
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {"Content-Type": "application/json"} if data is not None else {}
            conn.request(method, self._base + path, body=data, headers=headers)
            resp = conn.getresponse()
            text = resp.read(1 << 20)
        except TimeoutError:
            raise ProviderError(
                f"{what}: no answer within {self.timeout:g}s; the kubelet will retry"
            ) from None
        except OSError as exc:
            raise ProviderError(
                f"{what}: cannot reach the webhook ({exc.strerror or exc}); check that it runs and "
                "--webhook-url; the kubelet will retry"
            ) from None
        except http.client.HTTPException as exc:
            raise ProviderError(f"{what}: not an HTTP answer ({exc!r})") from None
        finally:
            conn.close()
        if resp.status != 200:
            detail = text.decode(errors="replace").strip()[:300]
            raise ProviderError(
                f"{what} refused: HTTP {resp.status}: {detail or resp.reason}", retriable=resp.status >= 500
            )
        try:
            return json.loads(text) if text.strip() else None
        except ValueError:
            raise ProviderError(f"{what}: the answer is not JSON: {text[:100]!r}") from None

    # ------------------------------------------------------------ capabilities
    def health(self) -> dict[str, bool]:
        """GET /health; remembers which roles the webhook takes."""
        caps = self._call("GET", "/health")
        if not isinstance(caps, Mapping):
            raise ProviderError(f"webhook {self.url} /health: expected a JSON object, got {caps!r}")
        self.cloud_provider = caps.get("cloudProvider") is True
        self.profile_provider = caps.get("profileProvider") is True
        return {"cloudProvider": self.cloud_provider, "profileProvider": self.profile_provider}

    # ------------------------------------------------------------ CloudInstance
    def device_attributes(self, device: DeviceIdentifiers) -> dict[str, AttrValue]:
        answer = self._call("POST", "/GetDeviceAttributes", device.to_json())
        if not isinstance(answer, Mapping):
            return {}
        out = {}
        for name, value in answer.items():
            plain = attribute_value(value)
            if isinstance(name, str) and plain is not None:
                out[name] = plain
        return out

    def device_config(self, device: DeviceIdentifiers) -> dict[str, Any] | None:
        answer = self._call("POST", "/GetDeviceConfig", device.to_json())
        return dict(answer) if isinstance(answer, Mapping) and answer else None

    # ------------------------------------------------------------ ProfileProvider
    def profile_config(
        self, device: DeviceIdentifiers, claim_uid: str, config: Mapping[str, Any]
    ) -> dict[str, Any]:
        body = {"device": device.to_json(), "claim_uid": claim_uid, "config": dict(config)}
        answer = self._call("POST", "/GetProfileConfig", body)
        if not isinstance(answer, Mapping):
            raise ProviderError(f"webhook {self.url} /GetProfileConfig: expected a configuration object")
        return dict(answer)

    def release_profile_config(
        self, device: DeviceIdentifiers, claim_uid: str, config: Mapping[str, Any]
    ) -> None:
        body = {"device": device.to_json(), "claim_uid": claim_uid, "config": dict(config)}
        self._call("POST", "/ReleaseProfileConfig", body)
