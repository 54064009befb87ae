"""deploy/Dockerfile: its sources exist, its build stage works (replayed without Docker), and a
real image build where a Docker engine is available."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
IMAGE_DIR = ROOT / "deploy" / "image"


def _load_ocipack():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("ocipack", IMAGE_DIR / "ocipack.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ocipack = _load_ocipack()


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, parsed as `make image` parses it."""
    return list(ocipack.dockerfile_instructions(DOCKERFILE))


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
    assert {"pyproject.toml", "setup.py", "proto/", "dranet/", "services/"} <= set(sources)
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
    """The build stage's own command on a copy of the build context: the wheel it makes carries the
    generated modules (the build backend makes them) and they import package-relatively."""
    src = tmp_path / "src"
    src.mkdir()
    for s in copy_sources():
        path = ROOT / s
        if path.is_dir():
            shutil.copytree(path, src / s, ignore=shutil.ignore_patterns("__pycache__", "*_pb2*"))
        else:
            (src / s).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, src / s)
    (build_step,) = [rest for word, rest in instructions() if word == "RUN" and "pip wheel" in rest]
    wheels = tmp_path / "wheels"
    # offline: this venv has the build requirements (setuptools, grpcio-tools); --no-deps, so only ours
    step = build_step.replace("pip wheel", f"{sys.executable} -m pip wheel -q --no-deps --no-build-isolation")
    step = step.replace("/wheels", str(wheels))
    subprocess.run(["bash", "-euo", "pipefail", "-c", step], cwd=src, check=True, timeout=300)
    (wheel,) = wheels.glob("dranet-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        z.extractall(tmp_path / "site")
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "dranet = dranet.cli:main" in z.read(entry_points).decode()
    for module in ("dranet/_generated/dra_v1_pb2.py", "dranet/audit.py", "dranet/services/netns/__init__.py"):
        assert module in names
    check = "import dranet, dranet._generated.dra_v1_pb2_grpc as g; print(dranet.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", check],
        env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
        cwd=tmp_path,  # not the checkout: `python -c` puts the working directory first on sys.path
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip().startswith(str(tmp_path / "site"))


def final_stage() -> list[tuple[str, str]]:
    ins = instructions()
    last_from = max(i for i, (word, _) in enumerate(ins) if word == "FROM")
    return ins[last_from + 1 :]


def test_make_image_runs_the_dockerfiles_install_steps() -> None:
    """One install for both builds: the Dockerfile's final stage installs only through
    deploy/image/install.sh, in the two steps `make image` runs in its chroot, in that order."""
    runs = [rest for word, rest in final_stage() if word == "RUN"]
    apt = [r for r in runs if "apt-get install" in r]
    steps = [re.findall(r"sh /tmp/install\.sh (\w+) /wheels", r) for r in runs if r not in apt]
    assert steps == [["deps"], ["app"]], runs
    # Debian packages beyond python: the Dockerfile's apt-get and make image's base, the same ones
    (line,) = apt
    from_apt = set(re.search(r"--no-install-recommends ([^&]+)", line)[1].split())
    include = re.search(r"--include=([\w.,+-]+)", (IMAGE_DIR / "build.sh").read_text())[1]
    extras = set(include.split(",")) - {"python3", "python3-venv", "libstdc++6"}
    assert extras == from_apt == {"pci.ids", "python3-seccomp", "isc-dhcp-client"}
    assert ("COPY", "deploy/image/install.sh /tmp/install.sh") in final_stage()
    build = (IMAGE_DIR / "build.sh").read_text()
    assert re.findall(r'in_chroot "\$R" (\w+) /tmp/wheels', build) == ["deps", "app"]
    assert '--dockerfile "$SRC/deploy/Dockerfile"' in build


def test_image_config_comes_from_the_dockerfile() -> None:
    cfg = ocipack.dockerfile_config(DOCKERFILE)
    assert cfg["Entrypoint"] == ["dranet"] and cfg["Cmd"] == ["--help"]
    env = dict(e.split("=", 1) for e in cfg["Env"])
    assert env["PATH"].split(":")[0] == "/opt/dranet/bin"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert not any(k.startswith("PIP_") for k in env)  # the build stage's settings stay there


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


def clean_copy(dest: Path) -> Path:
    """The files a commit would hold (tracked + untracked, not ignored): never .venv, never the
    generated modules of the dev tree."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


@pytest.mark.slow
def test_wheel_from_a_clean_copy_is_complete(tmp_path: Path) -> None:
    """No `make proto` first: the build backend generates the gRPC modules into the wheel; the
    development stand-ins (localcluster/, PyYAML) stay out of it; `dranet --help` and every
    command's --help work from a fresh venv with that wheel."""
    src = clean_copy(tmp_path / "src")
    assert not list((src / "dranet" / "_generated").glob("*_pb2*"))
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
            "-w",
            str(wheels),
            str(src),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("dranet-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        sources = {n: z.read(n).decode() for n in names if n.endswith(".py")}
        metadata = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert not [n for n in names if "localcluster" in n], "the development stand-ins are in the wheel"
    imports = re.compile(r"^\s*(import|from) (yaml|localcluster)\b", re.M)
    assert not [n for n, text in sources.items() if imports.search(text)]
    requires = [r for r in metadata.splitlines() if r.startswith("Requires-Dist:") and "extra ==" not in r]
    assert requires and not [r for r in requires if "pyyaml" in r.lower()], requires
    for proto in (ROOT / "proto").glob("*.proto"):
        assert f"dranet/_generated/{proto.stem}_pb2.py" in names, f"{proto.name}: no module in the wheel"
    assert "dranet/_generated/dra_v1_pb2_grpc.py" in names
    # A fresh venv with the wheel alone; its dependencies come from this venv's site-packages
    # (appended after its own, so the wheel's dranet is the one imported).
    fresh = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], check=True, timeout=120)
    fresh_py = fresh / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(fresh_py), "install", "-q", "--no-deps", str(wheel)],
        check=True,
        timeout=300,
    )
    site = subprocess.run(
        [str(fresh_py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(site, "zz-deps.pth").write_text("".join(f"{d}\n" for d in sorted(deps)))
    from dranet.cli import COMMANDS

    for command in [[], *([c] for c in COMMANDS), ["run"], ["status"]]:
        out = subprocess.run(
            [str(fresh / "bin" / "dranet"), *command, "--help"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=120,
        )
        assert out.returncode == 0, f"dranet {command} --help: {out.stderr}"
        assert "usage:" in out.stdout
    where = subprocess.run(
        [str(fresh_py), "-c", "import dranet._generated.dra_v1_pb2_grpc as g; print(g.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert where.stdout.strip().startswith(site), where
