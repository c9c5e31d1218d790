"""`controlplane run`: the operator (cluster mode). kopf watches the cluster, the store
compiles, xDS serves; ``controlplane.sources.kube`` holds everything that talks to the
cluster."""

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
    parser = command(commands, "run", "the operator: watch a cluster, serve xDS (kube mode)")
    parser.add_argument("--kubeconfig", type=Path, default=None, help="default: in-cluster")
    parser.add_argument("--host", default="0.0.0.0", help="address for xDS")
    add_serving_flags(parser)
    parser.add_argument("--webhook-port", type=int, default=9443)
    parser.add_argument("--webhook-address", default="0.0.0.0", help="address to listen on")
    parser.add_argument(
        "--webhook-host", default=None, help="host in webhook URLs (out of cluster)"
    )
    parser.add_argument("--webhook-service", default=None, help="NAME.NAMESPACE (in cluster)")
    parser.add_argument(
        "--webhook-cert", type=Path, default=None, help="serving cert (enables webhooks)"
    )
    parser.add_argument("--webhook-key", type=Path, default=None)
    parser.add_argument("--webhook-ca", type=Path, default=None, help="CA bundle for the apiserver")
    parser.add_argument(
        "--manage-webhooks", action="store_true", help="write webhook configurations"
    )
    parser.add_argument("--webhook-resync", type=float, default=30.0, help="check them every N s")
    parser.add_argument("--peering", default="controlplane", help="kopf peering name for status")
    parser.add_argument("--standalone", action="store_true", help="no peering: always write status")
    parser.add_argument("--no-status", action="store_true", help="never write status")
    parser.add_argument(
        "--no-gateway-deployment",
        action="store_true",
        help="never create Deployments/Services for Gateway API Gateways",
    )
    parser.add_argument("--image", default=None, help="image of injected containers")
    parser.add_argument(
        "--sidecar-xds-address", default=None, help="control plane, as sidecars see it"
    )
    parser.add_argument("--token-audience", default="istio-ca")
    parser.add_argument("--native-sidecar", choices=["auto", "on", "off"], default="auto")
    parser.add_argument("--no-mesh-ca", action="store_true", help="no CA, SDS or mTLS certificates")
    parser.add_argument(
        "--ca-namespace",
        default="istio-system",
        help="the control plane's namespace: the CA Secret and the injector's ConfigMap "
        "(istio-sidecar-injector) live there",
    )
    parser.add_argument(
        "--trust-domain",
        default=None,
        help="the mesh CA's SPIFFE trust domain (default: trustDomain of the istio ConfigMap's mesh key "
        "at start, else cluster.local)",
    )
    parser.add_argument(
        "--workload-cert-ttl", type=float, default=24 * 3600.0, help="certificate lifetime (s)"
    )
    parser.add_argument(
        "--require-token", action="store_true", help="refuse proxies without a valid token"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from controlplane.app import ControlPlane, Options
    from controlplane.sources.kube.cluster import ClusterOptions, ClusterSource
    from controlplane.xds.server import PortInUse

    options = Options(
        **serving_options(args),
        trust_domain=args.trust_domain,
        workload_cert_ttl=args.workload_cert_ttl,
        require_token=args.require_token,
        token_audience=args.token_audience,
    )
    cluster = ClusterOptions(
        kubeconfig=args.kubeconfig,
        xds_port=args.xds_port,
        webhook_port=args.webhook_port,
        webhook_address=args.webhook_address,
        webhook_host=args.webhook_host,
        webhook_service=args.webhook_service,
        webhook_cert=args.webhook_cert,
        webhook_key=args.webhook_key,
        webhook_ca=args.webhook_ca,
        manage_webhooks=args.manage_webhooks,
        webhook_resync=args.webhook_resync,
        peering=None if args.standalone else args.peering,
        write_status=not args.no_status,
        deploy_gateways=not args.no_gateway_deployment,
        token_audience=args.token_audience,
        native_sidecar=args.native_sidecar,
        mesh_ca=not args.no_mesh_ca,
        ca_namespace=args.ca_namespace,
    )
    if args.image:
        cluster.image = args.image
    if args.sidecar_xds_address:
        cluster.sidecar_xds_address = args.sidecar_xds_address
    try:
        return asyncio.run(ControlPlane(options, ClusterSource(cluster)).run())
    except KeyboardInterrupt:
        return 0
    except PortInUse as exc:  # another control plane on the port: one line, no traceback
        print(f"controlplane run: {exc}", file=sys.stderr)
        return 1
