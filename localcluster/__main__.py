"""`python -m localcluster`: the development stand-ins' commands (`make demo` runs `demo`)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand -> (module with add_arguments/run, help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("localcluster.demo", "the full local run: the driver's pod on containerd, a pod, its NIC"),
    "apiserver": ("localcluster.apiserver", "development/test stand-in for kube-apiserver"),
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m localcluster", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        module = importlib.import_module(module_name)
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    args = parser.parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
