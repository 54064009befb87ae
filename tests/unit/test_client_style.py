"""One way to do each thing: one backoff helper for every retry loop, one kubernetes client style
(the typed API and the client's watch) everywhere in the driver, at a start cost we can afford."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from dranet.backoff import Backoff, backoff_delay

ROOT = Path(__file__).resolve().parents[2]
DRIVER = [
    *sorted((ROOT / "services").rglob("*.py")),
    *sorted((ROOT / "dranet").glob("*.py")),
    *sorted((ROOT / "dranet" / "bus").glob("*.py")),
]


def test_backoff_doubles_to_its_cap_and_starts_again_after_reset() -> None:
    b = Backoff(0.1, 1.0)
    assert [round(b.next(), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    b.reset()
    assert b.next() == 0.1
    assert backoff_delay(10_000, 0.5, 30.0) == 30.0  # no overflow after a very long outage


def test_backoff_jitter_stays_within_its_fraction() -> None:
    delays = {backoff_delay(3, 0.5, 30.0, jitter=0.2) for _ in range(200)}
    assert all(1.6 <= d <= 2.4 for d in delays)
    assert len(delays) > 1


def _doublings(path: Path) -> list[int]:
    """Lines that double a delay by hand (`x * 2` or `x *= 2` inside a min(...))."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "min":
            for arg in node.args:
                if isinstance(arg, ast.BinOp) and isinstance(arg.op, ast.Mult | ast.Pow):
                    if isinstance(arg.right, ast.Constant) and arg.right.value == 2:
                        found.append(node.lineno)
    return found


def test_every_retry_loop_uses_the_backoff_helper() -> None:
    hand_written = {
        str(p.relative_to(ROOT)): lines for p in DRIVER if p.name != "backoff.py" and (lines := _doublings(p))
    }
    assert hand_written == {}, f"use dranet.backoff.Backoff instead of doubling by hand: {hand_written}"


def test_the_driver_calls_the_api_through_the_typed_client_only() -> None:
    raw = [
        str(p.relative_to(ROOT))
        for p in DRIVER
        if any(word in p.read_text() for word in ("call_api(", "param_serialize(", ".stream(64"))
    ]
    assert raw == [], f"raw HTTP calls or a hand-written watch: {raw}"


@pytest.mark.parametrize("module", ["dranet.services.discovery.main", "dranet.services.dra.main"])
def test_starting_a_service_imports_no_api_module(module: str) -> None:
    """The typed API modules cost 0.15-2.5 s to import (core_v1_api is 4.5 MB of source): they are
    loaded by the threads that call the API, never before a service answers its bus."""
    code = (
        f"import sys, {module}\n"
        "loaded = [m for m in sys.modules if m.startswith('kubernetes.client.api.')]\n"
        "print(','.join(loaded))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
