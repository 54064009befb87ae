"""`dranet status`: ask each service over the bus and print a health table.

STATE is DOWN (does not answer: not alive), UNHEALTHY (a fault to fix), NOT READY (alive and
healthy, but cannot do its job yet: dra not registered with the kubelet, nri not connected to the
runtime, discovery's slices not published), ready, or standby (in a rolling update, this driver
pod's instance waits for the old pod's to exit: live and ready; see dranet.instance).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dranet.bus.client import BusClient
from dranet.bus.messages import BusError
from dranet.instance import standby_marker, standing_by

STANDBY = {
    "healthy": True,
    "ready": True,
    "standby": True,
    "pid": "-",
    "uptime_s": 0.0,
    "details": {"standby": "another driver pod's instance is active; this one takes over when it exits"},
}


def query(
    runtime_dir: Path, services: Sequence[str], timeout: float = 1.0, instance: str = ""
) -> dict[str, dict[str, Any] | str]:
    """service -> ping result, or the error text when it did not answer. instance (the driver
    pod's UID): a service of this pod standing by (dranet.instance) counts as live and ready, and
    is not asked (the bus answering is the other pod's)."""
    out: dict[str, dict[str, Any] | str] = {}
    for name in services:
        if instance and standing_by(standby_marker(runtime_dir, name, instance)):
            out[name] = dict(STANDBY)
            continue
        client = BusClient(runtime_dir, name, timeout=timeout)
        try:
            out[name] = client.call("ping")
        except BusError as err:
            out[name] = err.message
        finally:
            client.close()
    return out


def format_table(results: dict[str, dict[str, Any] | str]) -> str:
    rows = [("SERVICE", "STATE", "PID", "UPTIME", "DETAILS")]
    for name, res in results.items():
        if isinstance(res, str):
            rows.append((name, "DOWN", "-", "-", res))
            continue
        state = state_of(res)
        details = " ".join(f"{k}={v}" for k, v in sorted(res.get("details", {}).items()))
        rows.append((name, state, str(res["pid"]), f"{res['uptime_s']:.0f}s", details))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4] for r in rows
    )


def state_of(res: dict[str, Any]) -> str:
    if res.get("standby"):
        return "standby"
    if not res.get("healthy"):
        return "UNHEALTHY"
    return "ready" if res.get("ready") else "NOT READY"


def all_ready(results: dict[str, dict[str, Any] | str]) -> bool:
    """Readiness: every service answers, is healthy and is ready."""
    return all(isinstance(r, dict) and state_of(r) in ("ready", "standby") for r in results.values())


def all_healthy(results: dict[str, dict[str, Any] | str]) -> bool:
    """Every service answers and has no fault (it may still wait for the kubelet or the runtime)."""
    return all(isinstance(r, dict) and r.get("healthy") for r in results.values())


def all_live(results: dict[str, dict[str, Any] | str]) -> bool:
    """Liveness: every service answers on its bus (unhealthy or not ready is still alive)."""
    return all(isinstance(r, dict) for r in results.values())
