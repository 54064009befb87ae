"""Every CLI flag, metric name and claim-config field the docs name exists in the code.

docs/*.md and README.md are read as text: a `--flag` must be one of some `dranet` command's options
(or a foreign tool's, listed below with whose it is), a `dranet_*` or `process_*` metric must be
one a process exposes, and a config field path (`interface.vrf.table`, `routes[0].gateway`) or a
field table row of docs/claim-config.md must be a field the decoder accepts."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dranet.cli import COMMANDS, build_parser
from dranet.config import child, decode
from dranet.observability import metrics
from dranet.observability.endpoint import merge

from .test_deploy_metrics_doc import declared_metrics

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])

# Flags of other programs that the docs name, by whose they are.
FOREIGN_FLAGS = {
    # upstream dranet's (docs/migrating-from-upstream.md maps them)
    "--bind-address": "upstream",
    "--hostname-override": "upstream",
    "--db-path": "upstream",
    "--inventory-poll-burst": "upstream",
    "--kubelet-root-dir": "upstream",
    "--v": "upstream (klog)",
    # the example IPAM provider's (deploy/examples/ipam_webhook.py, not a dranet command)
    "--pool": "ipam_webhook.py",
    "--gateway": "ipam_webhook.py",
    "--profile": "ipam_webhook.py",
    # the kubelet's, containerd's, kubectl's, nsenter's
    "--root-dir": "kubelet",
    "--address": "containerd",
    "--previous": "kubectl",
    "--field-selector": "kubectl",
    "--net": "nsenter",
    "--inventory": "upstream (its --inventory-*-poll-interval flags)",
    # the local cluster's own tools (localcluster), not `dranet` commands
    "--purge": "localcluster/containerd/down.sh",
    "--socket": "python -m localcluster.cri",
}
# Metrics renamed, named in docs/metrics.md with their new name.
RENAMED = {"dranet_dra_prepare_seconds": "dranet_dra_claim_seconds"}


def dranet_flags() -> set[str]:
    """Every option string of every `dranet` subcommand."""
    flags: set[str] = set()
    for command in [*COMMANDS, "run", "status"]:
        parser = build_parser(command)
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        for action in sub.choices[command]._actions:
            flags.update(s for s in action.option_strings if s.startswith("--"))
    return flags | localcluster_flags()


def localcluster_flags() -> set[str]:
    """Flags of `python -m localcluster` commands (the development stand-ins the docs describe)."""
    import importlib

    from localcluster.__main__ import COMMANDS as TOOLS

    flags: set[str] = set()
    for module_name, _help in TOOLS.values():
        parser = argparse.ArgumentParser()
        importlib.import_module(module_name).add_arguments(parser)
        flags.update(s for a in parser._actions for s in a.option_strings if s.startswith("--"))
    return flags


def doc_tokens(pattern: str) -> dict[str, list[str]]:
    """token -> the docs it appears in."""
    found: dict[str, list[str]] = {}
    for path in DOCS:
        for token in re.findall(pattern, path.read_text()):
            found.setdefault(token, []).append(path.name)
    return found


def test_every_flag_in_the_docs_exists() -> None:
    known = dranet_flags()
    assert {"--metrics-address", "--runtime-dir", "--kubelet-registry-dir", "--nri-socket"} <= known
    named = doc_tokens(r"(?<![\w-])(--[a-z][a-z0-9]*(?:-[a-z0-9]+)*)")
    unknown = {f: where for f, where in named.items() if f not in known and f not in FOREIGN_FLAGS}
    assert not unknown, f"flags the docs name that no dranet command has: {unknown}"
    assert not set(FOREIGN_FLAGS) - set(named), "FOREIGN_FLAGS lists flags no doc names any more"


def exposed_metric_names() -> set[str]:
    """Families and sample names the endpoint serves: every declared metric, the process and
    build-info ones (read from a real rendering), dranet_service_up."""
    families = merge({"dra": metrics.render()})
    samples = {s.name for f in families for s in f.samples} | {f.name for f in families}
    names = set(declared_metrics()) | samples
    for name in list(names):
        names.update(name + suffix for suffix in ("_bucket", "_sum", "_count"))
    return names


def test_every_metric_in_the_docs_is_exposed() -> None:
    exposed = exposed_metric_names()
    # not followed by "." or "/": file names such as dranet_dev.oci.tar
    named = doc_tokens(r"(?<![\w/])((?:dranet|process|python)_[a-z0-9_]*[a-z0-9])(?![\w*./])")
    # upstream's names, quoted in docs/metrics.md's comparison
    upstream = {n for n in named if n.startswith("dranet_driver_")}
    assert set(RENAMED.values()) <= exposed
    unknown = {n: w for n, w in named.items() if n not in exposed | upstream | set(RENAMED)}
    assert not unknown, f"metrics the docs name that no process exposes: {unknown}"


def test_the_parser_reads_the_rendering() -> None:
    """exposed_metric_names() relies on the parser seeing the process collector's families."""
    names = {f.name for f in text_string_to_metric_families(metrics.render())}
    assert {"process_cpu_seconds", "dranet_build_info"} <= names


FIELDS = {
    "": decode.TOP_FIELDS,
    "interface": decode.INTERFACE_FIELDS,
    "interface.vrf": decode.VRF_FIELDS,
    "interface.macvlan": child.MACVLAN_FIELDS,
    "interface.ipvlan": child.IPVLAN_FIELDS,
    "routes": decode.ROUTE_FIELDS,
    "rules": decode.RULE_FIELDS,
    "neighbors": decode.NEIGHBOR_FIELDS,
    "ethtool": decode.ETHTOOL_FIELDS,
}
FREE_KEYS = {"ethtool.features", "ethtool.privateFlags"}  # names the user chooses


def resolves(path: str) -> bool:
    parent = ""
    for seg in re.sub(r"\[\d+\]", "", path).split("."):
        if parent in FREE_KEYS:
            return True
        if seg not in FIELDS.get(parent, ()):
            return False
        parent = f"{parent}.{seg}".lstrip(".")
    return True


@pytest.mark.parametrize(
    ("path", "ok"),
    [
        ("interface.vrf.table", True),
        ("routes[0].gateway", True),
        ("ethtool.privateFlags.legacy-rx", True),
        ("interface.gateway", False),
        ("neighbors[0].ipAddress", False),
    ],
)
def test_field_paths_resolve_through_the_decoders_fields(path: str, ok: bool) -> None:
    assert resolves(path) is ok


def test_every_config_field_in_the_docs_exists() -> None:
    top = "|".join(decode.TOP_FIELDS)
    named = doc_tokens(rf"`((?:{top})(?:\[\d+\])?(?:\.[A-Za-z][\w-]*(?:\[\d+\])?)+)")
    # fields the decoder refuses by name with a hint (upstream's mistakes), which the docs show
    refused = {f"{parent}.{field}".lstrip(".") for parent, field in decode._KNOWN_UNSUPPORTED}
    unknown = {p: w for p, w in named.items() if not resolves(p) and re.sub(r"\[\d+\]", "", p) not in refused}
    assert not unknown, f"config fields the docs name that the decoder does not accept: {unknown}"
    # the field tables of claim-config.md: | `name`, `other` | type | ...
    every = {f for fields in FIELDS.values() for f in fields}
    text = (ROOT / "docs/claim-config.md").read_text()
    rows = re.findall(r"^\| (`[^|]+`) \| (?:string|int|bool|object|array|CIDR|IP)", text, re.M)
    listed = {n for row in rows for n in re.findall(r"`(\w+)`", row)}
    assert listed and not listed - every, f"field table rows the decoder does not know: {listed - every}"
