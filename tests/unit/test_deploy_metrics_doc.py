"""docs/metrics.md documents exactly the metrics the code declares, with their labels.

The code is read statically (ast), so a module that does not import today still counts."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
KINDS = {"counter": "counter", "gauge": "gauge", "histogram": "histogram"}


def declared_metrics() -> dict[str, tuple[str, tuple[str, ...]]]:
    """name -> (kind, label names) for every counter/gauge/histogram declared in the package."""
    found: dict[str, tuple[str, tuple[str, ...]]] = {}
    files = [*(ROOT / "dranet").rglob("*.py"), *(ROOT / "services").rglob("*.py")]
    for path in files:
        if "_generated" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            fname = ""
            if isinstance(func, ast.Attribute):
                fname = func.attr
            elif isinstance(func, ast.Name):
                fname = func.id
            kind = KINDS.get(fname.lower())
            if kind is None or not node.args:
                continue
            first = node.args[0]
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                continue
            if not first.value.startswith("dranet_"):
                continue
            labels: tuple[str, ...] = ()
            label_node = node.args[2] if len(node.args) > 2 else None
            for kw in node.keywords:
                if kw.arg == "labelnames":
                    label_node = kw.value
            if isinstance(label_node, ast.Tuple | ast.List):
                labels = tuple(str(e.value) for e in label_node.elts if isinstance(e, ast.Constant))
            found[first.value] = (kind, labels)
    return found


def documented_metrics() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Rows of the tables in docs/metrics.md: | `name` | kind | `label`, ... | meaning |"""
    rows: dict[str, tuple[str, tuple[str, ...]]] = {}
    for line in (ROOT / "docs" / "metrics.md").read_text().splitlines():
        m = re.match(r"^\|\s*`(dranet_[a-z0-9_]+)`\s*\|\s*(\w+)\s*\|([^|]*)\|", line)
        if m:
            labels = tuple(re.findall(r"`([a-z_]+)`", m.group(3)))
            rows[m.group(1)] = (m.group(2), labels)
    return rows


def test_the_code_declares_the_bus_metrics() -> None:
    declared = declared_metrics()
    assert declared["dranet_bus_requests_total"] == ("counter", ("service", "op", "outcome"))
    assert declared["dranet_bus_request_duration_seconds"] == ("histogram", ("service", "op", "outcome"))


def added_by_every_process() -> dict[str, tuple[str, tuple[str, ...]]]:
    """dranet_build_info (every process) and dranet_service_up (the endpoint), read from what the
    endpoint serves for one service, with the `service` label it adds."""
    from dranet.observability import metrics
    from dranet.observability.endpoint import merge

    out = {}
    for fam in merge({"dra": metrics.render()}):
        if fam.name in ("dranet_build_info", "dranet_service_up"):
            others = sorted({k for s in fam.samples for k in s.labels} - {"service"})
            out[fam.name] = (fam.type, ("service", *others))
    return out


def test_every_metric_is_documented_with_its_kind_and_labels() -> None:
    declared, documented = {**declared_metrics(), **added_by_every_process()}, documented_metrics()
    missing = sorted(set(declared) - set(documented))
    stale = sorted(set(documented) - set(declared))
    assert not missing, f"add to docs/metrics.md: {missing}"
    assert not stale, f"docs/metrics.md lists metrics the code no longer declares: {stale}"
    wrong = {n: (declared[n], documented[n]) for n in declared if declared[n] != documented[n]}
    assert not wrong, f"kind or labels differ (code, doc): {wrong}"
