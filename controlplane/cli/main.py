"""The one entry point: `controlplane <command>`; collects the command modules of this package."""

from __future__ import annotations

import argparse
import logging
import sys
from types import ModuleType

from controlplane.cli import (
    HelpFormatter,
    analyze,
    bootstrap,
    crds,
    demo,
    describe,
    diff,
    gateway,
    helper,
    inject,
    proxy_config,
    proxy_status,
    redirect,
    run,
    serve,
    sidecar,
    wait,
    webhook_cert,
)

# In the order `controlplane --help` lists them.
COMMANDS: tuple[ModuleType, ...] = (
    serve,
    bootstrap,
    analyze,
    describe,
    diff,
    redirect,
    proxy_status,
    proxy_config,
    demo,
    crds,
    run,
    webhook_cert,
    sidecar,
    gateway,
    wait,
    inject,
    helper,
)


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("aiohttp.access", "watchfiles", "kubernetes", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="controlplane",
        description="An Istio-compatible service-mesh control plane.",
        formatter_class=HelpFormatter,
    )
    top.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add(commands)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    _configure_logging(args.verbose)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
