"""deploy/Dockerfile: its sources exist, its build stage works (replayed without Docker), and a
real image build where a Docker engine is available."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending = f"{pending} {line}" if pending else line
        if pending.endswith("\\"):
            pending = pending[:-1].rstrip()
            continue
        word, _, rest = pending.partition(" ")
        out.append((word.upper(), rest.strip()))
        pending = ""
    return out


def copy_sources() -> list[str]:
    """Sources of COPY instructions that read the build context (not another stage)."""
    sources = []
    for word, rest in instructions():
        if word == "COPY" and "--from=" not in rest:
            *srcs, _dest = rest.split()
            sources += srcs
    return sources


def test_base_image_and_entrypoint() -> None:
    froms = [rest for word, rest in instructions() if word == "FROM"]
    assert froms and all(f.split()[0] == "python:3.11-slim" for f in froms)
    assert ("ENTRYPOINT", '["dranet"]') in instructions()
    assert not any(word == "USER" for word, _ in instructions())  # root, capabilities set by the manifests


def test_copy_sources_exist() -> None:
    sources = copy_sources()
    assert {"pyproject.toml", "proto/", "dranet/", "services/"} <= set(sources)
    for src in sources:
        assert (ROOT / src).exists(), f"COPY {src}: missing in the build context"


def test_dockerignore_admits_every_copy_source() -> None:
    lines = (ROOT / "deploy" / "Dockerfile.dockerignore").read_text().splitlines()
    ignore = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*"
    for src in copy_sources():
        assert f"!{src}" in ignore, f"deploy/Dockerfile.dockerignore hides {src}"


def test_image_installs_supervisor_with_the_package() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("supervisor") for d in deps)
    assert any("pip wheel" in rest for word, rest in instructions() if word == "RUN")


def test_build_stage_replayed_without_docker(tmp_path: Path) -> None:
    """Run the build stage's own commands on a copy of the context: protoc, then the wheel."""
    src = tmp_path / "src"
    src.mkdir()
    for s in copy_sources():
        path = ROOT / s
        if path.is_dir():
            shutil.copytree(path, src / s, ignore=shutil.ignore_patterns("__pycache__", "*_pb2*"))
        else:
            shutil.copy(path, src / s)
    (protoc_step,) = [rest for word, rest in instructions() if word == "RUN" and "grpc_tools.protoc" in rest]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    subprocess.run(["bash", "-euo", "pipefail", "-c", protoc_step], cwd=src, env=env, check=True, timeout=120)
    assert (src / "dranet" / "_generated" / "dra_v1_pb2_grpc.py").exists()
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(wheels),
            ".",
        ],
        cwd=src,
        env=env,
        check=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("dranet-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        z.extractall(tmp_path / "site")
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "dranet = dranet.cli:main" in z.read(entry_points).decode()
    for module in ("dranet/_generated/dra_v1_pb2.py", "dranet/audit.py", "dranet/services/netns/__init__.py"):
        assert module in names
    # The generated modules import each other package-relatively and load from the wheel.
    check = "import dranet, dranet._generated.dra_v1_pb2_grpc as g; print(dranet.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", check],
        env={**env, "PYTHONPATH": str(tmp_path / "site")},
        cwd=tmp_path,  # not the checkout: `python -c` puts the working directory first on sys.path
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip().startswith(str(tmp_path / "site"))


def _docker_works() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return "no docker CLI on this machine"
    info = subprocess.run([docker, "info"], capture_output=True, text=True, timeout=30)
    if info.returncode != 0:
        return f"docker has no working engine here: {info.stderr.strip()[:200]}"
    return None


@pytest.mark.slow
def test_docker_build() -> None:
    reason = _docker_works()
    if reason:
        pytest.skip(reason)
    tag = "dranet:test-build"
    subprocess.run(["docker", "build", "-f", str(DOCKERFILE), "-t", tag, str(ROOT)], check=True, timeout=1800)
    out = subprocess.run(
        ["docker", "run", "--rm", tag, "--version"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and "dranet" in out.stdout
