"""The kubelet's official .proto files (Debian golang-github-kubernetes-kubelet-dev), for tests.

tests/conformance/fetch_kubelet_protos.sh puts them under .cache/kubelet-protos (or set
$DRANET_KUBELET_PROTOS to the extracted package root). They import gogo.proto for Go-only options;
those lines are stripped before compiling (they change nothing on the wire).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from pathlib import Path
from types import ModuleType

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

REPO = Path(__file__).resolve().parents[2]
PROTOS = {
    "pluginregistration": "k8s.io/kubelet/pkg/apis/pluginregistration/v1/api.proto",
    "dra_v1beta1": "k8s.io/kubelet/pkg/apis/dra/v1beta1/api.proto",
}
FETCH_HINT = "run tests/conformance/fetch_kubelet_protos.sh (needs apt access to Debian sid)"


def source_root() -> Path | None:
    base = Path(os.environ.get("DRANET_KUBELET_PROTOS", REPO / ".cache" / "kubelet-protos"))
    root = base / "usr" / "share" / "gocode" / "src"
    return root if (root / PROTOS["dra_v1beta1"]).is_file() else None


def _strip_gogo(text: str) -> str:
    text = re.sub(r'^import "github.com/gogo/protobuf/gogoproto/gogo.proto";\n', "", text, flags=re.M)
    text = re.sub(r"^option \(gogoproto\.[^;]*;\n", "", text, flags=re.M)
    return re.sub(r"\s*\[\(gogoproto\.[^\]]*\]", "", text)


def _prepare(out: Path, name: str) -> tuple[Path, str]:
    """Copy one official proto (gogo stripped) to out/src/official_<name>.proto."""
    root = source_root()
    assert root is not None, FETCH_HINT
    src = out / "src"
    src.mkdir(parents=True, exist_ok=True)
    fname = f"official_{name}.proto"
    (src / fname).write_text(_strip_gogo((root / PROTOS[name]).read_text()))
    return src, fname


def descriptor(out: Path, proto_dir: Path, fname: str) -> descriptor_pb2.FileDescriptorProto:
    """Compile one .proto into a FileDescriptorProto with grpc_tools.protoc."""
    ds = out / f"{fname}.pb"
    rc = protoc.main(["protoc", f"-I{proto_dir}", f"--descriptor_set_out={ds}", fname])
    assert rc == 0, f"protoc failed on {proto_dir / fname}"
    fds = descriptor_pb2.FileDescriptorSet.FromString(ds.read_bytes())
    return fds.file[0]


def official_descriptor(out: Path, name: str) -> descriptor_pb2.FileDescriptorProto:
    src, fname = _prepare(out, name)
    return descriptor(out, src, fname)


def official_modules(out: Path, name: str) -> tuple[ModuleType, ModuleType]:
    """(pb2, pb2_grpc) generated from the official proto, for a kubelet-like gRPC client.

    The official messages live in the same proto packages as ours, so they are loaded into a
    separate descriptor pool to avoid clashing with dranet._generated in the same process.
    """
    src, fname = _prepare(out, name)
    gen = out / "gen"
    gen.mkdir(exist_ok=True)
    rc = protoc.main(["protoc", f"-I{src}", f"--python_out={gen}", f"--grpc_python_out={gen}", fname])
    assert rc == 0, f"protoc failed on {fname}"
    mod = fname[: -len(".proto")]
    pb2_path = gen / f"{mod}_pb2.py"
    # Use a private pool: same full names as dranet._generated must not collide in the default pool.
    text = pb2_path.read_text()
    text = text.replace(
        "_sym_db = _symbol_database.Default()",
        "_sym_db = _symbol_database.Default()\n"
        "from google.protobuf import descriptor_pool as _dp\n_POOL = _dp.DescriptorPool()",
    ).replace("_descriptor_pool.Default().AddSerializedFile", "_POOL.AddSerializedFile")
    pb2_path.write_text(text)
    sys.path.insert(0, str(gen))
    try:
        pb2 = importlib.import_module(f"{mod}_pb2")
        grpc_mod = importlib.import_module(f"{mod}_pb2_grpc")
    finally:
        sys.path.remove(str(gen))
    return pb2, grpc_mod
