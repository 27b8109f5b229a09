"""``trtdebug compare``: compare two sets of saved outputs (model v1 vs v2, engine A vs B)."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from trtdebug.cli.typer_app import app
from trtdebug.cli import common
from trtdebug.errors import UsageError


@app.command(help="Compare two saved output sets (trtdebug --save-outputs directories or Polygraphy "
                  "--save-outputs JSON files), tensor by tensor, in topological order.")
def compare(
    reference: Path = typer.Argument(..., help="Saved outputs used as the reference."),
    test: Path = typer.Argument(..., help="Saved outputs to check against it."),
    ref_runner: Optional[str] = typer.Option(None, "--ref-runner", help="Runner to take from REFERENCE when it holds several."),
    test_runner: Optional[str] = typer.Option(None, "--test-runner", help="Runner to take from TEST when it holds several."),
    model: Optional[Path] = typer.Option(None, "--model", help="ONNX model for topological order and producers (when the saved outputs lack them)."),
    atol: Optional[List[str]] = common.ATOL,
    rtol: Optional[List[str]] = common.RTOL,
    check_error_stat: str = common.CHECK_ERROR_STAT,
    error_quantile: float = common.ERROR_QUANTILE,
    report: Optional[Path] = common.REPORT,
    html: Optional[Path] = common.HTML,
    order: str = common.ORDER,
    max_rows: int = common.MAX_ROWS,
    failing_only: bool = common.FAILING_ONLY,
    verbose: bool = common.VERBOSE,
    quiet: bool = common.QUIET,
) -> int:
    from trtdebug import pipeline
    from trtdebug.results import load_outputs, topology_of
    from trtdebug.util.files import check_output_paths

    tolerances = common.make_tolerances(atol, rtol, check_error_stat, error_quantile)
    common.check_choice(order, ("topo", "worst"), "--order")
    check_output_paths({"--report": report, "--html": html}, [reference, test, model])
    ref_set, test_set = load_outputs(reference), load_outputs(test)
    ref_result = _pick(ref_set.results, ref_runner, reference, "--ref-runner")
    test_result = _pick(test_set.results, test_runner, test, "--test-runner")
    if model is not None:
        from trtdebug.model import ModelGraph, load_model

        topology = topology_of(ModelGraph(load_model(model)))
    else:
        topology = ref_set.topology or test_set.topology
    if ref_result.runner == test_result.runner:
        # keep the two sides apart in the report
        ref_result.runner, test_result.runner = f"{ref_result.runner} ({reference.name})", f"{test_result.runner} ({test.name})"
    meta = {"reference_source": str(reference), "test_source": str(test)}
    with common.stderr_console().status("comparing") as status:
        rep = pipeline.compare_all([ref_result, test_result], tolerances=tolerances, topology=topology, meta=meta,
                                   progress=common.progress_to(status))
    return common.emit_report(rep, report_path=report, html_path=html, order=order, max_rows=max_rows,
                              failing_only=failing_only, quiet=quiet, console=common.stdout_console())


def _pick(results, name: Optional[str], source: Path, flag: str):
    if not results:
        raise UsageError(f"{source} holds no runner results")
    if name is None:
        if len(results) > 1:
            names = ", ".join(r.runner for r in results)
            raise UsageError(f"{source} holds several runners ({names}); choose one with {flag}")
        return results[0]
    for r in results:
        if r.runner == name or r.runner.startswith(name):
            return r
    raise UsageError(f"{source} has no runner {name!r} (it has: {', '.join(r.runner for r in results)})")
