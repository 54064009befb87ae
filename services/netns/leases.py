"""The DHCP lease ops of the bus (`dhcp_acquire`, `dhcp_release`): one lease per claim's device,
taken on the host interface before it moves and given back once it is home; renewed in the pod
netns while attached. dhcp.py runs the client; this checks the request and finds the device.
"""

from __future__ import annotations

import os
from typing import Any

from dranet.services.netns.dhcp import DhcpClient, DhcpError
from dranet.services.netns.errors import as_bus_error
from dranet.services.netns.ledger import Ledger
from dranet.services.netns.model import ATTACHED, RequestError, check_device_name, check_ifname, check_pod_uid
from dranet.services.netns.podns import Netns
from dranet.services.netns.queries import Queries

from dranet.bus.messages import BusError


def lease_key(claim_uid: str, device: str) -> str:
    """A claim's device's lease: one per (claim, device), as the kubelet prepares per claim."""
    return f"{claim_uid}_{device}"


class Leases:
    def __init__(
        self,
        client: DhcpClient | None,
        hostns: Netns,
        ledger: Ledger,
        queries: Queries,
    ) -> None:
        """client: None when DHCP is off (the ops are then refused). queries: for the inventory
        and the uplinks, as an attach checks them."""
        self.client = client
        self.hostns = hostns
        self.ledger = ledger
        self.queries = queries
        if client is not None:
            client.load()

    def start(self) -> None:
        """Renew the leases of attached devices in the background."""
        if self.client is not None:
            self.client.start(self.locate)

    def stop(self) -> None:
        if self.client is not None:
            self.client.stop()

    def acquire(self, claim_uid: str, device: str, ifname: str) -> dict[str, Any]:
        """A DHCPv4 lease on a host interface, before it moves (dra asks at prepare)."""
        dhcp = self._client()
        try:
            check_pod_uid(claim_uid, "claim_uid")
            check_device_name(device, "device")
            check_ifname(ifname, "ifname")
        except RequestError as err:
            raise as_bus_error(err) from None
        self.queries.check_allocatable(ifname)
        link = self.hostns.rtnl.get_link(name=ifname)
        if link is not None and link.index in self.queries.uplinks():
            raise BusError("not_allowed", f"ifname: {ifname!r} is an uplink of the node")
        other = self.ledger.held_by_other_pod("", device, ifname)
        if other is not None:
            raise BusError("conflict", f"{device} ({ifname}) is attached to pod {other.pod_uid}")
        with self.ledger.reserve([ifname]):
            try:
                lease = dhcp.acquire(lease_key(claim_uid, device), ifname, self.hostns.rtnl, self.hostns.fd)
            except DhcpError as exc:
                raise BusError("unavailable", str(exc)) from None
        return {"lease": lease.to_dict()}

    def release(self, claim_uid: str, device: str) -> dict[str, Any]:
        """Give the claim's lease back (dra asks at unprepare, the device back on the host)."""
        dhcp = self._client()
        try:
            check_pod_uid(claim_uid, "claim_uid")
            check_device_name(device, "device")
        except RequestError as err:
            raise as_bus_error(err) from None
        key = lease_key(claim_uid, device)
        rec = dhcp.get(key)
        if rec is None:
            return {"released": False}
        with self.ledger.reserve([rec.ifname]):
            try:
                return {"released": dhcp.release(key, self.hostns.rtnl, self.hostns.fd)}
            except DhcpError as exc:
                raise BusError("unavailable", str(exc)) from None

    def _client(self) -> DhcpClient:
        if self.client is None:
            raise BusError(
                "unavailable",
                "DHCP is not enabled in the netns worker "
                "(start it with --dhcp; it needs dhclient, CAP_NET_RAW and CAP_NET_BIND_SERVICE)",
            )
        return self.client

    def locate(self, key: str) -> tuple[int, str] | None:
        """An fd on the pod netns and the pod-side name of the attached device of this lease."""
        for e in self.ledger.entries():
            if e.phase != ATTACHED or not e.pod_ifname or lease_key(e.claim_uid or "", e.device) != key:
                continue
            try:
                fd = os.open(e.netns, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return None
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != e.netns_id:
                os.close(fd)
                return None
            return fd, e.pod_ifname
        return None
