"""The `dranet` command: one subcommand per service, plus run, status, audit and the CDI hook.

The development stand-ins (local API server, demo) are not part of the product: `python -m
localcluster` (the repository's second package, installed in the dev venv only)."""

from __future__ import annotations

import argparse
import importlib
import os
import shlex
import sys
from collections.abc import Sequence

from dranet.bus.endpoints import SERVICES
from dranet.capabilities import make_undumpable

# subcommand -> (module with add_arguments/run, help, takes the common service flags)
COMMANDS: dict[str, tuple[str, str, bool]] = {
    "netns": ("dranet.services.netns.main", "the privileged netns worker (attach/detach interfaces)", True),
    "netns-release": (
        "dranet.services.netns.release",
        "forget a device the netns worker cannot give back (after fixing it by hand)",
        True,
    ),
    "discovery": ("dranet.services.discovery.main", "inventory of the node's devices, ResourceSlices", True),
    "dra": ("dranet.services.dra.main", "the kubelet DRA plugin (prepare/unprepare claims)", True),
    "nri": ("dranet.services.nri.main", "the NRI plugin (pod sandbox events from the runtime)", True),
    "cdi-hook": (
        "dranet.cdihook",
        "OCI hook (from the CDI spec of a claim): refuse a container until its NICs are attached",
        False,
    ),
    "endpoint": (
        "dranet.observability.endpoint",
        "the pod's HTTP endpoint: /metrics of every service, /healthz, /readyz",
        True,
    ),
    "audit": ("dranet.audit", "least-privilege audit of the running services", True),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only `command`'s module is imported (a probe running `dranet status` must not pay
    for, or break on, the other services' imports)."""
    from dranet import __version__
    from dranet.settings import add_common_flags

    parser = argparse.ArgumentParser(prog="dranet", description=__doc__)
    parser.add_argument("--version", action="version", version=f"dranet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text, common) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name != command:
            continue
        module = importlib.import_module(module_name)
        if common:
            add_common_flags(p)
        module.add_arguments(p)
        p.set_defaults(run=module.run)

    run = sub.add_parser(
        "run", help="run services under supervisord", description="run services under supervisord"
    )
    add_common_flags(run)
    run.add_argument(
        "--services", default=",".join(SERVICES), help="comma-separated subset (default: all four)"
    )
    for s in SERVICES:
        run.add_argument(
            f"--{s}-args", default="", help=f"extra flags for `dranet {s}` (one shell-quoted string)"
        )
    run.add_argument(
        "--logs-dir", default=None, help="per-service logs (default <state-dir>/log; '-' = stdout)"
    )
    run.add_argument(
        "--metrics-address",
        default=None,
        help="also run `dranet endpoint` there: /metrics, /healthz, /readyz of all four services "
        "(host:port, [v6]:port or :port; default: off)",
    )
    run.add_argument("--print-config", action="store_true", help="print the supervisord config and exit")
    run.set_defaults(run=_run)

    status = sub.add_parser("status", help="ask each running service for its health")
    add_common_flags(status)
    status.add_argument("--services", default=",".join(SERVICES), help="comma-separated subset")
    status.add_argument("--timeout", type=float, default=1.0, help="seconds to wait for each (default 1)")
    status.add_argument(
        "--live",
        action="store_true",
        help="liveness: fail only when a service does not answer, not when it is unhealthy or not "
        "ready (default: readiness, fail unless every service is ready)",
    )
    status.set_defaults(run=_status)
    return parser


def _run(args: argparse.Namespace) -> int:
    from dranet import supervise
    from dranet.bus.endpoints import ensure_runtime_dir
    from dranet.settings import settings_from_args

    settings = settings_from_args(args)
    services = [s for s in args.services.split(",") if s]
    extra = {s: shlex.split(getattr(args, f"{s}_args")) for s in SERVICES}
    instance = os.environ.get("POD_UID", "")  # the driver pod's, in the DaemonSet
    text = supervise.render(
        settings,
        services,
        extra,
        logs_dir=args.logs_dir,
        metrics_address=args.metrics_address,
        instance=instance,
    )
    if args.print_config:
        sys.stdout.write(text)
        return 0
    ensure_runtime_dir(settings.runtime_dir)
    if args.logs_dir != "-":
        os.makedirs(args.logs_dir or settings.state_dir / "log", exist_ok=True)
    # One config name, the newest pod's: `supervisorctl -c <runtime dir>/supervisord.conf` reaches
    # the newest supervisord (each read its own config at start; socket and pid are per pod).
    conf = supervise.write(settings.runtime_dir / "supervisord.conf", text)
    os.execv(sys.executable, [sys.executable, "-m", "dranet.supervise", "-n", "-c", str(conf)])
    return 1  # not reached


def _status(args: argparse.Namespace) -> int:
    from dranet.settings import settings_from_args
    from dranet.status import all_live, all_ready, format_table, query

    settings = settings_from_args(args)
    services = [s for s in args.services.split(",") if s]
    results = query(settings.runtime_dir, services, args.timeout, os.environ.get("POD_UID", ""))
    print(format_table(results))
    return 0 if (all_live if args.live else all_ready)(results) else 1


def main(argv: Sequence[str] | None = None) -> int:
    # First: a process of the same uid (a compromised sibling) must not read this one's memory,
    # fds or root filesystem (the ServiceAccount token) through ptrace or /proc.
    make_undumpable()
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
