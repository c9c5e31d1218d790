"""`controlplane analyze`: check Istio YAML offline (``controlplane.analyze`` does the work)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from controlplane.cli import command

if TYPE_CHECKING:
    from controlplane.api.issues import Issue
    from controlplane.cli import Commands


def add(commands: Commands) -> None:
    parser = command(
        commands, "analyze", "check Istio YAML files or directories offline (like istioctl analyze)"
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="DIR|FILE")
    parser.add_argument("-n", "--namespace", default="default", help="for resources without one")
    parser.add_argument(
        "--mesh-config",
        type=Path,
        default=None,
        metavar="PATH",
        help="Istio's MeshConfig YAML (default: any mesh.yaml among the paths; istioctl's "
        "--meshConfigFile)",
    )
    parser.add_argument(
        "--ca-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="also check the mesh CA in this cacerts directory (its root's expiry)",
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
    from controlplane.analyze import analyze, render_text
    from controlplane.api.issues import Level

    report = analyze(args.paths, default_namespace=args.namespace, mesh_config=args.mesh_config)
    if args.ca_dir is not None:
        report.issues.extend(ca_findings(args.ca_dir))
    if args.output == "json":
        print(json.dumps(report.as_json(), indent=2))
    else:
        sys.stdout.write(render_text(report))
    return report.exit_status(Level(args.failure_threshold))


def ca_findings(ca_dir: Path) -> list[Issue]:
    """The root-expiry finding of the CA in ``ca_dir`` (as the running control plane logs
    it), or why the directory cannot be read as a CA."""
    from controlplane.api.certificates import root_expiry_issue
    from controlplane.ca import CAError, CertificateAuthority, DirectoryKeyStore

    try:
        bundle = DirectoryKeyStore(ca_dir).load()
        if bundle is None:
            raise SystemExit(f"controlplane analyze: --ca-dir {ca_dir} holds no CA")
        root = CertificateAuthority(bundle).signing_root
    except CAError as exc:
        raise SystemExit(f"controlplane analyze: --ca-dir {ca_dir}: {exc}") from None
    issue = root_expiry_issue(root.subject.rfc4514_string(), root.not_valid_after_utc)
    if issue is None:
        return []
    return [issue.with_context(None, str(ca_dir / "root-cert.pem"))]
