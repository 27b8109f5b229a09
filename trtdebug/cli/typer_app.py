"""The typer application every command module registers on.

In a module of its own so the command modules and ``trtdebug.cli`` (which imports them to
register them) both depend on it rather than on each other.
"""
from __future__ import annotations

from typing import Optional

import typer

from trtdebug import __version__
from trtdebug.errors import EXIT_CODES_HELP

CONTEXT = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    name="trtdebug",
    help="Find out why a model gives different answers in TensorRT than in its reference, and where.\n\n" + EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings=CONTEXT,
)


def sub_app(name: str, help: str) -> typer.Typer:
    """A command group (``trtdebug debug ...``) with the main app's settings: plain help, -h, no tracebacks."""
    return typer.Typer(name=name, help=help, no_args_is_help=True, add_completion=False,
                       pretty_exceptions_enable=False, rich_markup_mode=None, context_settings=CONTEXT)


def _version(value: bool) -> None:
    if value:
        print(f"trtdebug {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True,
                                                  help="Print the version and exit.")) -> None:
    """Find out why a model gives different answers in TensorRT than in its reference, and where."""
