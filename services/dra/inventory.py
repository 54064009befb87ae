"""The node's inventory as dra sees it: a cache of discovery's `get_inventory`, kept fresh by the
"inventory" topic, asked again (rate-limited) when a device is missing."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol

from dranet.bus import BusError

from .model import PrepareError

log = logging.getLogger(__name__)


class Caller(Protocol):
    def call(
        self, op: str, body: Mapping[str, Any] | None = None, *, timeout: float | None = None
    ) -> dict[str, Any]: ...


class InventoryCache:
    def __init__(self, discovery: Caller, *, min_refresh_interval: float = 1.0, timeout: float = 5.0) -> None:
        self._bus = discovery
        self._min_interval = min_refresh_interval
        self._timeout = timeout
        self._lock = threading.Lock()
        self._devices: dict[str, dict[str, Any]] = {}
        self._generation = -1
        self._loaded = False
        self._last_refresh = 0.0

    def update(self, body: Mapping[str, Any]) -> None:
        """Replace the cache with an inventory body (get_inventory result or "inventory" notification)."""
        devices = {str(d["name"]): dict(d) for d in body.get("devices", []) if isinstance(d, Mapping)}
        with self._lock:
            self._devices = devices
            self._generation = int(body.get("generation", self._generation))
            self._loaded = True

    def on_message(self, topic: str, body: dict[str, Any]) -> None:
        if topic == "inventory":
            self.update(body)

    def refresh(self) -> None:
        """Ask discovery now. Raises PrepareError (retriable) when discovery does not answer."""
        self._last_refresh = time.monotonic()
        try:
            body = self._bus.call("get_inventory", {}, timeout=self._timeout)
        except BusError as exc:
            raise PrepareError(
                f"the inventory is not available from the discovery service ({exc.code}: {exc.message})",
                retriable=True,
            ) from None
        self.update(body)

    def lookup(self, name: str) -> dict[str, Any] | None:
        """The inventory entry of device `name`, or None when discovery does not know it."""
        with self._lock:
            dev = self._devices.get(name)
            loaded = self._loaded
        if dev is not None:
            return dev
        # A miss may be a device that appeared after our last update: ask once, rate-limited.
        if not loaded or time.monotonic() - self._last_refresh >= self._min_interval:
            self.refresh()
            with self._lock:
                return self._devices.get(name)
        return None

    @property
    def generation(self) -> int:
        return self._generation
