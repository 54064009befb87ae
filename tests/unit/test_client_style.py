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
    """Lines that double a delay by hand: `x = min(x * 2, cap)` or `x *= 2` (a delay computed once,
    such as `min(30.0, timeout * 2)`, is not a loop's backoff)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.AugAssign) and isinstance(node.op, ast.Mult):
            if isinstance(node.value, ast.Constant) and node.value.value == 2:
                found.append(node.lineno)
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.value, ast.Call)):
            continue
        target = ast.unparse(node.targets[0])
        for arg in node.value.args if getattr(node.value.func, "id", "") == "min" else []:
            doubled = isinstance(arg, ast.BinOp) and isinstance(arg.op, ast.Mult)
            if doubled and ast.unparse(arg.left) == target and ast.unparse(arg.right) == "2":
                found.append(node.lineno)
    return found


def test_the_doubling_finder_finds_a_hand_written_backoff(tmp_path: Path) -> None:
    code = tmp_path / "loop.py"
    code.write_text("d = 0.1\nd = min(d * 2, 5.0)\nself.d *= 2\nretry_at = min(30.0, timeout * 2)\n")
    assert _doublings(code) == [2, 3]


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
