"""deploy/: every manifest against the Kubernetes schemas (the official client's models), offline,
and the DaemonSet's security posture."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes.client as k8s
import pytest
import yaml

from dranet.capabilities import WORKER_CAPS, WORKER_DHCP_CAPS

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
MANIFEST_DIRS = [DEPLOY / "kubernetes", DEPLOY / "examples"]

# apiVersion, kind -> the client's model. A manifest of another kind fails: add it here.
MODELS: dict[tuple[str, str], type] = {
    ("v1", "Namespace"): k8s.V1Namespace,
    ("v1", "ConfigMap"): k8s.V1ConfigMap,
    ("v1", "ResourceQuota"): k8s.V1ResourceQuota,
    ("v1", "ServiceAccount"): k8s.V1ServiceAccount,
    ("v1", "Pod"): k8s.V1Pod,
    ("apps/v1", "DaemonSet"): k8s.V1DaemonSet,
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): k8s.V1ClusterRole,
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): k8s.V1ClusterRoleBinding,
    ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy"): k8s.V1ValidatingAdmissionPolicy,
    (
        "admissionregistration.k8s.io/v1",
        "ValidatingAdmissionPolicyBinding",
    ): k8s.V1ValidatingAdmissionPolicyBinding,
    ("resource.k8s.io/v1", "DeviceClass"): k8s.V1DeviceClass,
    ("resource.k8s.io/v1", "ResourceClaimTemplate"): k8s.V1ResourceClaimTemplate,
    ("resource.k8s.io/v1", "ResourceClaim"): k8s.ResourceV1ResourceClaim,
}
NAMESPACE, SERVICE_ACCOUNT = "dranet", "dranet"


# ---------------------------------------------------------------- schema check


def schema_errors(value: Any, type_name: str, path: str) -> list[str]:
    """Errors of `value` against the client's type `type_name`: unknown fields, wrong types."""
    if value is None:
        return []
    if type_name.startswith("List["):
        if not isinstance(value, list):
            return [f"{path}: expected a list, got {type(value).__name__}"]
        return [e for i, v in enumerate(value) for e in schema_errors(v, type_name[5:-1], f"{path}[{i}]")]
    if type_name.startswith("Dict["):
        if not isinstance(value, dict):
            return [f"{path}: expected a map, got {type(value).__name__}"]
        inner = type_name[5:-1].split(", ", 1)[1]
        return [e for k, v in value.items() for e in schema_errors(v, inner, f"{path}.{k}")]
    simple: dict[str, tuple[type, ...]] = {
        "str": (str,),
        "int": (int,),
        "float": (int, float),
        "bool": (bool,),
        "datetime": (str,),
        "date": (str,),
    }
    if type_name == "object":  # free-form (opaque parameters) or int-or-string
        return []
    if type_name in simple:
        ok = isinstance(value, simple[type_name]) and not (
            type_name in ("int", "float") and isinstance(value, bool)
        )
        return [] if ok else [f"{path}: expected {type_name}, got {type(value).__name__} {value!r}"]
    model = getattr(k8s, type_name)
    if not isinstance(value, dict):
        return [f"{path}: expected a {type_name} object, got {type(value).__name__}"]
    by_json = {j: attr for attr, j in model.attribute_map.items()}
    errors = []
    for key, sub in value.items():
        if key not in by_json:
            errors.append(f"{path}.{key}: unknown field for {type_name}")
            continue
        errors += schema_errors(sub, model.openapi_types[by_json[key]], f"{path}.{key}")
    return errors


def required_field_error(doc: dict[str, Any], model: type) -> str | None:
    """The client's own deserialisation refuses missing required fields (client-side validation).
    Its public deserialize() changed signature across client versions; the private one did not."""
    deserialize = k8s.ApiClient()._ApiClient__deserialize  # type: ignore[attr-defined]
    try:
        deserialize(doc, model.__name__)
    except ValueError as exc:
        return str(exc)
    return None


# ---------------------------------------------------------------- loading


def manifest_files() -> list[Path]:
    return sorted(p for d in MANIFEST_DIRS for p in d.glob("*.yaml") if p.name != "kustomization.yaml")


def documents(path: Path) -> Iterator[dict[str, Any]]:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc is not None:
            yield doc


def all_docs() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p in manifest_files() for d in documents(p)]


def find(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d
        for p, d in all_docs()
        if p.parent.name == "kubernetes"
        and d["kind"] == kind
        and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''} in deploy/kubernetes, found {len(found)}"
    return found[0]


def test_there_are_manifests() -> None:
    names = {p.name for p in manifest_files()}
    assert {
        "daemonset.yaml",
        "rbac.yaml",
        "deviceclass.yaml",
        "admission-policy.yaml",
        "namespace.yaml",
    } <= names
    assert len(names) >= 8


@pytest.mark.parametrize(
    ("path", "doc"),
    [
        pytest.param(p, d, id=f"{p.parent.name}/{p.name}:{d.get('kind')}/{d.get('metadata', {}).get('name')}")
        for p, d in all_docs()
    ],
)
def test_manifest_matches_kubernetes_schema(path: Path, doc: dict[str, Any]) -> None:
    key = (doc.get("apiVersion", ""), doc.get("kind", ""))
    assert key in MODELS, f"{path.name}: no model for {key}; add it to MODELS"
    model = MODELS[key]
    errors = schema_errors(doc, model.__name__, doc["kind"])
    assert errors == [], "\n".join(errors)
    assert required_field_error(doc, model) is None
    assert doc["metadata"].get("name"), "every object needs a name"


# ---------------------------------------------------------------- the checker itself


def test_schema_check_catches_unknown_fields_and_wrong_types() -> None:
    ds = find("DaemonSet")
    bad = json.loads(json.dumps(ds))
    bad["spec"]["template"]["spec"]["hostNetwrk"] = True
    bad["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = "yes"
    bad["spec"]["template"]["spec"]["containers"][0]["env"][0]["name"] = 7
    errors = schema_errors(bad, "V1DaemonSet", "DaemonSet")
    assert len(errors) == 3, errors
    assert any("hostNetwrk: unknown field" in e for e in errors)
    assert any("readOnlyRootFilesystem: expected bool" in e for e in errors)
    assert any("name: expected str" in e for e in errors)


def test_rolling_updates_run_the_new_pod_beside_the_old() -> None:
    """maxSurge 1 (the kubelet plugin helper's RollingUpdate), never a node without a driver pod,
    the pod UID for dra's socket names, and no hostPort that would keep the second pod off the node."""
    ds = find("DaemonSet")
    assert ds["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    main = containers()["dranet"]
    env = {e["name"]: e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") for e in main["env"]}
    assert env["POD_UID"] == "metadata.uid"
    assert all("ports" not in c for c in containers().values())


def test_schema_check_catches_missing_required_fields() -> None:
    dc = json.loads(json.dumps(find("DeviceClass", "dranet")))
    del dc["spec"]["selectors"][0]["cel"]["expression"]
    assert required_field_error(dc, k8s.V1DeviceClass) is not None


def test_kustomization_lists_every_manifest() -> None:
    kust = yaml.safe_load((DEPLOY / "kubernetes" / "kustomization.yaml").read_text())
    files = {p.name for p in (DEPLOY / "kubernetes").glob("*.yaml") if p.name != "kustomization.yaml"}
    assert sorted(kust["resources"]) == sorted(files)
    assert [i["name"] for i in kust["images"]] == ["dranet"]


def test_every_object_of_the_install_is_in_the_driver_namespace_or_cluster_scoped() -> None:
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding", "DeviceClass"} | {
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    }
    for path, doc in all_docs():
        if path.parent.name != "kubernetes":
            continue
        if doc["kind"] in cluster_scoped:
            assert "namespace" not in doc["metadata"], f"{path.name}: {doc['kind']} is cluster-scoped"
        else:
            assert doc["metadata"].get("namespace") == NAMESPACE, f"{path.name}: {doc['kind']}"


# ---------------------------------------------------------------- security posture


def pod_spec() -> dict[str, Any]:
    return find("DaemonSet")["spec"]["template"]["spec"]


def containers() -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in pod_spec()["containers"]}


def test_pod_level_settings() -> None:
    spec = pod_spec()
    assert spec["hostNetwork"] is True
    assert spec["priorityClassName"] == "system-node-critical"
    assert {"operator": "Exists"} in spec["tolerations"]
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec["serviceAccountName"] == SERVICE_ACCOUNT
    assert spec["automountServiceAccountToken"] is False
    assert not spec.get("hostPID") and not spec.get("hostIPC")
    assert set(containers()) == {"dranet", "netns"}
    assert not spec.get("initContainers")


def test_main_container_has_only_the_uid_switch_and_a_read_only_root() -> None:
    sc = containers()["dranet"]["securityContext"]
    # discovery and dra bind as root, then switch to their own uid (which clears these three)
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["SETUID", "SETGID", "CHOWN"]}
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False
    assert containers()["dranet"]["args"][:2] == ["run", "--services=discovery,dra,nri"]


def test_only_the_sidecar_has_net_admin_and_sys_admin() -> None:
    c = containers()["netns"]
    sc = c["securityContext"]
    assert sc["capabilities"]["drop"] == ["ALL"]
    # the worker's two, and dhclient's two because it serves DHCP (--dhcp): what it keeps at start
    # (services/netns/main.py) and what `dranet audit` allows it, nothing more
    assert "--dhcp" in c["args"]
    want = {c.removeprefix("CAP_") for c in WORKER_CAPS | WORKER_DHCP_CAPS}
    assert sorted(sc["capabilities"]["add"]) == sorted(want)
    assert sc.get("privileged") is False
    assert sc["readOnlyRootFilesystem"] is True
    assert c["args"][0] == "netns"
    for name, other in containers().items():
        if name != "netns":
            added = set(other["securityContext"].get("capabilities", {}).get("add", []))
            assert not added & {"NET_ADMIN", "SYS_ADMIN", "NET_RAW", "NET_BIND_SERVICE"}, name


def test_each_service_has_its_bus_identity() -> None:
    """discovery and dra switch to their own uid; every service knows the same uid map."""
    main, worker = containers()["dranet"]["args"], containers()["netns"]["args"]
    uids = "--service-uids=discovery=65101,dra=65102"
    assert uids in main and uids in worker
    assert any(a.startswith("--discovery-args=") and "--run-as=65101" in a for a in main)
    assert any(a.startswith("--dra-args=") and "--run-as=65102" in a for a in main)


def test_security_contexts_pass_the_api_servers_own_rule() -> None:
    """The API server refuses allowPrivilegeEscalation: false together with privileged: true or an
    added capability spelled exactly CAP_SYS_ADMIN (its validation compares the string); SYS_ADMIN,
    the spelling here, passes, so both containers set it."""
    for name, c in containers().items():
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, name
        assert not sc.get("privileged") and "CAP_SYS_ADMIN" not in sc["capabilities"].get("add", []), name


def host_paths(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    return {
        volumes[m["name"]]["hostPath"]["path"]: m
        for m in container["volumeMounts"]
        if "hostPath" in volumes[m["name"]]
    }


def test_host_paths_are_exactly_what_each_container_needs() -> None:
    main, side = containers()["dranet"], containers()["netns"]
    assert set(host_paths(main)) == {
        "/var/lib/kubelet/plugins_registry",
        "/var/lib/kubelet/plugins/dra.net",
        "/var/run/nri",
        "/var/lib/dranet/dra",
        "/var/lib/dranet/discovery",
        "/run/dranet",
    }
    assert set(host_paths(side)) == {"/var/run/netns", "/var/lib/dranet/netns", "/run/dranet"}
    netns = host_paths(side)["/var/run/netns"]
    assert netns["mountPropagation"] == "HostToContainer" and netns["readOnly"] is True
    for path, mount in {**host_paths(main), **host_paths(side)}.items():
        assert mount["mountPath"] == path, (
            "host paths keep their names inside (sockets advertised to the kubelet)"
        )
        assert mount.get("mountPropagation", "None") in ("None", "HostToContainer"), path


def test_the_bus_is_a_shared_host_directory_and_the_token_reaches_the_main_container_only() -> None:
    # a host directory: the CDI hook runs on the host (the runtime's context) and asks the worker
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    for name, c in containers().items():
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        assert volumes[mounts["/run/dranet"]]["hostPath"] == {
            "path": "/run/dranet",
            "type": "DirectoryOrCreate",
        }
        token = "/var/run/secrets/kubernetes.io/serviceaccount"
        assert (token in mounts) is (name == "dranet"), name
    run = {
        c["name"]: {m["mountPath"]: m["name"] for m in c["volumeMounts"]}["/run/dranet"]
        for c in containers().values()
    }
    assert len(set(run.values())) == 1


def test_every_volume_is_used_and_every_mount_is_defined() -> None:
    defined = {v["name"] for v in pod_spec()["volumes"]}
    used = {m["name"] for c in containers().values() for m in c["volumeMounts"]}
    assert used == defined


def test_probes_ask_the_pods_endpoint() -> None:
    """Liveness (and startup) only ask whether each process answers on its bus (/healthz, what
    `dranet status --live` says): an API server outage or a kubelet restart must not restart the
    driver on every node. Readiness (/readyz, what `dranet status` says) asks whether each service
    can do its job (dra registered, nri connected, slices published). Each container asks about
    its own processes, on the one port the dranet container serves."""
    cs = containers()
    assert "--metrics-address=:9177" in cs["dranet"]["args"]
    assert all("ports" not in c for c in cs.values())  # a hostPort would block rolling updates
    for name, c in cs.items():
        services = "netns" if name == "netns" else "discovery,dra,nri"
        kinds = (("startupProbe", "healthz"), ("livenessProbe", "healthz"), ("readinessProbe", "readyz"))
        for kind, path in kinds:
            get = c[kind]["httpGet"]
            assert get["path"] == f"/{path}?service={services}", (name, kind)
            assert get["port"] == 9177 and "scheme" not in get, (name, kind)


def test_cdi_is_off_until_the_hook_is_on_the_nodes() -> None:
    # `dranet cdi-hook` runs on the host, outside the image: a spec naming a missing hook would
    # refuse every claimed pod's containers; docs/install.md turns it on
    dra_args = next(a for a in containers()["dranet"]["args"] if a.startswith("--dra-args="))
    assert "--cdi-dir=" in dra_args.removeprefix("--dra-args=").split()


def test_runtime_and_state_dirs_match_the_mounts() -> None:
    for name, c in containers().items():
        assert "--runtime-dir=/run/dranet" in c["args"], name
        assert "--state-dir=/var/lib/dranet" in c["args"], name
    assert "--logs-dir=-" in containers()["dranet"]["args"]  # read-only root: logs to stdout


# ---------------------------------------------------------------- RBAC and admission


def test_cluster_role_names_no_wildcard_and_cannot_rebind_upstreams() -> None:
    """What it grants is compared with the code's calls in test_deploy_rbac.py. Its name and its
    binding's are not upstream's (`dranet`), so installing both never rebinds the other's role."""
    role = find("ClusterRole", "dranet-python")
    assert all("*" not in json.dumps(rule) for rule in role["rules"])
    driver_rule = next(r for r in role["rules"] if "resourceclaims/driver" in r["resources"])
    assert driver_rule["resourceNames"] == ["dra.net"]
    names = {d["metadata"]["name"] for _, d in all_docs() if d["kind"].startswith("ClusterRole")}
    assert "dranet" not in names


def test_pods_carry_upstreams_labels_too() -> None:
    ds = find("DaemonSet", "dranet")
    labels = ds["spec"]["template"]["metadata"]["labels"]
    upstream = {"app": "dranet", "k8s-app": "dranet", "tier": "node"}
    assert upstream.items() <= labels.items() and labels["app.kubernetes.io/name"] == "dranet"
    assert ds["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_binding_and_policy_name_the_driver_service_account() -> None:
    sa = find("ServiceAccount", SERVICE_ACCOUNT)
    assert sa["metadata"]["namespace"] == NAMESPACE
    binding = find("ClusterRoleBinding", "dranet-python")
    assert binding["roleRef"]["name"] == "dranet-python"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": NAMESPACE}
    ]
    policy = find("ValidatingAdmissionPolicy")
    (cond,) = policy["spec"]["matchConditions"]
    assert f'"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"' in cond["expression"]
    vap_binding = find("ValidatingAdmissionPolicyBinding")
    assert vap_binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert vap_binding["spec"]["validationActions"] == ["Deny"]


def test_admission_policy_confines_slice_writes_to_the_callers_node() -> None:
    spec = find("ValidatingAdmissionPolicy")["spec"]
    (rule,) = spec["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["resourceslices"] and set(rule["operations"]) == {
        "CREATE",
        "UPDATE",
        "DELETE",
    }
    assert spec["failurePolicy"] == "Fail"
    variables = {v["name"]: v["expression"] for v in spec["variables"]}
    assert "authentication.kubernetes.io/node-name" in variables["callerNode"]
    assert "oldObject" in variables["sliceNode"] and "nodeName" in variables["sliceNode"]
    exprs = [v["expression"] for v in spec["validations"]]
    assert "variables.callerNode == variables.sliceNode" in exprs


def admit(
    operation: str, username: str, token_node: str | None, old_node: str | None, new_node: str | None
) -> bool:
    """Evaluate the policy as the API server would: match condition, variables, validations."""
    import cel

    spec = find("ValidatingAdmissionPolicy")["spec"]
    extra = {} if token_node is None else {"authentication.kubernetes.io/node-name": [token_node]}

    def slice_obj(node: str | None) -> dict[str, Any] | None:
        return {"spec": {"driver": "dra.net", **({"nodeName": node} if node else {"allNodes": True})}}

    ctx: dict[str, Any] = {
        "request": {"operation": operation, "userInfo": {"username": username, "extra": extra}},
        "object": slice_obj(new_node) if operation != "DELETE" else None,
        "oldObject": slice_obj(old_node) if operation != "CREATE" else None,
    }
    if not all(cel.evaluate(c["expression"], ctx) for c in spec["matchConditions"]):
        return True  # the policy does not apply
    ctx["variables"] = {}
    for var in spec["variables"]:
        ctx["variables"][var["name"]] = cel.evaluate(var["expression"], ctx)
    return all(cel.evaluate(v["expression"], ctx) for v in spec["validations"])


SA = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"


@pytest.mark.parametrize(
    ("operation", "user", "token_node", "old", "new", "allowed"),
    [
        ("CREATE", SA, "n1", None, "n1", True),
        ("UPDATE", SA, "n1", "n1", "n1", True),
        ("DELETE", SA, "n1", "n1", None, True),
        ("CREATE", SA, "n1", None, "n2", False),
        ("UPDATE", SA, "n1", "n2", "n2", False),
        ("DELETE", SA, "n1", "n2", None, False),
        ("CREATE", SA, "n1", None, None, False),  # a slice for all nodes
        ("CREATE", SA, None, None, "n1", False),  # a token without a node: not from a pod on a node
        ("CREATE", "system:serviceaccount:kube-system:other", None, None, "n2", True),  # not ours to judge
    ],
)
def test_admission_policy_decisions(
    operation: str, user: str, token_node: str | None, old: str | None, new: str | None, allowed: bool
) -> None:
    assert admit(operation, user, token_node, old, new) is allowed


# ---------------------------------------------------------------- device classes and examples


def cel_matches(expression: str, device: dict[str, Any]) -> bool:
    import cel

    return bool(cel.evaluate(expression, {"device": device}))


def test_device_classes_select_what_they_say() -> None:
    nic = {"driver": "dra.net", "attributes": {"dra.net": {"ifName": "eth1", "rdma": False}}}
    rdma = {"driver": "dra.net", "attributes": {"dra.net": {"ifName": "eth2", "rdma": True}}}
    bare = {"driver": "dra.net", "attributes": {"dra.net": {}}}
    gpu = {"driver": "gpu.nvidia.com", "attributes": {"gpu.nvidia.com": {}}}
    (all_nics,) = [s["cel"]["expression"] for s in find("DeviceClass", "dranet")["spec"]["selectors"]]
    assert all_nics == 'device.driver == "dra.net"'
    assert [cel_matches(all_nics, d) for d in (nic, rdma, bare, gpu)] == [True, True, True, False]
    (rdma_only,) = [s["cel"]["expression"] for s in find("DeviceClass", "dranet-rdma")["spec"]["selectors"]]
    assert [cel_matches(rdma_only, d) for d in (nic, rdma, bare, gpu)] == [False, True, False, False]
    # the extended resource dra.net/nic: every device with a network interface
    dc = find("DeviceClass", "dranet-nic")
    assert dc["spec"]["extendedResourceName"] == "dra.net/nic"
    (with_if,) = [s["cel"]["expression"] for s in dc["spec"]["selectors"]]
    assert [cel_matches(with_if, d) for d in (nic, rdma, bare, gpu)] == [True, True, False, False]


def example_docs() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p, d in all_docs() if p.parent.name == "examples"]


def test_examples_cover_config_rdma_and_alignment() -> None:
    text = "".join(p.read_text() for p in sorted({p for p, _ in example_docs()}))
    for needle in (
        "addresses",
        "routes",
        "mtu",
        "dranet-rdma",
        "matchAttribute: resource.kubernetes.io/pcieRoot",
    ):
        assert needle in text, needle


def test_example_configs_are_valid_dranet_configs() -> None:
    config = pytest.importorskip("dranet.config")
    seen = 0
    for path, doc in example_docs():
        if doc["kind"] != "ResourceClaimTemplate":
            continue
        for cfg in doc["spec"]["spec"]["devices"].get("config", []):
            assert cfg["opaque"]["driver"] == "dra.net", path.name
            parsed = config.parse_network_config(cfg["opaque"]["parameters"])
            config.check_routes_reachable(parsed, parsed.interface.addresses)
            seen += 1
    assert seen >= 2


def test_example_pods_use_the_claims_they_declare() -> None:
    templates = {d["metadata"]["name"] for _, d in example_docs() if d["kind"] == "ResourceClaimTemplate"}
    classes = {d["metadata"]["name"] for _, d in all_docs() if d["kind"] == "DeviceClass"} | {
        "gpu.nvidia.com"
    }
    for path, doc in example_docs():
        if doc["kind"] == "ResourceClaimTemplate":
            for req in doc["spec"]["spec"]["devices"]["requests"]:
                assert req["exactly"]["deviceClassName"] in classes, path.name
        if doc["kind"] == "Pod":
            declared = {c["name"]: c for c in doc["spec"].get("resourceClaims") or []}
            assert {c["resourceClaimTemplateName"] for c in declared.values()} <= templates
            for c in doc["spec"]["containers"]:
                assert {x["name"] for x in c["resources"].get("claims") or []} <= set(declared), path.name


def test_device_names_and_labels_are_dns_safe() -> None:
    dns = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    for path, doc in all_docs():
        assert dns.match(doc["metadata"]["name"]), f"{path.name}: {doc['metadata']['name']}"


def test_pod_monitor_scrapes_the_pods_endpoint() -> None:
    """deploy/monitoring/podmonitor.yaml (a Prometheus Operator CRD, outside the schema check)
    selects the DaemonSet's pods in its namespace and scrapes the port the endpoint listens on."""
    (monitor,) = documents(DEPLOY / "monitoring" / "podmonitor.yaml")
    assert (monitor["apiVersion"], monitor["kind"]) == ("monitoring.coreos.com/v1", "PodMonitor")
    ds = find("DaemonSet", "dranet")
    pod_labels = ds["spec"]["template"]["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [ds["metadata"]["namespace"]]
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics" and "port" not in endpoint  # the pod declares no port
    rules = endpoint["relabelings"]
    assert {
        "sourceLabels": ["__meta_kubernetes_pod_container_name"],
        "regex": "dranet",
        "action": "keep",
    } in rules
    addresses = [r["replacement"] for r in rules if r.get("targetLabel") == "__address__"]
    assert addresses == ["$1:9177", "[$1]:9177"]  # IPv4, IPv6
