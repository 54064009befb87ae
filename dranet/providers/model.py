"""The provider interfaces (upstream's pkg/cloudprovider/cloud.go), pure."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

# A device attribute as the ResourceSlice API carries it: {"string": ...}, {"int": ...},
# {"bool": ...} or {"version": ...}; the discovery service's model keeps plain Python values.
AttrValue = str | int | bool


class ProviderError(Exception):
    """A provider could not answer; the message names the provider, the call and why."""

    def __init__(self, message: str, *, retriable: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.retriable = retriable  # False: the provider refused (4xx); the same call fails again


@dataclass(frozen=True)
class DeviceIdentifiers:
    """What a provider matches a device by; JSON as upstream's (mac_address, pci_address, name).
    ``name`` is the host interface name (upstream passes its device name there, which a provider
    cannot find on the node), or the device name for a device without one."""

    name: str
    mac_address: str = ""
    pci_address: str = ""

    def to_json(self) -> dict[str, str]:
        out = {"name": self.name}
        if self.mac_address:
            out["mac_address"] = self.mac_address
        if self.pci_address:
            out["pci_address"] = self.pci_address
        return out


class CloudInstance(Protocol):
    def device_attributes(self, device: DeviceIdentifiers) -> dict[str, AttrValue]:
        """Attributes (qualified names) for this device; {} when the provider knows nothing of it."""
        ...

    def device_config(self, device: DeviceIdentifiers) -> dict[str, Any] | None:
        """A baseline configuration (upstream JSON) the claim's is merged over; None: none."""
        ...


class ProfileProvider(Protocol):
    def profile_config(
        self, device: DeviceIdentifiers, claim_uid: str, config: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The configuration of ``config["profile"]`` for this claim's device (idempotent per
        claim UID and device); raises ProviderError with the provider's reason."""
        ...

    def release_profile_config(
        self, device: DeviceIdentifiers, claim_uid: str, config: Mapping[str, Any]
    ) -> None:
        """Free what profile_config took for this claim's device (idempotent)."""
        ...


def attribute_value(value: Any) -> AttrValue | None:
    """A ResourceSlice DeviceAttribute object ({"string": "x"}, ...) as a plain value."""
    if not isinstance(value, Mapping) or len(value) != 1:
        return None
    ((kind, v),) = value.items()
    if kind in ("string", "version") and isinstance(v, str):
        return v
    if kind == "int" and isinstance(v, int) and not isinstance(v, bool):
        return v
    if kind == "bool" and isinstance(v, bool):
        return v
    return None
