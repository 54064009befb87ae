"""Amazon EC2: device attributes from the instance metadata service (IMDSv2).

Read once at start: a session token (``PUT /latest/api/token``), the identity document
(instance type, zone) and, per NIC MAC, ``network/interfaces/macs/<mac>/`` (VPC, subnet, device
number, network card). Attributes: ``aws.dra.net/instanceType``, ``availabilityZone``, and per NIC
``vpcId``, ``subnetId``, ``deviceNumber``, ``networkCardIndex``; plus ``dra.net/cloudNetwork``
(the VPC). Upstream's AWS provider publishes EFA device-group IDs on Trainium/Inferentia from the
Neuron lookup tables; those tables are not available here (docs/attributes.md).
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dranet.providers import metadata
from dranet.providers.model import AttrValue, DeviceIdentifiers, ProviderError

DEFAULT_URL = "http://169.254.169.254"
PREFIX = "aws.dra.net"
TOKEN_TTL = "21600"
_NIC_FIELDS = {"vpc-id": "vpcId", "subnet-id": "subnetId"}
_NIC_INTS = {"device-number": "deviceNumber", "network-card-index": "networkCardIndex"}


@dataclass(frozen=True)
class AwsInstance:
    instance_type: str
    availability_zone: str = ""
    nics: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # mac -> field -> value

    def device_attributes(self, device: DeviceIdentifiers) -> dict[str, AttrValue]:
        attrs: dict[str, AttrValue] = {f"{PREFIX}/instanceType": self.instance_type}
        if self.availability_zone:
            attrs[f"{PREFIX}/availabilityZone"] = self.availability_zone
        nic = self.nics.get(device.mac_address.lower()) if device.mac_address else None
        if not nic:
            return attrs
        for key, name in _NIC_FIELDS.items():
            if nic.get(key):
                attrs[f"{PREFIX}/{name}"] = nic[key]
        for key, name in _NIC_INTS.items():
            if str(nic.get(key, "")).isdigit():
                attrs[f"{PREFIX}/{name}"] = int(nic[key])
        if nic.get("vpc-id"):
            attrs["dra.net/cloudNetwork"] = nic["vpc-id"]
        return attrs

    def device_config(self, device: DeviceIdentifiers) -> dict[str, Any] | None:
        return None


class _Imds:
    def __init__(self, base: str, timeout: float) -> None:
        self.base = base.rstrip("/")
        self.timeout = timeout
        req = urllib.request.Request(
            f"{self.base}/latest/api/token",
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": TOKEN_TTL},
        )
        self.token = self._open(req, "latest/api/token") or ""
        if not self.token:
            raise ProviderError(f"AWS IMDS {self.base}: no session token")

    def _open(self, req: urllib.request.Request, path: str) -> str | None:
        return metadata.read(req, f"AWS IMDS {self.base}/{path}", self.timeout)

    def get(self, path: str) -> str | None:
        req = urllib.request.Request(f"{self.base}/{path}", headers={"X-aws-ec2-metadata-token": self.token})
        return self._open(req, path)


def fetch(base: str = DEFAULT_URL, timeout: float = 5.0) -> AwsInstance:
    imds = _Imds(base, timeout)
    try:
        doc = json.loads(imds.get("latest/dynamic/instance-identity/document") or "{}")
    except ValueError:
        raise ProviderError(f"AWS IMDS {base}: the identity document is not JSON") from None
    if not isinstance(doc, dict) or not doc.get("instanceType"):
        raise ProviderError(f"AWS IMDS {base}: the identity document has no instanceType")
    nics: dict[str, dict[str, str]] = {}
    root = "latest/meta-data/network/interfaces/macs/"
    for line in (imds.get(root) or "").splitlines():
        mac = line.strip().rstrip("/").lower()
        if not mac:
            continue
        nics[mac] = {}
        for key in (*_NIC_FIELDS, *_NIC_INTS):
            value = imds.get(f"{root}{mac}/{key}")
            if value is not None:
                nics[mac][key] = value.strip()
    return AwsInstance(
        instance_type=str(doc["instanceType"]),
        availability_zone=str(doc.get("availabilityZone", "")),
        nics=nics,
    )
