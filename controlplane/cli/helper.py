"""`controlplane helper log-collect | config-sync | secrets-agent`: the programs the example
injection templates (examples/injection-templates/) run beside an application."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from controlplane.cli import command

if TYPE_CHECKING:
    from controlplane.cli import Commands


def add(commands: Commands) -> None:
    parser = command(commands, "helper", "run a helper of the example injection templates")
    helpers = parser.add_subparsers(dest="helper", required=True, metavar="HELPER")
    logs = helpers.add_parser("log-collect", help="follow log files, ship their lines")
    logs.add_argument("--config", type=Path, required=True, help="the collector's YAML config")
    sync = helpers.add_parser("config-sync", help="keep a config directory current")
    sync.add_argument("--source", required=True, help="a directory or an http(s) URL")
    sync.add_argument("--dest", type=Path, required=True)
    sync.add_argument("--interval", type=float, default=30.0, help="seconds between rounds")
    sync.add_argument("--token-file", type=Path, default=None, help="Bearer token (http source)")
    sync.add_argument("--once", action="store_true", help="one round, then exit")
    agent = helpers.add_parser("secrets-agent", help="fetch and rotate secrets into files")
    agent.add_argument("--address", required=True, help="the secret store (Vault API)")
    agent.add_argument("--role", required=True)
    agent.add_argument("--auth-path", default="kubernetes")
    agent.add_argument("--token-file", type=Path, required=True, help="projected SA token")
    agent.add_argument(
        "--annotations-file", type=Path, required=True, help="downward API annotations"
    )
    agent.add_argument("--dest", type=Path, required=True)
    agent.add_argument("--interval", type=float, default=300.0, help="seconds between rounds")
    agent.add_argument("--once", action="store_true", help="one round, then exit")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    if args.helper == "log-collect":
        from controlplane.inject.helpers import logs

        return logs.run(args.config, lambda: stopping)
    from controlplane.inject.helpers import sync

    if args.helper == "config-sync":

        def config_round() -> list[str]:
            return sync.sync_directory(sync.read_source(args.source, args.token_file), args.dest)

        marker = args.dest / sync.READY_MARKER
        return sync.loop(
            config_round, args.interval, "config-sync", lambda: stopping, args.once, marker
        )

    def secrets_round() -> list[str]:
        annotations = sync.parse_downward_annotations(args.annotations_file.read_text())
        wanted = sync.wanted_secrets(annotations)
        if not wanted:
            print("secrets-agent: the pod names no secrets", file=sys.stderr)
        jwt = args.token_file.read_text().strip()
        files = sync.fetch_secrets(args.address, args.role, jwt, wanted, args.auth_path)
        return sync.sync_directory(files, args.dest, mode=0o440)

    marker = args.dest / sync.READY_MARKER
    return sync.loop(
        secrets_round, args.interval, "secrets-agent", lambda: stopping, args.once, marker
    )
