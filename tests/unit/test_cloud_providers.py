"""Cloud attributes from metadata stand-ins on loopback that answer as each cloud's documented API:
GCE's metadata server (Metadata-Flavor: Google, 404 for what a VM does not have) and AWS IMDSv2
(a session token from PUT /latest/api/token, required on every GET); then through discovery's
device builder, where the driver's own attributes win."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from dranet.services.discovery.devices import ScanOptions, build_devices
from dranet.services.discovery.model import LinkInfo
from dranet.services.discovery.netlinkscan import NetSnapshot
from dranet.services.discovery.sysfs import Sysfs

from dranet.providers import DeviceIdentifiers, ProviderError
from dranet.providers.select import cloud_instance

MAC1, MAC2 = "42:01:0a:80:00:02", "42:01:0a:81:00:03"


class Gce(BaseHTTPRequestHandler):
    physical_host: str | None = "/CCCC1234/BBBB56/AAAA78"
    PATHS = {
        "/computeMetadata/v1/instance/machine-type": "projects/123456/machineTypes/a3-megagpu-8g",
        "/computeMetadata/v1/instance/network-interfaces/?recursive=true&alt=json": json.dumps(
            [
                {"mac": MAC1, "network": "projects/123456/networks/default", "ip": "10.128.0.2", "mtu": 1460},
                {
                    "mac": MAC2,
                    "network": "projects/987/networks/gpu-net-1",
                    "ipAliases": ["10.1.0.0/24", "10.2.0.0/24"],
                },
            ]
        ),
    }

    def do_GET(self) -> None:
        if self.headers.get("Metadata-Flavor") != "Google":
            self._send(403, "Missing Metadata-Flavor:Google header.")
            return
        body = self.PATHS.get(self.path)
        if self.path == "/computeMetadata/v1/instance/attributes/physical_host":
            body = Gce.physical_host
        self._send(404, "not found") if body is None else self._send(200, body)

    def _send(self, code: int, body: str) -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Metadata-Flavor", "Google")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_args: Any) -> None:
        pass


class Aws(BaseHTTPRequestHandler):
    TOKEN = "AQAEAtok-en=="
    DOC = {"instanceType": "p5.48xlarge", "region": "us-east-2", "availabilityZone": "us-east-2b"}
    NICS = {
        MAC1: {
            "vpc-id": "vpc-0a1b",
            "subnet-id": "subnet-11",
            "device-number": "0",
            "network-card-index": "0",
        },
        MAC2: {"vpc-id": "vpc-0a1b", "subnet-id": "subnet-22", "device-number": "1"},  # no card index
    }

    def do_PUT(self) -> None:
        if self.path != "/latest/api/token" or not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
            self._send(400, "")
            return
        self._send(200, self.TOKEN)

    def do_GET(self) -> None:
        if self.headers.get("X-aws-ec2-metadata-token") != self.TOKEN:
            self._send(401, "")
            return
        root = "/latest/meta-data/network/interfaces/macs/"
        if self.path == "/latest/dynamic/instance-identity/document":
            self._send(200, json.dumps(self.DOC))
        elif self.path == root:
            self._send(200, "".join(f"{m}/\n" for m in self.NICS))
        elif self.path.startswith(root):
            mac, _, key = self.path[len(root) :].partition("/")
            value = self.NICS.get(mac, {}).get(key)
            self._send(404, "") if value is None else self._send(200, value)
        else:
            self._send(404, "")

    def _send(self, code: int, body: str) -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *_args: Any) -> None:
        pass


def _serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def gce() -> Iterator[str]:
    yield from _serve(Gce)


@pytest.fixture
def aws() -> Iterator[str]:
    yield from _serve(Aws)


def test_gce_attributes(gce: str) -> None:
    cloud = cloud_instance("gce", metadata_url=gce + "/computeMetadata/v1", wait=0)
    assert cloud is not None
    assert cloud.device_attributes(DeviceIdentifiers("eth1", mac_address=MAC2)) == {
        "gce.dra.net/machineType": "a3-megagpu-8g",
        "gce.dra.net/block": "CCCC1234",
        "gce.dra.net/subBlock": "BBBB56",
        "gce.dra.net/host": "AAAA78",
        "gce.dra.net/networkName": "gpu-net-1",
        "gce.dra.net/networkProjectNumber": 987,
        "gce.dra.net/ipAliases": "10.1.0.0/24,10.2.0.0/24",
        "dra.net/cloudNetwork": "gpu-net-1",
    }
    # a NIC the metadata does not list: the instance's attributes only
    assert set(cloud.device_attributes(DeviceIdentifiers("veth9", mac_address="02:00:00:00:00:09"))) == {
        "gce.dra.net/machineType",
        "gce.dra.net/block",
        "gce.dra.net/subBlock",
        "gce.dra.net/host",
    }


def test_gce_without_physical_host(gce: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Gce, "physical_host", None)  # 404, as on VM types without topology
    cloud = cloud_instance("gce", metadata_url=gce + "/computeMetadata/v1", wait=0)
    assert cloud is not None
    attrs = cloud.device_attributes(DeviceIdentifiers("eth0", mac_address=MAC1))
    assert "gce.dra.net/block" not in attrs and attrs["dra.net/cloudNetwork"] == "default"


def test_aws_attributes(aws: str) -> None:
    cloud = cloud_instance("aws", metadata_url=aws, wait=0)
    assert cloud is not None
    assert cloud.device_attributes(DeviceIdentifiers("ens5", mac_address=MAC1)) == {
        "aws.dra.net/instanceType": "p5.48xlarge",
        "aws.dra.net/availabilityZone": "us-east-2b",
        "aws.dra.net/vpcId": "vpc-0a1b",
        "aws.dra.net/subnetId": "subnet-11",
        "aws.dra.net/deviceNumber": 0,
        "aws.dra.net/networkCardIndex": 0,
        "dra.net/cloudNetwork": "vpc-0a1b",
    }
    second = cloud.device_attributes(DeviceIdentifiers("ens6", mac_address=MAC2.upper()))
    assert second["aws.dra.net/subnetId"] == "subnet-22" and "aws.dra.net/networkCardIndex" not in second


def test_unreachable_metadata_is_a_clear_error() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for kind in ("gce", "aws"):
        with pytest.raises(ProviderError) as err:
            cloud_instance(kind, metadata_url=f"http://127.0.0.1:{port}", timeout=0.5, wait=0)
        assert f"127.0.0.1:{port}" in err.value.message
    with pytest.raises(ProviderError, match="unknown cloud provider"):
        cloud_instance("azure")
    assert cloud_instance("none") is None


def test_gce_refuses_a_server_that_is_not_a_metadata_server(aws: str) -> None:
    with pytest.raises(ProviderError):
        cloud_instance("gce", metadata_url=aws, wait=0)


def test_discovery_publishes_cloud_attributes_and_keeps_its_own(gce: str, tmp_path: Path) -> None:
    cloud = cloud_instance("gce", metadata_url=gce + "/computeMetadata/v1", wait=0)
    assert cloud is not None

    def attrs(device: DeviceIdentifiers) -> dict[str, Any]:
        return {**cloud.device_attributes(device), "dra.net/ifName": "spoofed"}

    snap = NetSnapshot(links=[LinkInfo(index=2, name="eth1", mac=MAC2)])
    (dev,) = build_devices(snap, Sysfs(tmp_path / "nothing"), ScanOptions(cloud=attrs))
    assert dev.attributes["dra.net/cloudNetwork"] == "gpu-net-1"
    assert dev.attributes["gce.dra.net/networkProjectNumber"] == 987
    assert dev.attributes["dra.net/ifName"] == "eth1"  # the driver's own attribute wins
