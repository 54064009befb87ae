"""`dranet status`: ask each service over the bus and print a health table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dranet.bus.client import BusClient
from dranet.bus.messages import BusError


def query(
    runtime_dir: Path, services: Sequence[str], timeout: float = 1.0
) -> dict[str, dict[str, Any] | str]:
    """service -> ping result, or the error text when it did not answer."""
    out: dict[str, dict[str, Any] | str] = {}
    for name in services:
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
        state = "ok" if res.get("healthy") else "UNHEALTHY"
        details = " ".join(f"{k}={v}" for k, v in sorted(res.get("details", {}).items()))
        rows.append((name, state, str(res["pid"]), f"{res['uptime_s']:.0f}s", details))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4] for r in rows
    )


def all_healthy(results: dict[str, dict[str, Any] | str]) -> bool:
    return all(isinstance(r, dict) and r.get("healthy") for r in results.values())
