"""Publish the inventory as ResourceSlices with the official kubernetes client (resource.k8s.io/v1).

Two threads:
- sync: whenever the devices change or a slice was touched by someone else, read the Node (its
  UID owns the slices: a re-created Node is followed), list our slices (field selector
  spec.nodeName + spec.driver), compute a plan (slices.plan) and apply it: update changed slices,
  create missing ones, then delete stale ones (with their UID and resourceVersion as preconditions).
  Nothing is written when nothing changed. Writes are at least `min_interval` apart: a burst of
  inventory changes (link flaps) is coalesced into one write, counted in
  dranet_discovery_publish_coalesced_total. Errors are retried with exponential backoff; the thread
  never dies.
- watch: a watch on our slices; a slice deleted or changed behind our back (the kubelet deletes
  all of a node's slices when it restarts) wakes the sync at once. Events caused by our own writes
  are recognised by resourceVersion and ignored.

Slices are written only while the kubelet can use the plugin (may_publish): the kubelet deletes a
driver's slices when no plugin of it has been connected for 30 s, and all of the node's slices at
its own start. Slices published meanwhile would advertise NICs nobody can prepare: pods would be
scheduled here and stick at prepare. So the sync asks dra (`plugin_state`) before writing, writes
nothing while the plugin is not registered, and after a wipe (our slices gone, not by us) waits for
the kubelet to register the plugin again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from dranet.backoff import Backoff
from dranet.observability.metrics import counter, gauge, histogram

from . import kubeapi
from .kubeapi import KubeJSON
from .model import Device
from .nodenames import NodeNames
from .slices import NodeRef, Plan, desired_contents, plan

log = logging.getLogger(__name__)

PUBLISH_SECONDS = histogram("dranet_discovery_publish_seconds", "time to reconcile ResourceSlices", ())
PUBLISH_ERRORS = counter(
    "dranet_discovery_publish_errors_total", "failed ResourceSlice reconciles", ("reason",)
)
SLICE_WRITES = counter("dranet_discovery_slice_writes_total", "ResourceSlice writes", ("verb",))
PUBLISH_COALESCED = counter(
    "dranet_discovery_publish_coalesced_total",
    "inventory changes folded into a later publish by the write-rate bound (never written on their own)",
    (),
)
LAST_PUBLISHED = gauge(
    "dranet_discovery_last_published_time_seconds", "unix time of the last good publish", ()
)
POOL_GENERATION = gauge("dranet_discovery_pool_generation", "current pool generation", ())

ApiClientFactory = Callable[[], Any]
BACKOFF_START, BACKOFF_MAX = 0.1, 10.0
WATCH_SECONDS = 300
MIN_INTERVAL = 1.0  # seconds between two publishes that wrote: bounds the write rate
GATE_POLL = 0.5  # seconds between asks while waiting for the plugin
# A registration up to this long before we noticed a wipe counts as after it: the kubelet wipes at
# its start and registers the plugin a moment later, possibly before our watch reports the deletes.
WIPE_SLACK = 5.0
# Slices deleted by someone else while the plugin stays registered come back after this long.
WIPE_GIVE_UP = 300.0


@dataclass(frozen=True)
class PluginState:
    """dra's answer to `plugin_state`."""

    registered: bool
    registered_at: float  # unix time of the kubelet's last registration of the plugin; 0: never
    serving: bool = True


def may_publish(state: PluginState | None, wiped_at: float, now: float) -> tuple[bool, str]:
    """Whether slices may be written now, and if not why (pure; times are unix seconds).

    state None: dra did not answer. wiped_at: when our slices were found deleted by someone else
    (0: not since our last write)."""
    if state is None:
        return False, "dra does not answer: the kubelet plugin may be down"
    if not (state.registered and state.serving):
        return False, "the kubelet has not registered the DRA plugin"
    if wiped_at and state.registered_at < wiped_at - WIPE_SLACK and now - wiped_at < WIPE_GIVE_UP:
        return False, (
            "the slices were deleted (the kubelet wipes them when the plugin is gone, and at its start); "
            "waiting for the kubelet to register the plugin again"
        )
    return True, ""


class Gated(Exception):
    """Publishing waits for the plugin (the message says why)."""


class SlicePublisher:
    def __init__(
        self,
        api_client_factory: ApiClientFactory,
        node_name: str,
        driver: str,
        *,
        on_published: Callable[[int], None] | None = None,
        plugin_state: Callable[[], PluginState | None] | None = None,
        min_interval: float = MIN_INTERVAL,
        node_names: NodeNames | None = None,
    ) -> None:
        """plugin_state: asks dra whether the kubelet registered the plugin (None: no gate, for
        development and benchmarks). node_names: the record of the node names this host published
        under; slices naming another of them are deleted (None: no record)."""
        self.node_name = node_name
        self._node_names = node_names
        self._plugin_state = plugin_state
        self._published: set[str] = set()  # names of the slices we wrote last
        self._accepted: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
        self._min_interval = min_interval
        self._last_write = -min_interval  # monotonic time of the last publish that wrote
        self._updates = 0  # set_devices calls since the last sync took the devices
        self._wiped_at = 0.0
        self.waiting = ""  # why nothing is published now (the gate), "" when not waiting
        self.driver = driver
        self._factory = api_client_factory
        self._on_published = on_published
        self._devices: list[Device] | None = None
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._own_rvs: set[str] = set()
        self._node_uid = ""
        self._threads: list[threading.Thread] = []
        self._watch: Any = None
        self._warned_no_node = False
        self.generation = 0
        self.healthy = False
        self.last_error = ""
        self.synced = threading.Condition()
        self.sync_count = 0

    # ------------------------------------------------------------------ public

    def set_devices(self, devices: Sequence[Device]) -> None:
        """The latest inventory; published in the background (this never blocks on the API)."""
        with self._lock:
            self._devices = list(devices)
            self._updates += 1
        self._dirty.set()

    def start(self) -> None:
        threading.Thread(target=kubeapi.preload, name="slice-api-import", daemon=True).start()
        for target, name in ((self._sync_loop, "slice-sync"), (self._watch_loop, "slice-watch")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        self._dirty.set()
        if self._watch is not None:
            self._watch.close()  # unblocks the watch thread
        for t in self._threads:
            t.join(timeout=2)

    def field_selector(self) -> str:
        return f"spec.nodeName={self.node_name},spec.driver={self.driver}"

    # ------------------------------------------------------------------ sync

    def _sync_loop(self) -> None:
        api = None
        backoff = Backoff(BACKOFF_START, BACKOFF_MAX)
        while not self._stop.is_set():
            self._dirty.wait()
            if self._stop.is_set():
                return
            self._dirty.clear()
            # The write-rate bound: changes arriving meanwhile are taken together afterwards.
            if self._stop.wait(max(0.0, self._last_write + self._min_interval - time.monotonic())):
                return
            with self._lock:
                devices = self._devices
                if self._updates > 1:
                    PUBLISH_COALESCED.inc(self._updates - 1)
                self._updates = 0
            if devices is None:
                continue
            started = time.monotonic()
            try:
                if api is None:
                    api = self._factory()
                self._sync_once(api, devices)
            except Gated as gated:
                if self.waiting != str(gated):
                    log.warning("not publishing ResourceSlices", extra={"reason": str(gated)})
                self.waiting = str(gated)
                self.healthy = False
                self._stop.wait(GATE_POLL)
                self._dirty.set()
                continue
            except Exception as exc:  # never let the thread die: log, back off, retry
                reason = _reason(exc)
                self.healthy = False
                self.last_error = f"{reason}: {_short(exc)}"
                PUBLISH_ERRORS.labels(reason=reason).inc()
                delay = backoff.next()
                log.warning(
                    "publishing ResourceSlices failed; retrying",
                    extra={"error": self.last_error, "retry_in_s": delay},
                )
                if reason in ("config", "connection"):
                    api = None  # re-read the kubeconfig next time (it may appear later)
                self._stop.wait(delay)
                self._dirty.set()
                continue
            backoff.reset()
            self.healthy = True
            self.last_error = ""
            self.waiting = ""
            PUBLISH_SECONDS.observe(time.monotonic() - started)
            LAST_PUBLISHED.set(time.time())
            with self.synced:
                self.sync_count += 1
                self.synced.notify_all()
            if self._on_published:
                self._on_published(self.generation)

    def _sync_once(self, api: Any, devices: list[Device]) -> None:
        kube = KubeJSON(api)
        state = self._check_gate(None)  # before any API call: nothing to do while it is closed
        if self._node_names is not None:
            self._remove_old_node_names(kube)
        node = NodeRef(self.node_name, self._lookup_node_uid(kube))
        listing = kube.list_slices(self.field_selector())
        existing = {o["metadata"]["name"]: o for o in listing.get("items") or []}
        if self._published - set(existing) and not self._wiped_at:
            self._wiped_at = time.time()
            log.warning(
                "our ResourceSlices were deleted by someone else (the kubelet's wipe?)",
                extra={"slices": sorted(self._published - set(existing))},
            )
            self._check_gate(state)
        desired = desired_contents(devices, self.node_name, self.driver, existing)
        p = plan(desired, existing, node, self.driver, self.generation, self._accepted)
        self.generation = p.generation
        POOL_GENERATION.set(p.generation)
        if not p.empty:
            self._apply(kube, p)
            self._last_write = time.monotonic()
        self._published, self._wiped_at = set(desired), 0.0
        self._accepted = {n: v for n, v in self._accepted.items() if n in desired}
        if not p.empty:
            log.info(
                "ResourceSlices published",
                extra={
                    "generation": p.generation,
                    "slices_created": len(p.create),
                    "slices_updated": len(p.update),
                    "slices_deleted": len(p.delete),
                    "devices": sum(len(v) for v in desired.values()),
                },
            )

    def _remove_old_node_names(self, kube: KubeJSON) -> None:
        """Delete our slices that name another node name this host published under (once)."""
        assert self._node_names is not None
        try:
            old = self._node_names.remember(self.node_name)
        except (OSError, ValueError) as exc:
            log.warning(
                "cannot record the node name; slices of an old name of this host stay",
                extra={"error": _short(exc), "path": str(self._node_names.path)},
            )
            self._node_names = None
            return
        for name in old:
            listing = kube.list_slices(f"spec.nodeName={name},spec.driver={self.driver}")
            for obj in listing.get("items") or []:
                meta = obj.get("metadata") or {}
                try:
                    kube.delete_slice(meta["name"], meta.get("uid", ""), meta.get("resourceVersion", ""))
                    SLICE_WRITES.labels(verb="delete").inc()
                except ApiException as exc:
                    if exc.status != 404:
                        raise
            log.warning(
                "deleted the ResourceSlices of an old node name of this host",
                extra={"old_node_name": name, "slices": len(listing.get("items") or [])},
            )
        if old:
            self._node_names.save([self.node_name])
        self._node_names = None  # done for this run: the name does not change while we run

    def _check_gate(self, state: PluginState | None) -> PluginState | None:
        """Raise Gated unless slices may be written now; returns dra's answer (asked when not given)."""
        if self._plugin_state is None:
            return None
        if state is None:
            state = self._plugin_state()
        ok, why = may_publish(state, self._wiped_at, time.time())
        if not ok:
            raise Gated(why)
        return state

    def _apply(self, kube: KubeJSON, p: Plan) -> None:
        # Updates and creates first, deletes last: the slices of the new generation are complete
        # before the stale ones go, and consumers ignore slices of an older generation meanwhile.
        for obj in p.update:
            self._remember(obj, kube.replace_slice(obj))
            SLICE_WRITES.labels(verb="update").inc()
        for obj in p.create:
            self._remember(obj, kube.create_slice(obj))
            SLICE_WRITES.labels(verb="create").inc()
        for d in p.delete:
            try:  # preconditions: a slice someone changed since our list is looked at again
                kube.delete_slice(d.name, d.uid, d.resource_version)
                SLICE_WRITES.labels(verb="delete").inc()
            except ApiException as exc:
                if exc.status != 404:
                    raise

    def _remember(self, sent: dict[str, Any], obj: dict[str, Any]) -> None:
        # What the server stored from what we sent: its normalised form of our content.
        stored = list((obj.get("spec") or {}).get("devices") or [])
        self._accepted[sent["metadata"]["name"]] = (sent["spec"]["devices"], stored)
        rv = obj.get("metadata", {}).get("resourceVersion")
        if not rv:
            return
        with self._lock:
            if len(self._own_rvs) > 10_000:
                self._own_rvs.clear()
            self._own_rvs.add(str(rv))

    def _lookup_node_uid(self, kube: KubeJSON) -> str:
        """The Node's UID, read at every sync: a Node deleted and re-created under the same name
        has a new UID, and slices still owned by the old one would be garbage-collected."""
        try:
            node = kube.read_node(self.node_name)
        except ApiException as exc:
            if exc.status == 404:
                # Without a Node object the slices cannot have an owner; publish anyway, look again later.
                if not self._warned_no_node:
                    self._warned_no_node = True
                    log.warning(
                        "node object not found; slices published without an owner",
                        extra={"node": self.node_name},
                    )
                return ""
            raise
        uid = str(node["metadata"]["uid"])
        if self._node_uid and uid != self._node_uid:
            log.warning("the Node was re-created; slices follow its new UID", extra={"node_uid": uid})
        self._node_uid = uid
        return uid

    # ------------------------------------------------------------------ watch

    def _watch_loop(self) -> None:
        backoff = Backoff(BACKOFF_START, BACKOFF_MAX)
        api = None
        while not self._stop.is_set():
            try:
                if api is None:
                    api = self._factory()
                kube = KubeJSON(api)
                rv = kube.list_slices(self.field_selector()).get("metadata", {}).get("resourceVersion", "")
                # What happened while we were not watching is unknown: look once.
                self._dirty.set()
                self._watch = kube.watch_slices(self.field_selector(), rv, WATCH_SECONDS)
                for event in self._watch:
                    backoff.reset()
                    if self._stop.is_set():
                        return
                    if event.get("type") == "ERROR" and event.get("object", {}).get("code") == 410:
                        break  # too old: list again
                    self._on_event(event)
                continue
            except ApiException as exc:
                if exc.status == 410:
                    continue
                if self._stop.is_set():
                    return
                log.warning("watching ResourceSlices failed; retrying", extra={"error": _short(exc)})
            except Exception as exc:
                if self._stop.is_set():
                    return
                log.warning("watching ResourceSlices failed; retrying", extra={"error": _short(exc)})
                api = None
            self._stop.wait(backoff.next())

    def _on_event(self, event: dict[str, Any]) -> None:
        etype = event.get("type")
        obj = event.get("object") or {}
        if etype == "BOOKMARK" or not isinstance(obj, dict):
            return
        if etype == "ERROR":
            self._dirty.set()
            return
        rv = str(obj.get("metadata", {}).get("resourceVersion", ""))
        with self._lock:
            ours = etype != "DELETED" and rv in self._own_rvs
        if not ours:
            log.info(
                "ResourceSlice changed behind our back; reconciling",
                extra={"event": etype, "slice": obj.get("metadata", {}).get("name")},
            )
            self._dirty.set()

    def wait_synced(self, after: int, timeout: float) -> bool:
        """Test and benchmark helper: wait until more than `after` successful syncs happened."""
        deadline = time.monotonic() + timeout
        with self.synced:
            while self.sync_count <= after:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.synced.wait(left)
        return True


def _reason(exc: BaseException) -> str:
    from kubernetes.client.exceptions import ApiException
    from kubernetes.config.config_exception import ConfigException

    if isinstance(exc, ApiException):
        if exc.status == 409:
            return "conflict"
        if exc.status == 0:
            return "connection"
        return f"http_{exc.status}"
    if isinstance(exc, ConfigException | FileNotFoundError):
        return "config"
    name = type(exc).__module__
    if name.startswith("urllib3") or isinstance(exc, ConnectionError | TimeoutError):
        return "connection"
    return "internal"


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) < 400 else text[:400] + "..."
