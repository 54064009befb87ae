"""A private containerd with CRI and NRI, for the tests, the benchmarks and the demo: 2.1, or 1.7
(Debian trixie's 1.7.24, NRI and CDI switched on in its config) with DRANET_CONTAINERD=1.7.

    ctrd = Containerd("/tmp/tnr-abc", cache_dir="/var/cache/dranet-ctrd")
    ctrd.up()          # downloads the Debian packages once into cache_dir, then starts
    ...ctrd.cri_socket, ctrd.nri_socket...
    ctrd.down()        # stops it (only its own pid) and removes everything it created

The work is done by the shell scripts beside this file (up.sh, down.sh, fetch.sh), which can also
be run by hand with DRANET_CTRD_RUN / DRANET_CTRD_CACHE set. See docs/nri-plugin.md.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_CACHE = os.environ.get("DRANET_CTRD_CACHE", "/var/cache/dranet-ctrd")
FETCH_FAILED = 3  # fetch.sh's exit code when the packages cannot be downloaded
VERSIONS = ("2.1", "1.7")
DEFAULT_VERSION = os.environ.get("DRANET_CONTAINERD", "2.1")  # the one variable that selects it


class ContainerdError(Exception):
    """The set-up failed; the message holds the script's output."""


class PackagesUnavailable(ContainerdError):
    """The Debian packages could not be downloaded (no network to deb.debian.org?)."""


class Containerd:
    def __init__(
        self,
        run_dir: str | Path,
        cache_dir: str | Path = DEFAULT_CACHE,
        *,
        request_timeout: str = "2s",
        registration_timeout: str = "5s",
        bridge: str = "dranetctrd0",
        subnet: str = "10.223.0.0/24",
        nri_socket: str | Path | None = None,
        netns: str | None = None,
        version: str = DEFAULT_VERSION,
    ) -> None:
        if version not in VERSIONS:
            raise ValueError(f"containerd {version!r}: supported versions are {', '.join(VERSIONS)}")
        self.version = version
        self.run_dir = Path(run_dir)
        self.cache_dir = Path(cache_dir)
        self.request_timeout = request_timeout
        self.registration_timeout = registration_timeout
        self.bridge = bridge
        self.subnet = subnet
        self._nri_socket = Path(nri_socket) if nri_socket else self.run_dir / "nri.sock"
        # a named network namespace to run in (a node stand-in's): hostNetwork pods and the CNI
        # bridge land there. nsenter --net, not `ip netns exec`, which would also remount /sys
        # without the cgroup mounts runc needs.
        self.netns = netns
        if len(str(self.cri_socket)) > 100 or len(str(self._nri_socket)) > 100:
            raise ValueError(f"{self.run_dir}: too long for a unix socket path; use a short run_dir")

    @property
    def package_root(self) -> Path:
        """Where fetch.sh unpacked this version's packages (env.sh: 1.7 in its own part of the cache)."""
        return self.cache_dir / ("1.7" if self.version == "1.7" else "") / "root"

    @property
    def ctr(self) -> Path:
        """This version's own `ctr` (another version's may not import images into it)."""
        return self.package_root / "usr" / "bin" / "ctr"

    @property
    def cri_socket(self) -> Path:
        return self.run_dir / "containerd.sock"

    @property
    def nri_socket(self) -> Path:
        return self._nri_socket

    @property
    def cdi_dir(self) -> Path:
        """The CDI spec directory this containerd reads (its only one)."""
        return self.run_dir / "cdi"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "containerd.log"

    @property
    def pid(self) -> int | None:
        try:
            return int((self.run_dir / "containerd.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "DRANET_CTRD_RUN": str(self.run_dir),
                "DRANET_CTRD_CACHE": str(self.cache_dir),
                "DRANET_CTRD_NRI_SOCK": str(self._nri_socket),
                "DRANET_CTRD_NRI_REQUEST_TIMEOUT": self.request_timeout,
                "DRANET_CTRD_NRI_REGISTRATION_TIMEOUT": self.registration_timeout,
                "DRANET_CTRD_BRIDGE": self.bridge,
                "DRANET_CTRD_SUBNET": self.subnet,
                "DRANET_PYTHON": sys.executable,
                "DRANET_CONTAINERD": self.version,
            }
        )
        return env

    def _script(self, name: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        enter = ["nsenter", f"--net=/run/netns/{self.netns}"] if self.netns else []
        return subprocess.run(
            [*enter, "bash", str(HERE / name), *args],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def fetch(self) -> None:
        """Download and unpack the packages into the cache (nothing to do when already there)."""
        r = self._script("fetch.sh")
        if r.returncode == FETCH_FAILED:
            raise PackagesUnavailable(r.stdout + r.stderr)
        if r.returncode != 0:
            raise ContainerdError(f"fetch.sh failed ({r.returncode}):\n{r.stdout}{r.stderr}")

    def up(self) -> None:
        r = self._script("up.sh")
        if r.returncode == FETCH_FAILED:
            raise PackagesUnavailable(r.stdout + r.stderr)
        if r.returncode != 0:
            raise ContainerdError(f"up.sh failed ({r.returncode}):\n{r.stdout}{r.stderr}")

    def down(self, *, purge: bool = False) -> None:
        r = self._script("down.sh", *(["--purge"] if purge else []))
        if r.returncode != 0:
            raise ContainerdError(f"down.sh failed ({r.returncode}):\n{r.stdout}{r.stderr}")

    def kill(self) -> None:
        """Stop containerd abruptly (SIGKILL), state left as is; restart() brings it back on it."""
        pid = self.pid
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        _gone(pid, 5.0)

    def restart(self) -> None:
        """Stop containerd (SIGTERM) and start it again on the same state, as a service restart does."""
        pid = self.pid
        if pid is not None:
            try:
                os.kill(pid, signal.SIGTERM)
                for _ in range(200):
                    os.kill(pid, 0)
                    time.sleep(0.05)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            # up.sh takes a live pid in the pid file for "already running": a containerd still dying
            # after the SIGKILL would be left to exit (and remove its sockets) after the "restart".
            if not _gone(pid, 10.0):
                raise ContainerdError(f"containerd (pid {pid}) still runs 10 s after SIGKILL")
        self.up()

    def running(self) -> bool:
        pid = self.pid
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False


def _gone(pid: int, timeout: float) -> bool:
    """Whether process `pid` has exited within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False
