"""A node stand-in that runs the driver as it ships: the DaemonSet's pod, through CRI.

DEVELOPMENT AND TEST TOOL, run as root. The node is:
- a private network namespace ("node netns") holding the node's NICs (stand-in macvlans) and the
  containerd that runs the pods, so hostNetwork means that namespace and never the machine's own
  interfaces;
- a directory standing for the node's root filesystem (host_root): the DaemonSet's hostPath volumes
  live under it, except /var/run/netns (where the runtime puts the pods' netns files, shared with the
  machine) and /var/run/nri (the runtime's NRI socket directory);
- the kubelet's pod-side work for the driver pod (podspec.py + daemonpod.py) with the manifest from
  `kubectl kustomize deploy/kubernetes`, its image built by `make image` (deploy/image/build.sh) and
  imported into that containerd;
- the API server stand-in reached the way a pod reaches a cluster's: the in-cluster config (the
  `kubernetes` Service env, a projected token, CA and namespace) pointing at https://127.0.0.1:443
  inside the node netns, where ApiFront terminates TLS for the plain-HTTP local API server;
- the kubelet's DRA side (nodeagent.py) using the registration socket the pod creates in the
  hostPath kubelet directory.

`DaemonSetCluster` is demo.Cluster in that shape: the same API helpers, allocator and node agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import re
import secrets
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from dranet.services.dra.metadata import HOST_SUBDIR as METADATA_SUBDIR

from localcluster.containerd import DEFAULT_CACHE, Containerd
from localcluster.cri import CriClient
from localcluster.daemonpod import DaemonPod
from localcluster.demo import DRIVER, SERVICES, Cluster, DemoError
from localcluster.ipam import IpamProvider
from localcluster.metadata import MACHINE_TYPE, URL, GceMetadata, network_of
from localcluster.nodeagent import NodeAgent
from localcluster.nodenet import NodeNet, in_netns, ip, link_info
from localcluster.podspec import Node, plan, pod_template

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "localhost/dranet:dev"
BUILD_SCRIPT = ROOT / "deploy" / "image" / "build.sh"
KUSTOMIZE_DIR = ROOT / "deploy" / "kubernetes"
CDI_DIR = "/var/run/cdi"  # where the documented CDI patch puts the specs on the node
API_PORT = 443  # the `kubernetes` Service's port, inside the node netns (free: it is private)


def build_image(ctrd: Containerd | None = None, timeout: float = 900) -> str:
    """`make image` (cached; seconds after the first run), imported into ctrd when given."""
    env = dict(os.environ, IMAGE=IMAGE, PYTHON=sys.executable)
    if ctrd is not None:
        env.update(CTR=str(ctrd.ctr), CTR_ADDRESS=str(ctrd.cri_socket))
    r = subprocess.run(["bash", str(BUILD_SCRIPT)], env=env, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise DemoError(f"{BUILD_SCRIPT} failed ({r.returncode}):\n{r.stderr[-3000:]}")
    return r.stderr


def tag_image(ctrd: Containerd, source: str, tag: str) -> None:
    """Name an image already in ctrd by another tag too (an upgrade's new tag, without a build)."""
    ctr = [str(ctrd.ctr), "-a", str(ctrd.cri_socket), "-n", "k8s.io"]
    r = subprocess.run(
        [*ctr, "images", "tag", "--force", source, tag], capture_output=True, text=True, timeout=60
    )
    if r.returncode != 0:
        raise DemoError(f"ctr images tag {source} {tag}: {r.stderr.strip()}")


def kustomized_docs(directory: Path = KUSTOMIZE_DIR) -> list[dict[str, Any]]:
    """The manifests as `kubectl apply -k` would send them: `kubectl kustomize`, or without kubectl
    the kustomization features deploy/kubernetes uses (resources, images, replacements, local-config
    resources left out); any other is refused."""
    if shutil.which("kubectl"):
        r = subprocess.run(
            ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, timeout=120
        )
        if r.returncode != 0:
            raise DemoError(f"kubectl kustomize {directory}: {r.stderr.strip()}")
        return [d for d in yaml.safe_load_all(r.stdout) if d]
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(k) - {"apiVersion", "kind", "resources", "images", "replacements"}
    if unknown:
        raise DemoError(
            f"{directory}/kustomization.yaml uses {sorted(unknown)}: install kubectl to render it"
        )
    docs = [d for f in k["resources"] for d in yaml.safe_load_all((directory / f).read_text()) if d]
    images = {i["name"]: i for i in k.get("images") or []}
    for d in docs:
        for c in ((d.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers", []):
            i = images.get(c["image"])
            if i:
                c["image"] = i.get("newName", c["image"]) + (f":{i['newTag']}" if "newTag" in i else "")
    for rep in k.get("replacements") or []:
        _replace(docs, rep)
    local = "config.kubernetes.io/local-config"
    return [d for d in docs if (d["metadata"].get("annotations") or {}).get(local) != "true"]


def _replace(docs: list[dict[str, Any]], rep: Mapping[str, Any]) -> None:
    """One kustomize replacement: source by kind and name; targets by kind and name, field paths
    with [key=value] list selectors, and an optional delimiter and index."""

    def one(kind: str, name: str) -> dict[str, Any]:
        (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
        return doc

    def walk(node: Any, path: str) -> tuple[Any, str]:  # (the field's parent, its key)
        *parents, last = path.split(".")
        for part in parents:
            m = re.fullmatch(r"\[(\w+)=(.+)\]", part)
            node = next(e for e in node if e.get(m[1]) == m[2]) if m else node[part]
        return node, last

    src = rep["source"]
    parent, key = walk(one(src["kind"], src["name"]), src["fieldPath"])
    value = parent[key]
    for target in rep["targets"]:
        doc = one(target["select"]["kind"], target["select"]["name"])
        opts = target.get("options") or {}
        for path in target["fieldPaths"]:
            parent, key = walk(doc, path)
            if "delimiter" in opts:
                parts = parent[key].split(opts["delimiter"])
                parts[opts.get("index", 0)] = value
                parent[key] = opts["delimiter"].join(parts)
            else:
                parent[key] = value


# ---------------------------------------------------------------- network namespace helpers


def socket_in_netns(netns: str, host: str, port: int) -> socket.socket:
    """A listening TCP socket that lives in the named network namespace."""

    def make() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(64)
        return s

    return in_netns(netns, make)


def make_certs(directory: Path, ip_san: str) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for ip_san signed by it: (ca.crt, server.crt, server.key)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, crt = (
        directory / n for n in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt")
    )
    ext = directory / "san.ext"
    ext.write_text(f"subjectAltName=IP:{ip_san}\nbasicConstraints=CA:FALSE\n")
    steps = [
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "2",
         "-subj", "/CN=dranet-node-standin-ca"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=kubernetes"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", crt,
         "-days", "2", "-extfile", ext],
    ]  # fmt: skip
    for argv in steps:
        r = subprocess.run(["openssl", *map(str, argv)], capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise DemoError(f"openssl {argv[0]}: {r.stderr.strip()} (make system-deps installs openssl)")
    return ca, crt, key


class ApiFront:
    """TLS in front of the plain-HTTP API server stand-in, listening inside the node netns: the pod's
    in-cluster config (https://127.0.0.1:443, the CA in its projected volume) reaches it there."""

    def __init__(self, netns: str, upstream: tuple[str, int], certs: tuple[Path, Path, Path]) -> None:
        self.netns = netns
        self.upstream = upstream
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(certs[1], certs[2])
        self._sock = socket_in_netns(netns, "127.0.0.1", API_PORT)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="api-front", daemon=True)
        self._server: asyncio.AbstractServer | None = None

    def start(self) -> None:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._handle, sock=self._sock, ssl=self.ctx), self._loop
        )
        self._server = fut.result(timeout=10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return

        async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ssl.SSLError, asyncio.IncompleteReadError):
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            with contextlib.suppress(OSError, ssl.SSLError, RuntimeError):
                w.close()

        await asyncio.gather(pump(reader, up_w), pump(up_r, writer))

    def stop(self) -> None:
        if self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        with contextlib.suppress(OSError):
            self._sock.close()


# ---------------------------------------------------------------- the cluster in the DaemonSet's shape


def enable_cdi(template: dict[str, Any], hook_command: str) -> dict[str, Any]:
    """The pod template with docs/install.md's "Fail closed without NRI" step 3 applied: dra writes
    CDI specs to the node's /var/run/cdi (a hostPath volume) naming hook_command, the node's dranet,
    as uid 0 (no --run-as, no dra= in --service-uids)."""
    return _cdi_dir_on(template, [f"--cdi-hook-command={hook_command}"])


def enable_device_metadata(template: dict[str, Any], host_dir: str) -> dict[str, Any]:
    """The pod template with docs/install.md's "Device metadata in the containers" step applied:
    --device-metadata, the CDI directory on (without the hook when enable_cdi did not turn it on),
    and --device-metadata-host-dir=host_dir, where the runtime finds the plugin directory's files
    (on this stand-in, under the node's private root)."""
    words = ["--device-metadata", f"--device-metadata-host-dir={host_dir}"]
    main = next(c for c in template["spec"]["containers"] if c["name"] == "dranet")
    if any(f"--cdi-dir={CDI_DIR}" in a for a in main["args"]):
        return add_service_args(template, "dra", words)
    return _cdi_dir_on(template, ["--no-cdi-hook", *words])


def _cdi_dir_on(template: dict[str, Any], words: list[str]) -> dict[str, Any]:
    """dra with --cdi-dir=/var/run/cdi and `words`, the node's /var/run/cdi mounted, dra uid 0."""
    t = copy.deepcopy(template)
    main = next(c for c in t["spec"]["containers"] if c["name"] == "dranet")
    flag = "--dra-args="
    dra = [i for i, a in enumerate(main["args"]) if a.startswith(flag)]
    current = shlex.split(main["args"][dra[0]][len(flag) :]) if len(dra) == 1 else []
    if "--cdi-dir=" not in current:
        raise DemoError(f"the dranet container's --dra-args has no --cdi-dir= to replace: {main['args']}")
    # dra stays uid 0: the runtime's CDI directory is root's (dra refuses --run-as with --cdi-dir)
    current = [w for w in current if w != "--cdi-dir=" and not w.startswith("--run-as")]
    main["args"][dra[0]] = flag + shlex.join([*current, f"--cdi-dir={CDI_DIR}", *words])
    uids = "--service-uids="
    for c in t["spec"]["containers"]:  # every service's bus peer policy: dra is uid 0 now
        c["args"] = [
            uids + ",".join(i for i in a[len(uids) :].split(",") if not i.startswith("dra="))
            if a.startswith(uids)
            else a
            for a in c["args"]
        ]
    main["volumeMounts"].append({"name": "cdi", "mountPath": CDI_DIR})
    t["spec"]["volumes"].append({"name": "cdi", "hostPath": {"path": CDI_DIR, "type": "DirectoryOrCreate"}})
    return t


def add_service_args(template: dict[str, Any], service: str, words: list[str]) -> dict[str, Any]:
    """The pod template with more arguments for one service, where docs/install.md says to add them:
    the netns container's args for the worker, the dranet container's --<service>-args= (as the
    shell words dranet run reads) for the others."""
    t = copy.deepcopy(template)
    if service == "netns":
        next(c for c in t["spec"]["containers"] if c["name"] == "netns")["args"] += words
        return t
    if service not in SERVICES:
        raise DemoError(f"no service {service!r} to pass {words} to (services: {', '.join(SERVICES)})")
    main = next(c for c in t["spec"]["containers"] if c["name"] == "dranet")
    flag = f"--{service}-args="
    found = [i for i, a in enumerate(main["args"]) if a.startswith(flag)]
    if not found:
        main["args"].append(flag + shlex.join(words))
    else:
        main["args"][found[0]] = flag + shlex.join(
            [*shlex.split(main["args"][found[0]][len(flag) :]), *words]
        )
    return t


def volume_mount(template: dict[str, Any], container: str, name: str) -> str:
    """Where the container mounts the volume `name`."""
    c = next(c for c in template["spec"]["containers"] if c["name"] == container)
    for m in c.get("volumeMounts") or []:
        if m["name"] == name:
            return str(m["mountPath"])
    raise DemoError(f"container {container} does not mount {name!r}")


def volume_host_path(template: dict[str, Any], name: str) -> str:
    """The hostPath of the template's volume `name` (the path on the node)."""
    for v in template["spec"]["volumes"]:
        if v["name"] == name and "hostPath" in v:
            return str(v["hostPath"]["path"])
    raise DemoError(f"the pod template has no hostPath volume {name!r}")


def service_of(cmdline: str) -> str:
    """ "netns" for ".../dranet netns --runtime-dir=...", "" for anything else."""
    words = cmdline.split()
    return next((words[i + 1] for i in range(len(words) - 1) if words[i].endswith("dranet")), "")


@dataclass
class DaemonSetCluster(Cluster):
    """demo.Cluster with the driver as the DaemonSet's pod on a node stand-in (module docstring).

    Brings up its own containerd inside the node netns (containerd must be None). ``cdi``: apply the
    documented CDI patch (enable_cdi), the hook being this Python's dranet seeing the node's bus.
    ``nri_request_timeout``: containerd's NRI plugin_request_timeout (its default is 2s)."""

    node_netns: str = ""
    host_root: Path = field(default=Path())
    pod: DaemonPod | None = None
    front: ApiFront | None = None
    template: dict[str, Any] = field(default_factory=dict)
    startup_timeout: float = 120.0
    pki: tuple[Path, Path, Path] | None = None  # the API front's CA, certificate and key
    cdi: bool = False
    device_metadata: bool = False  # docs/install.md's device metadata step (enable_device_metadata)
    nri_request_timeout: str = "2s"
    ipam_pool: str = ""  # when set, the example IPAM provider serves it in the node netns (dra's webhook)
    ipam: IpamProvider | None = None
    # a GCE metadata stand-in in the node netns, each stand-in NIC in a VPC network of its own
    # (metadata.network_of), read by discovery (--cloud-provider=gce)
    gce_metadata: bool = False
    metadata: GceMetadata | None = None

    def __post_init__(self) -> None:
        tag = secrets.token_hex(3)
        self.prefix = self.prefix or f"tds{tag[:4]}"
        self.node_netns = self.node_netns or f"{self.prefix}-node"
        self.host_root = self.workdir / "node"

    @property
    def registry_dir(self) -> Path:
        return self.host_root / "var/lib/kubelet/plugins_registry"

    @property
    def runtime_dir(self) -> Path:
        """The bus as the node sees it: the pod's hostPath volume `run`."""
        return Path(self.node().host_path(volume_host_path(self.template, "run")))

    @property
    def logs_dir(self) -> Path:
        """The pod's log directory: <container>/<attempt>.log, as the kubelet keeps them."""
        return self.pod_dir / "logs"

    @property
    def pod_dir(self) -> Path:
        """The driver pod's directory: the running pod's (a rolling update's new pod has one of its
        own), else where the next pod goes."""
        if self.pod is not None:
            return Path(self.pod.plan.sandbox.log_directory).parent
        return self.workdir / "pods" / "driver"

    def node(self, image: str = IMAGE) -> Node:
        assert self.containerd is not None and self.template, "the node is known once start() ran"
        return Node(
            name=self.node_name,
            ip="127.0.0.1",
            host_root=self.host_root,
            host_paths={
                # the mount itself (ip netns makes /run/netns a shared mount): containerd 1.7 checks
                # the propagation of the literal path and does not follow /var/run -> /run
                "/var/run/netns": "/run/netns",
                "/var/run/nri": str(self.host_root / "var/run/nri"),
                CDI_DIR: str(self.containerd.cdi_dir),
            },
            pod_dir=self.pod_dir,
            images={c["image"]: image for c in self.template["spec"]["containers"]},
            pod_uid=str(uuid.uuid4()),
            api_service=("127.0.0.1", API_PORT),
            netns=self.node_netns,
        )

    def hook_command(self) -> Path:
        """The node's `dranet` for the CDI hook (docs/install.md, step 1): this Python's, with the bus
        at the node's /run/dranet, which on this stand-in is under host_root."""
        script = self.workdir / "node-bin" / "dranet"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(
            "#!/bin/sh\n# the node's dranet: its /run/dranet is the stand-in node's\n"
            f'exec {sys.executable} -m dranet "$@" --runtime-dir={self.runtime_dir}\n'
        )
        script.chmod(0o755)
        return script

    def _start(self) -> None:
        if self.containerd is not None:
            raise DemoError("DaemonSetCluster runs its own containerd inside the node netns")
        self.template = dict(pod_template(kustomized_docs()))
        ip("netns", "add", self.node_netns)
        ip("link", "set", "lo", "up", netns=self.node_netns)
        self.containerd = Containerd(
            self.workdir / "ctrd",
            self.ctrd_cache or DEFAULT_CACHE,
            bridge=f"{self.prefix}br",
            subnet="10.225.0.0/24",
            nri_socket=self.host_root / "var/run/nri/nri.sock",
            netns=self.node_netns,
            request_timeout=self.nri_request_timeout,
        )
        self._own_containerd = True
        self.log(f"  node netns {self.node_netns}: containerd with NRI in it ...")
        self.containerd.up()
        self.log("  the driver image (make image), imported into that containerd ...")
        build_image(self.containerd)
        if self.ipam_pool:
            # where the driver pod's hostNetwork is, started before it (dra asks its /health at start)
            self.ipam = IpamProvider(self.node_netns, self.ipam_pool, self.workdir / "ipam.log")
            self.ipam.start()
            self.template = add_service_args(self.template, "dra", [f"--webhook-url={self.ipam.url}"])
        if self.gce_metadata:
            words = ["--cloud-provider=gce", f"--metadata-url={URL}"]
            self.template = add_service_args(self.template, "discovery", words)
        for service, words in self.extra_args.items():
            self.template = add_service_args(self.template, service, words)
        if self.cdi:
            self.template = enable_cdi(self.template, str(self.hook_command()))
        if self.device_metadata:
            plugin_dir = self.node().host_path(volume_host_path(self.template, "plugin-dir"))
            self.template = enable_device_metadata(self.template, f"{plugin_dir}/{METADATA_SUBDIR}")
        super()._start()

    def make_net(self) -> NodeNet:
        return NodeNet.new(count=self.nic_count, prefix=self.prefix, node_netns=self.node_netns)

    def make_agent(self) -> NodeAgent:
        if self.agent is not None:  # made by start_services: the kubelet watches plugins from the start
            return self.agent
        assert self.containerd is not None
        node = self.node()
        return NodeAgent(
            self.registry_dir,
            str(self.containerd.cri_socket),
            driver_name=DRIVER,
            log_dir=str(self.workdir / "pods"),
            api_client=self.api_client,
            node_name=self.node_name,
            host_path=node.host_path,
        )

    def start_services(self) -> None:
        """The DaemonSet's pod, as the kubelet would run it, until its readiness probes pass."""
        assert self.apiserver is not None and self.containerd is not None
        host, port = self.apiserver.url.rsplit("//", 1)[1].rsplit(":", 1)
        self.pki = make_certs(self.workdir / "pki", "127.0.0.1")
        self.front = ApiFront(self.node_netns, (host, int(port)), self.pki)
        self.front.start()
        self.registry_dir.mkdir(parents=True, exist_ok=True)  # the kubelet makes it at boot (type Directory)
        if self.gce_metadata and self.metadata is None:  # discovery reads it at start
            self.metadata = GceMetadata(self.node_netns, self.cloud_interfaces())
            self.metadata.start()
        self.pod = self.new_pod(IMAGE)
        # The kubelet's plugin watcher runs from its start and registers the driver as soon as its
        # registration socket appears: the pod's readiness includes being registered.
        self.agent = self.make_agent()
        self.agent.start()
        self.pod.wait_ready(self.startup_timeout)
        where = self.pod.plan.sandbox.log_directory
        self.log(f"  the DaemonSet's pod {self.pod.plan.name} is ready (logs in {where})")

    def cloud_interfaces(self) -> list[dict[str, str]]:
        """The instance's NICs as GCE's metadata lists them: MAC and VPC network."""
        assert self.net is not None
        project = MACHINE_TYPE.split("/")[1]
        return [
            {"mac": str((link_info(n.name, self.node_netns) or {}).get("address")),
             "network": f"projects/{project}/networks/{network_of(n.name)}"}
            for n in self.net.nics
        ]  # fmt: skip

    def new_pod(self, image: str) -> DaemonPod:
        """The DaemonSet's pod from the template with its containers' image set to image, up (not
        necessarily ready yet)."""
        assert self.containerd is not None and self.pki is not None
        pod_plan = plan(
            self.template, self.node(image), sa_token="node-standin-token", root_ca=self.pki[0].read_text()
        )
        pod = DaemonPod(pod_plan, CriClient(str(self.containerd.cri_socket)))
        pod.up()
        return pod

    def roll(self, image: str) -> None:
        """The DaemonSet controller's rolling update on this node (maxSurge 0): the old pod goes
        (grace period), the pod with the new image comes and becomes ready."""
        if self.pod is not None:
            old, self.pod = self.pod, None
            errors = old.down()
            old.cri.close()
            if errors:
                raise DemoError(f"the old driver pod did not go cleanly: {errors}")
        self.pod = self.new_pod(image)
        self.pod.wait_ready(self.startup_timeout)

    def wait_services(self, services: tuple[str, ...] = SERVICES, timeout: float = 120.0) -> None:
        """The pod ready, and every service healthy on the bus now (a service that supervisord or
        the prober restarts may be down before the readiness probe has noticed)."""
        assert self.pod is not None
        start = time.monotonic()
        self.pod.wait_ready(timeout)
        super().wait_services(services, max(5.0, timeout - (time.monotonic() - start)))

    def supervisorctl(self, *args: str) -> str:
        """supervisorctl in the dranet container, against its `dranet run`."""
        assert self.pod is not None
        conf = Path(volume_mount(self.template, "dranet", "run"), "supervisord.conf")
        _, out, err = self.pod.exec("dranet", ["supervisorctl", "-c", str(conf), *args], timeout=30)
        return out + err

    def service_pid(self, service: str) -> int:
        """The host pid of a service's process in the pod."""
        assert self.pod is not None
        pids = self.pod.host_pids()
        found = [pid for cmd, pid in pids.items() if service_of(cmd) == service]
        if len(found) != 1:
            raise DemoError(f"{service}: {len(found)} processes in the pod: {pids}")
        return found[0]

    def stop_services(self) -> None:
        if self.pod is not None:
            errors = self.pod.down()
            self.pod.cri.close()
            self.pod = None
            if errors:
                raise DemoError(f"the driver pod did not go cleanly: {errors}")
        if self.front is not None:
            self.front.stop()
            self.front = None

    def stop(self) -> list[str]:
        errors = super().stop()
        if self.ipam is not None:
            self.ipam.stop()
            self.ipam = None
        if self.metadata is not None:
            self.metadata.stop()
            self.metadata = None
        if Path("/run/netns", self.node_netns).exists():
            try:
                ip("netns", "del", self.node_netns)
            except Exception as exc:
                errors.append(f"node netns: {exc}")
        return errors
