"""`python -m localcluster demo` (`make demo`): the whole path on one machine, step by step, cleaned away.

DEVELOPMENT TOOL, run as root. It sets up a node stand-in (localcluster/node.py): a private "node"
netns with a few stand-in NICs (macvlans, far ends in a private "wire" netns) and a real containerd
with NRI, the local API server, and the driver as it ships, the DaemonSet's pod (deploy/kubernetes,
kustomized) from the image `make image` builds (cached), run through CRI. Then it walks one pod
through: the published ResourceSlices, a DeviceClass
and a ResourceClaim with an interface config, the allocation (local allocator), NodePrepareResources
over the real DRA gRPC protocol (local node agent), the sandbox started through CRI getting the
interface (shown from inside the pod's netns, with traffic to the wire end), the claim status, the
pod's removal and the interface back on the node as it was, and a claim whose address comes from
the example IPAM provider (running on the node, dra's webhook). Everything it creates is removed at the
end, also on Ctrl-C. `--non-interactive` runs without pauses and exits non-zero if a check fails.

`Cluster` is the set-up with the four services as host processes under supervisord (`dranet run`),
which the benchmarks use; node.DaemonSetCluster, the same in the DaemonSet's shape, is the demo's
and the end-to-end tests' (tests/e2e/conftest.py).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from localcluster.allocator import Allocator
from localcluster.claims import DRIVER, Request, by_ifname, device_class, resource_claim
from localcluster.ipam import IpamProvider
from localcluster.nodeagent import NodeAgent, PodRun
from localcluster.nodenet import NodeNet, link_info

NODE_NAME = "dranet-demo-node"
SERVICES = ("netns", "discovery", "dra", "nri")
SCHEDULE_TIMEOUT = 10.0  # seconds a pod may wait for its claims to be allocatable, as if requeued
IPAM_POOL = "10.233.0.0/28"  # the demo's IPAM provider's pool (its `profile: ipam` step)


class DemoError(Exception):
    """A set-up step failed; the message says which and what to look at."""


# ---------------------------------------------------------------- the local cluster


@dataclass
class Cluster:
    """containerd + local API server + stand-in NICs + the four services under supervisord.

    ``containerd``: an already running localcluster.containerd.Containerd to use (e.g. the
    e2e session fixture's); when None, start() brings up a private one and stop() takes it down.
    """

    workdir: Path
    nic_count: int = 3
    node_name: str = NODE_NAME
    containerd: Any = None
    ctrd_cache: str | None = None
    prefix: str | None = None
    log: Callable[[str], None] = print
    extra_args: Mapping[str, list[str]] = field(default_factory=dict)
    metrics_address: str = ""  # `dranet run --metrics-address`: the one HTTP endpoint, when set
    services: tuple[str, ...] = SERVICES
    # filled by start()
    net: NodeNet | None = None
    apiserver: Any = None
    kubeconfig: Path | None = None
    api_client: Any = None
    supervisor: subprocess.Popen[bytes] | None = None
    agent: NodeAgent | None = None
    allocator: Allocator | None = None
    _own_containerd: bool = False

    @property
    def runtime_dir(self) -> Path:
        return self.workdir / "run"

    @property
    def state_dir(self) -> Path:
        return self.workdir / "state"

    @property
    def logs_dir(self) -> Path:
        return self.workdir / "log"

    @property
    def registry_dir(self) -> Path:
        return self.workdir / "kubelet" / "plugins_registry"

    @property
    def plugins_dir(self) -> Path:
        return self.workdir / "kubelet" / "plugins"

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Bring everything up; on failure, what was started is stopped again and DemoError raised."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        from kubernetes import config as kconfig

        from localcluster.apiserver import LocalAPIServer

        for d in (self.runtime_dir, self.state_dir, self.logs_dir, self.registry_dir, self.plugins_dir):
            d.mkdir(parents=True, exist_ok=True)
        if self.containerd is None:
            from localcluster.containerd import DEFAULT_CACHE, Containerd

            self.log("  starting containerd with NRI (first run downloads Debian packages) ...")
            self.containerd = Containerd(
                self.workdir / "ctrd",
                self.ctrd_cache or DEFAULT_CACHE,
                bridge="tlcdemo0",
                subnet="10.224.0.0/24",
            )
            self._own_containerd = True
            self.containerd.up()
        self.log(f"  containerd: CRI {self.containerd.cri_socket}, NRI {self.containerd.nri_socket}")

        self.apiserver = LocalAPIServer()
        self.apiserver.start()
        self.kubeconfig = self.apiserver.write_kubeconfig(self.workdir / "kubeconfig")
        self.api_client = kconfig.new_client_from_config(config_file=str(self.kubeconfig))
        self.log(f"  local API server: {self.apiserver.url} (kubeconfig {self.kubeconfig})")
        self.create("v1", "nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.node_name}})

        self.net = self.make_net()
        self.net.create()
        self.log(
            f"  stand-in NICs: {', '.join(n.name for n in self.net.nics)} "
            f"(far ends in netns {self.net.wire_netns})"
        )

        self.start_services()
        self.agent = self.make_agent()
        # The kubelet's start: it wipes the node's slices and registers the plugin; discovery
        # publishes only once the plugin is registered.
        self.agent.start()
        self.allocator = Allocator(self.api_client, self.node_name)

    def make_net(self) -> NodeNet:
        return NodeNet.new(count=self.nic_count, prefix=self.prefix)

    def make_agent(self) -> NodeAgent:
        assert self.containerd is not None
        return NodeAgent(
            self.registry_dir,
            str(self.containerd.cri_socket),
            driver_name=DRIVER,
            log_dir=str(self.workdir / "pods"),
            api_client=self.api_client,
            node_name=self.node_name,
        )

    def service_args(self) -> dict[str, list[str]]:
        assert self.net is not None and self.containerd is not None
        args = {
            "netns": ["--allowed-interfaces", self.net.name_regex],
            "discovery": ["--filter", self.net.discovery_filter, "--exclude-interfaces", ""],
            "dra": [
                "--kubelet-registry-dir",
                str(self.registry_dir),
                "--kubelet-plugins-dir",
                str(self.plugins_dir),
                "--cdi-dir",
                str(self.containerd.cdi_dir),
            ],
            "nri": ["--nri-socket", str(self.containerd.nri_socket)],
        }
        for s, extra in self.extra_args.items():
            args[s] = [*args.get(s, []), *extra]
        return args

    def start_services(self) -> None:
        import shlex

        argv = [
            sys.executable,
            "-m",
            "dranet",
            "run",
            f"--runtime-dir={self.runtime_dir}",
            f"--state-dir={self.state_dir}",
            f"--node-name={self.node_name}",
            f"--driver-name={DRIVER}",
            f"--kubeconfig={self.kubeconfig}",
            f"--logs-dir={self.logs_dir}",
            f"--services={','.join(self.services)}",
        ]
        for s, a in self.service_args().items():
            argv.append(f"--{s}-args={shlex.join(a)}")
        if self.metrics_address:
            argv.append(f"--metrics-address={self.metrics_address}")
        out = open(self.logs_dir / "run.out", "ab")
        self.supervisor = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        self.wait_services(self.services)
        self.log(f"  services {', '.join(self.services)} up under supervisord (logs in {self.logs_dir})")

    def wait_services(self, services: tuple[str, ...] = SERVICES, timeout: float = 30.0) -> None:
        from dranet.status import all_healthy, query

        deadline = time.monotonic() + timeout
        results: Any = None
        while time.monotonic() < deadline:
            if self.supervisor is not None and self.supervisor.poll() is not None:
                raise DemoError(
                    f"`dranet run` exited ({self.supervisor.returncode}); see {self.logs_dir}/run.out"
                )
            results = query(self.runtime_dir, list(services), 0.5)
            if all_healthy(results):
                return
            time.sleep(0.2)
        raise DemoError(
            f"services not healthy within {timeout:.0f}s: {results}; see the logs in {self.logs_dir}"
        )

    def supervisorctl(self, *args: str) -> str:
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "supervisor.supervisorctl",
                "-c",
                str(self.runtime_dir / "supervisord.conf"),
                *args,
            ],
            capture_output=True,
            text=True,
        )
        return r.stdout + r.stderr

    def service_pid(self, service: str) -> int:
        out = self.supervisorctl("pid", service).strip()
        if not out.isdigit() or out == "0":
            raise DemoError(f"{service} is not running: {out}")
        return int(out)

    def stop_services(self) -> None:
        p, self.supervisor = self.supervisor, None
        if p is None or p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)  # supervisord stops its programs, then exits
        try:
            p.wait(timeout=40)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)  # our own process group only
            p.wait(timeout=10)

    def stop(self) -> list[str]:
        """Tear everything down (idempotent); returns what could not be cleaned."""
        errors: list[str] = []

        def attempt(what: str, fn: Callable[[], Any]) -> None:
            try:
                r = fn()
                if isinstance(r, list):
                    errors.extend(f"{what}: {e}" for e in r)
            except Exception as exc:
                errors.append(f"{what}: {exc}")

        if self.agent is not None:
            if self.containerd is not None and self._own_containerd:
                attempt("pods", self.agent.cri.cleanup)
            attempt("node agent", self.agent.close)
            self.agent = None
        attempt("services", self.stop_services)
        if self.net is not None:
            attempt("stand-in NICs", self.net.remove)
            self.net = None
        if self.api_client is not None:
            attempt("api client", self.api_client.close)
            self.api_client = None
        if self.apiserver is not None:
            attempt("API server", self.apiserver.stop)
            self.apiserver = None
        if self._own_containerd and self.containerd is not None:
            attempt("containerd", self.containerd.down)
            self.containerd = None
            self._own_containerd = False
        return errors

    # ------------------------------------------------------------ API helpers (plain dicts)

    def api(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        """One raw request to the API server through the official client; returns the JSON body."""
        from kubernetes.client.exceptions import ApiException

        assert self.api_client is not None
        request = self.api_client.param_serialize(
            method,
            path,
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
        )
        resp = self.api_client.call_api(*request)
        resp.read()
        if not 200 <= resp.status <= 299:
            raise ApiException.from_response(http_resp=resp, body=None, data=None)
        data = resp.data
        return json.loads(data) if data else None

    @staticmethod
    def _path(api_version: str, resource: str, namespace: str | None, name: str = "") -> str:
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        ns = f"/namespaces/{namespace}" if namespace else ""
        return f"{base}{ns}/{resource}" + (f"/{name}" if name else "")

    def create(
        self, api_version: str, resource: str, obj: dict[str, Any], namespace: str | None = None
    ) -> Any:
        return self.api("POST", self._path(api_version, resource, namespace), obj)

    def get(self, api_version: str, resource: str, name: str, namespace: str | None = None) -> Any:
        return self.api("GET", self._path(api_version, resource, namespace, name))

    def list_objects(
        self, api_version: str, resource: str, namespace: str | None = None
    ) -> list[dict[str, Any]]:
        return list(self.api("GET", self._path(api_version, resource, namespace))["items"])

    def delete(self, api_version: str, resource: str, name: str, namespace: str | None = None) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self.api("DELETE", self._path(api_version, resource, namespace, name))
        except ApiException as exc:
            if exc.status != 404:
                raise

    def our_slices(self) -> list[dict[str, Any]]:
        return [
            s
            for s in self.list_objects("resource.k8s.io/v1", "resourceslices")
            if s["spec"].get("driver") == DRIVER and s["spec"].get("nodeName") == self.node_name
        ]

    def published_ifnames(self) -> set[str]:
        names = set()
        for s in self.our_slices():
            for d in s["spec"].get("devices") or []:
                attr = (d.get("attributes") or {}).get("dra.net/ifName") or {}
                if attr.get("string"):
                    names.add(attr["string"])
        return names

    def wait_slices(self, timeout: float = 20.0) -> list[dict[str, Any]]:
        assert self.net is not None
        want = {n.name for n in self.net.nics}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if want <= self.published_ifnames():
                return self.our_slices()
            time.sleep(0.2)
        raise DemoError(
            f"ResourceSlices do not list {sorted(want - self.published_ifnames())} after {timeout:.0f}s; "
            f"see {self.logs_dir}/discovery.log"
        )

    def device_name_of(self, ifname: str) -> str:
        for s in self.our_slices():
            for d in s["spec"].get("devices") or []:
                if ((d.get("attributes") or {}).get("dra.net/ifName") or {}).get("string") == ifname:
                    return str(d["name"])
        raise DemoError(f"no published device for interface {ifname}")

    # ------------------------------------------------------------ pods

    def make_pod(self, name: str, claims: Mapping[str, str], namespace: str = "default") -> dict[str, Any]:
        """Create a Pod object using the claims (pod claim name -> ResourceClaim name)."""
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "nodeName": self.node_name,
                "containers": [
                    {
                        "name": "main",
                        "image": "localhost/dranet/pause:1.0",
                        "resources": {"claims": [{"name": n} for n in claims]},
                    }
                ],
                "resourceClaims": [{"name": n, "resourceClaimName": c} for n, c in claims.items()],
            },
        }
        return dict(self.create("v1", "pods", body, namespace))

    def run_pod(self, pod: dict[str, Any]) -> PodRun:
        """Scheduler then kubelet: allocate and reserve the pod's claims, prepare, run the sandbox."""
        assert self.allocator is not None and self.agent is not None
        from localcluster.allocator import AllocationError

        # Like the scheduler, which requeues a pod it cannot place: a pool being rewritten (its
        # newest generation not complete yet) offers no device for a moment.
        end = time.monotonic() + SCHEDULE_TIMEOUT
        while True:
            try:
                claims = self.allocator.allocate_pod(pod)
                break
            except AllocationError:
                if time.monotonic() >= end:
                    raise
                time.sleep(0.2)
        return self.agent.start_pod(pod, claims)

    def remove_pod(self, pod: dict[str, Any], run: PodRun | None) -> None:
        assert self.allocator is not None and self.agent is not None
        if run is not None:
            self.agent.remove_pod(run)
        self.allocator.release_pod(pod)
        meta = pod["metadata"]
        self.delete("v1", "pods", meta["name"], meta.get("namespace", "default"))


# ---------------------------------------------------------------- netns helpers


def in_netns(netns_path: str, *cmd: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["nsenter", f"--net={netns_path}", *cmd], capture_output=True, text=True, timeout=timeout
    )


def links_in(netns_path: str) -> dict[str, dict[str, Any]]:
    r = in_netns(netns_path, "ip", "-j", "addr", "show")
    if r.returncode != 0:
        raise DemoError(f"cannot read {netns_path}: {r.stderr.strip()}")
    return {i["ifname"]: i for i in json.loads(r.stdout or "[]")}


def routes_in(netns_path: str, family: str = "-4") -> list[dict[str, Any]]:
    r = in_netns(netns_path, "ip", "-j", family, "route", "show")
    return list(json.loads(r.stdout or "[]")) if r.returncode == 0 else []


def addresses(link: Mapping[str, Any]) -> set[str]:
    return {f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info") or [] if a.get("scope") != "link"}


_SERVER = (
    "import socket,sys\n"
    "s=socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET)\n"
    "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
    "s.bind((sys.argv[1],int(sys.argv[2])));s.listen(1);s.settimeout(15);print('ready',flush=True)\n"
    "c,a=s.accept();c.sendall(b'hello from the wire, '+a[0].encode());c.close()\n"
)
_CLIENT = (
    "import socket,sys\n"
    "c=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=5);print(c.recv(200).decode())\n"
)


def wire_roundtrip(wire_netns: str, wire_ip: str, pod_netns_path: str, port: int = 7777) -> str:
    """A TCP exchange between a listener at the NIC's far end and a client inside the pod netns."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", wire_netns, sys.executable, "-c", _SERVER, wire_ip, str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            raise DemoError(
                f"listener in {wire_netns} did not start: {server.stderr.read() if server.stderr else ''}"
            )
        r = in_netns(pod_netns_path, sys.executable, "-c", _CLIENT, wire_ip, str(port))
        if r.returncode != 0:
            raise DemoError(
                f"connect from the pod to {wire_ip}:{port} failed: {r.stderr.strip().splitlines()[-1:]}"
            )
        return r.stdout.strip()
    finally:
        with contextlib.suppress(ProcessLookupError):
            server.kill()
        server.wait(timeout=5)


# ---------------------------------------------------------------- the demo script


class Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        self.interactive = not args.non_interactive and sys.stdin.isatty()
        self.failures: list[str] = []
        self.checks = 0
        self.color = sys.stdout.isatty()

    def _c(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def step(self, n: int, title: str) -> None:
        if self.interactive and n > 1:
            with contextlib.suppress(EOFError):
                input(self._c("2", "\n  [Enter] next step "))
        print("\n" + self._c("1;36", f"== {n}. {title}"))

    def say(self, text: str = "") -> None:
        for line in text.splitlines() or [""]:
            print("   " + line)

    def show(self, obj: Any) -> None:
        try:
            import yaml

            text = yaml.safe_dump(obj, sort_keys=False, default_flow_style=False, width=100)
        except ImportError:
            text = json.dumps(obj, indent=2)
        for line in text.rstrip().splitlines():
            print("     " + self._c("2", line))

    def check(self, what: str, ok: bool, detail: str = "") -> bool:
        self.checks += 1
        mark = self._c("32", "[ok]  ") if ok else self._c("1;31", "[FAIL]")
        print(f"   {mark} {what}" + (f"  ({detail})" if detail and not ok else ""))
        if not ok:
            self.failures.append(f"{what}: {detail}" if detail else what)
        return ok


def _device_class() -> dict[str, Any]:
    # A class-wide default the claim's own config is merged over (class first, claim wins).
    return device_class("dranet-demo", config={"interface": {"mtu": 1450}})


def _claim(name: str, ifname: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """The demo's claim: the NIC `ifname` of the demo's class, configured with `cfg`."""
    return resource_claim(name, [Request("nic", [by_ifname(ifname)], device_class="dranet-demo", config=cfg)])


def _strip(obj: Mapping[str, Any]) -> dict[str, Any]:
    """An object without the server-filled metadata noise, for display."""
    out = dict(obj)
    meta = {k: v for k, v in (out.get("metadata") or {}).items() if k in ("name", "namespace", "uid")}
    out["metadata"] = meta
    return out


def wait_for(fn: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--non-interactive", action="store_true", help="no pauses; exit non-zero if a check fails"
    )
    parser.add_argument("--nics", type=int, default=3, help="stand-in NICs to create (default %(default)s)")
    parser.add_argument("--workdir", default=None, help="scratch directory (default: a new one under /tmp)")
    parser.add_argument(
        "--keep-workdir", action="store_true", help="keep the scratch directory (logs) at the end"
    )
    parser.add_argument("--ctrd-cache", default=None, help="where containerd's Debian packages are cached")


def run(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("localcluster demo: run it as root (it makes netns, runs containerd)", file=sys.stderr)
        return 2
    for tool in ("ip", "nsenter", "mmdebstrap", "openssl"):
        if shutil.which(tool) is None:
            print(f"localcluster demo: `{tool}` is missing; `make system-deps` installs it", file=sys.stderr)
            return 2
    from localcluster.node import DaemonSetCluster

    demo = Demo(args)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="tlc-", dir="/tmp"))
    cluster = DaemonSetCluster(
        workdir, nic_count=max(2, args.nics), ctrd_cache=args.ctrd_cache, log=demo.say, ipam_pool=IPAM_POOL
    )
    old_term = signal.signal(signal.SIGTERM, _interrupt)
    interrupted = False
    try:
        try:
            _script(demo, cluster)
        except KeyboardInterrupt:
            interrupted = True
            demo.failures.append("interrupted")
            print("\n   interrupted: cleaning up")
        except Exception as exc:
            demo.failures.append(f"the demo ran to the end: {type(exc).__name__}: {exc}")
            if type(exc).__name__ == "PackagesUnavailable":
                print(f"\n   containerd's Debian packages could not be downloaded: {exc}")
            print(f"   [FAIL] the demo ran to the end ({type(exc).__name__}: {exc})")
            _tail_logs(cluster)
    except OSError:
        pass  # stdout went away (a closed pipe): clean up all the same
    finally:
        # Nothing may stop the cleanup: no Ctrl-C, and no output before the work is done.
        old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        prefix = cluster.net.prefix if cluster.net else None
        errors = cluster.stop()
        leftovers: list[str] = []
        if prefix:
            leftovers = [f"link {n}" for n in _host_links() if n.startswith(prefix)]
            leftovers += [f"netns {n}" for n in _netns_names() if n.startswith(prefix)]
        if not args.keep_workdir and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
        with contextlib.suppress(OSError):
            print("\n" + demo._c("1;36", "== cleanup"))
            for e in errors:
                demo.check("cleanup", False, e)
            if prefix:
                demo.check("nothing of the demo is left on the machine", not leftovers, ", ".join(leftovers))
            if args.keep_workdir or args.workdir:
                demo.say(f"scratch directory kept: {workdir}")
    if interrupted:
        return 130
    if demo.failures:
        print(demo._c("1;31", f"\n{len(demo.failures)} of {demo.checks} checks failed:"))
        for f in demo.failures:
            print(f"  - {f}")
        return 1
    print(demo._c("1;32", f"\nall {demo.checks} checks passed"))
    return 0


def _host_links() -> list[str]:
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True).stdout
    return [i["ifname"] for i in json.loads(out or "[]")]


def _netns_names() -> list[str]:
    try:
        return os.listdir("/run/netns")
    except FileNotFoundError:
        return []


def _tail_logs(cluster: Cluster, lines: int = 15) -> None:
    pod = getattr(cluster, "pod", None)  # the DaemonSet's pod: the kubelet's container logs
    for container, tail in (pod.log_tails(lines) if pod is not None else {}).items():
        print(f"   --- last lines of container {container}")
        for line in tail:
            print("     " + line[:300])
    for name in (*SERVICES, "run.out"):
        path = cluster.logs_dir / (name if name.endswith(".out") else f"{name}.log")
        if path.exists():
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            print(f"   --- last lines of {path}")
            for line in tail:
                print("     " + line[:300])


def _ipam_step(demo: Demo, cluster: Cluster, ipam: IpamProvider) -> None:
    """A claim that writes no address: `profile: ipam`, resolved at prepare by the example IPAM
    provider (deploy/examples/ipam_webhook.py) running on the node, where dra reaches it."""
    assert cluster.net is not None and cluster.agent is not None and cluster.allocator is not None
    nic = cluster.net.nics[1]
    cfg = {"profile": "ipam", "interface": {"name": "net1"}}
    claim = cluster.create(
        "resource.k8s.io/v1", "resourceclaims", _claim("demo-ipam", nic.name, cfg), "default"
    )
    demo.show(_strip(claim))
    pod = cluster.make_pod("demo-ipam-pod", {"nic": "demo-ipam"})
    run = cluster.run_pod(pod)
    assert run.status is not None
    demo.say(in_netns(run.status.netns, "ip", "-br", "addr", "show", "dev", "net1").stdout.rstrip())
    got = [a for a in addresses(links_in(run.status.netns).get("net1") or {}) if "." in a]
    held = ipam.pool()["held"]
    demo.say(f"the provider's pool {IPAM_POOL}: {held}")
    demo.check(
        "the pod's net1 has the address the IPAM provider handed out",
        bool(got) and sorted(got) == sorted(f"{a}/28" for a in held.values()),
        f"pod {got}, provider {held}",
    )
    cluster.remove_pod(pod, run)
    demo.check("unprepare gave the address back to the pool", ipam.pool()["held"] == {}, str(ipam.pool()))


def _extended_resource_step(demo: Demo, cluster: Cluster) -> None:
    """A pod that writes no claim: `resources.limits: {dra.net/nic: 1}` (KEP-5004). The shipped
    DeviceClass dranet-nic serves dra.net/nic for any NIC; the demo's own class, created later, wins
    the name (the newest class does) and keeps to one stand-in NIC, with a config for it."""
    assert cluster.net is not None and cluster.allocator is not None
    nic = cluster.net.nics[-1]
    before = cluster.net.snapshot()[nic.name]
    cfg = {"interface": {"name": "net1", "addresses": [nic.pod_address()]}}
    dc = device_class("dranet-demo-nic", [by_ifname(nic.name)], cfg, extended_resource="dra.net/nic")
    demo.show(_strip(cluster.create("resource.k8s.io/v1", "deviceclasses", dc)))
    limits = {"limits": {"dra.net/nic": "1"}}
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "demo-ext-pod", "namespace": "default"},
        "spec": {
            "nodeName": cluster.node_name,
            "containers": [{"name": "main", "image": "localhost/dranet/pause:1.0", "resources": limits}],
        },
    }
    pod = cluster.create("v1", "pods", body, "default")
    demo.show({"pod demo-ext-pod, container main": limits})
    run = cluster.run_pod(pod)
    status = (pod.get("status") or {}).get("extendedResourceClaimStatus") or {}
    demo.show({"pod.status.extendedResourceClaimStatus": status})
    name = status.get("resourceClaimName", "")
    claim = cluster.get("resource.k8s.io/v1", "resourceclaims", name, "default") if name else {}
    demo.show({"claim the scheduler made": _strip(claim)})
    demo.check(
        "the scheduler made the pod's claim (extended-resource-claim annotation, owned by the pod)",
        ((claim.get("metadata") or {}).get("annotations") or {}).get(
            "resource.kubernetes.io/extended-resource-claim"
        ) == "true",
    )  # fmt: skip
    assert run.status is not None
    demo.say(in_netns(run.status.netns, "ip", "-br", "addr", "show", "dev", "net1").stdout.rstrip())
    net1 = links_in(run.status.netns).get("net1") or {}
    demo.check(
        "the pod has the NIC as net1 with the class's address",
        net1.get("address") == before["address"] and nic.pod_address() in addresses(net1),
        str(net1),
    )
    cluster.remove_pod(pod, run)
    cluster.delete("resource.k8s.io/v1", "deviceclasses", "dranet-demo-nic")
    left = [c["metadata"]["name"] for c in cluster.list_objects("resource.k8s.io/v1", "resourceclaims")]
    demo.check("the pod's claim went with the pod", name not in left, str(left))
    after = wait_for(lambda: cluster.net.snapshot().get(nic.name) == before if cluster.net else None, 15.0)
    demo.check("the NIC is back on the node as it was", bool(after))


def _script(demo: Demo, cluster: Cluster) -> None:
    n = 0

    def step(title: str) -> None:
        nonlocal n
        n += 1
        demo.step(n, title)

    step("Set up: a node (netns, stand-in NICs, containerd with NRI), the API server, the driver's pod")
    cluster.start()
    assert cluster.net is not None and cluster.agent is not None and cluster.allocator is not None
    node_netns = cluster.net.node_netns
    demo.say(f"everything the demo makes on the machine is named {cluster.net.prefix}* (netns, links)")
    nic = cluster.net.nics[0]
    before = cluster.net.snapshot()[nic.name]
    demo.say(f"the NIC the pod will get: {nic.name}  (mtu {before['mtu']}, mac {before['address']})")

    step("discovery publishes the node's NICs as ResourceSlices")
    slices = cluster.wait_slices()
    for s in slices:
        demo.say(
            f"ResourceSlice {s['metadata']['name']}: pool {s['spec']['pool']['name']} "
            f"generation {s['spec']['pool']['generation']}, {len(s['spec'].get('devices') or [])} devices"
        )
        for d in s["spec"].get("devices") or []:
            attrs = d.get("attributes") or {}
            short = {
                k.split("/")[-1]: next(iter(v.values()))
                for k, v in attrs.items()
                if k.split("/")[-1] in ("ifName", "mac", "mtu", "type", "state")
            }
            demo.say(f"  device {d['name']}: {short}")
    demo.check(
        "every stand-in NIC is published", {x.name for x in cluster.net.nics} <= cluster.published_ifnames()
    )

    step("apply a DeviceClass, a ResourceClaim with an interface config, and a pod that uses it")
    cfg = {
        "interface": {"name": "eth1", "addresses": [nic.pod_address(), nic.pod_address6()], "mtu": 1400},
        "routes": [{"destination": "10.232.0.0/16", "gateway": nic.wire_ip}],
    }
    cluster.create("resource.k8s.io/v1", "deviceclasses", _device_class())
    claim = cluster.create(
        "resource.k8s.io/v1", "resourceclaims", _claim("demo-nic", nic.name, cfg), "default"
    )
    demo.show(_strip(claim))
    pod = cluster.make_pod("demo-pod", {"nic": "demo-nic"})
    demo.say(f"pod default/demo-pod uid {pod['metadata']['uid']} uses claim demo-nic")

    step("the scheduler's part (local allocator): CEL selectors against the slices -> allocation")
    (allocated,) = cluster.allocator.allocate_pod(pod)
    alloc = allocated["status"]["allocation"]
    demo.show({"allocation": alloc, "reservedFor": allocated["status"].get("reservedFor")})
    results = alloc["devices"]["results"]
    demo.check(
        "the claim is allocated the selected NIC",
        [r["device"] for r in results] == [cluster.device_name_of(nic.name)],
        str(results),
    )

    step("the kubelet's part (local node agent): NodePrepareResources over the DRA gRPC socket, then CRI")
    plugin = cluster.agent.register()
    demo.say(
        f"registration socket {plugin.registration_socket}: GetInfo -> endpoint {plugin.endpoint}, "
        f"versions {list(plugin.supported)}; using {plugin.version}"
    )
    run = cluster.agent.start_pod(pod, [allocated])
    for uid, devices in run.prepared.items():
        demo.say(f"NodePrepareResources: claim {uid}: devices {devices}")
    assert run.status is not None
    demo.say(
        f"RunPodSandbox: sandbox {run.sandbox_id[:12]} ready in "
        f"{run.timings['run_pod_sandbox'] * 1000:.0f} ms "
        f"(the NRI plugin attached the NIC before it returned); netns {run.status.netns}"
    )
    demo.check("the sandbox is ready", run.status.state == "SANDBOX_READY", run.status.state)

    step("inside the pod's network namespace (ip addr, ip route)")
    netns = run.status.netns
    demo.say(in_netns(netns, "ip", "-br", "addr").stdout.rstrip())
    demo.say(in_netns(netns, "ip", "route").stdout.rstrip())
    links = links_in(netns)
    eth1 = links.get("eth1") or {}
    demo.check("the pod has eth1", bool(eth1), f"links: {sorted(links)}")
    want = {nic.pod_address(), nic.pod_address6()}
    demo.check("eth1 has the claim's addresses", want <= addresses(eth1), f"{addresses(eth1)}")
    demo.check(
        "eth1 has the claim's MTU (1400 wins over the class's 1450)",
        eth1.get("mtu") == 1400,
        str(eth1.get("mtu")),
    )
    demo.check(
        "the claim's route is there",
        any(r.get("dst") == "10.232.0.0/16" and r.get("gateway") == nic.wire_ip for r in routes_in(netns)),
    )
    demo.check("the NIC has left the node's netns", link_info(nic.name, node_netns) is None)
    try:
        reply = wire_roundtrip(cluster.net.wire_netns, nic.wire_ip, netns)
        demo.say(f"TCP from the pod to {nic.wire_ip} (the NIC's far end): {reply!r}")
        demo.check("traffic flows through the pod's NIC", reply.startswith("hello from the wire"), reply)
    except DemoError as exc:
        demo.check("traffic flows through the pod's NIC", False, str(exc))

    step("the claim status written by the driver (ResourceClaim.status.devices)")

    def status_devices() -> list[dict[str, Any]]:
        c = cluster.get("resource.k8s.io/v1", "resourceclaims", "demo-nic", "default")
        return list((c.get("status") or {}).get("devices") or [])

    devices = wait_for(status_devices, 15.0)
    demo.show({"devices": devices})
    entry = devices[0] if devices else {}
    ready = [c for c in entry.get("conditions") or [] if c.get("type") == "Ready"]
    demo.check("the claim status says Ready", bool(ready) and ready[0].get("status") == "True", str(ready))
    demo.check(
        "networkData names eth1 and its addresses",
        (entry.get("networkData") or {}).get("interfaceName") == "eth1"
        and nic.pod_address() in ((entry.get("networkData") or {}).get("ips") or []),
        str(entry.get("networkData")),
    )

    step("the pod goes away: StopPodSandbox, RemovePodSandbox, NodeUnprepareResources")
    cluster.agent.remove_pod(run)
    demo.say(
        f"stopped in {run.timings.get('stop_pod_sandbox', 0) * 1000:.0f} ms, "
        f"unprepared in {run.timings.get('unprepare', 0) * 1000:.0f} ms"
    )
    after = wait_for(lambda: cluster.net.snapshot().get(nic.name) if cluster.net else None, 5.0)
    demo.say(
        subprocess.run(
            ["ip", *(["-n", node_netns] if node_netns else []), "-br", "addr", "show", "dev", nic.name],
            capture_output=True,
            text=True,
        ).stdout.rstrip()
    )
    demo.check(
        "the NIC is back on the node as it was (name, MTU, MAC, addresses, up)",
        after == before,
        f"before {before}, after {after}",
    )
    cluster.allocator.release_pod(pod)
    cluster.delete("v1", "pods", "demo-pod", "default")
    c = cluster.get("resource.k8s.io/v1", "resourceclaims", "demo-nic", "default")
    demo.check(
        "the claim is released (no allocation, no reservation)", not (c.get("status") or {}).get("allocation")
    )

    ipam = getattr(cluster, "ipam", None)  # the node stand-in's (node.DaemonSetCluster.ipam_pool)
    if ipam is not None:
        step("a pod whose claim writes no address: `profile: ipam`, from the IPAM provider's pool")
        _ipam_step(demo, cluster, ipam)

    step("a NIC without a claim: a pod asks `resources.limits: {dra.net/nic: 1}` (extended resource)")
    _extended_resource_step(demo, cluster)

    if importlib.util.find_spec("dranet.audit") is not None:
        step("least-privilege audit of the running services (dranet audit)")
        r = subprocess.run(
            [sys.executable, "-m", "dranet", "audit", f"--runtime-dir={cluster.runtime_dir}"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        demo.say((r.stdout + r.stderr).rstrip())
        demo.check("dranet audit passes", r.returncode == 0, f"exit {r.returncode}")
