"""What the commands that compare (``run``, ``compare``, ``report``) share: options and output.

typer has no option groups, so the comparison and report options are declared once here and
added to a command's signature by :func:`comparison_options`; the command receives them as one
:class:`ComparisonOptions` object.
"""
from __future__ import annotations

import functools
import inspect
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import List, Optional

import typer

from trtdebug.errors import UsageError


@dataclass
class ComparisonOptions:
    """The shared options, as the command receives them."""

    atol: Optional[List[str]] = None
    rtol: Optional[List[str]] = None
    check_error_stat: str = "elemwise"
    error_quantile: float = 0.99
    report: Optional[Path] = None
    html: Optional[Path] = None
    order: str = "topo"
    max_rows: int = 40
    failing_only: bool = False
    wide: bool = False
    quiet: bool = False

    def tolerance_kwargs(self) -> dict:
        """Keyword arguments for :func:`trtdebug.api.run` / ``compare``."""
        return {"atol": self.atol, "rtol": self.rtol, "check_error_stat": self.check_error_stat,
                "error_quantile": self.error_quantile}


_SHARED = {
    "atol": (Optional[List[str]], typer.Option(None, "--atol", help="Absolute tolerance: VALUE for all tensors or NAME:VALUE for one (repeatable). Default 1e-5.")),
    "rtol": (Optional[List[str]], typer.Option(None, "--rtol", help="Relative tolerance: VALUE or NAME:VALUE (repeatable). Default 1e-5. An element passes if |test-ref| <= atol + rtol*|ref|.")),
    "check_error_stat": (str, typer.Option("elemwise", "--check-error-stat", help="What must be within tolerance: elemwise (every element), max, mean, median or quantile of the error.")),
    "error_quantile": (float, typer.Option(0.99, "--error-quantile", help="Quantile used by --check-error-stat quantile.")),
    "report": (Optional[Path], typer.Option(None, "--report", help="Write the comparison report as JSON to this file.")),
    "html": (Optional[Path], typer.Option(None, "--html", help="Write a self-contained HTML report to this file.")),
    "order": (str, typer.Option("topo", "--order", help="Console table order: topo (topological) or worst (largest error first).")),
    "max_rows": (int, typer.Option(40, "--max-rows", min=0, help="At most this many rows per table in the console (0: all).")),
    "failing_only": (bool, typer.Option(False, "--failing-only", help="List only failing tensors in the console table.")),
    "wide": (bool, typer.Option(False, "--wide", help="Every statistic in the console table (the HTML page always has them).")),
    "quiet": (bool, typer.Option(False, "--quiet", "-q", help="Print only the summary lines.")),
}
assert set(_SHARED) == {f.name for f in fields(ComparisonOptions)}

VERBOSE = typer.Option(False, "--verbose", "-v", help="Show tracebacks and backend logs.")


def option_group(name: str, shared, make):
    """A decorator adding the options ``shared`` ({parameter: (annotation, typer.Option)}) to a typer
    command; the command receives ``make(**their values)`` as its parameter ``name``.

    typer has no option groups: this is how several commands declare one set of options once."""
    def decorate(func):
        hints = typing.get_type_hints(func)  # the command module's string annotations, resolved there
        signature = inspect.signature(func)
        extra = [inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)
                 for key, (annotation, option) in shared.items()]

        @functools.wraps(func)
        def command(**kwargs):
            return func(**{name: make(**{key: kwargs.pop(key) for key in shared})}, **kwargs)

        params = [p.replace(annotation=hints.get(p.name, p.annotation))
                  for p in signature.parameters.values() if p.name != name] + extra
        command.__signature__ = signature.replace(parameters=params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command
    return decorate


def _comparison(**values) -> ComparisonOptions:
    opts = ComparisonOptions(**values)
    check_choice(opts.order, ("topo", "worst"), "--order")
    return opts


# adds the shared options to a typer command; it receives them as ``opts: ComparisonOptions``
comparison_options = option_group("opts", _SHARED, _comparison)


def check_choice(value: str, choices, flag: str) -> str:
    if value not in choices:
        raise UsageError(f"{flag} must be one of {', '.join(choices)}, got {value!r}")
    return value


def show_outcome(outcome, opts: ComparisonOptions) -> int:
    """Print the report and the outcome's notes; return the exit code."""
    from trtdebug.render.console import print_report

    out, err = stdout_console(), stderr_console()
    if outcome.report is not None and outcome.report.comparisons:
        print_report(outcome.report, out, order=opts.order, limit=opts.max_rows or None,
                     show_passing=not opts.failing_only, summary_only=opts.quiet, wide=opts.wide)
    for note in outcome.notes:
        err.print(note, markup=False)
    return outcome.exit_code


def stdout_console():
    """The report console; logs and CI captures are not terminals, so give tables room there."""
    import os
    import sys

    from rich.console import Console

    class ReportConsole(Console):
        def on_broken_pipe(self) -> None:
            """The reader went away (``| head``): stop printing but finish the run, whose exit code stands
            (rich's default exits with 1, which CI would read as an accuracy failure)."""
            self.quiet = True
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())

    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 180
    return ReportConsole(highlight=False, soft_wrap=False, width=width)


def stderr_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def progress_to(status):
    """A comparator progress callback that updates a rich status line."""
    return lambda done, total, name: status.update(f"comparing {done}/{total}: {name}")
