"""``trtdebug debug precision``: thin command over :func:`trtdebug.precision.search.find_keep_set`."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from trtdebug.cli import common
from trtdebug.cli.debug import debug_app
from trtdebug.errors import UsageError


@debug_app.command("precision")
def precision_command(
    model: Path = typer.Argument(..., metavar="MODEL.onnx", help="The FP32 ONNX model.", show_default=False),
    out: Path = typer.Option(..., "--out", metavar="DIR", show_default=False,
                             help="Result directory: report.json and the converted model that passes (new, empty, or an earlier one)."),
    precision: str = typer.Option("fp16", "--precision", help="Reduced precision: fp16 or bf16; int8 for a Q/DQ MODEL (which quantizers to take out)."),
    backend: str = typer.Option("onnxrt", "--backend", help="Judge with: onnxrt (FP16/BF16 storage emulated on CPU)."),
    atol: float = typer.Option(1e-2, "--atol", min=0, help="Absolute tolerance on the model outputs."),
    rtol: float = typer.Option(1e-2, "--rtol", min=0, help="Relative tolerance on the model outputs."),
    load_inputs: Optional[Path] = typer.Option(None, "--load-inputs", help="Inputs (.npz or Polygraphy JSON); the first set is used."),
    input_shapes: Optional[List[str]] = typer.Option(None, "--input-shapes", help="Shapes for dynamic inputs: NAME:[dims] (repeatable)."),
    seed: int = typer.Option(1, "--seed", min=0, help="Seed for synthetic inputs."),
    max_builds: int = typer.Option(48, "--max-builds", min=1, help="Most models converted and run by the search."),
    report: Optional[Path] = typer.Option(None, "--report", metavar="FILE.json", show_default=False, help="Also write the report here."),
    fp32_model: Optional[Path] = typer.Option(None, "--fp32-model", metavar="FP32.onnx", show_default=False, help="--precision int8: the FP32 model MODEL was quantized from (default: MODEL without its Q/DQ nodes)."),
    verbose: bool = common.VERBOSE,
) -> None:
    """Find the nodes to keep in FP32 so that MODEL passes in FP16/BF16: all-reduced first, then the nodes
    that introduce the most error, then drop what is not needed. Exit 0 if a passing set was found, 1 if not."""
    from trtdebug.inputs.io import load_inputs as read_inputs
    from trtdebug.inputs.spec import parse_input_shapes
    from trtdebug.inputs.synthetic import generate_feeds
    from trtdebug.model.graph import ModelGraph
    from trtdebug.model.loader import load_model
    from trtdebug.precision.search import check_out_dir, find_keep_set, write_results
    from trtdebug.runners.onnx_common import graph_input_metadata
    from trtdebug.util.files import check_output_paths

    if precision == "int8":
        from trtdebug.cli.debug_precision_int8 import int8_command

        int8_command(model, out=out, fp32_model=fp32_model, backend=backend, atol=atol, rtol=rtol,
                     load_inputs=load_inputs, input_shapes=input_shapes, seed=seed, max_builds=max_builds, report=report)
    if fp32_model is not None:
        raise UsageError("--fp32-model applies to --precision int8 only")
    common.check_choice(precision, ("fp16", "bf16"), "--precision")
    if backend != "onnxrt":
        raise UsageError("--backend: only onnxrt is available for debug precision so far (TensorRT builds per "
                         "candidate are not wired yet)")
    check_output_paths({"--out": out, "--report": report}, [model, load_inputs])
    check_out_dir(out)
    onnx_model = load_model(model)
    if load_inputs is not None:
        feeds = read_inputs(load_inputs, model=onnx_model)[0]
    else:
        meta = graph_input_metadata(ModelGraph(onnx_model))
        feeds = generate_feeds(meta, seed=seed, shapes=parse_input_shapes(input_shapes or []))[0]
    with common.stderr_console().status("searching"):
        result = find_keep_set(onnx_model, feeds, precision=precision, atol=atol, rtol=rtol, max_builds=max_builds)
    write_results(result, out, report=report)
    console = common.stdout_console()
    if not result.keep_fp32 and result.passed:
        console.print(f"the all-{precision.upper()} model passes (atol {atol}, rtol {rtol}): nothing to keep in FP32",
                      markup=False)
    else:
        console.print(f"keep in FP32 ({len(result.keep_fp32)}): {', '.join(result.keep_fp32)}", markup=False)
    if result.attribution is not None and result.attribution.ranking():
        top = result.attribution.ranking()[0]
        console.print(f"top error introducer: {top.node} ({top.op}), introduced {top.introduced_error:.3g}", markup=False)
        if result.attribution.first_nonfinite:
            f = result.attribution.first_nonfinite
            console.print(f"first NaN/Inf: {f['tensor']} from {f['node']}", markup=False)
    console.print(f"{'passes' if result.passed else 'still fails'} after {result.builds} evaluation(s) in "
                  f"{result.seconds:.1f}s; wrote {out}", markup=False)
    raise typer.Exit(0 if result.passed else 1)
