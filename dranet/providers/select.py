"""Which cloud provider discovery asks for device attributes (``--cloud-provider``)."""

from __future__ import annotations

import logging
import threading
import time

from dranet.providers import aws, gce
from dranet.providers.model import AttrValue, CloudInstance, DeviceIdentifiers, ProviderError
from dranet.providers.webhook import WebhookProvider

log = logging.getLogger(__name__)

KINDS = ("none", "gce", "aws", "webhook")


class CachedAttributes:
    """A provider's attributes per device identity, asked once (a webhook is one HTTP round trip
    per call; discovery scans on every link change)."""

    def __init__(self, inner: CloudInstance) -> None:
        self.inner = inner
        self._cache: dict[DeviceIdentifiers, dict[str, AttrValue]] = {}
        self._lock = threading.Lock()

    def device_attributes(self, device: DeviceIdentifiers) -> dict[str, AttrValue]:
        with self._lock:
            hit = self._cache.get(device)
        if hit is not None:
            return hit
        try:
            attrs = self.inner.device_attributes(device)
        except ProviderError as exc:
            log.warning("cloud attributes unavailable", extra={"device": device.name, "error": exc.message})
            return {}  # not cached: asked again at the next scan
        with self._lock:
            self._cache[device] = attrs
        return attrs


def cloud_instance(
    kind: str, *, metadata_url: str = "", webhook_url: str = "", timeout: float = 5.0, wait: float = 15.0
) -> CachedAttributes | None:
    """The provider of that kind, its instance data read now (retried for ``wait`` seconds, as
    upstream's 15 s); None for "none". Raises ProviderError when it cannot be read."""
    if kind == "none":
        return None
    if kind not in KINDS:
        raise ProviderError(f"unknown cloud provider {kind!r}; one of {', '.join(KINDS)}", retriable=False)
    deadline = time.monotonic() + wait
    while True:
        try:
            inner: CloudInstance
            if kind == "gce":
                inner = gce.fetch(metadata_url or gce.DEFAULT_URL, timeout)
            elif kind == "aws":
                inner = aws.fetch(metadata_url or aws.DEFAULT_URL, timeout)
            else:
                web = WebhookProvider(webhook_url, timeout=timeout)
                if not web.health()["cloudProvider"]:
                    raise ProviderError(
                        f"webhook {webhook_url} says cloudProvider: false; it gives no attributes",
                        retriable=False,
                    )
                inner = web
            return CachedAttributes(inner)
        except ProviderError as exc:
            if not exc.retriable or time.monotonic() >= deadline:
                raise
            log.info(
                "cloud metadata not readable yet; retrying", extra={"provider": kind, "error": exc.message}
            )
            time.sleep(1.0)
