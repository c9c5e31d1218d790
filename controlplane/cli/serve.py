"""`controlplane serve`: the control plane in file mode (a directory of YAML)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from controlplane.cli import add_serving_flags, command, serving_options

if TYPE_CHECKING:
    from controlplane.cli import Commands


def add(commands: Commands) -> None:
    parser = command(commands, "serve", "serve xDS from a directory of YAML (file mode)")
    parser.add_argument("--config-dir", type=Path, required=True, help="directory to watch")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    add_serving_flags(parser)
    parser.add_argument(
        "--ca-dir", type=Path, default=None, help="mesh CA (cacerts layout; created if empty)"
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where the last accepted version of every resource is kept across restarts, "
        "served at start for a file that is broken then (default: CONFIG_DIR/.controlplane-state)",
    )
    parser.add_argument(
        "--no-state",
        action="store_true",
        help="keep no state: a broken file at start serves nothing",
    )
    parser.add_argument(
        "--mesh-config",
        type=Path,
        default=None,
        metavar="PATH",
        help="Istio's MeshConfig YAML, watched (default: CONFIG_DIR/mesh.yaml; istioctl's "
        "--meshConfigFile)",
    )
    parser.add_argument(
        "--trust-domain",
        default=None,
        help="the mesh CA's SPIFFE trust domain (default: trustDomain of the mesh config (mesh.yaml) "
        "at start, else cluster.local)",
    )
    parser.add_argument(
        "--workload-cert-ttl", type=float, default=86400.0, help="workload cert lifetime (s)"
    )
    parser.add_argument("--require-token", action="store_true", help="refuse proxies without one")
    parser.add_argument("--token-audience", default="controlplane-xds")
    parser.add_argument("--xds-tls", action="store_true", help="serve xDS over TLS (mesh root)")
    parser.add_argument(
        "--endpoint-max-delay",
        type=float,
        default=1.0,
        help="longest a push of endpoint changes alone may wait (s)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from controlplane.app import ControlPlane, Options
    from controlplane.sources.files import DirectorySource
    from controlplane.xds.server import PortInUse

    if not args.config_dir.is_dir():
        raise SystemExit(f"controlplane serve: {args.config_dir} is not a directory")
    if args.ca_dir is None and (args.xds_tls or args.require_token):
        raise SystemExit("controlplane serve: --xds-tls and --require-token need --ca-dir")
    options = Options(
        **serving_options(args),
        endpoint_max_delay=args.endpoint_max_delay,
        trust_domain=args.trust_domain,
        workload_cert_ttl=args.workload_cert_ttl,
        require_token=args.require_token,
        token_audience=args.token_audience,
        xds_tls=args.xds_tls,
    )
    source = DirectorySource(
        args.config_dir,
        args.ca_dir,
        state_dir=args.state_dir,
        keep_state=not args.no_state,
        mesh_config=args.mesh_config,
    )
    control_plane = ControlPlane(options, source)
    try:
        asyncio.run(control_plane.run())
    except KeyboardInterrupt:
        pass
    except PortInUse as exc:  # another control plane on the port: one line, no traceback
        print(f"controlplane serve: {exc}", file=sys.stderr)
        return 1
    return 0
