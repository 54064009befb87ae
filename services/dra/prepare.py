"""From a ResourceClaim (the API server's JSON) to a prepared claim: pure logic, no I/O.

Steps for one claim: the single pod consumer from reservedFor, the allocation results for our
driver, the opaque configs that apply to each result merged in precedence order (a provider's
baseline and profile first, then DeviceClass configs, then the claim's; later wins field by
field), validation with the shared configuration model, and the host interface of each device
from the inventory. Providers are reached through the callables the caller passes (they do the
I/O); a claim with ``interface.dhcp`` is left for the caller to lease (services/dra/addressing.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dranet.config import (
    MACVLAN,
    ConfigError,
    FeatureTable,
    NetworkConfig,
    check_child_mtu,
    check_ethtool,
    check_routes_reachable,
    check_supported,
    json_type,
    merge_configs,
    network_config_to_dict,
    parse_network_config,
    validate_rdma_only,
)

from .metadata import api_attributes, pod_claim_name
from .model import PreparedClaim, PreparedDevice, PrepareError

__all__ = ["PrepareError", "PreparedClaim", "PreparedDevice", "prepare_claim"]

InventoryLookup = Callable[[str], Mapping[str, Any] | None]
# A host interface's ethtool table, read by the netns worker; PrepareError when it cannot be had.
FeatureLookup = Callable[[str], FeatureTable]
# (device identifiers, the merged class and claim config) -> the layers under it: the provider's
# baseline and the profile's configuration; raises PrepareError.
ProviderLayers = Callable[[dict[str, str], dict[str, Any]], list[Mapping[str, Any]]]


def pod_consumer(claim: Mapping[str, Any]) -> str:
    """The UID of the one pod the claim is reserved for; refuse anything else with the reason."""
    reserved = (claim.get("status") or {}).get("reservedFor") or []
    if not reserved:
        raise PrepareError(
            "claim is not reserved for any pod (status.reservedFor is empty); the kubelet prepares "
            "only reserved claims, so it will retry once the scheduler has reserved it"
        )
    if len(reserved) > 1:
        raise PrepareError(
            f"claim is reserved for {len(reserved)} consumers; a network interface can be in only one "
            "network namespace, so a claim of this driver must be used by exactly one pod "
            "(use a ResourceClaimTemplate to give each pod its own claim)"
        )
    ref = reserved[0]
    if ref.get("resource") != "pods" or ref.get("apiGroup", "") not in ("", None):
        raise PrepareError(
            f"claim is reserved for a {ref.get('apiGroup') or 'core'}/{ref.get('resource')} consumer, "
            "not a pod; this driver can only give interfaces to pods"
        )
    uid = ref.get("uid") or ""
    if not uid:
        raise PrepareError("claim's status.reservedFor[0] has no uid")
    return str(uid)


def driver_results(claim: Mapping[str, Any], driver: str) -> list[Mapping[str, Any]]:
    """Allocation results for our driver; a claim may mix devices of several drivers."""
    allocation = (claim.get("status") or {}).get("allocation")
    if not allocation:
        raise PrepareError("claim is not allocated (status.allocation is empty); the kubelet will retry")
    results = (allocation.get("devices") or {}).get("results") or []
    return [r for r in results if r.get("driver") == driver]


def refuse_admin_access(results: Sequence[Mapping[str, Any]]) -> None:
    """adminAccess asks for a device that may be in use by another claim. A NIC is in one network
    namespace at a time: giving it to this pod would take it out of the other pod's, and there is
    no read-only view of a netdev to give instead; so the claim is refused, before anything moves."""
    for r in results:
        if r.get("adminAccess"):
            raise PrepareError(
                f"device {r.get('pool', '')}/{r.get('device', '')} (request {r.get('request', '')}): "
                "adminAccess is not supported by this driver: a network interface is in one network "
                "namespace at a time, so it cannot be shared with a pod that already has it; remove "
                "adminAccess from the request (monitor the NIC from the host or from its pod instead)"
            )


def applicable_configs(claim: Mapping[str, Any], driver: str, request: str) -> list[Mapping[str, Any]]:
    """Opaque parameters of our driver that apply to `request`, in precedence order (lowest first).

    DeviceClass configs (source FromClass) come before the claim's own (FromClaim) whatever their
    order in the list, so a user's claim config always overrides the class default. Parameters
    that are not a JSON object raise ConfigError naming the config entry.
    """
    allocation = (claim.get("status") or {}).get("allocation") or {}
    entries = (allocation.get("devices") or {}).get("config") or []
    parent = request.split("/", 1)[0]
    from_class: list[Mapping[str, Any]] = []
    from_claim: list[Mapping[str, Any]] = []
    for i, entry in enumerate(entries):
        opaque = entry.get("opaque") or {}
        if opaque.get("driver") != driver:
            continue
        requests = entry.get("requests") or []
        if requests and request not in requests and parent not in requests:
            continue
        params = opaque.get("parameters")
        if not isinstance(params, Mapping):
            # Never read as "no configuration": the user asked for something we cannot see.
            raise ConfigError(
                f"status.allocation.devices.config[{i}].opaque.parameters",
                f"must be a JSON object of this driver's configuration, got {json_type(params)}",
            )
        (from_class if entry.get("source") == "FromClass" else from_claim).append(params)
    return from_class + from_claim


def prepare_claim(
    claim: Mapping[str, Any],
    *,
    driver: str,
    node_name: str,
    inventory: InventoryLookup,
    features: FeatureLookup | None = None,
    providers: ProviderLayers | None = None,
) -> PreparedClaim:
    """Build the prepared claim or raise PrepareError naming the device, field and reason.
    features: the device's ethtool table, when the claim names ethtool features or flags."""
    meta = claim.get("metadata") or {}
    results = driver_results(claim, driver)
    if not results:
        raise PrepareError(f"claim has no allocation result for driver {driver}")
    refuse_admin_access(results)
    pod_uid = pod_consumer(claim)
    devices = [
        _prepare_device(
            claim,
            r,
            driver=driver,
            node_name=node_name,
            inventory=inventory,
            features=features,
            providers=providers,
        )
        for r in results
    ]
    return PreparedClaim(
        uid=str(meta.get("uid", "")),
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        pod_uids=[pod_uid],
        devices=devices,
        pod_claim_name=pod_claim_name(claim),
    )


def _prepare_device(
    claim: Mapping[str, Any],
    result: Mapping[str, Any],
    *,
    driver: str,
    node_name: str,
    inventory: InventoryLookup,
    features: FeatureLookup | None,
    providers: ProviderLayers | None = None,
) -> PreparedDevice:
    request = str(result.get("request", ""))
    pool = str(result.get("pool", ""))
    name = str(result.get("device", ""))
    where = f"device {pool}/{name} (request {request})"
    if pool != node_name:
        raise PrepareError(f"{where}: pool {pool!r} is not this node's pool {node_name!r}")
    share_id = str(result.get("shareID") or "")
    try:
        # A share of a shared NIC gets a child interface: macvlan unless a config says otherwise.
        layers = [*([SHARE_DEFAULT] if share_id else []), *applicable_configs(claim, driver, request)]
        cfg = _checked(merge_configs(layers))
    except ConfigError as exc:
        raise PrepareError(f"{where}: invalid config: {exc}") from None
    dev = inventory(name)
    if dev is None:
        raise PrepareError(
            f"{where}: not in this node's inventory (the interface is gone or was renamed); "
            "the kubelet will retry",
            retriable=True,
        )
    if not dev.get("allocatable", True):
        raise PrepareError(
            f"{where}: the inventory marks it not allocatable (node uplink or in use by the host)"
        )
    if not dev.get("ifname") and not dev.get("rdma_device"):
        # Discovery keeps a device whose interface is inside a pod (still being released) with no
        # host interface; preparing it now would hand the worker nothing to move.
        raise PrepareError(
            f"{where}: has no interface on the host right now (it is still in another pod's network "
            "namespace, or has no network interface); the kubelet will retry",
            retriable=True,
        )
    _check_share(where, cfg, share_id, dev)
    if dev.get("rdma_device") and not dev.get("ifname"):
        try:
            validate_rdma_only(cfg)
        except ConfigError as exc:
            raise PrepareError(f"{where}: invalid config for an RDMA-only device: {exc}") from None
    ids = identifiers(name, dev)
    if providers is not None:
        below = providers(ids, network_config_to_dict(cfg))
        if below:
            try:
                cfg = _checked(merge_configs([*below, *layers]))
            except ConfigError as exc:
                raise PrepareError(
                    f"{where}: invalid config once merged with the provider's (baseline or profile "
                    f"{cfg.profile!r}): {exc}"
                ) from None
    eth = cfg.ethtool
    if features is not None and dev.get("ifname") and eth is not None and (eth.features or eth.private_flags):
        # Refused here, with the field, rather than when the pod starts.
        try:
            check_ethtool(eth, features(str(dev["ifname"])))
        except ConfigError as exc:
            raise PrepareError(f"{where}: invalid config: {exc}") from None
    return PreparedDevice(
        request=request,
        pool=pool,
        device=name,
        ifname=str(dev.get("ifname") or ""),
        config=network_config_to_dict(cfg),
        rdma_device=str(dev.get("rdma_device") or ""),
        admin_access=bool(result.get("adminAccess", False)),
        identifiers=ids,
        share_id=share_id,
        attributes=api_attributes(dev.get("attributes") or {}),
    )


SHARE_DEFAULT = {"interface": {"type": MACVLAN}}


def _check_share(where: str, cfg: NetworkConfig, share_id: str, dev: Mapping[str, Any]) -> None:
    """A share never moves the NIC, and its child's MTU is never above the NIC's."""
    child = cfg.interface.child
    if share_id and child is None:
        raise PrepareError(
            f"{where}: invalid config: interface.type: passthrough would move a shared NIC out of the "
            "host; a share gets a child interface: use macvlan or ipvlan"
        )
    if child is not None:
        if not dev.get("ifname"):
            raise PrepareError(
                f"{where}: interface.type {child.kind!r} needs a network interface to be its parent"
            )
        mtu = (dev.get("attributes") or {}).get("dra.net/mtu")
        try:
            check_child_mtu(cfg.interface.mtu, mtu if isinstance(mtu, int) else 0, str(dev["ifname"]))
        except ConfigError as exc:
            raise PrepareError(f"{where}: invalid config: {exc}") from None


def _checked(merged: Mapping[str, Any]) -> Any:
    cfg = parse_network_config(merged)
    check_supported(cfg, dhcp=True)
    if cfg.interface.addresses:
        check_routes_reachable(cfg, cfg.interface.addresses)
    return cfg


def identifiers(device: str, dev: Mapping[str, Any]) -> dict[str, str]:
    """What a provider knows the device by: upstream's DeviceIdentifiers (JSON names), with the
    host interface as the name (the device name when it has none)."""
    attrs = dev.get("attributes") or {}
    out = {"name": str(dev.get("ifname") or device)}
    mac = attrs.get("dra.net/mac")
    if isinstance(mac, str) and mac:
        out["mac_address"] = mac
    if dev.get("pci_address"):
        out["pci_address"] = str(dev["pci_address"])
    return out


def device_conflicts(new: PreparedClaim, prepared: Sequence[PreparedClaim]) -> list[str]:
    """Devices of `new` already held by another prepared claim (the driver is the last line of defence)."""
    held = {
        (d.pool, d.device): c
        for c in prepared
        if c.uid != new.uid
        for d in c.devices
        if not d.admin_access and not d.share_id  # shares of a shared NIC coexist
    }
    out = []
    for d in new.devices:
        other = held.get((d.pool, d.device))
        if other is not None and not d.admin_access and not d.share_id:
            out.append(
                f"device {d.pool}/{d.device} is already prepared for claim {other.namespace}/{other.name}"
            )
    return out
