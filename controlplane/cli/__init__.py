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
from typing import TYPE_CHECKING

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
