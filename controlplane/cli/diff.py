"""`controlplane diff FILE...`: before a change is applied, which Envoy resources it changes
for which proxies, a readable diff for one proxy, and every finding analyze would report;
exits 1 (for CI) when a finding is at the threshold. ``controlplane.analyze.diff`` does the
work."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from controlplane.cli import command
from controlplane.cli.describe import add_mesh_source, load_mesh

if TYPE_CHECKING:
    from controlplane.cli import Commands


def add(commands: Commands) -> None:
    parser = command(
        commands,
        "diff",
        "what applying FILE... would change: Envoy resources by proxy and type, and findings",
    )
    parser.add_argument("files", nargs="*", type=Path, metavar="FILE")
    parser.add_argument(
        "--delete",
        action="append",
        default=[],
        metavar="KIND/NAMESPACE/NAME",
        help="a resource the change deletes (repeatable)",
    )
    parser.add_argument("-n", "--namespace", default="default", help="for resources without one")
    add_mesh_source(parser)
    parser.add_argument(
        "--proxy", default=None, metavar="POD", help="show the diff of this proxy (NAMESPACE/POD)"
    )
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")
    parser.add_argument(
        "--failure-threshold",
        choices=("Error", "Warning", "Info"),
        default="Error",
        help="exit 1 when a finding is at this level or worse",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from controlplane.analyze.diff import diff, parse_key, render_text
    from controlplane.api.issues import Level

    try:
        deletes = [parse_key(k) for k in args.delete]
    except ValueError as exc:
        print(f"controlplane diff: --delete {exc}", file=sys.stderr)
        return 2
    if not args.files and not deletes:
        print("controlplane diff: name a FILE or a --delete", file=sys.stderr)
        return 2
    loaded = load_mesh(args)
    report = diff(
        loaded, args.files, default_namespace=args.namespace, proxy=args.proxy, deletes=deletes
    )
    if args.output == "json":
        print(json.dumps(report.as_json(), indent=2))
    else:
        sys.stdout.write(render_text(report))
    return report.exit_status(Level(args.failure_threshold))
