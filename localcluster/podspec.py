"""The kubelet's translation of one pod template into CRI requests, as pure logic (no I/O).

DEVELOPMENT AND TEST TOOL. `plan(template, node)` reads the pod template of a manifest (the
DaemonSet of deploy/kubernetes, after `kubectl kustomize`) and returns what the kubelet would send
to the runtime for it: the sandbox config, one container config per container (command, args, env
with fieldRef values and $(VAR) expansion, mounts, security context, resources, log paths), the
volumes to prepare on the node and the probes to run. daemonpod.py does the I/O.

Whatever the template asks that this stand-in cannot do, `plan` refuses with Unsupported, listing
every such field: nothing is ignored silently. A few fields are accepted with nothing to do on
this node; NO_EFFECT says which and why.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dranet._generated import cri_pb2

# The kubelet's defaults for containers that are not privileged (pkg/securitycontext).
MASKED_PATHS = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")
PROPAGATION = {
    None: cri_pb2.PROPAGATION_PRIVATE,
    "None": cri_pb2.PROPAGATION_PRIVATE,
    "HostToContainer": cri_pb2.PROPAGATION_HOST_TO_CONTAINER,
    "Bidirectional": cri_pb2.PROPAGATION_BIDIRECTIONAL,
}
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

# Accepted, nothing for this node to do, and why.
NO_EFFECT = {
    "spec.priorityClassName": "scheduling and eviction order; this node evicts nothing, and the "
    "runtime clamps oom_score_adj (restrict_oom_score_adj)",
    "spec.tolerations": "the scheduler's; there is one node",
    "spec.serviceAccountName": "the API server stand-in authenticates nobody; the token is a placeholder",
    "spec.dnsPolicy": "there is no cluster DNS; a hostNetwork pod resolves with the node's resolv.conf",
    "containers[].ports": "informational under hostNetwork (no hostPort mapping to make)",
    "containers[].resources.requests.memory": "scheduling only; the kubelet sets no cgroup value for it",
    "containers[].imagePullPolicy: IfNotPresent": "the image is imported into the runtime beforehand",
}

_POD_KEYS = {
    "containers",
    "volumes",
    "hostNetwork",
    "shareProcessNamespace",
    "securityContext",
    "terminationGracePeriodSeconds",
    "serviceAccountName",
    "automountServiceAccountToken",
    "dnsPolicy",
    "priorityClassName",
    "tolerations",
}
_CONTAINER_KEYS = {
    "name",
    "image",
    "imagePullPolicy",
    "command",
    "args",
    "env",
    "ports",
    "securityContext",
    "startupProbe",
    "readinessProbe",
    "livenessProbe",
    "resources",
    "volumeMounts",
}
_SECURITY_KEYS = {
    "runAsUser",
    "runAsNonRoot",
    "privileged",
    "allowPrivilegeEscalation",
    "readOnlyRootFilesystem",
    "capabilities",
    "seccompProfile",
}
_PROBE_KEYS = {
    "exec",
    "httpGet",
    "periodSeconds",
    "timeoutSeconds",
    "failureThreshold",
    "successThreshold",
    "initialDelaySeconds",
}
_MOUNT_KEYS = {"name", "mountPath", "readOnly", "mountPropagation"}
PROBE_KINDS = ("startupProbe", "readinessProbe", "livenessProbe")


class Unsupported(Exception):
    """The template asks for something this stand-in cannot do; the message lists every field."""


@dataclass(frozen=True)
class Node:
    """What the node and its kubelet know about this pod."""

    name: str
    ip: str  # the node's address: status.podIP of a hostNetwork pod
    host_root: Path  # hostPath volumes live under here ...
    host_paths: Mapping[str, str]  # ... except these, mapped explicitly (manifest path -> path here)
    pod_dir: Path  # the kubelet's per-pod directory: emptyDir and projected volumes, logs
    images: Mapping[str, str]  # image name in the manifest -> local image reference
    pod_uid: str
    namespace: str = "dranet"
    api_service: tuple[str, int] | None = None  # the `kubernetes` Service, for in-cluster config
    netns: str = ""  # the node's network namespace (a name under /run/netns; "" = this process's)

    def host_path(self, path: str) -> str:
        for src, dst in sorted(self.host_paths.items(), key=lambda kv: -len(kv[0])):
            if path == src or path.startswith(src.rstrip("/") + "/"):
                return dst + path[len(src) :]
        return str(self.host_root / path.lstrip("/"))


@dataclass(frozen=True)
class HttpGet:
    """An httpGet probe: GET http://host:port/path from the node's network; 200-399 passes."""

    host: str
    port: int
    path: str


@dataclass(frozen=True)
class Probe:
    kind: str  # startupProbe | readinessProbe | livenessProbe
    command: list[str]  # an exec probe's; empty for httpGet
    period: int
    timeout: int
    failure_threshold: int
    success_threshold: int
    initial_delay: int
    http: HttpGet | None = None


@dataclass(frozen=True)
class Volume:
    name: str
    kind: str  # hostPath | emptyDir | projected
    host_path: str  # where it is on this machine
    host_type: str = ""  # hostPath type
    tmpfs_bytes: int = 0  # emptyDir: a tmpfs of this size (medium Memory, or a sizeLimit to enforce)
    files: Mapping[str, str] = field(default_factory=dict)  # projected: relative path -> content
    mode: int = 0o644


@dataclass(frozen=True)
class ContainerPlan:
    name: str
    config: cri_pb2.ContainerConfig
    probes: dict[str, Probe]


@dataclass(frozen=True)
class PodPlan:
    name: str
    sandbox: cri_pb2.PodSandboxConfig
    containers: list[ContainerPlan]
    volumes: list[Volume]
    grace: int  # terminationGracePeriodSeconds
    netns: str = ""  # where the prober's httpGet connects from (Node.netns)


def quantity(q: Any, *, milli: bool = False) -> int:
    """A Kubernetes quantity as an int: bytes, or millicores when milli."""
    s = str(q)
    if milli:
        return int(s[:-1]) if s.endswith("m") else int(float(s) * 1000)
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 10**3, "M": 10**6, "G": 10**9}
    for unit, factor in units.items():
        if s.endswith(unit):
            return int(float(s[: -len(unit)]) * factor)
    return int(float(s))


def expand(value: str, env: Mapping[str, str]) -> str:
    """$(VAR) expansion as the kubelet does it: $$ escapes, unknown references stay as written."""
    return re.sub(
        r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
        lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)),
        value,
    )


def pod_template(docs: Sequence[Mapping[str, Any]], name: str = "dranet") -> Mapping[str, Any]:
    """The pod template of the DaemonSet `name` among the manifest's documents."""
    for d in docs:
        if d and d.get("kind") == "DaemonSet" and (d.get("metadata") or {}).get("name") == name:
            return dict(d["spec"]["template"])
    raise ValueError(f"no DaemonSet {name!r} in the manifest")


def _extra(where: str, obj: Mapping[str, Any], known: set[str], problems: list[str]) -> None:
    problems.extend(f"{where}.{k}" for k in sorted(set(obj) - known))


def _fields(node: Node, name: str, spec: Mapping[str, Any]) -> dict[str, str]:
    return {
        "spec.nodeName": node.name,
        "status.podIP": node.ip,
        "status.hostIP": node.ip,
        "metadata.name": name,
        "metadata.namespace": node.namespace,
        "metadata.uid": node.pod_uid,
        "spec.serviceAccountName": str(spec.get("serviceAccountName", "default")),
    }


def _service_env(api: tuple[str, int] | None) -> dict[str, str]:
    """The env the kubelet gives every container for the `kubernetes` Service (port name https)."""
    if api is None:
        return {}
    host, port = api[0], str(api[1])
    url = f"tcp://{host}:{port}"
    return {
        "KUBERNETES_SERVICE_HOST": host,
        "KUBERNETES_SERVICE_PORT": port,
        "KUBERNETES_SERVICE_PORT_HTTPS": port,
        "KUBERNETES_PORT": url,
        f"KUBERNETES_PORT_{port}_TCP": url,
        f"KUBERNETES_PORT_{port}_TCP_PROTO": "tcp",
        f"KUBERNETES_PORT_{port}_TCP_PORT": port,
        f"KUBERNETES_PORT_{port}_TCP_ADDR": host,
    }


def _volumes(
    spec: Mapping[str, Any], node: Node, name: str, problems: list[str], sa_token: str, root_ca: str
) -> list[Volume]:
    fields = _fields(node, name, spec)
    out = []
    for v in spec.get("volumes") or []:
        vname = v["name"]
        where = f"spec.volumes[{vname}]"
        local = str(node.pod_dir / "volumes" / vname)
        if "hostPath" in v:
            hp = v["hostPath"]
            _extra(f"{where}.hostPath", hp, {"path", "type"}, problems)
            htype = hp.get("type", "")
            if htype not in ("", "Directory", "DirectoryOrCreate"):
                problems.append(f"{where}.hostPath.type: {htype}")
            out.append(Volume(vname, "hostPath", node.host_path(hp["path"]), host_type=htype))
        elif "emptyDir" in v:
            ed = v["emptyDir"] or {}
            _extra(f"{where}.emptyDir", ed, {"medium", "sizeLimit"}, problems)
            if ed.get("medium", "") not in ("", "Memory"):
                problems.append(f"{where}.emptyDir.medium: {ed['medium']}")
            # a sizeLimit is enforced with a tmpfs of that size (the kubelet evicts instead)
            size = quantity(ed["sizeLimit"]) if ed.get("sizeLimit") else 0
            if ed.get("medium") == "Memory" and not size:
                size = 64 * 2**20
            out.append(Volume(vname, "emptyDir", local, tmpfs_bytes=size))
        elif "projected" in v:
            proj = v["projected"] or {}
            _extra(f"{where}.projected", proj, {"sources", "defaultMode"}, problems)
            files: dict[str, str] = {}
            for src in proj.get("sources") or []:
                if "serviceAccountToken" in src:
                    t = src["serviceAccountToken"]
                    _extra(f"{where}.serviceAccountToken", t, {"path", "expirationSeconds"}, problems)
                    files[t.get("path", "token")] = sa_token  # not rotated: pods here live minutes
                elif "configMap" in src and src["configMap"].get("name") == "kube-root-ca.crt":
                    for it in src["configMap"].get("items") or [{"key": "ca.crt", "path": "ca.crt"}]:
                        if it["key"] != "ca.crt":
                            problems.append(f"{where}.configMap kube-root-ca.crt key {it['key']}")
                        files[it.get("path", it["key"])] = root_ca
                elif "downwardAPI" in src:
                    for it in src["downwardAPI"].get("items") or []:
                        ref = (it.get("fieldRef") or {}).get("fieldPath", "")
                        if ref not in fields:
                            problems.append(f"{where}.downwardAPI {it.get('path')}: {ref or it}")
                        files[it["path"]] = fields.get(ref, "")
                else:
                    problems.append(f"{where}.projected source {sorted(src)}")
            out.append(
                Volume(vname, "projected", local, files=files, mode=int(proj.get("defaultMode", 0o644)))
            )
        else:
            problems.append(f"{where}: kind {sorted(set(v) - {'name'})}")
    return out


def _probes(c: Mapping[str, Any], node: Node, problems: list[str]) -> dict[str, Probe]:
    out = {}
    for kind in PROBE_KINDS:
        p = c.get(kind)
        if not p:
            continue
        where = f"containers[{c['name']}].{kind}"
        _extra(where, p, _PROBE_KEYS, problems)
        command: list[str] = []
        http = None
        if p.get("exec"):
            command = list(p["exec"]["command"])
        elif p.get("httpGet"):
            http = _http_get(c, p["httpGet"], node, f"{where}.httpGet", problems)
            if http is None:
                continue
        else:
            problems.append(f"{where}: only exec and httpGet probes")
            continue
        out[kind] = Probe(
            kind=kind,
            command=command,
            period=int(p.get("periodSeconds", 10)),
            timeout=int(p.get("timeoutSeconds", 1)),
            failure_threshold=int(p.get("failureThreshold", 3)),
            success_threshold=int(p.get("successThreshold", 1)),
            initial_delay=int(p.get("initialDelaySeconds", 0)),
            http=http,
        )
    return out


def _http_get(
    c: Mapping[str, Any], h: Mapping[str, Any], node: Node, where: str, problems: list[str]
) -> HttpGet | None:
    """The kubelet's httpGet: plain HTTP to the pod's IP (the node's, under hostNetwork) unless
    `host` says otherwise; a named port is the container's own port of that name."""
    _extra(where, h, {"path", "port", "host", "scheme"}, problems)
    if h.get("scheme", "HTTP") != "HTTP":
        problems.append(f"{where}.scheme: {h['scheme']} (the prober here speaks plain HTTP)")
        return None
    port = h.get("port")
    if isinstance(port, str) and not port.isdigit():
        named = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
        if port not in named:
            problems.append(f"{where}.port: {port!r} names none of the container's ports")
            return None
        port = named[port]
    return HttpGet(host=str(h.get("host") or node.ip), port=int(str(port)), path=str(h.get("path") or "/"))


def _security(
    c: Mapping[str, Any], pod_sc: Mapping[str, Any], nsopts: cri_pb2.NamespaceOption, problems: list[str]
) -> cri_pb2.LinuxContainerSecurityContext:
    where = f"containers[{c['name']}].securityContext"
    sc = dict(c.get("securityContext") or {})
    _extra(where, sc, _SECURITY_KEYS, problems)
    caps = sc.get("capabilities") or {}
    _extra(f"{where}.capabilities", caps, {"add", "drop"}, problems)
    privileged = bool(sc.get("privileged"))
    uid = sc.get("runAsUser")
    if sc.get("runAsNonRoot") and (uid is None or int(uid) == 0):
        problems.append(f"{where}.runAsNonRoot with uid {uid} (the kubelet refuses to start it)")
    seccomp = sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}
    profile = None
    if seccomp:
        if seccomp.get("type") == "RuntimeDefault":
            profile = cri_pb2.SecurityProfile(profile_type=cri_pb2.SecurityProfile.RuntimeDefault)
        elif seccomp.get("type") == "Unconfined":
            profile = cri_pb2.SecurityProfile(profile_type=cri_pb2.SecurityProfile.Unconfined)
        else:
            problems.append(f"{where}.seccompProfile: {seccomp}")
    return cri_pb2.LinuxContainerSecurityContext(
        capabilities=cri_pb2.Capability(
            add_capabilities=list(caps.get("add") or []), drop_capabilities=list(caps.get("drop") or [])
        ),
        privileged=privileged,
        namespace_options=nsopts,
        run_as_user=cri_pb2.Int64Value(value=int(uid)) if uid is not None else None,
        readonly_rootfs=bool(sc.get("readOnlyRootFilesystem")),
        no_new_privs=sc.get("allowPrivilegeEscalation") is False,
        masked_paths=[] if privileged else list(MASKED_PATHS),
        readonly_paths=[] if privileged else list(READONLY_PATHS),
        seccomp=profile,
    )


def _resources(c: Mapping[str, Any], problems: list[str]) -> cri_pb2.LinuxContainerResources:
    where = f"containers[{c['name']}].resources"
    res = c.get("resources") or {}
    _extra(where, res, {"requests", "limits"}, problems)
    requests, limits = res.get("requests") or {}, res.get("limits") or {}
    _extra(f"{where}.requests", requests, {"cpu", "memory"}, problems)
    _extra(f"{where}.limits", limits, {"cpu", "memory"}, problems)
    out = cri_pb2.LinuxContainerResources(cpu_shares=2)  # the kubelet's minimum without a request
    if "cpu" in requests:
        out.cpu_shares = max(2, quantity(requests["cpu"], milli=True) * 1024 // 1000)
    if "cpu" in limits:
        out.cpu_period = 100_000
        out.cpu_quota = quantity(limits["cpu"], milli=True) * 100
    if "memory" in limits:
        out.memory_limit_in_bytes = quantity(limits["memory"])
    return out


def plan(template: Mapping[str, Any], node: Node, *, sa_token: str = "", root_ca: str = "") -> PodPlan:
    """The CRI requests for the pod template on this node. Raises Unsupported listing every field
    the stand-in cannot honour."""
    problems: list[str] = []
    meta = template.get("metadata") or {}
    spec = template["spec"]
    _extra("spec", spec, _POD_KEYS, problems)
    name = f"{meta.get('labels', {}).get('app.kubernetes.io/name', 'pod')}-{node.name}"
    pod_sc = spec.get("securityContext") or {}
    _extra("spec.securityContext", pod_sc, {"seccompProfile"}, problems)
    if spec.get("automountServiceAccountToken", True):
        problems.append("spec.automountServiceAccountToken: true (the default token volume is not made here)")
    host_network = bool(spec.get("hostNetwork"))
    nsopts = cri_pb2.NamespaceOption(
        network=cri_pb2.NODE if host_network else cri_pb2.POD,
        pid=cri_pb2.POD if spec.get("shareProcessNamespace") else cri_pb2.CONTAINER,
        ipc=cri_pb2.POD,
    )
    labels = {
        **{k: str(v) for k, v in (meta.get("labels") or {}).items()},
        "io.kubernetes.pod.name": name,
        "io.kubernetes.pod.namespace": node.namespace,
        "io.kubernetes.pod.uid": node.pod_uid,
    }
    grace = int(spec.get("terminationGracePeriodSeconds", 30))
    seccomp = pod_sc.get("seccompProfile") or {}
    sandbox = cri_pb2.PodSandboxConfig(
        metadata=cri_pb2.PodSandboxMetadata(name=name, uid=node.pod_uid, namespace=node.namespace, attempt=0),
        hostname="" if host_network else name,  # runc refuses a hostname without its own UTS namespace
        log_directory=str(node.pod_dir / "logs"),
        labels=labels,
        annotations={"kubernetes.io/config.source": "file"},
        linux=cri_pb2.LinuxPodSandboxConfig(
            security_context=cri_pb2.LinuxSandboxSecurityContext(
                namespace_options=nsopts,
                seccomp=cri_pb2.SecurityProfile(profile_type=cri_pb2.SecurityProfile.RuntimeDefault)
                if seccomp.get("type") == "RuntimeDefault"
                else None,
            )
        ),
    )
    volumes = _volumes(spec, node, name, problems, sa_token, root_ca)
    by_name = {v.name: v for v in volumes}
    fields = _fields(node, name, spec)
    containers = []
    for c in spec["containers"]:
        where = f"containers[{c['name']}]"
        _extra(where, c, _CONTAINER_KEYS, problems)
        if c.get("imagePullPolicy", "IfNotPresent") != "IfNotPresent":
            problems.append(f"{where}.imagePullPolicy: {c['imagePullPolicy']} (nothing is pulled here)")
        image = node.images.get(c["image"])
        if image is None:
            problems.append(f"{where}.image: {c['image']} (no local image given for it)")
        env = _service_env(node.api_service)  # the container's own env wins and may refer to it
        for e in c.get("env") or []:
            if "value" in e:
                env[e["name"]] = expand(str(e["value"]), env)
            elif (
                set(e.get("valueFrom") or {}) == {"fieldRef"}
                and e["valueFrom"]["fieldRef"]["fieldPath"] in fields
            ):
                env[e["name"]] = fields[e["valueFrom"]["fieldRef"]["fieldPath"]]
            else:
                problems.append(f"{where}.env[{e['name']}]: {e.get('valueFrom')}")
        mounts = []
        for m in c.get("volumeMounts") or []:
            _extra(f"{where}.volumeMounts[{m.get('name')}]", m, _MOUNT_KEYS, problems)
            vol = by_name.get(m["name"])
            if vol is None:
                problems.append(f"{where}.volumeMounts[{m['name']}]: no such volume")
                continue
            if m.get("mountPropagation") not in PROPAGATION:
                problems.append(
                    f"{where}.volumeMounts[{m['name']}].mountPropagation: {m['mountPropagation']}"
                )
                continue
            mounts.append(
                cri_pb2.Mount(
                    container_path=m["mountPath"],
                    host_path=vol.host_path,
                    readonly=bool(m.get("readOnly")),
                    propagation=PROPAGATION[m.get("mountPropagation")],
                )
            )
        term = str(node.pod_dir / "containers" / c["name"] / "termination-log")
        mounts.append(cri_pb2.Mount(container_path="/dev/termination-log", host_path=term))
        config = cri_pb2.ContainerConfig(
            metadata=cri_pb2.ContainerMetadata(name=c["name"], attempt=0),
            image=cri_pb2.ImageSpec(image=image or ""),
            command=[expand(a, env) for a in c.get("command") or []],
            args=[expand(a, env) for a in c.get("args") or []],
            envs=[cri_pb2.KeyValue(key=k, value=v.encode()) for k, v in env.items()],
            mounts=mounts,
            labels={
                "io.kubernetes.container.name": c["name"],
                "io.kubernetes.pod.name": name,
                "io.kubernetes.pod.namespace": node.namespace,
                "io.kubernetes.pod.uid": node.pod_uid,
            },
            annotations={"io.kubernetes.container.restartCount": "0"},
            log_path=f"{c['name']}/0.log",
            linux=cri_pb2.LinuxContainerConfig(
                resources=_resources(c, problems), security_context=_security(c, pod_sc, nsopts, problems)
            ),
        )
        containers.append(ContainerPlan(c["name"], config, _probes(c, node, problems)))
    if problems:
        raise Unsupported(
            "the node stand-in cannot honour these fields of the pod template (it never ignores one): "
            + "; ".join(problems)
        )
    return PodPlan(
        name=name, sandbox=sandbox, containers=containers, volumes=volumes, grace=grace, netns=node.netns
    )
