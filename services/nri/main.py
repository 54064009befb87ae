"""The nri service: the NRI plugin that attaches a pod's claimed interfaces when its sandbox starts."""

from __future__ import annotations

import argparse
import itertools
import threading
import uuid
from collections import deque
from typing import Any

from dranet.services.nri.collaborators import BusDra, BusNetns
from dranet.services.nri.handlers import POD_EVENTS_TOPIC, Options, PodHandlers
from dranet.services.nri.plugin import NriPlugin, PluginOptions, valid_index

from dranet.bus.client import BusClient
from dranet.service import ServiceHost


class RecentEvents:
    """The last `size` pod events, each with a unique id: the "pod_events" snapshot, so that a
    subscriber that joins (or re-joins after a restart) still sees recent failures; it dedupes by id."""

    def __init__(self, size: int = 100) -> None:
        self._events: deque[dict[str, Any]] = deque(maxlen=size)
        self._lock = threading.Lock()
        self._prefix = uuid.uuid4().hex[:12]  # new each start: ids never repeat across restarts
        self._n = itertools.count(1)

    def add(self, body: dict[str, Any]) -> dict[str, Any]:
        """The event with its id, remembered."""
        with self._lock:
            event = {**body, "id": f"{self._prefix}-{next(self._n)}"}
            self._events.append(event)
        return event

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"events": list(self._events)}


def _index(value: str) -> str:
    if not valid_index(value):
        raise argparse.ArgumentTypeError("must be two digits, 00-99 (plugins run in ascending order)")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nri-socket", default="/var/run/nri/nri.sock", help="the runtime's NRI socket (default %(default)s)"
    )
    parser.add_argument("--plugin-name", default="dranet", help="name we register with (default %(default)s)")
    parser.add_argument(
        "--plugin-index",
        default="00",
        type=_index,
        help="two-digit index; the runtime calls plugins in ascending order (default %(default)s)",
    )
    parser.add_argument(
        "--budget-margin",
        default=0.5,
        type=float,
        help="answer RunPodSandbox this many seconds before the runtime's request timeout "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--late-attach-timeout",
        default=10.0,
        type=float,
        help="time allowed for an attach done during reconciliation (default %(default)s)",
    )
    parser.add_argument(
        "--sysfs-root", default="/sys", help="where to read RDMA char devices (default %(default)s)"
    )


def run(args: argparse.Namespace) -> int:
    host = ServiceHost("nri", args)
    if not host.wait_for_turn():  # another driver pod's instance is active here (rolling update)
        host.close()
        return 0
    rd = host.settings.runtime_dir
    dra = BusClient(rd, "dra", context=host.context)
    netns = BusClient(rd, "netns", context=host.context)
    recent = RecentEvents()

    def publish(topic: str, body: dict[str, Any]) -> None:
        host.publish(topic, recent.add(body))

    handlers = PodHandlers(
        BusDra(dra),
        BusNetns(netns),
        options=Options(
            budget_margin=args.budget_margin,
            late_attach_timeout=args.late_attach_timeout,
            sysfs_root=args.sysfs_root,
        ),
        publish=publish,
    )
    plugin = NriPlugin(
        handlers, PluginOptions(socket_path=args.nri_socket, name=args.plugin_name, index=args.plugin_index)
    )

    def health() -> dict[str, Any]:
        # Ready once connected to the runtime and synchronized: before that, sandboxes start
        # without any NRI call (containerd never waits for an unconnected plugin).
        ready = plugin.connected.is_set() and plugin.synchronized.is_set()
        return {
            "ready": ready,
            **({} if ready else {"not_ready": f"not connected to the runtime at {args.nri_socket}"}),
            "connected": plugin.connected.is_set(),
            "synchronized": plugin.synchronized.is_set(),
            "runtime_name": plugin.runtime_name,
            "runtime_version": plugin.runtime_version,
            "request_timeout_s": handlers.request_timeout,
            "registrations": plugin.connections,
            "nri_socket": args.nri_socket,
            "attached_pods": len(handlers.attached_pods()),
        }

    host.serve({}, health=health, snapshots={POD_EVENTS_TOPIC: recent.snapshot})
    plugin.start()
    host.wait()
    plugin.stop()
    handlers.close()
    dra.close()
    netns.close()
    return 0
