"""`controlplane redirect`: install an injected pod's traffic-capture rules (the init
container's job), or print them with ``--dry-run``."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from typing import TYPE_CHECKING

from controlplane.cli import command
from controlplane.inject.iptables import CaptureConfig, restore_text

if TYPE_CHECKING:
    from controlplane.cli import Commands


def find_restore() -> str | None:
    """``iptables-restore`` from PATH or the usual sbin directories."""
    for candidate in ("iptables-restore", "/usr/sbin/iptables-restore", "/sbin/iptables-restore"):
        found = shutil.which(candidate)
        if found:
            return found
    return None


def run_redirect(config: CaptureConfig, dry_run: bool) -> int:
    text = restore_text(config)
    if dry_run:
        sys.stdout.write(text)
        return 0
    restore = find_restore()
    if restore is None:
        print(
            "controlplane redirect: iptables-restore not found (install the iptables package)",
            file=sys.stderr,
        )
        return 1
    result = subprocess.run([restore], input=text, text=True, capture_output=True)
    if result.returncode != 0:
        print(
            f"controlplane redirect: iptables-restore failed ({result.returncode}): "
            f"{result.stderr.strip()}",
            file=sys.stderr,
        )
        return 1
    return 0


def add(commands: Commands) -> None:
    parser = command(
        commands, "redirect", "install an injected pod's iptables capture rules (init container)"
    )
    parser.add_argument("--proxy-uid", type=int, default=1337)
    parser.add_argument("--proxy-gid", type=int, default=None, help="defaults to the uid")
    parser.add_argument("--inbound-capture-port", type=int, default=15006)
    parser.add_argument("--outbound-capture-port", type=int, default=15001)
    parser.add_argument("--exclude-inbound-ports", default="", help="comma-separated ports")
    parser.add_argument("--exclude-outbound-ports", default="", help="comma-separated ports")
    parser.add_argument("--dry-run", action="store_true", help="print the rules, change nothing")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from controlplane.inject.iptables import parse_ports

    try:
        config = CaptureConfig(
            proxy_uid=args.proxy_uid,
            proxy_gid=args.proxy_gid,
            inbound_capture_port=args.inbound_capture_port,
            outbound_capture_port=args.outbound_capture_port,
            exclude_inbound_ports=parse_ports(args.exclude_inbound_ports),
            exclude_outbound_ports=parse_ports(args.exclude_outbound_ports),
        )
    except ValueError as exc:
        print(f"controlplane redirect: {exc}", file=sys.stderr)
        return 2
    return run_redirect(config, args.dry_run)
