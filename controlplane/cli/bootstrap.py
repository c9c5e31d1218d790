"""The Envoy bootstrap for one sidecar: who it is, where the control plane is, its admin port;
and `controlplane bootstrap`, which prints it (with a token signed by the file-mode CA)."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from controlplane.cli import command

if TYPE_CHECKING:
    from controlplane.cli import Commands

ISTIO_VERSION = "1.24.0"  # what we tell tools that read node metadata; we speak its API


def parse_labels(text: str) -> dict[str, str]:
    """``app=reviews,version=v1`` -> dict; raises ValueError naming the bad entry."""
    labels: dict[str, str] = {}
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"label {item!r} is not of the form key=value")
        labels[key.strip()] = value.strip()
    return labels


def render_bootstrap(
    *,
    node_id: str,
    namespace: str,
    labels: Mapping[str, str],
    service_account: str,
    xds_port: int,
    xds_address: str = "127.0.0.1",
    outbound_port: int | None = None,
    admin_port: int = 15000,
    delta: bool = False,
    workload_name: str = "",
    instance_ips: str = "",
    app_address: str = "",
    tcp_ports: str = "",
    extra_metadata: Mapping[str, Any] | None = None,
    xds_token: str | None = None,
    xds_root_cert: str | None = None,
    xds_san: str | None = None,
) -> dict[str, Any]:
    """The bootstrap as a dict (dump it as YAML or JSON).

    ``xds_token`` proves the proxy's identity (a token from ``controlplane bootstrap
    --ca-dir`` or a service-account token): Envoy sends it on the ADS stream as
    ``authorization: Bearer ...``. ``xds_root_cert`` (a PEM file) makes the xDS connection
    TLS, verifying the control plane against it (and its URI SAN ``xds_san``, when given).
    An ``xds_address`` that is not an IP address (a Service name in a cluster) is resolved
    by DNS.
    """
    metadata: dict[str, Any] = {
        "NAMESPACE": namespace,
        "LABELS": dict(labels),
        "SERVICE_ACCOUNT": service_account,
        "ISTIO_VERSION": ISTIO_VERSION,
        "CLUSTER_ID": "Kubernetes",
        "INTERCEPTION_MODE": "NONE" if outbound_port else "REDIRECT",
    }
    if workload_name:
        metadata["WORKLOAD_NAME"] = workload_name
    if instance_ips:
        metadata["INSTANCE_IPS"] = instance_ips
    if outbound_port:
        metadata["LOCAL_OUTBOUND_PORT"] = str(outbound_port)
    if app_address:
        metadata["LOCAL_APP_ADDRESS"] = app_address
    if tcp_ports:
        metadata["LOCAL_TCP_PORTS"] = tcp_ports
        metadata["INTERCEPTION_MODE"] = "NONE"
    metadata.update(extra_metadata or {})
    app = labels.get("app") or workload_name or service_account
    grpc_service: dict[str, Any] = {"envoy_grpc": {"cluster_name": "xds-grpc"}}
    if xds_token:
        grpc_service["initial_metadata"] = [
            {"key": "authorization", "value": f"Bearer {xds_token}"}
        ]
    bootstrap: dict[str, Any] = {
        "node": {
            "id": node_id,
            "cluster": f"{app}.{namespace}",
            "metadata": metadata,
        },
        "admin": {
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}},
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": "DELTA_GRPC" if delta else "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [grpc_service],
                "set_node_on_first_message_only": True,
            },
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {
            "clusters": [
                {
                    "name": "xds-grpc",
                    "type": "STATIC" if _is_ip(xds_address) else "STRICT_DNS",
                    "connect_timeout": "1s",
                    "load_assignment": {
                        "cluster_name": "xds-grpc",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": xds_address,
                                                    "port_value": xds_port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                }
            ]
        },
    }

    if xds_root_cert:
        validation: dict[str, Any] = {"trusted_ca": {"filename": xds_root_cert}}
        if xds_san:
            validation["match_typed_subject_alt_names"] = [
                {"san_type": "URI", "matcher": {"exact": xds_san}}
            ]
        xds_cluster = bootstrap["static_resources"]["clusters"][0]
        xds_cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "common_tls_context": {
                    "alpn_protocols": ["h2"],
                    "validation_context": validation,
                },
            },
        }
    return bootstrap


def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def bootstrap_yaml(**kwargs: Any) -> str:
    return yaml.safe_dump(render_bootstrap(**kwargs), sort_keys=False)


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
    parser.add_argument("-o", "--output", type=Path, default=None, help="write to a file")
    parser.add_argument(
        "--token-file", type=Path, default=None, help="identity token (written if --ca-dir)"
    )
    parser.add_argument("--ca-dir", type=Path, default=None, help="sign a token with this CA")
    parser.add_argument("--trust-domain", default="cluster.local")
    parser.add_argument("--token-audience", default="controlplane-xds")
    parser.add_argument("--token-ttl", type=float, default=365 * 86400.0, help="token lifetime (s)")
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
        delta=args.delta,
        app_address=args.app_address,
        tcp_ports=",".join(args.tcp_port),
        instance_ips=args.instance_ips,
        **_security(args),
    )
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _security(args: argparse.Namespace) -> dict[str, Any]:
    """Token and xDS TLS options of `controlplane bootstrap`."""
    out: dict[str, Any] = {}
    if args.ca_dir is not None:
        from datetime import timedelta

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
            args.token_file.write_text(token + "\n")
            args.token_file.chmod(0o600)
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
