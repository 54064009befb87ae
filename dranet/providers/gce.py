"""Google Compute Engine: device attributes from the metadata server, as upstream's gce provider.

Read once at start (the instance does not change under a running node): the machine type, the
physical host topology and the network interfaces. Attributes (upstream's names):
``gce.dra.net/machineType``, ``block``/``subBlock``/``host`` (from ``physical_host``
"/BLOCK/SUBBLOCK/HOST"), and per NIC, matched by MAC: ``networkName``, ``networkProjectNumber``,
``ipAliases``; plus ``dra.net/cloudNetwork`` (the network name, the attribute upstream's older
quick-start DeviceClass selects on).
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.client import HTTPResponse
from typing import Any

from dranet.providers import metadata
from dranet.providers.model import AttrValue, DeviceIdentifiers, ProviderError

DEFAULT_URL = "http://metadata.google.internal/computeMetadata/v1"
PREFIX = "gce.dra.net"
_NETWORK = re.compile(r"projects/(\d+)/networks/(.+)")


@dataclass(frozen=True)
class GceInstance:
    machine_type: str
    topology: str = ""  # physical_host, "" when the VM type has none
    interfaces: Sequence[Mapping[str, Any]] = field(default_factory=tuple)

    def device_attributes(self, device: DeviceIdentifiers) -> dict[str, AttrValue]:
        attrs: dict[str, AttrValue] = {f"{PREFIX}/machineType": self.machine_type}
        parts = self.topology.strip("/").split("/")
        if len(parts) == 3 and all(parts):
            attrs[f"{PREFIX}/block"], attrs[f"{PREFIX}/subBlock"], attrs[f"{PREFIX}/host"] = parts
        nic = next(
            (i for i in self.interfaces if device.mac_address and i.get("mac") == device.mac_address), None
        )
        if nic is None:
            return attrs
        if nic.get("ipAliases"):
            attrs[f"{PREFIX}/ipAliases"] = ",".join(str(a) for a in nic["ipAliases"])
        m = _NETWORK.fullmatch(str(nic.get("network", "")))
        if m:
            attrs[f"{PREFIX}/networkProjectNumber"] = int(m.group(1))
            attrs[f"{PREFIX}/networkName"] = m.group(2)
            attrs["dra.net/cloudNetwork"] = m.group(2)
        return attrs

    def device_config(self, device: DeviceIdentifiers) -> dict[str, Any] | None:
        return None


def _get(base: str, path: str, timeout: float) -> str | None:
    """One metadata read; None for 404 (an attribute this VM does not have)."""
    req = urllib.request.Request(f"{base.rstrip('/')}/{path}", headers={"Metadata-Flavor": "Google"})

    def from_the_server(resp: HTTPResponse) -> None:
        if resp.headers.get("Metadata-Flavor") != "Google":
            raise ProviderError(f"GCE metadata {base}: the answer is not from a metadata server")

    return metadata.read(req, f"GCE metadata {base}/{path}", timeout, from_the_server)


def fetch(base: str = DEFAULT_URL, timeout: float = 5.0) -> GceInstance:
    machine = _get(base, "instance/machine-type", timeout)
    if not machine:
        raise ProviderError(f"GCE metadata {base}: no instance/machine-type")
    raw = _get(base, "instance/network-interfaces/?recursive=true&alt=json", timeout) or "[]"
    try:
        interfaces = json.loads(raw)
    except ValueError:
        raise ProviderError(f"GCE metadata {base}: network-interfaces is not JSON") from None
    if not isinstance(interfaces, list):
        raise ProviderError(f"GCE metadata {base}: network-interfaces is not a list")
    topology = _get(base, "instance/attributes/physical_host", timeout) or ""
    return GceInstance(
        machine_type=machine.rsplit("/", 1)[-1],
        topology=topology,
        interfaces=tuple(i for i in interfaces if isinstance(i, Mapping)),
    )
