"""The flags every service shares, and the settings object built from them."""

from __future__ import annotations

import argparse
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from dranet.bus.policy import PeerPolicy, parse_service_uids
from dranet.uplinks import UplinkPolicy, endpoint_host

log = logging.getLogger(__name__)

DEFAULT_RUNTIME_DIR = "/run/dranet"
DEFAULT_STATE_DIR = "/var/lib/dranet"
DEFAULT_DRIVER_NAME = "dra.net"


@dataclass(frozen=True)
class Settings:
    runtime_dir: Path
    state_dir: Path
    node_name: str
    driver_name: str
    kubeconfig: str | None
    log_level: str
    # each service's uid: who may call which op on the bus
    peers: PeerPolicy = field(default_factory=lambda: PeerPolicy({}))
    run_as: int = 0  # the uid to run as once the sockets are bound (0: stay root)


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("common")
    g.add_argument("--runtime-dir", default=DEFAULT_RUNTIME_DIR, help="bus sockets (default %(default)s)")
    g.add_argument("--state-dir", default=DEFAULT_STATE_DIR, help="durable state (default %(default)s)")
    g.add_argument(
        "--node-name", default=None, help="this node's name (default $NODE_NAME, then the hostname)"
    )
    g.add_argument("--driver-name", default=DEFAULT_DRIVER_NAME, help="DRA driver name (default %(default)s)")
    g.add_argument(
        "--kubeconfig", default=None, help="kubeconfig file (default: in-cluster config, then $KUBECONFIG)"
    )
    g.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="(default %(default)s)",
    )
    g.add_argument(
        "--service-uids",
        default="",
        help="the uid each service runs as, e.g. discovery=65101,dra=65102: bus peers are known by "
        "uid (SO_PEERCRED), each may call only its role's ops; a service not named is uid 0 "
        "(default: all uid 0; give every service the same value)",
    )
    g.add_argument(
        "--run-as",
        type=int,
        default=0,
        help="uid to switch to once the service bound its sockets (group 0, the bus group; needs "
        "CAP_SETUID, CAP_SETGID, CAP_CHOWN at start, dropped with the switch); discovery and dra "
        "only (default 0: stay root)",
    )


def settings_from_args(args: argparse.Namespace) -> Settings:
    return Settings(
        runtime_dir=Path(getattr(args, "runtime_dir", DEFAULT_RUNTIME_DIR)),
        state_dir=Path(getattr(args, "state_dir", DEFAULT_STATE_DIR)),
        node_name=getattr(args, "node_name", None) or os.environ.get("NODE_NAME") or socket.gethostname(),
        driver_name=getattr(args, "driver_name", DEFAULT_DRIVER_NAME),
        kubeconfig=getattr(args, "kubeconfig", None),
        log_level=getattr(args, "log_level", "info"),
        peers=PeerPolicy(parse_service_uids(getattr(args, "service_uids", "") or "")),
        run_as=int(getattr(args, "run_as", 0) or 0),
    )


def kube_api_client(settings: Settings):  # type: ignore[no-untyped-def]
    """The official client's ApiClient: --kubeconfig, else in-cluster, else $KUBECONFIG."""
    from kubernetes import client, config

    if settings.kubeconfig:
        return config.new_client_from_config(config_file=settings.kubeconfig)
    try:
        config.load_incluster_config()
        return client.ApiClient()
    except config.ConfigException:
        return config.new_client_from_config(config_file=os.environ.get("KUBECONFIG"))


def add_uplink_flags(group: argparse._ArgumentGroup, endpoint_default: str) -> None:
    """The uplink rule's flags (dranet/uplinks.py), for the services that apply it."""
    group.add_argument(
        "--uplink-interfaces",
        default="",
        help="comma-separated interface name patterns (fnmatch) that are always uplinks of the node, "
        "on top of those the routing decides: never offered nor attached, nor their masters and ports",
    )
    group.add_argument(
        "--apiserver-endpoint",
        default=None,
        help="the API server's address, URL or host name; the interface the node reaches it through "
        f"is an uplink (default: {endpoint_default})",
    )


def uplink_policy(args: argparse.Namespace, default_endpoint: str = "") -> UplinkPolicy:
    """The uplink rule's inputs from the flags; the endpoint falls back to `default_endpoint`, then
    to $KUBERNETES_SERVICE_HOST (which the kubelet gives every pod). A host name is resolved here,
    once: a lookup that fails is logged and leaves the rule to the routes alone."""
    endpoint = (
        getattr(args, "apiserver_endpoint", None)
        or default_endpoint
        or os.environ.get("KUBERNETES_SERVICE_HOST", "")
    )
    patterns = tuple(
        p.strip() for p in (getattr(args, "uplink_interfaces", "") or "").split(",") if p.strip()
    )
    host = endpoint_host(endpoint)
    addresses: tuple[str, ...] = ()
    if host:
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
            addresses = tuple(dict.fromkeys(str(i[4][0]) for i in infos))
        except OSError as exc:
            log.warning(
                "cannot resolve the API server's endpoint; its interface is not checked",
                extra={"endpoint": endpoint, "error": str(exc)},
            )
    return UplinkPolicy(apiserver=addresses, always=patterns)
