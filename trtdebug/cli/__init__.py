"""The ``trtdebug`` command line: thin typer commands over the public API (:mod:`trtdebug.api`).

This package is the only one that imports typer.  ``main`` is the one place where anything
raised becomes a line on stderr and a documented exit code (``trtdebug.errors``):

* our typed errors -> their own code (2 usage/input, 3 backend);
* typer/click usage errors (unknown option, bad value, missing argument) -> 2, one line with the
  command's help hint.  They are caught through the classes typer itself exposes
  (``typer.BadParameter``'s bases), because typer >= 0.16 vendors click and no longer installs it;
* an OSError about a path the user gave (a directory where a file goes, a read-only mount, a
  symlink loop) -> 2, naming the path; running out of memory -> 3;
* a closed stdout (``| head -1``) is not a failure: the run's own exit code stands;
* Ctrl-C -> one line and 130 (artifacts are written atomically, so nothing partial is left), also
  when a library turns the KeyboardInterrupt into another error on its way up (numpy's ``np.save``
  raises TypeError if the interrupt lands in its path check): a SIGINT handler remembers the signal;
* anything else is a bug -> 4.

``--verbose`` (or TRTDEBUG_TRACEBACK=1) adds the chained traceback.
"""
from __future__ import annotations

import os
import signal
import sys
from typing import Optional

import typer

from trtdebug.cli.typer_app import app
from trtdebug.errors import EXIT_BACKEND, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, TrtDebugError

__all__ = ["app", "main"]

# typer re-exports these click classes whether click is vendored (typer >= 0.16) or installed.
_CLICK_EXCEPTION = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _register() -> None:
    from trtdebug.cli import compare as _compare  # noqa: F401  (commands register on import)
    from trtdebug.cli import convert as _convert  # noqa: F401
    from trtdebug.cli import debug_precision as _debug_precision  # noqa: F401
    from trtdebug.cli import report as _report  # noqa: F401
    from trtdebug.cli import run as _run  # noqa: F401
    from trtdebug.cli import surgeon as _surgeon  # noqa: F401
    from trtdebug.cli.debug import debug_app
    from trtdebug.cli.inspect import inspect_app

    app.add_typer(inspect_app, name="inspect")
    app.add_typer(debug_app, name="debug")


class _SigintWatch:
    """Remembers that Ctrl-C was pressed, then raises KeyboardInterrupt as Python's own handler does.

    An interrupt that a library converts into another exception (numpy's path check in ``np.save``
    returns its failed ``isinstance`` as a TypeError) is still an interrupt, not a bug to report."""

    received = False

    @classmethod
    def install(cls) -> None:
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
            return  # a caller's own handler (or ours, installed before) stays
        try:
            signal.signal(signal.SIGINT, cls._handle)
        except ValueError:  # not the main thread: signals go to the main thread's handler anyway
            pass

    @classmethod
    def _handle(cls, signum, frame) -> None:
        cls.received = True
        raise KeyboardInterrupt


def main(argv=None) -> None:
    """Console-script entry point."""
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = "--verbose" in args or "-v" in args or os.environ.get("TRTDEBUG_TRACEBACK") == "1"
    _configure_logging(verbose)
    _SigintWatch.install()
    try:
        _register()
        code = app(args=args, prog_name="trtdebug", standalone_mode=False)
    except KeyboardInterrupt:
        _interrupted()
    except typer.Abort:  # click turns Ctrl-C inside a command into Abort
        _interrupted()
    except _CLICK_EXCEPTION as exc:
        _usage_error(exc)
    except BrokenPipeError:
        _stdout_closed(EXIT_OK)
    except Exception as exc:  # noqa: BLE001 - every other error: one line and its exit code
        if _SigintWatch.received:
            _interrupted()
        _fail_for(exc, verbose)
    code = code if isinstance(code, int) else EXIT_OK
    if code == EXIT_INTERRUPTED:  # typer >= 0.16 turns Ctrl-C into a silent Exit(130)
        _interrupted()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _stdout_closed(code)
    sys.exit(code)


def _fail_for(exc: Exception, verbose: bool) -> None:
    """Our typed errors keep their code; an OS error on a user's path is usage; only the rest is a bug."""
    if isinstance(exc, TrtDebugError):
        _fail(exc, exc.exit_code, verbose)
    if isinstance(exc, OSError):
        if exc.filename is None:
            _fail(exc, EXIT_INTERNAL, verbose, internal=True)
        _fail(_describe_os_error(exc), EXIT_USAGE, verbose, cause=exc)
    if isinstance(exc, MemoryError):
        _fail(RuntimeError("out of memory (the model's tensors did not fit; try fewer --outputs or iterations)"),
              EXIT_BACKEND, verbose, cause=exc)
    _fail(exc, EXIT_INTERNAL, verbose, internal=True)  # the last line of defence: a bug, said as one line


def _configure_logging(verbose: bool) -> None:
    """Warnings to stderr; TensorRT's own log only with --verbose (its errors are already part of
    the one-line error message, and its warnings are kept in the report's runner details)."""
    import logging

    logging.basicConfig(format="trtdebug: %(levelname)s: %(message)s", level=logging.INFO if verbose else logging.WARNING)
    if not verbose:
        logging.getLogger("trtdebug.tensorrt").setLevel(logging.CRITICAL)


def _usage_error(exc) -> None:
    """One line: click's message plus where to look, exit 2; bare groups print their help (exit 0)."""
    ctx = getattr(exc, "ctx", None)
    if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
        print(ctx.get_help())
        sys.exit(EXIT_OK)
    message = " ".join(exc.format_message().split())
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    print(f"trtdebug: error: {message}{hint}", file=sys.stderr)
    sys.exit(EXIT_USAGE if getattr(exc, "exit_code", 1) in (1, 2) else exc.exit_code)


def _describe_os_error(exc: OSError) -> Exception:
    what = exc.strerror or type(exc).__name__
    target = f"{exc.filename} -> {exc.filename2}" if exc.filename2 else str(exc.filename)
    return OSError(f"{target}: {what}")


def _interrupted() -> None:
    print("trtdebug: interrupted (nothing partial was written)", file=sys.stderr)
    sys.exit(EXIT_INTERRUPTED)


def _stdout_closed(code: int) -> None:
    """The reader of our stdout went away (``| head``): not a failure; keep Python from complaining at exit."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    sys.exit(code)


def _fail(exc: BaseException, code: int, verbose: bool, internal: bool = False, cause: Optional[BaseException] = None) -> None:
    if verbose:
        import traceback

        shown = cause or exc
        traceback.print_exception(type(shown), shown, shown.__traceback__)
        details = getattr(exc, "details", None)  # e.g. every line of TensorRT's parser errors
        if details:
            print(details, file=sys.stderr)
    text = str(exc).strip()
    message = " ".join(text.splitlines()[0].split()) if text else type(exc).__name__
    prefix = "trtdebug: internal error: " if internal else "trtdebug: error: "
    hint = " (run with --verbose for the traceback, and please report it)" if internal and not verbose else ""
    if internal:
        message = f"{type(exc).__name__}: {message}"
    print(f"{prefix}{message}{hint}", file=sys.stderr)
    sys.exit(code)
