"""The prepared state of a claim: what the checkpoint stores and the other services read."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any


class PrepareError(Exception):
    """Why a claim cannot be prepared; the message reaches the kubelet (and the pod's events)."""

    def __init__(self, message: str, *, retriable: bool = False) -> None:
        super().__init__(message)
        self.message = message
        # Retriable: a dependency was down; the same request may succeed later unchanged.
        self.retriable = retriable


@dataclass
class PreparedDevice:
    request: str  # the request name as allocated (may be "req/sub")
    pool: str
    device: str
    ifname: str  # host interface name at prepare time ("" for an RDMA-only device)
    config: dict[str, Any]  # validated configuration, upstream JSON (camelCase)
    rdma_device: str = ""
    admin_access: bool = False  # observe only: never moved or reconfigured
    profile: str = ""  # the profile a provider resolved (released at unprepare)
    dhcp_lease: dict[str, Any] | None = None  # the DHCP lease in config (released at unprepare)
    identifiers: dict[str, str] | None = None  # what providers know the device by (mac, pci, name)
    share_id: str = ""  # a share of a shared NIC (KEP-5075): the pod gets a child interface of it
    # the device's attributes as its ResourceSlice published them at prepare (the metadata file's)
    attributes: dict[str, dict[str, Any]] | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreparedDevice:
        """Fields this build does not know (written by a newer or older one) are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def request_name(self) -> str:
        # The kubelet matches containers by the top-level request; drop the sub-request suffix.
        return self.request.split("/", 1)[0]


@dataclass
class PreparedClaim:
    uid: str
    namespace: str
    name: str
    pod_uids: list[str]
    devices: list[PreparedDevice]
    prepared_at: float = field(default_factory=time.time)
    # pod.spec.resourceClaims[].name of a claim made from a template (the metadata file's path)
    pod_claim_name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreparedClaim:
        return cls(
            uid=str(data["uid"]),
            namespace=str(data["namespace"]),
            name=str(data["name"]),
            pod_uids=[str(u) for u in data.get("pod_uids", [])],
            devices=[PreparedDevice.from_dict(d) for d in data.get("devices", [])],
            prepared_at=float(data.get("prepared_at", 0.0)),
            pod_claim_name=None if data.get("pod_claim_name") is None else str(data["pod_claim_name"]),
        )
