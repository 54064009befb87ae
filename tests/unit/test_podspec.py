"""The node stand-in's kubelet logic without a runtime: the DaemonSet's template translated into CRI
requests (podspec.plan), its refusals, and the prober's counters (daemonpod.ProbeState)."""

from __future__ import annotations

import argparse
import copy
import http.server
import json
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from dranet._generated import cri_pb2
from localcluster import node as node_module
from localcluster.daemonpod import ProbeState, http_probe
from localcluster.podspec import HttpGet, Node, Probe, Unsupported, plan, pod_template

ROOT = Path(__file__).resolve().parents[2]
CAP_KEYS = ("add_capabilities", "drop_capabilities")


def template() -> dict[str, Any]:
    docs = list(yaml.safe_load_all((ROOT / "deploy/kubernetes/daemonset.yaml").read_text()))
    return copy.deepcopy(dict(pod_template(docs)))


def node(tmp_path: Path) -> Node:
    return Node(
        name="n1",
        ip="10.0.0.7",
        host_root=tmp_path / "node",
        host_paths={"/var/run/netns": "/var/run/netns"},
        pod_dir=tmp_path / "pod",
        images={"dranet": "localhost/dranet:dev"},
        pod_uid="uid-1",
        api_service=("127.0.0.1", 443),
    )


def test_the_shipped_template_becomes_the_kubelets_cri_requests(tmp_path: Path) -> None:
    p = plan(template(), node(tmp_path), sa_token="tok", root_ca="CA")
    assert p.sandbox.hostname == ""  # hostNetwork: no hostname (runc refuses one)
    opts = p.sandbox.linux.security_context.namespace_options
    # hostNetwork; no shareProcessNamespace: the worker must not see the main container's processes
    assert (opts.network, opts.pid) == (cri_pb2.NODE, cri_pb2.CONTAINER)
    main, worker = (c.config for c in p.containers)
    sc_main, sc_worker = main.linux.security_context, worker.linux.security_context
    assert [list(getattr(sc_main.capabilities, k)) for k in CAP_KEYS] == [
        ["SETUID", "SETGID", "CHOWN"],
        ["ALL"],
    ]
    assert [list(getattr(sc_worker.capabilities, k)) for k in CAP_KEYS] == [
        ["NET_ADMIN", "SYS_ADMIN", "NET_RAW", "NET_BIND_SERVICE"],
        ["ALL"],
    ]
    assert sc_main.no_new_privs and sc_worker.no_new_privs
    assert sc_main.readonly_rootfs and sc_worker.readonly_rootfs
    assert sc_main.HasField("run_as_user") and sc_main.run_as_user.value == 0
    assert sc_main.seccomp.profile_type == cri_pb2.SecurityProfile.RuntimeDefault
    env = {kv.key: kv.value.decode() for kv in main.envs}
    assert env["NODE_NAME"] == "n1"
    assert env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1" and env["KUBERNETES_SERVICE_PORT"] == "443"
    assert "--metrics-address=:9177" in main.args
    mounts = {m.container_path: m for m in worker.mounts}
    netns = mounts["/var/run/netns"]
    assert (netns.host_path, netns.readonly) == ("/var/run/netns", True)
    assert netns.propagation == cri_pb2.PROPAGATION_HOST_TO_CONTAINER
    assert mounts["/var/lib/dranet/netns"].host_path == str(tmp_path / "node/var/lib/dranet/netns")
    assert main.linux.resources.memory_limit_in_bytes == 512 * 2**20
    vols = {v.name: v for v in p.volumes}
    assert vols["tmp-netns"].tmpfs_bytes == 16 * 2**20  # a sizeLimit is enforced with a tmpfs
    assert vols["run"].host_path == str(tmp_path / "node/run/dranet")  # the bus: a host directory
    assert dict(vols["kube-api-access"].files) == {"token": "tok", "ca.crt": "CA", "namespace": "dranet"}
    assert vols["kube-api-access"].mode == 0o444
    probes = p.containers[1].probes
    assert probes["livenessProbe"].period == 30 and probes["livenessProbe"].failure_threshold == 4
    # httpGet to the pod's IP (the node's), a named port resolved against the container's ports
    assert probes["readinessProbe"].http == HttpGet("10.0.0.7", 9177, "/readyz?service=netns")
    assert p.containers[0].probes["livenessProbe"].http == HttpGet(
        "10.0.0.7", 9177, "/healthz?service=discovery,dra,nri"
    )
    assert probes["startupProbe"].period == 5 and probes["startupProbe"].failure_threshold == 60
    assert p.grace == 30


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda s: s.update(hostPID=True), "spec.hostPID"),
        (lambda s: s["containers"][0].update(imagePullPolicy="Always"), "imagePullPolicy: Always"),
        (
            lambda s: s["containers"][0]["readinessProbe"].update(httpGet=None, tcpSocket={"port": 1}),
            "readinessProbe",
        ),
        (
            lambda s: s["containers"][0]["readinessProbe"]["httpGet"].update(scheme="HTTPS"),
            "readinessProbe.httpGet.scheme: HTTPS",
        ),
        (
            lambda s: s["containers"][0]["readinessProbe"]["httpGet"].update(httpHeaders=[]),
            "readinessProbe.httpGet.httpHeaders",
        ),
        (
            lambda s: s["containers"][1]["livenessProbe"]["httpGet"].update(port="metrics"),
            "livenessProbe.httpGet.port: 'metrics' names none",
        ),
        (lambda s: s["containers"][1]["volumeMounts"][0].update(subPath="x"), "subPath"),
        (lambda s: s["volumes"].append({"name": "sec", "secret": {"secretName": "s"}}), "volumes[sec]"),
        (
            lambda s: s["containers"][0]["env"].append(
                {"name": "X", "valueFrom": {"secretKeyRef": {"name": "s"}}}
            ),
            "env[X]",
        ),
        (lambda s: s["containers"][0]["securityContext"].update(runAsNonRoot=True), "runAsNonRoot"),
        (lambda s: s.update(automountServiceAccountToken=True), "automountServiceAccountToken"),
    ],
)
def test_what_the_stand_in_cannot_do_is_refused_by_name(tmp_path: Path, change: Any, named: str) -> None:
    t = template()
    change(t["spec"])
    with pytest.raises(Unsupported, match=named.replace("[", r"\[").replace("]", r"\]")):
        plan(t, node(tmp_path))


def probe(period: int = 10, failures: int = 3, delay: int = 0) -> Probe:
    return Probe("livenessProbe", ["true"], period, 1, failures, 1, delay)


def test_liveness_fires_only_after_failure_threshold_consecutive_failures() -> None:
    s = ProbeState(probe(failures=3), started_at=0.0)
    assert [s.record(False, t) for t in (0, 10)] == [False, False]
    assert s.record(True, 20) is False  # a success resets the count
    assert [s.record(False, t) for t in (30, 40, 50)] == [False, False, True]


def test_probes_wait_for_the_initial_delay_and_the_period() -> None:
    s = ProbeState(probe(period=30, delay=5), started_at=100.0)
    assert not s.due(104.0) and s.due(105.0)
    s.record(True, 105.0)
    assert s.passed and not s.due(134.0) and s.due(135.0)


def test_the_manifests_without_kubectl_are_what_kubectl_kustomize_renders(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("no kubectl here to compare with")
    rendered = node_module.kustomized_docs()
    monkeypatch.setattr(node_module.shutil, "which", lambda name: None)
    fallback = node_module.kustomized_docs()
    key = lambda docs: sorted(json.dumps(d, sort_keys=True) for d in docs)  # noqa: E731
    assert key(fallback) == key(rendered)
    assert pod_template(fallback)["spec"]["containers"][0]["image"] == "dranet:0.1.0"


def test_http_probe_passes_on_2xx_3xx_and_fails_otherwise() -> None:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response({"/ok": 200, "/moved": 302}.get(self.path, 503))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:

        def probe_of(path: str, port: int = port) -> Probe:
            return Probe("readinessProbe", [], 10, 2, 3, 1, 0, http=HttpGet("127.0.0.1", port, path))

        assert http_probe("", probe_of("/ok"))[0] and http_probe("", probe_of("/moved"))[0]
        ok, why = http_probe("", probe_of("/readyz"))
        assert not ok and why.endswith(": 503")
    finally:
        server.shutdown()
        server.server_close()
    ok, why = http_probe("", probe_of("/ok"))  # nothing listens any more
    assert not ok and "refused" in why.lower()


def _render_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit: Any, kubectl: bool) -> list[Any]:
    """deploy/kubernetes copied, edited, rendered (by kubectl kustomize, or the stand-in's own)."""
    copy = tmp_path / "k"
    shutil.copytree(ROOT / "deploy/kubernetes", copy)
    edit(copy)
    if not kubectl:
        monkeypatch.setattr(node_module.shutil, "which", lambda name: None)
    return node_module.kustomized_docs(copy)


@pytest.mark.parametrize("kubectl", [False, True])
def test_kubelet_root_and_nri_socket_dir_are_set_in_one_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kubectl: bool
) -> None:
    if kubectl and shutil.which("kubectl") is None:
        pytest.skip("no kubectl here")

    def edit(d: Path) -> None:
        f = d / "node-paths.yaml"
        text = f.read_text().replace("/var/lib/kubelet", "/var/lib/k0s/kubelet")
        f.write_text(text.replace("nriSocketDir: /var/run/nri", "nriSocketDir: /run/k0s/nri"))

    docs = _render_copy(tmp_path, monkeypatch, edit, kubectl)
    assert not [d for d in docs if d["kind"] == "ConfigMap"]  # local-config: never applied
    text = json.dumps(docs)
    assert "/var/lib/kubelet" not in text  # no place left with the old root
    spec = pod_template(docs)["spec"]
    vols = {v["name"]: v.get("hostPath", {}).get("path") for v in spec["volumes"]}
    assert vols["plugins-registry"] == "/var/lib/k0s/kubelet/plugins_registry"
    assert vols["plugin-dir"] == "/var/lib/k0s/kubelet/plugins/dra.net"
    assert vols["nri"] == "/run/k0s/nri"
    main = spec["containers"][0]
    mounts = {m["name"]: m["mountPath"] for m in main["volumeMounts"]}
    assert mounts["plugins-registry"] == vols["plugins-registry"]  # the kubelet dials the host path
    assert mounts["plugin-dir"] == vols["plugin-dir"] and mounts["nri"] == "/var/run/nri"
    # and dra is told: $(KUBELET_ROOT_DIR) in its flags, as the kubelet expands it
    for c in spec["containers"]:
        c["image"] = "dranet"  # as node() knows it
    args = " ".join(plan({"metadata": {}, "spec": spec}, node(tmp_path)).containers[0].config.args)
    assert "--kubelet-registry-dir=/var/lib/k0s/kubelet/plugins_registry" in args
    assert "--kubelet-plugins-dir=/var/lib/k0s/kubelet/plugins " in args + " "


def test_a_namespace_change_moves_the_admission_policys_service_account(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("no kubectl here: `namespace:` is kustomize's")

    def edit(d: Path) -> None:
        with (d / "kustomization.yaml").open("a") as f:
            f.write("namespace: netdrivers\n")

    docs = _render_copy(tmp_path, monkeypatch, edit, kubectl=True)
    (policy,) = [d for d in docs if d["kind"] == "ValidatingAdmissionPolicy"]
    (cond,) = policy["spec"]["matchConditions"]
    assert cond["expression"] == 'request.userInfo.username == "system:serviceaccount:netdrivers:dranet"'
    (binding,) = [d for d in docs if d["kind"] == "ClusterRoleBinding"]
    assert binding["subjects"][0]["namespace"] == "netdrivers"


def test_the_documented_cdi_step_applied_to_the_shipped_template(tmp_path: Path) -> None:
    """node.enable_cdi is docs/install.md's step 3: dra's --cdi-dir= replaced by the node's CDI
    directory and the hook command, that directory mounted; the pod still plans, with the mount."""
    t = node_module.enable_cdi(template(), "/opt/dranet/bin/dranet")
    main = next(c for c in t["spec"]["containers"] if c["name"] == "dranet")
    (dra_args,) = [a for a in main["args"] if a.startswith("--dra-args=")]
    words = dra_args.split("=", 1)[1].split()
    assert "--cdi-dir=" not in words
    assert {"--cdi-dir=/var/run/cdi", "--cdi-hook-command=/opt/dranet/bin/dranet"} <= set(words)
    # dra stays uid 0 (it writes the runtime's CDI directory, root's; dra refuses --run-as with
    # --cdi-dir), and every service's bus policy knows it so
    assert not [w for w in words if w.startswith("--run-as")]
    for c in t["spec"]["containers"]:
        uids = [a for a in c["args"] if a.startswith("--service-uids=")]
        assert uids == ["--service-uids=discovery=65101"], c["name"]
    p = plan(t, node(tmp_path), sa_token="tok", root_ca="CA")
    mounts = {m.container_path: m.host_path for m in p.containers[0].config.mounts}
    assert mounts["/var/run/cdi"] == str(tmp_path / "node" / "var/run/cdi")
    with pytest.raises(node_module.DemoError, match="--cdi-dir="):
        node_module.enable_cdi(t, "/opt/dranet/bin/dranet")  # applied once: nothing left to replace


def test_the_documented_device_metadata_step_with_and_without_the_cdi_hook(tmp_path: Path) -> None:
    """node.enable_device_metadata is docs/install.md's device metadata step: --device-metadata and
    the CDI directory on, without the hook unless enable_cdi turned it on; dra uid 0."""
    alone = node_module.enable_device_metadata(template(), "/node/plugins/dra.net/dra-device-metadata")
    main = next(c for c in alone["spec"]["containers"] if c["name"] == "dranet")
    (dra_args,) = [a for a in main["args"] if a.startswith("--dra-args=")]
    words = dra_args.split("=", 1)[1].split()
    assert {"--cdi-dir=/var/run/cdi", "--no-cdi-hook", "--device-metadata",
            "--device-metadata-host-dir=/node/plugins/dra.net/dra-device-metadata"} <= set(words)  # fmt: skip
    assert "--cdi-dir=" not in words and not [w for w in words if w.startswith("--run-as")]
    both = node_module.enable_device_metadata(node_module.enable_cdi(template(), "/x/dranet"), "/m")
    main = next(c for c in both["spec"]["containers"] if c["name"] == "dranet")
    (dra_args,) = [a for a in main["args"] if a.startswith("--dra-args=")]
    words = dra_args.split("=", 1)[1].split()
    assert "--no-cdi-hook" not in words and "--cdi-hook-command=/x/dranet" in words
    assert words.count("--cdi-dir=/var/run/cdi") == 1 and "--device-metadata" in words
    assert [v["name"] for v in both["spec"]["volumes"]].count("cdi") == 1
    # the flags are dra's
    from dranet.services.dra.main import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    parser.parse_args([w for w in words if w.startswith(("--cdi", "--device"))])
    plan(both, node(tmp_path), sa_token="tok", root_ca="CA")


def test_service_args_go_where_the_docs_say(tmp_path: Path) -> None:
    """node.add_service_args is docs/install.md's "add to dra's arguments (--dra-args)" and "add
    --dhcp to the netns container's command": appended, the manifest's own words kept, the pod plans."""
    t = node_module.add_service_args(template(), "dra", ["--webhook-url=http://127.0.0.1:8790"])
    t = node_module.add_service_args(t, "netns", ["--dhcp"])
    t = node_module.add_service_args(t, "nri", ["--nri-timeout", "a b"])
    main, sidecar = (next(c for c in t["spec"]["containers"] if c["name"] == n) for n in ("dranet", "netns"))
    (dra_args,) = [a for a in main["args"] if a.startswith("--dra-args=")]
    words = dra_args.split("=", 1)[1].split()
    assert words[0] == "--cdi-dir=" and words[-1] == "--webhook-url=http://127.0.0.1:8790"
    assert sidecar["args"][-1] == "--dhcp"
    assert "--nri-args=--nri-timeout 'a b'" in main["args"]  # the shell words dranet run splits
    assert "--webhook-url" not in json.dumps(template())  # the shipped template is left alone
    p = plan(t, node(tmp_path), sa_token="tok", root_ca="CA")
    assert any(a.startswith("--dra-args=") and a.endswith(":8790") for a in p.containers[0].config.args)
    with pytest.raises(node_module.DemoError, match="no service 'kubelet'"):
        node_module.add_service_args(t, "kubelet", ["--x"])
