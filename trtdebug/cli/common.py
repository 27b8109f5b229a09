"""Options and helpers shared by the commands that compare (``run`` and ``compare``)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from trtdebug.errors import EXIT_MISMATCH, EXIT_OK, UsageError

ATOL = typer.Option(None, "--atol", help="Absolute tolerance: VALUE for all tensors or NAME:VALUE for one (repeatable). Default 1e-5.")
RTOL = typer.Option(None, "--rtol", help="Relative tolerance: VALUE or NAME:VALUE (repeatable). Default 1e-5. An element passes if |test-ref| <= atol + rtol*|ref|.")
CHECK_ERROR_STAT = typer.Option("elemwise", "--check-error-stat", help="What must be within tolerance: elemwise (every element), max, mean, median or quantile of the error.")
ERROR_QUANTILE = typer.Option(0.99, "--error-quantile", help="Quantile used by --check-error-stat quantile.")
REPORT = typer.Option(None, "--report", help="Write the comparison report as JSON to this file.")
HTML = typer.Option(None, "--html", help="Write a self-contained HTML report to this file.")
ORDER = typer.Option("topo", "--order", help="Console table order: topo (topological) or worst (largest error first).")
MAX_ROWS = typer.Option(40, "--max-rows", help="At most this many rows per table in the console (0: all).")
FAILING_ONLY = typer.Option(False, "--failing-only", help="List only failing tensors in the console table.")
VERBOSE = typer.Option(False, "--verbose", "-v", help="Show tracebacks and backend logs.")
QUIET = typer.Option(False, "--quiet", "-q", help="Print only the summary lines.")


def make_tolerances(atol: Optional[List[str]], rtol: Optional[List[str]], check_error_stat: str, error_quantile: float):
    from trtdebug.compare.tolerances import Tolerances

    return Tolerances.from_cli(atol, rtol, check_error_stat=check_error_stat, error_quantile=error_quantile)


def check_choice(value: str, choices, flag: str) -> str:
    if value not in choices:
        raise UsageError(f"{flag} must be one of {', '.join(choices)}, got {value!r}")
    return value


def emit_report(report, *, report_path: Optional[Path], html_path: Optional[Path], order: str, max_rows: int,
                failing_only: bool, quiet: bool, console) -> int:
    """Print the report, write the requested files, and return the exit code."""
    from trtdebug.render.console import print_report

    check_choice(order, ("topo", "worst"), "--order")
    if report.comparisons:
        print_report(report, console, order=order, limit=max_rows or None, show_passing=not failing_only, summary_only=quiet)
    if report_path:
        from trtdebug.render.json import write_json

        write_json(report, report_path)
        console.print(f"report written to {report_path}")
    if html_path:
        from trtdebug.render.html import write_html

        write_html(report, html_path)
        console.print(f"HTML report written to {html_path}")
    return EXIT_OK if report.passed else EXIT_MISMATCH


def stdout_console():
    """The report console; logs and CI captures are not terminals, so give tables room there."""
    import os
    import sys

    from rich.console import Console

    width = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 180
    return Console(highlight=False, soft_wrap=False, width=width)


def stderr_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def progress_to(status):
    """A comparator progress callback that updates a rich status line."""
    return lambda done, total, name: status.update(f"comparing {done}/{total}: {name}")
