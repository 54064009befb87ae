"""Build hook: every wheel (and `pip install .`) carries dranet/_generated/*_pb2*, generated from
proto/ by proto/generate.py at build time. The rest of the metadata is in pyproject.toml."""

import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithProtos(build_py):
    def run(self) -> None:
        super().run()
        spec = importlib.util.spec_from_file_location("proto_generate", ROOT / "proto" / "generate.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        # editable installs import from the source tree; wheels from build_lib
        base = ROOT if self.editable_mode else Path(self.build_lib)
        module.generate(base / "dranet" / "_generated", ROOT / "proto")


setup(cmdclass={"build_py": BuildPyWithProtos})
