"""A local stand-in for kube-apiserver: a DEVELOPMENT AND TEST TOOL, not for production.

There is no kube-apiserver on the development machines, so the demo and the tests run the driver
against this small server instead. It speaks the real Kubernetes REST API over plain HTTP (no TLS, no
authentication, no admission, no garbage collection) for the few resources the driver touches:
core/v1 namespaces, nodes, pods, events and resource.k8s.io/v1 (and v1beta2) deviceclasses,
resourceclaims (+ /status), resourceclaimtemplates and resourceslices. The official ``kubernetes``
Python client works against it unchanged: get, list (label and field selectors, limit/continue),
create (generateName), update (409 on a stale resourceVersion), patch (merge, strategic merge treated
as merge, apply treated as merge, JSON patch), delete, deletecollection and watch (resume from a
resourceVersion, 410 Expired when it is too old). Writes are validated with the real API's rules
(see apivalidation.py) and refused with metav1.Status 422 bodies that list every cause.

Storage lives in apistore.py, selectors in apiselectors.py, patches in apipatch.py; this module is
the HTTP edge plus ``LocalAPIServer`` and the ``python -m localcluster apiserver`` command.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from localcluster import apiapply, apipatch, apiselectors
from localcluster.apistore import (
    RESOURCE_GROUP,
    RESOURCE_TYPES,
    RESOURCE_VERSIONS,
    APIStore,
    ResourceType,
    StoreError,
    WatchEvent,
    now_rfc3339,
)

log = logging.getLogger(__name__)

SERVER_VERSION = {"major": "1", "minor": "34", "gitVersion": "v1.34.0-dranet-local", "gitCommit": "",
                  "gitTreeState": "clean", "buildDate": "1970-01-01T00:00:00Z", "compiler": "python",
                  "platform": "linux/amd64", "goVersion": "n/a (dranet local stand-in)"}
DEFAULT_WATCH_TIMEOUT = 1800.0  # seconds; the real server picks 30-60 minutes
MAX_BODY_BYTES = 3 * 1024 * 1024  # the real server's request size limit

_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True)
class Route:
    rt: ResourceType
    version: str
    namespace: str | None  # None: cluster-scoped, or a namespaced resource across all namespaces
    name: str | None
    subresource: str | None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], store: APIStore) -> None:
        self.store = store
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up mid-response (a closed watch, a killed test) is not an error.
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionResetError | BrokenPipeError):
            return
        super().handle_error(request, client_address)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self.connections_lock:
            conns = list(self.connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def status_body(
    code: int, reason: str, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A metav1.Status failure body."""
    body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                            "message": message, "reason": reason, "code": code}
    if details:
        body["details"] = details
    return body


def _bad_request(message: str) -> StoreError:
    return StoreError(400, "BadRequest", message)


def _discovery_resources(group: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for rt in RESOURCE_TYPES:
        if rt.group != group:
            continue
        out.append({"name": rt.plural, "singularName": rt.kind.lower(), "namespaced": rt.namespaced,
                    "kind": rt.kind, "verbs": _VERBS})
        if rt.has_status:
            out.append({"name": f"{rt.plural}/status", "singularName": "", "namespaced": rt.namespaced,
                        "kind": rt.kind, "verbs": ["get", "patch", "update"]})
    return out


def _api_group() -> dict[str, Any]:
    versions = [{"groupVersion": f"{RESOURCE_GROUP}/{v}", "version": v} for v in RESOURCE_VERSIONS]
    return {"kind": "APIGroup", "apiVersion": "v1", "name": RESOURCE_GROUP, "versions": versions,
            "preferredVersion": versions[0]}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked watch streams
    disable_nagle_algorithm = True  # headers and body go out in separate writes: no 40 ms delayed-ACK stall
    server: _Server
    server_version = "dranet-local-apiserver"
    _body: bytes = b""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http %s", format % args)

    # -- plumbing ------------------------------------------------------------------------------

    @property
    def store(self) -> APIStore:
        return self.server.store

    def _send_json(self, code: int, body: Any) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send_error(self, err: StoreError) -> None:
        self._send_json(err.code, status_body(err.code, err.reason, err.message, err.details))

    def _read_body(self) -> bytes:
        return self._body

    def _take_body(self) -> None:
        """Read the whole request body up front: an unread body would corrupt the next keep-alive request."""
        self._body = b""
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError as exc:
            self.close_connection = True
            raise _bad_request("invalid Content-Length") from exc
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            raise StoreError(413, "RequestEntityTooLarge",
                             f"the request body is larger than {MAX_BODY_BYTES} bytes")
        if length:
            self._body = self.rfile.read(length)

    def _json_body(self) -> Any:
        raw = self._read_body()
        try:
            return json.loads(raw or b"null")
        except ValueError as exc:
            raise _bad_request(f"the request body is not valid JSON: {exc}") from exc

    def _dispatch(self) -> None:
        try:
            self._take_body()
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
            if self._serve_fixed(url.path):
                return
            route = self._route(url.path)
            self._handle(route, query)
        except StoreError as err:
            self._send_error(err)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a bug here must answer 500, not kill the connection silently
            log.exception("local apiserver: request failed", extra={"path": self.path})
            self._send_error(StoreError(500, "InternalError", f"internal error: {exc}"))

    do_GET = _dispatch
    do_HEAD = _dispatch
    do_POST = _dispatch
    do_PUT = _dispatch
    do_PATCH = _dispatch
    do_DELETE = _dispatch

    # -- routing -------------------------------------------------------------------------------

    def _serve_fixed(self, path: str) -> bool:
        """Discovery, version and health endpoints; True if the path was one of them."""
        path = path.rstrip("/") or "/"
        body: Any
        if path in ("/healthz", "/livez", "/readyz"):
            data = b"ok"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return True
        if path == "/version":
            body = SERVER_VERSION
        elif path == "/api":
            host, port = self.server.server_address[:2]
            address = f"{host!s}:{port}"
            body = {"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}]}
        elif path == "/apis":
            body = {"kind": "APIGroupList", "apiVersion": "v1", "groups": [_api_group()]}
        elif path == f"/apis/{RESOURCE_GROUP}":
            body = _api_group()
        elif path == "/api/v1":
            body = {"kind": "APIResourceList", "groupVersion": "v1", "resources": _discovery_resources("")}
        elif path.startswith(f"/apis/{RESOURCE_GROUP}/") and path.count("/") == 3 \
                and path.rsplit("/", 1)[1] in RESOURCE_VERSIONS:
            body = {"kind": "APIResourceList", "groupVersion": path[len("/apis/"):],
                    "resources": _discovery_resources(RESOURCE_GROUP)}
        else:
            return False
        self._send_json(200, body)
        return True

    def _route(self, path: str) -> Route:
        parts = [p for p in path.split("/") if p]
        if len(parts) >= 2 and parts[0] == "api" and parts[1] == "v1":
            group, version, rest = "", "v1", parts[2:]
        elif len(parts) >= 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise StoreError(404, "NotFound", "the server could not find the requested resource")
        types = {rt.plural: rt for rt in RESOURCE_TYPES if rt.group == group and version in rt.versions}
        namespace: str | None = None
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] in types and types[rest[2]].namespaced:
            namespace, rest = rest[1], rest[2:]
        if not rest or rest[0] not in types or len(rest) > 3:
            raise StoreError(404, "NotFound", "the server could not find the requested resource")
        rt = types[rest[0]]
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if sub is not None and not (sub == "status" and rt.has_status):
            raise StoreError(404, "NotFound", "the server could not find the requested resource")
        if rt.namespaced and namespace is None and name is not None:
            raise StoreError(404, "NotFound", "the server could not find the requested resource")
        return Route(rt, version, namespace, name, sub)

    def _out(self, route: Route, obj: dict[str, Any]) -> dict[str, Any]:
        obj["apiVersion"] = route.rt.api_version(route.version)
        obj["kind"] = route.rt.kind
        return obj

    # -- verbs ---------------------------------------------------------------------------------

    def _handle(self, route: Route, query: dict[str, str]) -> None:
        method = self.command
        ns = route.namespace or ""
        dry_run = query.get("dryRun") == "All"
        if route.name is None:
            if method in ("GET", "HEAD"):
                if query.get("watch") in ("true", "1"):
                    self._watch(route, query)
                else:
                    self._list(route, query)
            elif method == "POST" and (route.namespace is not None or not route.rt.namespaced):
                body = self._check_body(route, self._json_body())
                self._send_json(201, self._out(route, self.store.create(route.rt, ns, body, dry_run=dry_run)))
            elif method == "DELETE":
                self._delete_collection(route, query)
            else:
                raise StoreError(405, "MethodNotAllowed", f"{method} is not supported on this collection")
            return
        name = route.name
        status_update = route.subresource == "status"
        if method in ("GET", "HEAD"):
            self._send_json(200, self._out(route, self.store.get(route.rt, ns, name)))
        elif method == "PUT":
            body = self._check_body(route, self._json_body(), name)
            obj = self.store.update(route.rt, ns, name, body, status_update=status_update, dry_run=dry_run)
            self._send_json(200, self._out(route, obj))
        elif method == "PATCH":
            self._patch(route, query, dry_run)
        elif method == "DELETE":
            opts = self._json_body() or {}
            pre = opts.get("preconditions") or {} if isinstance(opts, dict) else {}
            obj = self.store.delete(route.rt, ns, name, precondition_rv=pre.get("resourceVersion"),
                                    precondition_uid=pre.get("uid"), dry_run=dry_run)
            self._send_json(200, self._out(route, obj))
        else:
            raise StoreError(405, "MethodNotAllowed", f"{method} is not supported on this object")

    def _check_body(self, route: Route, body: Any, name: str | None = None) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise _bad_request("the request body must be a JSON object")
        kind = body.get("kind")
        if kind and kind != route.rt.kind:
            raise _bad_request(f"the body is a {kind}, this endpoint takes a {route.rt.kind}")
        api_version = body.get("apiVersion")
        if api_version and api_version not in [route.rt.api_version(v) for v in route.rt.versions]:
            raise _bad_request(f"apiVersion {api_version!r} is not served for {route.rt.qualified}")
        meta = body.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise _bad_request("metadata must be an object")
        body_ns = meta.get("namespace")
        if route.rt.namespaced and body_ns and body_ns != route.namespace:
            raise _bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        if name is not None:
            if meta.get("name") and meta["name"] != name:
                raise _bad_request(
                    f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
                )
            meta["name"] = name
        return body

    def _matcher(self, route: Route, query: dict[str, str]) -> Callable[[dict[str, Any]], bool]:
        allowed = ("metadata.name", "metadata.namespace", *route.rt.field_selectors)
        try:
            labels = apiselectors.parse_label_selector(query.get("labelSelector", ""))
            fields = apiselectors.parse_field_selector(query.get("fieldSelector", ""), allowed)
        except apiselectors.SelectorError as exc:
            raise _bad_request(str(exc)) from exc
        return lambda obj: labels(obj.get("metadata", {}).get("labels") or {}) and fields(obj)

    def _list(self, route: Route, query: dict[str, str]) -> None:
        items, rv = self.store.list_objects(route.rt, route.namespace, self._matcher(route, query))
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        token = query.get("continue")
        if token:
            try:
                start = json.loads(base64.urlsafe_b64decode(token.encode()))
            except ValueError as exc:
                raise _bad_request(f"invalid continue token: {exc}") from exc
            items = [o for o in items if [o["metadata"].get("namespace", ""), o["metadata"]["name"]] > start]
        limit = int(query.get("limit") or 0)
        if limit > 0 and len(items) > limit:
            last = items[limit - 1]["metadata"]
            meta["continue"] = base64.urlsafe_b64encode(
                json.dumps([last.get("namespace", ""), last["name"]]).encode()).decode()
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        for item in items:
            item.pop("apiVersion", None)
            item.pop("kind", None)
        self._send_json(200, self._list_body(route, meta, items))

    def _delete_collection(self, route: Route, query: dict[str, str]) -> None:
        self._read_body()
        items, _ = self.store.list_objects(route.rt, route.namespace, self._matcher(route, query))
        deleted = []
        for item in items:
            meta = item["metadata"]
            try:
                deleted.append(self.store.delete(route.rt, meta.get("namespace", ""), meta["name"],
                                                 dry_run=query.get("dryRun") == "All"))
            except StoreError as err:
                if err.code != 404:  # deleted concurrently: fine
                    raise
        meta = {"resourceVersion": str(self.store.resource_version)}
        self._send_json(200, self._list_body(route, meta, deleted))

    def _list_body(self, route: Route, meta: dict[str, Any], items: list[dict[str, Any]]) -> dict[str, Any]:
        return {"kind": f"{route.rt.kind}List", "apiVersion": route.rt.api_version(route.version),
                "metadata": meta, "items": items}

    def _patch(self, route: Route, query: dict[str, str], dry_run: bool) -> None:
        assert route.name is not None
        ns = route.namespace or ""
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        raw = self._read_body()
        if ctype == "application/apply-patch+yaml":
            if not query.get("fieldManager"):
                raise StoreError(422, "Invalid",
                                 'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: '
                                 "is required for apply patch",
                                 {"kind": "PatchOptions", "group": "meta.k8s.io", "causes": [
                                     {"reason": "FieldValueRequired", "field": "fieldManager",
                                      "message": "Required value: is required for apply patch"}]})
            import yaml  # the kubernetes client depends on PyYAML; only apply needs it here

            try:
                patch = yaml.safe_load(raw.decode() or "{}")
            except yaml.YAMLError as exc:
                raise _bad_request(f"the apply patch is not valid YAML: {exc}") from exc
        else:
            try:
                patch = json.loads(raw or b"null")
            except ValueError as exc:
                raise _bad_request(f"the patch is not valid JSON: {exc}") from exc
        if ctype == "application/json-patch+json":
            if not isinstance(patch, list):
                raise _bad_request("a JSON patch must be a list of operations")
        elif ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json",
                       "application/apply-patch+yaml"):
            if not isinstance(patch, dict):
                raise _bad_request("a merge patch must be a JSON object")
        else:
            raise StoreError(415, "UnsupportedMediaType",
                             f"the patch content type {ctype!r} is not supported; use "
                             "application/merge-patch+json, application/strategic-merge-patch+json, "
                             "application/json-patch+json or application/apply-patch+yaml")
        status_update = route.subresource == "status"
        pinned_rv = isinstance(patch, dict) and bool((patch.get("metadata") or {}).get("resourceVersion"))
        for attempt in range(10):
            try:
                current = self.store.get(route.rt, ns, route.name)
            except StoreError as err:
                if err.code == 404 and ctype == "application/apply-patch+yaml" and not status_update:
                    body = self._check_body(route, dict(patch), route.name)
                    obj = self.store.create(route.rt, ns, body, dry_run=dry_run)
                    self._send_json(201, self._out(route, obj))
                    return
                raise
            managed: list[dict[str, Any]] | None = None
            try:
                if ctype == "application/json-patch+json":
                    new = apipatch.json_patch(current, patch)
                elif ctype == "application/apply-patch+yaml" and status_update \
                        and route.rt.plural == "resourceclaims":
                    new = apiapply.apply_claim_status(
                        current, patch, manager=query["fieldManager"], force=query.get("force") == "true",
                        version=route.version, now=now_rfc3339())
                    managed = new["metadata"].get("managedFields") or []
                else:
                    new = apipatch.merge_patch(current, patch)
            except apipatch.PatchError as exc:
                raise StoreError(422, "Invalid", f"the patch cannot be applied: {exc}") from exc
            if not isinstance(new, dict):
                raise _bad_request("the patched object is not a JSON object")
            new = self._check_body(route, new, route.name)
            try:
                obj = self.store.update(route.rt, ns, route.name, new, status_update=status_update,
                                        dry_run=dry_run, managed_fields=managed)
            except StoreError as err:
                # Another writer won the race between our read and write: reapply, as the real server does.
                if err.code == 409 and err.reason == "Conflict" and not pinned_rv and attempt < 9:
                    continue
                raise
            self._send_json(200, self._out(route, obj))
            return

    # -- watch ---------------------------------------------------------------------------------

    def _watch(self, route: Route, query: dict[str, str]) -> None:
        match = self._matcher(route, query)
        rv_param = query.get("resourceVersion", "")
        timeout = float(query.get("timeoutSeconds") or DEFAULT_WATCH_TIMEOUT)
        send_initial = query.get("sendInitialEvents") == "true" or rv_param in ("", "0")
        try:
            start = int(rv_param or 0)
        except ValueError as exc:
            raise _bad_request(f"invalid resourceVersion {rv_param!r}: must be a number") from exc
        initial: list[dict[str, Any]] = []
        if send_initial:
            initial, start = self.store.list_objects(route.rt, route.namespace, match)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.close_connection = True
        try:
            for obj in initial:
                self._chunk({"type": "ADDED", "object": self._out(route, obj)})
            if query.get("sendInitialEvents") == "true":
                bookmark = {"kind": route.rt.kind, "apiVersion": route.rt.api_version(route.version),
                            "metadata": {"resourceVersion": str(start),
                                         "annotations": {"k8s.io/initial-events-end": "true"}}}
                self._chunk({"type": "BOOKMARK", "object": bookmark})
            deadline = time.monotonic() + timeout
            while not self.store.closed and not self._client_gone():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    events = self.store.events_after(start, min(remaining, 1.0))
                except StoreError as err:
                    self._chunk({"type": "ERROR", "object": status_body(err.code, err.reason, err.message)})
                    break
                for event in events:
                    start = event.rv
                    out = self._translate(route, match, event)
                    if out is not None:
                        self._chunk(out)
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError, OSError):
            pass  # the watcher went away

    def _client_gone(self) -> bool:
        """True once the watcher closed its end, so an idle watch does not hold a thread until its timeout."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _translate(self, route: Route, match: Callable[[dict[str, Any]], bool],
                   event: WatchEvent) -> dict[str, Any] | None:
        """The event as this watcher sees it: selector transitions become ADDED/DELETED, as in Kubernetes."""
        if event.rt_key != route.rt.key:
            return None
        if route.namespace is not None and event.obj["metadata"].get("namespace") != route.namespace:
            return None
        now = match(event.obj)
        before = event.old is not None and match(event.old)
        if event.type == "MODIFIED" and now != before:
            kind = "ADDED" if now else "DELETED"
        elif now:
            kind = event.type
        else:
            return None
        return {"type": kind, "object": self._out(route, json.loads(json.dumps(event.obj)))}

    def _chunk(self, event: dict[str, Any]) -> None:
        data = json.dumps(event, separators=(",", ":")).encode() + b"\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


class LocalAPIServer:
    """A development/test stand-in for kube-apiserver over plain HTTP; see the module docstring."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, state_file: Path | None = None, *,
                 watch_history: int = 1000, dropped_device_fields: tuple[str, ...] = ()) -> None:
        """dropped_device_fields: see APIStore (fields of a feature gate that is off)."""
        self.dropped_device_fields = dropped_device_fields
        self.host = host
        self.port = port
        self.state_file = state_file
        self.watch_history = watch_history
        self.store: APIStore | None = None
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the local API server is not started; call start() first")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> None:
        """Listen and serve in background threads; returns once the socket is listening."""
        if self._httpd is not None:
            return
        self.store = APIStore(history=self.watch_history, state_file=self.state_file,
                              dropped_device_fields=self.dropped_device_fields)
        self._httpd = _Server((self.host, self.port), self.store)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="local-apiserver", daemon=True)
        self._thread.start()
        log.info("local apiserver listening", extra={"url": self.url})

    def stop(self) -> None:
        """Stop serving: ends watch streams, closes open connections and the listening socket."""
        if self._httpd is None:
            return
        assert self.store is not None
        self.store.close()
        self._httpd.shutdown()
        self._httpd.close_connections()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join()
        self._httpd = None
        self._thread = None

    def __enter__(self) -> LocalAPIServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def write_kubeconfig(self, path: Path) -> Path:
        """Write a kubeconfig for this server (context "dranet-local", namespace default)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "dranet-local", "cluster": {"server": self.url}}],
            "users": [{"name": "dranet-local", "user": {}}],
            "contexts": [{"name": "dranet-local",
                          "context": {"cluster": "dranet-local", "user": "dranet-local",
                                      "namespace": "default"}}],
            "current-context": "dranet-local",
        }
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML: every loader reads it
        tmp.replace(path)
        return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `python -m localcluster apiserver` (a development/test stand-in for kube-apiserver)."""
    parser.add_argument("--address", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default 0: any free port)")
    parser.add_argument("--kubeconfig-out", type=Path, default=None,
                        help="write a kubeconfig for this server to this path")
    parser.add_argument("--state-file", type=Path, default=None,
                        help="keep objects in this JSON file across restarts (default: memory only)")
    parser.add_argument("--watch-history", type=int, default=1000,
                        help="watch events kept for resuming; older resourceVersions get 410 Expired")


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM/SIGINT."""
    server = LocalAPIServer(args.address, args.port, getattr(args, "state_file", None),
                            watch_history=getattr(args, "watch_history", 1000))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    if getattr(args, "kubeconfig_out", None):
        server.write_kubeconfig(args.kubeconfig_out)
    print(f"local apiserver (development/test stand-in) serving at {server.url}", flush=True)
    while not stop.wait(0.5):
        pass
    server.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dranet-apiserver", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
