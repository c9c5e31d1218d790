"""The one entry point: `controlplane <command>`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path


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
    boot.add_argument("--admin-port", type=int, default=15000)
    boot.add_argument("--delta", action="store_true", help="use Delta (incremental) xDS")
    boot.add_argument("-o", "--output", type=Path, default=None, help="write to a file")

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
    return parser


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
        )
        if args.output:
            args.output.write_text(text)
        else:
            sys.stdout.write(text)
        return 0
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
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
