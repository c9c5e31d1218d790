"""`controlplane bootstrap`: print the Envoy bootstrap of one sidecar
(``controlplane.inject.bootstrap``), with a token signed by the file-mode CA."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controlplane.cli import command
from controlplane.inject.bootstrap import bootstrap_yaml, parse_labels, write_private

if TYPE_CHECKING:
    from controlplane.cli import Commands

# A bootstrap token is a bearer credential written into a file and into Envoy's bootstrap
# (Envoy's ADS client takes the header value literally: its /config_dump shows it), so it is
# kept as short-lived as the service-account tokens Kubernetes projects into pods.
MAX_TOKEN_TTL = 3600.0


def add(commands: Commands) -> None:
    parser = command(commands, "bootstrap", "print the Envoy bootstrap YAML for one sidecar")
    parser.add_argument("--node-id", required=True)
    parser.add_argument("--namespace", default="default")
    parser.add_argument("--labels", default="", help="k=v,k2=v2")
    parser.add_argument("--service-account", default="default")
    parser.add_argument("--xds-port", type=int, default=15010)
    parser.add_argument("--xds-address", default="127.0.0.1")
    parser.add_argument("--outbound-port", type=int, default=None, help="local mode outbound port")
    parser.add_argument(
        "--app-address",
        default="",
        help="local mode: address of the app the inbound listeners forward to (127.0.0.1)",
    )
    parser.add_argument(
        "--tcp-port",
        action="append",
        default=[],
        metavar="HOST:PORT=LOCAL",
        help="local mode: serve service port HOST:PORT as TCP on 127.0.0.1:LOCAL (repeatable)",
    )
    parser.add_argument("--instance-ips", default="", help="the workload's IPs (a,b)")
    parser.add_argument("--admin-port", type=int, default=15000)
    parser.add_argument("--delta", action="store_true", help="use Delta (incremental) xDS")
    parser.add_argument(
        "--on-demand",
        action="store_true",
        help="fetch virtual hosts (VHDS) and HTTP clusters when first called (implies --delta; "
        "node metadata ON_DEMAND)",
    )
    parser.add_argument(
        "--prometheus-port",
        type=int,
        default=None,
        help="serve Envoy's statistics in Prometheus text on this port at /stats/prometheus "
        "(Istio's is 15090, which `controlplane sidecar` uses in a Pod; here, where several "
        "proxies may share a host, give each its own port)",
    )
    parser.add_argument("-o", "--output", type=Path, default=None, help="write to a file")
    parser.add_argument(
        "--token-file", type=Path, default=None, help="identity token (written if --ca-dir)"
    )
    parser.add_argument("--ca-dir", type=Path, default=None, help="sign a token with this CA")
    parser.add_argument("--trust-domain", default="cluster.local")
    parser.add_argument("--token-audience", default="controlplane-xds")
    parser.add_argument(
        "--token-ttl",
        type=float,
        default=MAX_TOKEN_TTL,
        help=f"token lifetime (s), at most {MAX_TOKEN_TTL:.0f} (Kubernetes' projected tokens "
        "rotate hourly); a proxy connected keeps its stream, one that reconnects later needs "
        "a new token",
    )
    parser.add_argument("--xds-tls", action="store_true", help="TLS to the xDS port (mesh root)")
    parser.add_argument("--xds-root-cert", type=Path, default=None, help="root for --xds-tls")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        labels = parse_labels(args.labels)
    except ValueError as exc:
        print(f"controlplane bootstrap: --labels: {exc}", file=sys.stderr)
        return 2
    text = bootstrap_yaml(
        node_id=args.node_id,
        namespace=args.namespace,
        labels=labels,
        service_account=args.service_account,
        xds_port=args.xds_port,
        xds_address=args.xds_address,
        outbound_port=args.outbound_port,
        admin_port=args.admin_port,
        delta=args.delta or args.on_demand,
        extra_metadata={"ON_DEMAND": "true"} if args.on_demand else None,
        app_address=args.app_address,
        tcp_ports=",".join(args.tcp_port),
        instance_ips=args.instance_ips,
        prometheus_port=args.prometheus_port or None,
        **_security(args),
    )
    if args.output:
        write_private(args.output, text)  # it may carry the token: 0600
    else:
        sys.stdout.write(text)
    return 0


def _security(args: argparse.Namespace) -> dict[str, Any]:
    """Token and xDS TLS options of `controlplane bootstrap`."""
    out: dict[str, Any] = {}
    if args.ca_dir is not None:
        from datetime import timedelta

        if not 0 < args.token_ttl <= MAX_TOKEN_TTL:
            raise SystemExit(
                f"controlplane bootstrap: --token-ttl {args.token_ttl:g}: must be more than 0 "
                f"and at most {MAX_TOKEN_TTL:.0f} s (tokens are bearer credentials)"
            )

        from controlplane.app import obtain_token

        token = obtain_token(
            args.ca_dir,
            args.namespace,
            args.service_account,
            trust_domain=args.trust_domain,
            audience=args.token_audience,
            ttl=timedelta(seconds=args.token_ttl),
        )
        if args.token_file is not None:
            write_private(args.token_file, token + "\n")
        out["xds_token"] = token
    elif args.token_file is not None:
        out["xds_token"] = args.token_file.read_text().strip()
    if args.xds_tls:
        from controlplane.app import control_plane_spiffe_id

        root = args.xds_root_cert or (args.ca_dir / "root-cert.pem" if args.ca_dir else None)
        if root is None:
            raise SystemExit("controlplane bootstrap: --xds-tls needs --xds-root-cert or --ca-dir")
        out["xds_root_cert"] = str(Path(root).resolve())
        out["xds_san"] = control_plane_spiffe_id(args.trust_domain)
    return out
