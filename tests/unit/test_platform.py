"""Pure platform pieces: message shapes, metrics text, JSON logs, capabilities, supervisord config."""

from __future__ import annotations

import argparse
import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dranet import __version__
from dranet.bus.messages import OPS, TOPICS, BusError, Opt, Struct, check, decode_reply, encode_reply
from dranet.capabilities import CAP_NAMES, names_of
from dranet.cli import build_parser
from dranet.observability import metrics
from dranet.observability.logging import JsonFormatter, bind
from dranet.settings import settings_from_args
from dranet.supervise import render

ROOT = Path(__file__).parent.parent.parent


def test_shape_check_names_the_field() -> None:
    shape = Struct("S", {"a": int, "b": [Struct("T", {"c": str})], "d": Opt(float)})
    check(shape, {"a": 1, "b": [{"c": "x"}], "d": None})
    for bad, where in [
        ({"a": True, "b": []}, "body.a: expected int"),
        ({"a": 1, "b": [{"c": 2}]}, "body.b[0].c: expected str"),
        ({"a": 1}, "body.b: required"),
        ({"a": 1, "b": [], "zz": 1}, "body.zz: unknown field"),
        ({"a": 1, "b": {}}, "body.b: expected a list"),
    ]:
        with pytest.raises(BusError) as err:
            check(shape, bad)
        assert err.value.code == "bad_request" and err.value.message.startswith(where), err.value.message


def test_reply_round_trip() -> None:
    assert decode_reply(encode_reply("i", {"x": 1})).result == {"x": 1}
    err = decode_reply(encode_reply("i", error=BusError("not_found", "no such pod"))).error
    assert err is not None and err.code == "not_found" and err.message == "no such pod"


def test_every_op_and_topic_is_documented() -> None:
    doc = (ROOT / "docs" / "bus.md").read_text()
    for name in [*OPS, *TOPICS]:
        assert f"`{name}`" in doc, f"docs/bus.md does not document {name}"


def test_metrics_are_declared_once_per_process() -> None:
    c = metrics.counter("dranet_test_platform_total", "help text", ("op",))
    assert metrics.counter("dranet_test_platform_total", "help text", ("op",)) is c
    with pytest.raises(ValueError):
        metrics.counter("dranet_test_platform_total", "help text", ("other",))
    with pytest.raises(ValueError):
        metrics.gauge("dranet_test_platform_total", "help text", ("op",))
    c.labels(op='a"b').inc(3)
    assert metrics.value("dranet_test_platform_total", op='a"b') == 3
    text = metrics.render()
    assert 'dranet_test_platform_total{op="a\\"b"} 3.0' in text
    assert f'dranet_build_info{{version="{__version__}"}} 1.0' in text
    assert "process_cpu_seconds_total" in text and "_created" not in text


def test_json_log_lines_carry_context_and_extra() -> None:
    fmt = JsonFormatter("netns")
    record = logging.LogRecord("n", logging.INFO, "f", 1, "attached %s", ("eth0",), None)
    record.device = "pci-0000-00-01-0"
    with bind(pod_uid="p1"):
        line = json.loads(fmt.format(record))
    assert line["msg"] == "attached eth0" and line["service"] == "netns"
    assert line["pod_uid"] == "p1" and line["device"] == "pci-0000-00-01-0" and line["level"] == "info"


def test_capability_names() -> None:
    assert CAP_NAMES[12] == "CAP_NET_ADMIN" and CAP_NAMES[21] == "CAP_SYS_ADMIN"
    assert names_of((1 << 12) | (1 << 21)) == ["CAP_NET_ADMIN", "CAP_SYS_ADMIN"]


def test_drop_capabilities_in_a_child_process() -> None:
    code = (
        "from dranet.capabilities import drop_capabilities, effective_capabilities as e;"
        "drop_capabilities(['CAP_NET_ADMIN']); print(','.join(e()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    import os

    assert out == ("CAP_NET_ADMIN" if os.geteuid() == 0 else "")


def _args(*argv: str) -> argparse.Namespace:
    return build_parser("run").parse_args(["run", *argv])


def test_supervisord_config_runs_each_service_with_the_common_flags(tmp_path: Path) -> None:
    settings = settings_from_args(_args("--runtime-dir", str(tmp_path), "--node-name", "n1"))
    text = render(settings, ["nri", "netns"], {"netns": ["--netns-root", "/x y"]})
    programs = re.findall(r"^\[program:(\w+)\]", text, re.M)
    assert programs == ["netns", "nri"]  # the worker first
    assert "autorestart=true" in text and "stopsignal=TERM" in text
    assert f"--runtime-dir={tmp_path}" in text and "--node-name=n1" in text and "'/x y'" in text
    assert f"file={tmp_path}/supervisord.sock" in text
    with pytest.raises(ValueError):
        render(settings, ["bogus"])
    with_endpoint = render(settings, ["nri"], metrics_address="[::1]:9177")
    assert re.findall(r"^\[program:(\w+)\]", with_endpoint, re.M) == ["nri", "endpoint"]
    assert "-m dranet endpoint" in with_endpoint and "'--metrics-address=[::1]:9177'" in with_endpoint


def test_two_driver_pods_run_their_own_supervisord_in_the_shared_runtime_dir(tmp_path: Path) -> None:
    """A rolling update runs two pods on one runtime dir: supervisord's socket and pid file carry
    the pod UID, or the second supervisord would refuse to start (its socket is in use)."""
    settings = settings_from_args(_args("--runtime-dir", str(tmp_path)))
    old, new = (render(settings, ["dra"], instance=uid) for uid in ("uid-old", "uid-new"))
    for uid, text in (("uid-old", old), ("uid-new", new)):
        assert f"file={tmp_path}/supervisord-{uid}.sock" in text
        assert f"pidfile={tmp_path}/supervisord-{uid}.pid" in text
        assert f"serverurl=unix://{tmp_path}/supervisord-{uid}.sock" in text


def deploy_config() -> str:
    settings = settings_from_args(_args(*DEPLOY_RUN_ARGS))
    return render(
        settings,
        ["discovery", "dra", "nri"],
        {},
        logs_dir="-",
        python="/usr/local/bin/python",
        metrics_address=":9177",
    )


def test_deploy_supervisord_conf_is_the_rendered_default() -> None:
    """deploy/supervisord.conf shows what the image runs; it must match what `dranet run` renders."""
    assert (ROOT / "deploy" / "supervisord.conf").read_text() == deploy_config(), (
        "regenerate: make deploy-config"
    )


DEPLOY_RUN_ARGS = ("--runtime-dir", "/run/dranet", "--state-dir", "/var/lib/dranet", "--node-name", "node-1")
