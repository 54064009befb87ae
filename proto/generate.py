"""Generate dranet/_generated/*_pb2*.py(i) from the .proto files in this directory.

One generator for every path that needs the modules: the build backend (setup.py, so a wheel or
`pip install .` from a clean checkout is complete), `make proto` (the editable dev tree) and,
through the wheel, the image. Needs grpcio-tools (a build requirement in pyproject.toml).

    python proto/generate.py [OUT_DIR]      # default: dranet/_generated beside proto/
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE.parent / "dranet" / "_generated"
# protoc's gRPC output imports sibling modules as top-level ones; inside the package they must be
# package-relative.
_TOPLEVEL_IMPORT = re.compile(r"^import ([a-z0-9_]+_pb2) as ", re.MULTILINE)


def generate(out_dir: Path = DEFAULT_OUT, proto_dir: Path = HERE) -> list[Path]:
    """Write the modules for every proto_dir/*.proto into out_dir (stale ones removed first)."""
    from grpc_tools import protoc  # a build requirement; imported late so --help works without it

    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*_pb2*.py*"):
        old.unlink()
    protos = sorted(str(p) for p in proto_dir.glob("*.proto"))
    if not protos:
        return []
    include = str(Path(protoc.__file__).parent / "_proto")  # google/protobuf/*.proto
    argv = ["protoc", f"-I{proto_dir}", f"-I{include}", f"--python_out={out_dir}", f"--pyi_out={out_dir}"]
    argv += [f"--grpc_python_out={out_dir}", *protos]
    if protoc.main(argv) != 0:
        raise RuntimeError(f"protoc failed for {proto_dir}/*.proto (see its messages above)")
    written = sorted(out_dir.glob("*_pb2*.py*"))
    for path in written:
        if path.suffix == ".py":
            path.write_text(_TOPLEVEL_IMPORT.sub(r"from . import \1 as ", path.read_text()))
    return written


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    print(f"{len(generate(out))} modules in {out}")
