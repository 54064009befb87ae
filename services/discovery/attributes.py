"""Link, PCI and RDMA facts -> a device's attribute map, within the API's limits (pure).

Names and meanings follow upstream dranet (`dra.net/...`) plus the standard
`resource.kubernetes.io/pcieRoot` and `numaNode`. The resource.k8s.io API rejects a whole
ResourceSlice when one device breaks a limit, so every limit is enforced here, deliberately:
- string values at most 64 bytes: address lists are cut at a list boundary, other strings at a
  UTF-8 character boundary;
- at most 32 attributes + capacities per device: the lowest-priority attributes (ATTRIBUTE_ORDER,
  then unknown names) are dropped first;
- attribute names must be qualified names (C identifier <= 32, optionally behind a DNS subdomain
  <= 63 and '/'); anything else is dropped;
- integers must fit in int64.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .model import AttrValue, LinkInfo, PciInfo

log = logging.getLogger(__name__)

DOMAIN = "dra.net"
STD = "resource.kubernetes.io"
MAX_STRING_BYTES = 64
UNKNOWN_PCI_NAME = "unknown"  # ghw's name for an id the database does not list
MAX_ATTRIBUTES = 32  # attributes + capacities per device
_INT64 = (-(2**63), 2**63 - 1)

# Highest priority first: identity and the attributes selectors use most, then the rest.
ATTRIBUTE_ORDER: tuple[str, ...] = (
    f"{DOMAIN}/ifName",
    f"{DOMAIN}/pciAddress",
    f"{DOMAIN}/type",
    f"{DOMAIN}/virtual",
    f"{DOMAIN}/rdma",
    f"{DOMAIN}/rdmaDevice",
    f"{STD}/pcieRoot",
    f"{STD}/numaNode",
    f"{DOMAIN}/numaNode",
    f"{DOMAIN}/mac",
    f"{DOMAIN}/mtu",
    f"{DOMAIN}/state",
    f"{DOMAIN}/encapsulation",
    f"{DOMAIN}/sriov",
    f"{DOMAIN}/sriovVfs",
    f"{DOMAIN}/isSriovVf",
    f"{DOMAIN}/pciVendor",
    f"{DOMAIN}/pciDevice",
    f"{DOMAIN}/pciSubsystem",
    f"{DOMAIN}/ipv4",
    f"{DOMAIN}/ipv6",
    f"{DOMAIN}/alias",
    f"{DOMAIN}/ebpf",
    f"{DOMAIN}/tcFilterNames",
    f"{DOMAIN}/tcxProgramNames",
)
_RANK = {name: i for i, name in enumerate(ATTRIBUTE_ORDER)}

_C_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def is_qualified_name(name: str) -> bool:
    """The API's QualifiedName: `ident` or `domain/ident` (ident <= 32, domain <= 63)."""
    domain, sep, ident = name.partition("/")
    if not sep:
        domain, ident = "", name
    elif not (0 < len(domain) <= 63 and _DNS_SUBDOMAIN.fullmatch(domain)):
        return False
    return 0 < len(ident) <= 32 and bool(_C_IDENT.fullmatch(ident))


def truncate_utf8(value: str, limit: int = MAX_STRING_BYTES) -> str:
    """At most `limit` bytes, cut at a character boundary."""
    raw = value.encode()
    if len(raw) <= limit:
        return value
    return raw[:limit].decode(errors="ignore")


def join_limited(items: Iterable[str], limit: int = MAX_STRING_BYTES, sep: str = ",") -> str:
    """Join items while the result fits in `limit` bytes; items that do not fit are left out whole."""
    out = ""
    for item in items:
        candidate = item if not out else out + sep + item
        if len(candidate.encode()) > limit:
            break
        out = candidate
    return out


@dataclass(frozen=True)
class LinkFacts:
    """What the attribute builder needs about a netdev beyond the link itself."""

    link: LinkInfo
    virtual: bool


def link_attributes(facts: LinkFacts) -> dict[str, AttrValue]:
    link = facts.link
    attrs: dict[str, AttrValue] = {
        f"{DOMAIN}/ifName": link.name,
        f"{DOMAIN}/virtual": facts.virtual,
        f"{DOMAIN}/type": link.kind or "device",
    }
    if link.mac:
        attrs[f"{DOMAIN}/mac"] = link.mac
    if link.mtu:
        attrs[f"{DOMAIN}/mtu"] = link.mtu
    if link.operstate:
        attrs[f"{DOMAIN}/state"] = link.operstate.lower()
    if link.link_type:
        attrs[f"{DOMAIN}/encapsulation"] = link.link_type
    if link.alias:
        attrs[f"{DOMAIN}/alias"] = link.alias
    # Global unicast addresses only (link-local ones say nothing about the network), sorted.
    v4 = sorted(a.cidr for a in link.addresses if a.family == socket.AF_INET and a.scope == 0)
    v6 = sorted(a.cidr for a in link.addresses if a.family == socket.AF_INET6 and a.scope == 0)
    if v4:
        attrs[f"{DOMAIN}/ipv4"] = join_limited(v4)
    if v6:
        attrs[f"{DOMAIN}/ipv6"] = join_limited(v6)
    # eBPF as upstream: `ebpf` on every netdev; the names (sorted, comma-joined) when there are any.
    attrs[f"{DOMAIN}/ebpf"] = bool(link.tc_filters or link.tcx_programs)
    if link.tc_filters:
        attrs[f"{DOMAIN}/tcFilterNames"] = join_limited(sorted(set(link.tc_filters)))
    if link.tcx_programs:
        attrs[f"{DOMAIN}/tcxProgramNames"] = join_limited(sorted(set(link.tcx_programs)))
    return attrs


def pci_attributes(pci: PciInfo) -> dict[str, AttrValue]:
    attrs: dict[str, AttrValue] = {f"{DOMAIN}/pciAddress": pci.address}
    # As upstream publishes them (ghw): the PCI ID database's names, "unknown" for an id it does
    # not list; the subsystem device id in bare lowercase hex.
    if pci.vendor_id or pci.vendor_name:
        attrs[f"{DOMAIN}/pciVendor"] = pci.vendor_name or UNKNOWN_PCI_NAME
    if pci.device_id or pci.device_name:
        attrs[f"{DOMAIN}/pciDevice"] = pci.device_name or UNKNOWN_PCI_NAME
    if pci.subsystem_id:
        attrs[f"{DOMAIN}/pciSubsystem"] = pci.subsystem_id.lower().removeprefix("0x")
    if pci.numa_node is not None:
        attrs[f"{DOMAIN}/numaNode"] = pci.numa_node
        attrs[f"{STD}/numaNode"] = pci.numa_node
    if pci.pcie_root:
        attrs[f"{STD}/pcieRoot"] = pci.pcie_root
    attrs[f"{DOMAIN}/sriov"] = pci.sriov_totalvfs > 0
    if pci.sriov_totalvfs > 0:
        attrs[f"{DOMAIN}/sriovVfs"] = pci.sriov_numvfs
    if pci.is_vf:
        attrs[f"{DOMAIN}/isSriovVf"] = True
    return attrs


def rdma_attributes(rdma_device: str) -> dict[str, AttrValue]:
    if not rdma_device:
        return {f"{DOMAIN}/rdma": False}
    return {f"{DOMAIN}/rdma": True, f"{DOMAIN}/rdmaDevice": rdma_device}


def enforce_limits(
    attrs: Mapping[str, AttrValue], *, capacities: int = 0, device: str = ""
) -> dict[str, AttrValue]:
    """Return a copy of `attrs` that the API accepts; log what was trimmed and why."""
    out: dict[str, AttrValue] = {}
    for name, value in attrs.items():
        if not is_qualified_name(name):
            log.warning(
                "attribute dropped: not a qualified name", extra={"device": device, "attribute": name}
            )
            continue
        if isinstance(value, bool):
            out[name] = value
        elif isinstance(value, int):
            if not _INT64[0] <= value <= _INT64[1]:
                log.warning("attribute dropped: outside int64", extra={"device": device, "attribute": name})
                continue
            out[name] = value
        elif isinstance(value, str):
            cut = truncate_utf8(value)
            if cut != value:
                log.info("attribute value truncated to 64 bytes", extra={"device": device, "attribute": name})
            out[name] = cut
        else:
            log.warning("attribute dropped: unsupported type", extra={"device": device, "attribute": name})
    room = MAX_ATTRIBUTES - capacities
    if len(out) > room:
        keep = sorted(out, key=lambda n: (_RANK.get(n, len(_RANK)), n))[: max(room, 0)]
        dropped = sorted(set(out) - set(keep))
        log.warning(
            "attributes dropped: more than 32 attributes and capacities",
            extra={"device": device, "attributes": dropped},
        )
        out = {n: out[n] for n in out if n in keep}
    return out
