"""The one entry point: `controlplane <command>`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("aiohttp.access", "watchfiles", "kubernetes", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="controlplane",
        description="An Istio-compatible service-mesh control plane.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="serve xDS from a directory of YAML (file mode)")
    serve.add_argument("--config-dir", type=Path, required=True, help="directory to watch")
    serve.add_argument("--xds-port", type=int, default=15010)
    serve.add_argument("--debug-port", type=int, default=15014)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--debounce", type=float, default=0.1, help="quiet period before a push (s)")
    serve.add_argument("--max-delay", type=float, default=10.0, help="longest a push may wait (s)")
    serve.add_argument(
        "--ca-dir", type=Path, default=None, help="mesh CA (cacerts layout; created if empty)"
    )
    serve.add_argument("--trust-domain", default="cluster.local")
    serve.add_argument(
        "--workload-cert-ttl", type=float, default=86400.0, help="workload cert lifetime (s)"
    )
    serve.add_argument("--require-token", action="store_true", help="refuse proxies without one")
    serve.add_argument("--token-audience", default="controlplane-xds")
    serve.add_argument("--xds-tls", action="store_true", help="serve xDS over TLS (mesh root)")
    serve.add_argument(
        "--endpoint-max-delay",
        type=float,
        default=1.0,
        help="longest a push of endpoint changes alone may wait (s)",
    )

    boot = commands.add_parser("bootstrap", help="print the Envoy bootstrap YAML for one sidecar")
    boot.add_argument("--node-id", required=True)
    boot.add_argument("--namespace", default="default")
    boot.add_argument("--labels", default="", help="k=v,k2=v2")
    boot.add_argument("--service-account", default="default")
    boot.add_argument("--xds-port", type=int, default=15010)
    boot.add_argument("--xds-address", default="127.0.0.1")
    boot.add_argument("--outbound-port", type=int, default=None, help="local mode outbound port")
    boot.add_argument(
        "--app-address",
        default="",
        help="local mode: address of the app the inbound listeners forward to (127.0.0.1)",
    )
    boot.add_argument(
        "--tcp-port",
        action="append",
        default=[],
        metavar="HOST:PORT=LOCAL",
        help="local mode: serve service port HOST:PORT as TCP on 127.0.0.1:LOCAL (repeatable)",
    )
    boot.add_argument("--instance-ips", default="", help="the workload's IPs (a,b)")
    boot.add_argument("--admin-port", type=int, default=15000)
    boot.add_argument("--delta", action="store_true", help="use Delta (incremental) xDS")
    boot.add_argument("-o", "--output", type=Path, default=None, help="write to a file")
    boot.add_argument(
        "--token-file", type=Path, default=None, help="identity token (written if --ca-dir)"
    )
    boot.add_argument("--ca-dir", type=Path, default=None, help="sign a token with this CA")
    boot.add_argument("--trust-domain", default="cluster.local")
    boot.add_argument("--token-audience", default="controlplane-xds")
    boot.add_argument("--token-ttl", type=float, default=365 * 86400.0, help="token lifetime (s)")
    boot.add_argument("--xds-tls", action="store_true", help="TLS to the xDS port (mesh root)")
    boot.add_argument("--xds-root-cert", type=Path, default=None, help="root for --xds-tls")

    analyze = commands.add_parser(
        "analyze", help="check Istio YAML files or directories offline (like istioctl analyze)"
    )
    analyze.add_argument("paths", nargs="+", type=Path, metavar="DIR|FILE")
    analyze.add_argument("-n", "--namespace", default="default", help="for resources without one")
    analyze.add_argument("-o", "--output", choices=("text", "json"), default="text")
    analyze.add_argument(
        "--failure-threshold",
        choices=("Error", "Warning", "Info"),
        default="Error",
        help="exit 1 when a finding is at this level or worse",
    )

    redirect = commands.add_parser(
        "redirect", help="install an injected pod's iptables capture rules (init container)"
    )
    redirect.add_argument("--proxy-uid", type=int, default=1337)
    redirect.add_argument("--proxy-gid", type=int, default=None, help="defaults to the uid")
    redirect.add_argument("--inbound-capture-port", type=int, default=15006)
    redirect.add_argument("--outbound-capture-port", type=int, default=15001)
    redirect.add_argument("--exclude-inbound-ports", default="", help="comma-separated ports")
    redirect.add_argument("--exclude-outbound-ports", default="", help="comma-separated ports")
    redirect.add_argument("--dry-run", action="store_true", help="print the rules, change nothing")

    status = commands.add_parser(
        "proxy-status", help="every connected proxy and whether it is in sync, per type"
    )
    status.add_argument(
        "--debug-address", default="127.0.0.1:15014", help="the control plane's debug port"
    )
    status.add_argument("-o", "--output", choices=("table", "json"), default="table")

    config = commands.add_parser("proxy-config", help="print what one proxy was sent")
    config.add_argument("node_id", metavar="NODE", help="the proxy's node id")
    config.add_argument(
        "--type", choices=("clusters", "listeners", "routes", "endpoints", "secrets")
    )
    config.add_argument("--debug-address", default="127.0.0.1:15014")
    config.add_argument("-o", "--output", choices=("json", "yaml"), default="json")

    demo = commands.add_parser("demo", help="run the canary demo with a real Envoy")
    demo.add_argument("--requests", type=int, default=400, help="requests per step")
    demo.add_argument("--workdir", type=Path, default=None, help="keep files here")

    crds = commands.add_parser("crds", help="write the CustomResourceDefinitions (crds/)")
    crds.add_argument("--output-dir", type=Path, default=Path("crds"))
    crds.add_argument("--check", action="store_true", help="fail if the files are out of date")
    crds.add_argument("--webhooks", type=Path, default=None, help="also write the webhook manifest")

    run = commands.add_parser("run", help="the operator: watch a cluster, serve xDS (kube mode)")
    run.add_argument("--kubeconfig", type=Path, default=None, help="default: in-cluster")
    run.add_argument("--host", default="0.0.0.0", help="address for xDS and debug")
    run.add_argument("--xds-port", type=int, default=15010)
    run.add_argument("--debug-port", type=int, default=15014)
    run.add_argument("--debounce", type=float, default=0.1, help="quiet period before a push (s)")
    run.add_argument("--max-delay", type=float, default=10.0, help="longest a push may wait (s)")
    run.add_argument("--webhook-port", type=int, default=9443)
    run.add_argument("--webhook-address", default="0.0.0.0", help="address to listen on")
    run.add_argument("--webhook-host", default=None, help="host in webhook URLs (out of cluster)")
    run.add_argument("--webhook-service", default=None, help="NAME.NAMESPACE (in cluster)")
    run.add_argument(
        "--webhook-cert", type=Path, default=None, help="serving cert (enables webhooks)"
    )
    run.add_argument("--webhook-key", type=Path, default=None)
    run.add_argument("--webhook-ca", type=Path, default=None, help="CA bundle for the apiserver")
    run.add_argument("--manage-webhooks", action="store_true", help="write webhook configurations")
    run.add_argument("--webhook-resync", type=float, default=30.0, help="check them every N s")
    run.add_argument("--peering", default="controlplane", help="kopf peering name for status")
    run.add_argument("--standalone", action="store_true", help="no peering: always write status")
    run.add_argument("--no-status", action="store_true", help="never write status")
    run.add_argument("--image", default=None, help="image of injected containers")
    run.add_argument(
        "--sidecar-xds-address", default=None, help="control plane, as sidecars see it"
    )
    run.add_argument("--token-audience", default="istio-ca")
    run.add_argument("--native-sidecar", choices=["auto", "on", "off"], default="auto")
    run.add_argument("--no-mesh-ca", action="store_true", help="no CA, SDS or mTLS certificates")
    run.add_argument("--ca-namespace", default="istio-system", help="where the CA Secret lives")
    run.add_argument("--trust-domain", default="cluster.local")
    run.add_argument(
        "--workload-cert-ttl", type=float, default=24 * 3600.0, help="certificate lifetime (s)"
    )
    run.add_argument(
        "--require-token", action="store_true", help="refuse proxies without a valid token"
    )

    cert = commands.add_parser(
        "webhook-cert", help="print the webhook TLS Secret (no cert-manager)"
    )
    cert.add_argument("--service", default="controlplane")
    cert.add_argument("--namespace", default="istio-system")
    cert.add_argument("-o", "--output", type=Path, default=None, help="write to a file")

    side = commands.add_parser(
        "sidecar", help="(in an injected Pod) write the bootstrap, run Envoy"
    )
    side.add_argument("--xds-address", default="controlplane.istio-system.svc")
    side.add_argument("--xds-port", type=int, default=15010)
    side.add_argument(
        "--token-path", type=Path, default=Path("/var/run/secrets/tokens/istio-token")
    )
    side.add_argument("--labels-path", type=Path, default=Path("/etc/istio/pod/labels"))
    side.add_argument("--bootstrap-path", type=Path, default=Path("/etc/istio/proxy/envoy.yaml"))
    side.add_argument("--admin-port", type=int, default=15000)
    side.add_argument("--no-exec", action="store_true", help="write the bootstrap only")
    side.add_argument("--token-poll", type=float, default=5.0, help="check the token every N s")
    return parser


def _bootstrap_security(args: argparse.Namespace) -> dict[str, Any]:
    """Token and xDS TLS options of `controlplane bootstrap`."""
    out: dict[str, Any] = {}
    if args.ca_dir is not None:
        from datetime import timedelta

        from controlplane.cli.security import obtain_token

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
        from controlplane.cli.security import control_plane_spiffe_id

        root = args.xds_root_cert or (args.ca_dir / "root-cert.pem" if args.ca_dir else None)
        if root is None:
            raise SystemExit("controlplane bootstrap: --xds-tls needs --xds-root-cert or --ca-dir")
        out["xds_root_cert"] = str(Path(root).resolve())
        out["xds_san"] = control_plane_spiffe_id(args.trust_domain)
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _configure_logging(args.verbose)
    if args.command == "serve":
        from controlplane.cli.serve import serve

        try:
            asyncio.run(
                serve(
                    args.config_dir,
                    host=args.host,
                    xds_port=args.xds_port,
                    debug_port=args.debug_port,
                    debounce=args.debounce,
                    max_delay=args.max_delay,
                    ca_dir=args.ca_dir,
                    trust_domain=args.trust_domain,
                    workload_cert_ttl=args.workload_cert_ttl,
                    require_token=args.require_token,
                    token_audience=args.token_audience,
                    xds_tls=args.xds_tls,
                    endpoint_max_delay=args.endpoint_max_delay,
                )
            )
        except KeyboardInterrupt:
            pass
        return 0
    if args.command == "bootstrap":
        from controlplane.cli.bootstrap import bootstrap_yaml, parse_labels

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
            **_bootstrap_security(args),
        )
        if args.output:
            args.output.write_text(text)
        else:
            sys.stdout.write(text)
        return 0
    if args.command == "analyze":
        import json

        from controlplane.analyze import analyze, render_text
        from controlplane.api.issues import Level

        report = analyze(args.paths, default_namespace=args.namespace)
        if args.output == "json":
            print(json.dumps(report.as_json(), indent=2))
        else:
            sys.stdout.write(render_text(report))
        return report.exit_status(Level(args.failure_threshold))
    if args.command == "redirect":
        from controlplane.cli.redirect import run_redirect
        from controlplane.inject.iptables import CaptureConfig, parse_ports

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
    if args.command in ("proxy-status", "proxy-config"):
        from controlplane.cli.proxy_status import (
            ControlPlaneUnreachable,
            proxy_config,
            proxy_status,
        )

        try:
            if args.command == "proxy-status":
                return proxy_status(args.debug_address, args.output)
            return proxy_config(args.debug_address, args.node_id, args.type, args.output)
        except ControlPlaneUnreachable as exc:
            print(f"controlplane {args.command}: {exc}", file=sys.stderr)
            return 1
    if args.command == "demo":
        from controlplane.cli.demo import run_demo

        return run_demo(requests=args.requests, workdir=args.workdir)
    if args.command == "crds":
        from controlplane.cli.crds import write_crds, write_webhooks

        code = write_crds(args.output_dir, check=args.check)
        if args.webhooks is not None:
            code |= write_webhooks(args.webhooks, check=args.check)
        return code
    if args.command == "run":
        from controlplane.cli.run import RunOptions, run

        options = RunOptions(
            kubeconfig=args.kubeconfig,
            host=args.host,
            xds_port=args.xds_port,
            debug_port=args.debug_port,
            debounce=args.debounce,
            max_delay=args.max_delay,
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
            token_audience=args.token_audience,
            native_sidecar=args.native_sidecar,
            mesh_ca=not args.no_mesh_ca,
            ca_namespace=args.ca_namespace,
            trust_domain=args.trust_domain,
            workload_cert_ttl=args.workload_cert_ttl,
            require_token=args.require_token,
        )
        if args.image:
            options.image = args.image
        if args.sidecar_xds_address:
            options.sidecar_xds_address = args.sidecar_xds_address
        try:
            return asyncio.run(run(options))
        except KeyboardInterrupt:
            return 0
    if args.command == "webhook-cert":
        import yaml

        from controlplane.inject.certs import webhook_secret

        text = yaml.safe_dump(webhook_secret(args.service, args.namespace), sort_keys=False)
        if args.output:
            args.output.write_text(text)
            args.output.chmod(0o600)
        else:
            sys.stdout.write(text)
        return 0
    if args.command == "sidecar":
        from controlplane.cli.sidecar import run_sidecar

        return run_sidecar(
            xds_address=args.xds_address,
            xds_port=args.xds_port,
            token_path=args.token_path,
            labels_path=args.labels_path,
            bootstrap_path=args.bootstrap_path,
            admin_port=args.admin_port,
            exec_envoy=not args.no_exec,
            poll=args.token_poll,
        )
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
