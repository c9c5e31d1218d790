"""`controlplane gateway`: a gateway Pod's entry point (writes the bootstrap, runs Envoy).

Like `controlplane sidecar`, but the proxy is Envoy in router mode (node id
``router~<IP>~<pod>.<ns>~<ns>.svc.cluster.local``, as istio-proxy's ``router`` command names
it): it intercepts nothing and serves the listeners of the Gateways whose ``selector``
matches its Pod's labels (manifests/components/ingress-gateway runs it). The Pod's identity
comes from the downward API (POD_NAME, POD_NAMESPACE, INSTANCE_IP, SERVICE_ACCOUNT and the
labels file), its credential from the projected service-account token, which the supervisor
follows by hot-restarting Envoy (see ``cli/sidecar.py``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from controlplane.cli import command
from controlplane.cli.sidecar import run_sidecar

if TYPE_CHECKING:
    from controlplane.cli import Commands

ROUTER = "router"


def add(commands: Commands) -> None:
    parser = command(commands, "gateway", "(in a gateway Pod) write the bootstrap, run Envoy")
    parser.add_argument("--xds-address", default="controlplane.istio-system.svc")
    parser.add_argument("--xds-port", type=int, default=15010)
    parser.add_argument(
        "--token-path", type=Path, default=Path("/var/run/secrets/tokens/istio-token")
    )
    parser.add_argument("--labels-path", type=Path, default=Path("/etc/istio/pod/labels"))
    parser.add_argument("--bootstrap-path", type=Path, default=Path("/etc/istio/proxy/envoy.yaml"))
    parser.add_argument("--admin-port", type=int, default=15000)
    parser.add_argument("--no-exec", action="store_true", help="write the bootstrap only")
    parser.add_argument("--token-poll", type=float, default=5.0, help="check the token every N s")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    return run_sidecar(
        xds_address=args.xds_address,
        xds_port=args.xds_port,
        token_path=args.token_path,
        labels_path=args.labels_path,
        bootstrap_path=args.bootstrap_path,
        admin_port=args.admin_port,
        exec_envoy=not args.no_exec,
        poll=args.token_poll,
        proxy_type=ROUTER,
    )
