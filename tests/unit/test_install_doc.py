"""Every command in docs/install.md runs in a test.

Here: the install block on a copy of deploy/kubernetes (`kustomize edit set image`, then what
`kubectl apply -k .` sends: `kubectl kustomize`, each object checked against the API schemas) and
the image build's inputs. tests/e2e/test_daemonset_pod.py runs the checks after an install
(`kubectl get` against the node stand-in's API server, `kubectl exec` as CRI ExecSync in the
named container) and builds the image (`make image`, the same install steps as the Dockerfile;
tests/unit/test_deploy_image.py builds with docker where an engine runs). `docker push` needs a
registry and is the one command not run."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from .test_deploy_manifests import MODELS, required_field_error, schema_errors

ROOT = Path(__file__).resolve().parents[2]

# How each command of install.md is tested (a command none of these claims fails the test).
CLAIMS = {
    r"docker build -f (\S+) -t (\S+) \.": "here (inputs); test_deploy_image, make image",
    r"docker push \S+": "not run: needs a registry",
    r"cd deploy/kubernetes": "here",
    r"kustomize edit set image (\S+)": "here",
    r"kubectl apply -k \.": "here (rendered and checked)",
    r"kubectl (-n \S+ )?get .*": "tests/e2e/test_daemonset_pod.py",
    r"kubectl -n \S+ exec ds/\S+ -c \S+ -- .*": "tests/e2e/test_daemonset_pod.py",
}


def install_commands() -> list[str]:
    """The commands of docs/install.md's sh blocks, one per line."""
    text = (ROOT / "docs/install.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    return [line.strip() for b in blocks for line in b.splitlines() if line.strip()]


def test_every_command_is_claimed_by_a_test() -> None:
    commands = install_commands()
    assert len(commands) >= 8
    unclaimed = [c for c in commands if not any(re.fullmatch(p, c) for p in CLAIMS)]
    assert not unclaimed, f"commands in docs/install.md that no test runs: {unclaimed}"


def set_image(kustomization: Path, spec: str) -> None:
    """`kustomize edit set image name=newName:newTag`, by kustomize when it is installed, else by
    the same edit of kustomization.yaml's images list."""
    if shutil.which("kustomize"):
        subprocess.run(["kustomize", "edit", "set", "image", spec], cwd=kustomization.parent, check=True)
        return
    name, _, ref = spec.partition("=")
    new_name, _, tag = ref.rpartition(":")
    k = yaml.safe_load(kustomization.read_text())
    k["images"] = [i for i in k.get("images") or [] if i["name"] != name]
    k["images"].append({"name": name, "newName": new_name, "newTag": tag})
    kustomization.write_text(yaml.safe_dump(k, sort_keys=False))


def test_the_install_block_renders_valid_objects_with_the_image(tmp_path: Path) -> None:
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl is missing: the install block needs it")
    copy = tmp_path / "deploy/kubernetes"
    shutil.copytree(ROOT / "deploy/kubernetes", copy)
    image = ""
    for cmd in install_commands():
        m = re.fullmatch(r"kustomize edit set image (\S+)", cmd)
        if m:
            set_image(copy / "kustomization.yaml", m[1])
            image = m[1].split("=", 1)[1]
        elif cmd == "kubectl apply -k .":
            r = subprocess.run(["kubectl", "kustomize", "."], cwd=copy, capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
            docs = [d for d in yaml.safe_load_all(r.stdout) if d]
    assert image and docs
    for doc in docs:
        model = MODELS[(doc["apiVersion"], doc["kind"])]
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        assert not schema_errors(doc, model.__name__, where), schema_errors(doc, model.__name__, where)
        assert required_field_error(doc, model) is None, where
    (ds,) = [d for d in docs if d["kind"] == "DaemonSet"]
    assert {c["image"] for c in ds["spec"]["template"]["spec"]["containers"]} == {image}


def test_the_image_build_command_names_what_exists() -> None:
    (cmd,) = [c for c in install_commands() if c.startswith("docker build")]
    argv = shlex.split(cmd)
    assert (ROOT / argv[argv.index("-f") + 1]).is_file() and argv[-1] == "."
