"""The typer application every command module registers on.

In a module of its own so the command modules and ``trtdebug.cli`` (which imports them to
register them) both depend on it rather than on each other.
"""
from __future__ import annotations

import typer

from trtdebug.errors import EXIT_CODES_HELP

app = typer.Typer(
    name="trtdebug",
    help="Find out why a model gives different answers in TensorRT than in its reference, and where.\n\n" + EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
