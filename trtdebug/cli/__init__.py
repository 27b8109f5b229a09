"""The ``trtdebug`` command line: thin typer commands over the public API.

This package is the only one that imports typer; every command turns the library's typed
errors into one line on stderr and the documented exit code (``trtdebug.errors``).
``--verbose`` (or TRTDEBUG_TRACEBACK=1) shows the chained cause with its traceback.
"""
from __future__ import annotations

import os
import sys

from trtdebug.cli.typer_app import app
from trtdebug.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, TrtDebugError

__all__ = ["app", "main"]


def _register() -> None:
    from trtdebug.cli import compare as _compare  # noqa: F401  (commands register on import)
    from trtdebug.cli import run as _run  # noqa: F401
    from trtdebug.cli.inspect import inspect_app

    app.add_typer(inspect_app, name="inspect")


def main(argv=None) -> None:
    """Console-script entry point."""
    _register()
    verbose = "--verbose" in (argv or sys.argv) or os.environ.get("TRTDEBUG_TRACEBACK") == "1"
    _configure_logging(verbose)
    try:
        code = app(args=argv, standalone_mode=False)
    except TrtDebugError as exc:
        _fail(exc, exc.exit_code, verbose)
    except KeyboardInterrupt:
        print("trtdebug: interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except SystemExit:
        raise
    except Exception as exc:
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            print("trtdebug: aborted", file=sys.stderr)
            sys.exit(EXIT_INTERRUPTED)
        _fail(exc, EXIT_INTERNAL, verbose, internal=True)
    sys.exit(code if isinstance(code, int) else 0)


def _configure_logging(verbose: bool) -> None:
    """Warnings to stderr; TensorRT's own log only with --verbose (its errors are already part of
    the one-line error message, and its warnings are kept in the report's runner details)."""
    import logging

    logging.basicConfig(format="trtdebug: %(levelname)s: %(message)s", level=logging.INFO if verbose else logging.WARNING)
    if not verbose:
        logging.getLogger("trtdebug.tensorrt").setLevel(logging.CRITICAL)


def _fail(exc: BaseException, code: int, verbose: bool, internal: bool = False) -> None:
    if verbose:
        import traceback

        traceback.print_exception(type(exc), exc, exc.__traceback__)
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    prefix = "trtdebug: internal error: " if internal else "trtdebug: error: "
    hint = " (run with --verbose for the traceback, and please report it)" if internal and not verbose else ""
    print(f"{prefix}{message}{hint}", file=sys.stderr)
    sys.exit(code)
