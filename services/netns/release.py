"""`dranet netns-release`: the operator's way out for a device whose restore keeps failing.

The worker keeps an attachment whose device it could not move back out of a pod netns and retries
it; meanwhile other claims of the device are refused with this command in the message. Run it
once the interface is back on the node (or given up): the worker forgets the attachment without
touching the kernel, and the device can be claimed again.
"""

from __future__ import annotations

import argparse
import json

from dranet.bus.client import BusClient
from dranet.bus.messages import BusError
from dranet.settings import settings_from_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pod-uid", required=True, help="the pod UID the worker holds the device for")
    parser.add_argument("--device", required=True, help="the DRA device name")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait (default 5)")


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    client = BusClient(settings.runtime_dir, "netns", timeout=args.timeout)
    try:
        result = client.call("release", {"pod_uid": args.pod_uid, "device": args.device})
    except BusError as err:
        print(f"release failed: {err.code}: {err.message}")
        return 1
    finally:
        client.close()
    print(json.dumps(result))
    return 0
