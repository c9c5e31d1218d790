"""The command line: one module per command, each with ``add(commands)`` and ``run(args)``.

``main`` collects the modules in ``COMMANDS`` order (the order `--help` lists them); a
command's ``add`` declares its flags on a parser made by ``command`` here, and its ``run``
turns the parsed flags into a call into the package (``controlplane.app`` for the two that
serve) and returns the exit status. Nothing here talks to Kubernetes or holds logic of its
own beyond reading flags.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    Commands = argparse._SubParsersAction[argparse.ArgumentParser]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """`--help` shows each flag's default, where it has one worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if not _worth_showing(action.default):
            return action.help
        return super()._get_help_string(action)

    def _format_action(self, action: argparse.Action) -> str:
        if action.help is None and action.option_strings and _worth_showing(action.default):
            action = copy.copy(action)  # a flag without help text still shows its default
            action.help = "(default: %(default)s)"
        return super()._format_action(action)


def _worth_showing(default: object) -> bool:
    return default not in (None, False, [], argparse.SUPPRESS)


def command(commands: Commands, name: str, help: str) -> argparse.ArgumentParser:
    """A parser for the command ``name`` (its ``run`` is set by the caller)."""
    return commands.add_parser(name, help=help, description=help, formatter_class=HelpFormatter)


def add_serving_flags(parser: argparse.ArgumentParser) -> None:
    """The flags `serve` and `run` share: the xDS and debug ports, and the debounce."""
    parser.add_argument("--xds-port", type=int, default=15010)
    parser.add_argument("--debug-port", type=int, default=15014)
    parser.add_argument(
        "--debug-host",
        default="127.0.0.1",
        help="address of the debug port (/healthz, /ready, /metrics, /debug/*); /debug/* "
        "answers loopback clients only, or --debug-token-file holders",
    )
    parser.add_argument(
        "--debug-token-file",
        type=Path,
        default=None,
        help="a token that lets remote clients read /debug/* (Authorization: Bearer)",
    )
    parser.add_argument(
        "--debounce", type=float, default=0.1, help="quiet period before a push (s)"
    )
    parser.add_argument("--max-delay", type=float, default=10.0, help="longest a push may wait (s)")
    parser.add_argument(
        "--jwks-refresh-interval",
        type=float,
        default=20 * 60.0,
        help="how often the key set of a RequestAuthentication's jwksUri is fetched again (s)",
    )
    parser.add_argument(
        "--watch-stall-after",
        type=float,
        default=300.0,
        help="/healthz fails when a source watch has had no event and no in-step listing "
        "for this long (s)",
    )
    parser.add_argument(
        "--no-programmed",
        dest="programmed",
        action="store_false",
        help="do not compute the Programmed condition (to measure what it costs)",
    )


def debug_token(path: Path | None) -> str | None:
    """The token of ``--debug-token-file`` (exits with one line if it cannot be read)."""
    if path is None:
        return None
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise SystemExit(f"controlplane: --debug-token-file {path}: {exc.strerror}") from None
    if not token:
        raise SystemExit(f"controlplane: --debug-token-file {path} is empty")
    return token


def serving_options(args: argparse.Namespace) -> dict[str, Any]:
    """``controlplane.app.Options`` fields from ``--host`` and the ``add_serving_flags`` flags."""
    return {
        "host": args.host,
        "xds_port": args.xds_port,
        "debug_port": args.debug_port,
        "debug_host": args.debug_host,
        "debug_token": debug_token(args.debug_token_file),
        "debounce": args.debounce,
        "max_delay": args.max_delay,
        "jwks_refresh_interval": args.jwks_refresh_interval,
        "watch_stall_after": args.watch_stall_after,
        "programmed": args.programmed,
    }
