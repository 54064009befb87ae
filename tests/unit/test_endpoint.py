"""The pod's one HTTP endpoint (dranet/observability/endpoint.py): addresses of either family,
/metrics gathered from real services over the bus with a `service` label, /healthz and /readyz
with the meanings of `dranet status --live` and `dranet status`."""

from __future__ import annotations

import argparse
import http.client
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dranet import __version__
from dranet.observability.endpoint import AddressError, merge, serve, split_address
from dranet.service import ServiceHost


def get(host: str, port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize(
    "address, expected",
    [
        ("127.0.0.1:9177", ("127.0.0.1", 9177)),
        ("[::1]:0", ("::1", 0)),
        (":9177", ("", 9177)),
        ("fd00::7:9177", ("fd00::7", 9177)),  # $(POD_IP):9177 on an IPv6 node
        ("node-1:80", ("node-1", 80)),
    ],
)
def test_address_forms(address: str, expected: tuple[str, int]) -> None:
    assert split_address(address) == expected


@pytest.mark.parametrize("address", ["9177", "host:", "host:http", "[::1]:70000"])
def test_bad_addresses_are_refused_with_the_forms(address: str) -> None:
    with pytest.raises(AddressError, match=r"host:port, \[v6\]:port or :port"):
        split_address(address)


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this machine")
@pytest.mark.parametrize(
    "address, reach",
    [
        ("[::1]:0", ["::1"]),  # crashed every service before: the brackets went to an AF_INET bind
        ("127.0.0.1:0", ["127.0.0.1"]),
        (":0", ["::1", "127.0.0.1"]),  # every address, both families
    ],
)
def test_endpoint_listens_on_either_family(tmp_path: Path, address: str, reach: list[str]) -> None:
    server = serve(address, tmp_path, ["dra"], timeout=0.2)
    try:
        port = server.server_address[1]
        for host in reach:
            code, text = get(host, port, "/metrics")
            assert code == 200 and 'dranet_service_up{service="dra"} 0.0' in text, host
    finally:
        server.shutdown()
        server.server_close()


def test_merge_labels_every_sample_with_its_service() -> None:
    a = "# HELP x_total x\n# TYPE x_total counter\nx_total{op=\"p\"} 2.0\n"
    b = "# HELP x_total x\n# TYPE x_total counter\nx_total{op=\"p\"} 5.0\n"
    fams = {f.name: f for f in merge({"dra": a, "nri": b, "netns": None})}
    assert sorted((s.labels["service"], s.value) for s in fams["x"].samples) == [("dra", 2.0), ("nri", 5.0)]
    up = {s.labels["service"]: s.value for s in fams["dranet_service_up"].samples}
    assert up == {"dra": 1.0, "nri": 1.0, "netns": 0.0}


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Path]:
    """dra and netns hosted on the bus here (each answers ping and metrics); nri is not running."""
    args = argparse.Namespace(runtime_dir=str(tmp_path), state_dir=str(tmp_path / "state"), log_level="info")
    hosts = [ServiceHost(n, args, drop_caps=False, install_signals=False) for n in ("dra", "netns")]
    for h in hosts:
        h.serve({})
    yield tmp_path
    for h in hosts:
        h.close()


def test_one_endpoint_serves_every_service_and_their_health(services: Path) -> None:
    server = serve("127.0.0.1:0", services, ["dra", "nri", "netns"], timeout=0.3)
    try:
        port = server.server_address[1]
        code, text = get("127.0.0.1", port, "/metrics")
        assert code == 200
        samples = [s for f in text_string_to_metric_families(text) for s in f.samples]

        def services_of(name: str) -> set[str]:
            return {s.labels["service"] for s in samples if s.name == name}

        # every service that answers, and the endpoint itself: its own metrics, process_*, build info
        assert services_of("dranet_build_info") == {"dra", "netns", "endpoint"}
        assert services_of("process_resident_memory_bytes") == {"dra", "netns", "endpoint"}
        assert all(s.labels["version"] == __version__ for s in samples if s.name == "dranet_build_info")
        up = {s.labels["service"]: s.value for s in samples if s.name == "dranet_service_up"}
        assert up == {"dra": 1.0, "nri": 0.0, "netns": 1.0}
        # the bus counted the scrape itself, in each service, under that service's label
        asked = {
            s.labels["service"]
            for s in samples
            if s.name == "dranet_bus_requests_total" and s.labels.get("op") == "metrics"
        }
        assert {"dra", "netns"} <= asked

        # liveness and readiness: nri is down, so both fail for all, and pass for the others
        assert get("127.0.0.1", port, "/healthz")[0] == 503
        code, body = get("127.0.0.1", port, "/healthz?service=dra,netns")
        assert code == 200 and "dra" in body and "netns" in body
        assert get("127.0.0.1", port, "/readyz?service=netns")[0] == 200
        code, body = get("127.0.0.1", port, "/readyz?service=nri")
        assert code == 503 and "DOWN" in body
        code, body = get("127.0.0.1", port, "/healthz?service=bogus")
        assert code == 400 and "bogus" in body
        assert get("127.0.0.1", port, "/")[0] == 404
    finally:
        server.shutdown()
        server.server_close()
