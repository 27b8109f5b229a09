"""``trtdebug report``: show a saved JSON report again, or render it as HTML (pages made from CI reports)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from trtdebug.cli import common
from trtdebug.cli.typer_app import app


@app.command(help="Show a saved JSON report (--report) in the console, and optionally write it as a "
                  "self-contained HTML page. Exit code as the original run: 0 passed, 1 failed.")
def report(
    path: Path = typer.Argument(..., metavar="REPORT.json", help="A report written by run/compare --report."),
    html: Optional[Path] = typer.Option(None, "--html", help="Write a self-contained HTML page to this file."),
    order: str = typer.Option("topo", "--order", help="Console table order: topo or worst."),
    max_rows: int = typer.Option(40, "--max-rows", min=0, help="At most this many rows per table (0: all)."),
    failing_only: bool = typer.Option(False, "--failing-only", help="List only failing tensors."),
    wide: bool = typer.Option(False, "--wide", help="Every statistic in the console table."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the summary lines."),
    verbose: bool = common.VERBOSE,
) -> int:
    import trtdebug

    common.check_choice(order, ("topo", "worst"), "--order")
    outcome = trtdebug.render_report(path, html=html)
    return common.show_outcome(outcome, common.ComparisonOptions(order=order, max_rows=max_rows,
                                                                 failing_only=failing_only, wide=wide, quiet=quiet))
