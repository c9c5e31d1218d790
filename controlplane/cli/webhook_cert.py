"""`controlplane webhook-cert`: print the webhook TLS Secret, for clusters without
cert-manager (``controlplane.inject.certs`` makes it)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from controlplane.cli import command

if TYPE_CHECKING:
    from controlplane.cli import Commands


def add(commands: Commands) -> None:
    parser = command(commands, "webhook-cert", "print the webhook TLS Secret (no cert-manager)")
    parser.add_argument("--service", default="controlplane")
    parser.add_argument("--namespace", default="istio-system")
    parser.add_argument("-o", "--output", type=Path, default=None, help="write to a file")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import yaml

    from controlplane.inject.certs import webhook_secret

    text = yaml.safe_dump(webhook_secret(args.service, args.namespace), sort_keys=False)
    if args.output:
        args.output.write_text(text)
        args.output.chmod(0o600)
    else:
        sys.stdout.write(text)
    return 0
