"""The handlers' two collaborators, dra and the netns worker, reached over the bus."""

from __future__ import annotations

from typing import Any

from dranet.bus.client import BusClient


class BusDra:
    def __init__(self, client: BusClient) -> None:
        self.client = client

    def pod_devices(self, pod_uid: str, timeout: float) -> list[dict[str, Any]]:
        return list(self.client.call("pod_devices", {"pod_uid": pod_uid}, timeout=timeout)["devices"])


class BusNetns:
    def __init__(self, client: BusClient) -> None:
        self.client = client

    def attach(self, body: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
        return list(self.client.call("attach", body, timeout=timeout)["attachments"])

    def detach(self, body: dict[str, Any], timeout: float) -> list[str]:
        return list(self.client.call("detach", body, timeout=timeout)["released"])

    def attachments(self, timeout: float) -> list[dict[str, Any]]:
        return list(self.client.call("list", {}, timeout=timeout)["attachments"])

    def alive(self, paths: list[str], timeout: float) -> dict[str, str]:
        result = self.client.call("netns_alive", {"netns": paths}, timeout=timeout)
        return {str(a["netns"]): str(a["id"]) for a in result["alive"]}
