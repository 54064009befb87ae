"""The pod's one HTTP endpoint: /metrics of every service, /healthz (liveness), /readyz (readiness).

`dranet endpoint` (supervised by `dranet run --metrics-address=...`) asks each service over the bus:
`metrics` for its text exposition, merged here under a `service` label (with this process's own as
service="endpoint"), and `ping` for health, with the meanings `dranet status` gives them: /healthz
is `dranet status --live` (every service answers), /readyz is `dranet status` (every service is
ready). `?service=a,b` narrows either to those services, so that each container's probes ask
about its own processes. A service that does not answer is left out of /metrics and shows as
dranet_service_up{service} 0.
"""

from __future__ import annotations

import argparse
import logging
import signal
import socket
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from dranet.bus.client import BusClient
from dranet.bus.endpoints import SERVICES
from dranet.bus.messages import BusError
from dranet.observability import metrics
from dranet.status import all_live, all_ready, format_table, query

log = logging.getLogger(__name__)

DEFAULT_ADDRESS = ":9177"  # upstream's port; every address of the node, IPv6 and IPv4
SELF = "endpoint"


class AddressError(ValueError):
    """A --metrics-address this endpoint cannot listen on."""


def split_address(address: str) -> tuple[str, int]:
    """"host:port", "[v6]:port", ":port" (every address) or a bare IPv6 address with its port
    after the last colon ("fd00::7:9177", what $(POD_IP):9177 gives on an IPv6 node)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise AddressError(f"--metrics-address {address!r}: expected host:port, [v6]:port or :port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    dual_stack = False

    def server_bind(self) -> None:
        if self.dual_stack:  # "::" also takes IPv4 (v4-mapped), whatever the node's sysctl says
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def listen(address: str, handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    """An HTTP server bound to `address` in the address's family; an empty host binds every
    address, IPv6 and IPv4, or IPv4 alone on a node without IPv6."""
    host, port = split_address(address)
    if not host:
        try:
            return _bound(socket.AF_INET6, ("::", port), handler, dual_stack=True)
        except OSError:
            return _bound(socket.AF_INET, ("0.0.0.0", port), handler)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise AddressError(f"--metrics-address {address!r}: cannot resolve {host!r}: {exc}") from None
    family, _, _, _, sockaddr = infos[0]
    return _bound(family, sockaddr, handler)


def _bound(
    family: int, sockaddr: Any, handler: type[BaseHTTPRequestHandler], dual_stack: bool = False
) -> ThreadingHTTPServer:
    cls = type("Server", (_Server,), {"address_family": family, "dual_stack": dual_stack})
    server: ThreadingHTTPServer = cls(sockaddr[:2] if family == socket.AF_INET6 else sockaddr, handler)
    return server


def gather(runtime_dir: Path, services: Sequence[str], timeout: float) -> dict[str, str | None]:
    """service -> its metrics text, or None when it did not answer."""
    out: dict[str, str | None] = {}
    for name in services:
        client = BusClient(runtime_dir, name, timeout=timeout)
        try:
            out[name] = str(client.call("metrics")["text"])
        except BusError as err:
            log.debug("no metrics", extra={"peer": name, "error": err.message})
            out[name] = None
        finally:
            client.close()
    return out


def merge(texts: dict[str, str | None]) -> list[Metric]:
    """One family per metric name, each sample labelled with the service it came from, plus
    dranet_service_up. Pure: texts are the services' own expositions."""
    families: dict[str, Metric] = {}
    for service, text in texts.items():
        for fam in text_string_to_metric_families(text or ""):
            merged = families.setdefault(fam.name, Metric(fam.name, fam.documentation, fam.type, fam.unit))
            for s in fam.samples:
                # a sample that names its service already keeps it (the bus's own metrics do)
                labels = {"service": service, **s.labels}
                merged.samples.append(Sample(s.name, labels, s.value, s.timestamp))
    up = GaugeMetricFamily(
        "dranet_service_up", "1 when the service answered this scrape over the bus", labels=["service"]
    )
    for service, text in texts.items():
        if service != SELF:
            up.add_metric([service], 0.0 if text is None else 1.0)
    return [*families.values(), up]


class _Gathered:
    """A collector that asks the services at each scrape."""

    def __init__(self, runtime_dir: Path, services: Sequence[str], timeout: float) -> None:
        self.runtime_dir, self.services, self.timeout = runtime_dir, services, timeout

    def collect(self) -> Iterator[Metric]:
        texts = gather(self.runtime_dir, self.services, self.timeout)
        texts[SELF] = metrics.render()
        yield from merge(texts)


def make_handler(runtime_dir: Path, services: Sequence[str], timeout: float) -> type[BaseHTTPRequestHandler]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Gathered(runtime_dir, services, timeout))  # type: ignore[arg-type]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            wanted = [s for v in parse_qs(url.query).get("service", []) for s in v.split(",") if s]
            unknown = sorted(set(wanted) - set(services))
            if unknown:
                self._reply(400, f"unknown service {unknown}; this endpoint serves {list(services)}\n")
            elif url.path == "/metrics":
                self._reply(200, generate_latest(registry).decode(), CONTENT_TYPE_LATEST)
            elif url.path in ("/healthz", "/readyz"):
                results = query(runtime_dir, wanted or services, timeout)
                ok = (all_live if url.path == "/healthz" else all_ready)(results)
                self._reply(200 if ok else 503, format_table(results) + "\n")
            else:
                self._reply(404, "this endpoint serves /metrics, /healthz and /readyz\n")

        def _reply(self, code: int, body: str, ctype: str = "text/plain; charset=utf-8") -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            return  # scrapes and probes are not log events

    return Handler


def serve(
    address: str, runtime_dir: Path, services: Sequence[str], timeout: float = 1.0
) -> ThreadingHTTPServer:
    """Serve in a daemon thread; returns the server (server_address has the bound port; shutdown())."""
    server = listen(address, make_handler(runtime_dir, services, timeout))
    threading.Thread(target=server.serve_forever, name="endpoint-http", daemon=True).start()
    return server


# ---------------------------------------------------------------- `dranet endpoint`


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--metrics-address",
        default=DEFAULT_ADDRESS,
        help="host:port, [v6]:port or :port (every address, IPv6 and IPv4) (default %(default)s)",
    )
    p.add_argument(
        "--services", default=",".join(SERVICES), help="the services to gather (default: all four)"
    )
    p.add_argument("--timeout", type=float, default=1.0, help="seconds to wait for each service (default 1)")


def run(args: argparse.Namespace) -> int:
    from dranet.capabilities import drop_capabilities
    from dranet.observability.logging import setup_logging
    from dranet.settings import settings_from_args

    settings = settings_from_args(args)
    drop_capabilities(frozenset())
    setup_logging(SELF, settings.log_level)
    services = [s for s in args.services.split(",") if s]
    unknown = sorted(set(services) - set(SERVICES))
    if unknown:
        raise SystemExit(f"dranet endpoint: unknown services {unknown}; choose from {', '.join(SERVICES)}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server = serve(args.metrics_address, settings.runtime_dir, services, args.timeout)
    log.info("serving", extra={"address": server.server_address[:2], "services": services})
    stop.wait()
    server.shutdown()
    server.server_close()
    return 0
