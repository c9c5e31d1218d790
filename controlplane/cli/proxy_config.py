"""`controlplane proxy-config`: what a running control plane sent one proxy, read from its
debug port (``proxy_status`` holds the client)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from controlplane.cli import command

if TYPE_CHECKING:
    from controlplane.cli import Commands


def add(commands: Commands) -> None:
    parser = command(commands, "proxy-config", "print what one proxy was sent")
    parser.add_argument("node_id", metavar="NODE", help="the proxy's node id")
    parser.add_argument(
        "--type", choices=("clusters", "listeners", "routes", "endpoints", "secrets")
    )
    parser.add_argument("--debug-address", default="127.0.0.1:15014")
    parser.add_argument("-o", "--output", choices=("json", "yaml"), default="json")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from controlplane.cli.proxy_status import ControlPlaneUnreachable, proxy_config

    try:
        return proxy_config(args.debug_address, args.node_id, args.type, args.output)
    except ControlPlaneUnreachable as exc:
        print(f"controlplane proxy-config: {exc}", file=sys.stderr)
        return 1
