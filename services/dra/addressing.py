"""Addresses a claim does not write itself: a provider's baseline and profile (e.g. an IPAM
webhook), and DHCP leases (taken by the netns worker). Taken at prepare, given back at unprepare,
and given back at once when the prepare fails after taking them (nothing is left half-done).

Merge rule (lowest first, later wins field by field): the profile's configuration, the cloud
provider's baseline, the DeviceClass configs, the claim's configs; then the DHCP lease's address,
routes and MTU are written in (dranet/config/lease.py). So a profile cannot override what the
cloud, the class or the user set, as upstream.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

from dranet.config import ConfigError, check_routes_reachable, parse_network_config
from dranet.config.lease import Lease, apply_lease
from dranet.observability import metrics
from dranet.providers import CloudInstance, DeviceIdentifiers, ProfileProvider, ProviderError

from .model import PreparedClaim, PreparedDevice, PrepareError

log = logging.getLogger(__name__)

PROVIDER_CALLS = metrics.counter(
    "dranet_dra_provider_calls_total",
    "Calls to the profile/cloud provider and DHCP, by outcome",
    ("call", "outcome"),
)


class Leases(Protocol):
    def acquire(self, claim_uid: str, device: str, ifname: str) -> Lease:
        """The device's lease (raises PrepareError)."""
        ...

    def release(self, claim_uid: str, device: str) -> None:
        """Give it back (raises PrepareError)."""
        ...


def _ids(d: Mapping[str, str] | None, device: str) -> DeviceIdentifiers:
    d = d or {}
    return DeviceIdentifiers(
        name=d.get("name", device), mac_address=d.get("mac_address", ""), pci_address=d.get("pci_address", "")
    )


class Addressing:
    def __init__(
        self,
        *,
        leases: Leases | None = None,
        cloud: CloudInstance | None = None,
        profiles: ProfileProvider | None = None,
    ) -> None:
        self.leases = leases
        self.cloud = cloud
        self.profiles = profiles

    def begin(self, claim_uid: str) -> Provisioning:
        return Provisioning(self, claim_uid)

    def release(self, claim: PreparedClaim) -> list[str]:
        """Give back every lease and profile of the claim; the errors (logged, not retried: the
        provider reclaims what it handed out, a lease expires)."""
        errors = []
        for d in claim.devices:
            try:
                self._release_device(claim.uid, d)
            except (PrepareError, ProviderError) as exc:
                msg = getattr(exc, "message", str(exc))
                errors.append(f"device {d.device}: {msg}")
                log.warning(
                    "release failed", extra={"claim_uid": claim.uid, "device": d.device, "error": msg}
                )
        return errors

    def _release_device(self, claim_uid: str, d: PreparedDevice) -> None:
        if d.dhcp_lease is not None and self.leases is not None:
            self.leases.release(claim_uid, d.device)
            PROVIDER_CALLS.labels(call="dhcp_release", outcome="ok").inc()
        if d.profile and self.profiles is not None:
            self.profiles.release_profile_config(_ids(d.identifiers, d.device), claim_uid, d.config)
            PROVIDER_CALLS.labels(call="release_profile", outcome="ok").inc()


class Provisioning:
    """One prepare's calls: the layers for prepare_claim, then the leases; undo() gives back
    whatever was taken when the prepare fails."""

    def __init__(self, addressing: Addressing, claim_uid: str) -> None:
        self._a = addressing
        self.claim_uid = claim_uid
        self._profiles: list[tuple[DeviceIdentifiers, dict[str, Any]]] = []
        self._leases: list[str] = []

    def layers(self, ids: dict[str, str], config: dict[str, Any]) -> list[Mapping[str, Any]]:
        """The provider layers under the claim's configuration (prepare_claim's providers)."""
        device = _ids(ids, ids.get("name", ""))
        out: list[Mapping[str, Any]] = []
        profile = config.get("profile")
        if profile:
            if self._a.profiles is None:
                raise PrepareError(
                    f"device {device.name}: profile {profile!r} asked for, but no profile provider is "
                    "configured (dra --webhook-url with --profile-provider=webhook); remove the profile "
                    "or configure a provider"
                )
            try:
                got = self._a.profiles.profile_config(device, self.claim_uid, config)
            except ProviderError as exc:
                PROVIDER_CALLS.labels(call="profile", outcome="error").inc()
                raise PrepareError(
                    f"device {device.name}: profile {profile!r}: {exc.message}", retriable=exc.retriable
                ) from None
            PROVIDER_CALLS.labels(call="profile", outcome="ok").inc()
            self._profiles.append((device, config))
            got.pop("profile", None)  # the claim's profile name stays the claim's
            out.append(got)
        if self._a.cloud is not None:
            try:
                baseline = self._a.cloud.device_config(device)
            except ProviderError as exc:
                raise PrepareError(
                    f"device {device.name}: the cloud provider's baseline: {exc.message}"
                ) from None
            if baseline:
                out.append(baseline)
        return out

    def finish(self, claim: PreparedClaim) -> None:
        """Record each device's profile; take a DHCP lease for each device whose configuration
        asks for one and write it in."""
        for d in claim.devices:
            if d.profile == "" and d.config.get("profile"):
                d.profile = str(d.config["profile"])
            if not (d.config.get("interface") or {}).get("dhcp"):
                continue
            where = f"device {d.pool}/{d.device}"
            if self._a.leases is None:
                raise PrepareError(
                    f"{where}: interface.dhcp: DHCP is not enabled on this node (netns --dhcp)"
                )
            if not d.ifname:
                raise PrepareError(f"{where}: interface.dhcp: the device has no network interface")
            lease = self._a.leases.acquire(self.claim_uid, d.device, d.ifname)
            self._leases.append(d.device)
            PROVIDER_CALLS.labels(call="dhcp_acquire", outcome="ok").inc()
            try:
                config = apply_lease(d.config, lease)
                cfg = parse_network_config(config)
                check_routes_reachable(cfg, cfg.interface.addresses)
            except ConfigError as exc:
                raise PrepareError(
                    f"{where}: the configuration with the DHCP lease ({lease.address}): {exc}"
                ) from None
            d.config = config
            d.dhcp_lease = lease.to_dict()

    def undo(self) -> None:
        """Give back what this prepare took (it failed)."""
        for device in self._leases:
            try:
                if self._a.leases is not None:
                    self._a.leases.release(self.claim_uid, device)
            except PrepareError as exc:
                log.warning(
                    "lease release after a failed prepare", extra={"device": device, "error": exc.message}
                )
        for ids, config in self._profiles:
            try:
                if self._a.profiles is not None:
                    self._a.profiles.release_profile_config(ids, self.claim_uid, config)
            except ProviderError as exc:
                log.warning(
                    "profile release after a failed prepare", extra={"device": ids.name, "error": exc.message}
                )
        self._leases.clear()
        self._profiles.clear()
