"""Growth over 3,000 runtime requests (run by `make bench`): fds, sockets, threads and RSS of the
nri, dra and netns processes, after a warm-up and at the end, and the requests that failed.

The real services as processes and a fake runtime on a real ttrpc connection (tests/soak.py; the
same run that tests/integration/test_soak.py asserts on). Prints a table; asserts nothing.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # for tests.soak

from tests.soak import Soak

WARM_UP = 400
REQUESTS = int(sys.argv[1]) if len(sys.argv) > 1 else 3000


def main() -> int:
    if os.geteuid() != 0:
        print("skipped: the netns worker keeps NET_ADMIN/SYS_ADMIN: needs root")
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="tnr-soak-"))
    soak = Soak(tmp)
    try:
        soak.start()
        soak.drive(WARM_UP)
        start = soak.usage()
        t = time.perf_counter()
        soak.drive(REQUESTS)
        elapsed = time.perf_counter() - t
        end = soak.usage()
        print(f"{soak.requests - WARM_UP} runtime requests after {WARM_UP} of warm-up, {elapsed:.1f} s\n")
        print(f"{'service':<8} {'fds':>13} {'sockets':>13} {'threads':>11} {'RSS KiB':>21}")
        for s in start:
            a, b = start[s], end[s]
            print(
                f"{s:<8} {a.fds:>4}->{b.fds:<4} {b.fds - a.fds:+4d}"
                f" {a.sockets:>4}->{b.sockets:<4} {b.sockets - a.sockets:+4d}"
                f" {a.threads:>3}->{b.threads:<3} {b.threads - a.threads:+4d}"
                f" {a.rss_kib:>6}->{b.rss_kib:<6} {b.rss_kib - a.rss_kib:+7d}"
            )
        print(f"\nfailed requests: {soak.failed} of {soak.requests}")
        for e in soak.errors:
            print(f"  {e}")
    finally:
        soak.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
