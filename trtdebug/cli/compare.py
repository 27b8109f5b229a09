"""``trtdebug compare``: compare two saved output sets through :func:`trtdebug.api.compare`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from trtdebug.cli import common
from trtdebug.cli.typer_app import app


@app.command(help="Compare two saved output sets (trtdebug --save-outputs directories or Polygraphy "
                  "--save-outputs JSON files), tensor by tensor, in topological order.")
@common.comparison_options
def compare(
    reference: Path = typer.Argument(..., help="Saved outputs used as the reference."),
    test: Path = typer.Argument(..., help="Saved outputs to check against it."),
    ref_runner: Optional[str] = typer.Option(None, "--ref-runner", help="Runner to take from REFERENCE when it holds several."),
    test_runner: Optional[str] = typer.Option(None, "--test-runner", help="Runner to take from TEST when it holds several."),
    model: Optional[Path] = typer.Option(None, "--model", help="ONNX model for topological order and producers (when the saved outputs lack them)."),
    verbose: bool = common.VERBOSE,
    *,
    opts: common.ComparisonOptions,
) -> int:
    import trtdebug

    with common.stderr_console().status("comparing") as status:
        outcome = trtdebug.compare(reference, test, ref_runner=ref_runner, test_runner=test_runner, model=model,
                                   report=opts.report, html=opts.html, on_progress=common.progress_to(status),
                                   **opts.tolerance_kwargs())
    return common.show_outcome(outcome, opts)
