"""``trtdebug debug precision MODEL --precision int8``: thin command over :func:`trtdebug.precision.int8.find_fp32_set`.

Kept apart from the FP16/BF16 command body: its model is a Q/DQ model, its unit a quantizer, and
its deliverable that model with the fewest quantizers taken out.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from trtdebug.cli import common
from trtdebug.errors import UsageError


def int8_command(model: Path, *, out: Path, fp32_model: Optional[Path], backend: str, atol: float, rtol: float,
                 load_inputs: Optional[Path], input_shapes: Optional[List[str]], seed: int, max_builds: int,
                 report: Optional[Path]) -> None:
    """Run the INT8 search and print its summary; exits 0 if the fixed model passes, 1 if not."""
    from trtdebug.inputs.io import load_inputs as read_inputs
    from trtdebug.inputs.spec import parse_input_shapes
    from trtdebug.inputs.synthetic import generate_feeds
    from trtdebug.model.graph import ModelGraph
    from trtdebug.model.loader import load_model
    from trtdebug.precision.int8 import FIXED_MODEL, check_out_dir, find_fp32_set, write_results
    from trtdebug.runners.onnx_common import graph_input_metadata
    from trtdebug.util.files import check_output_paths

    if backend != "onnxrt":
        raise UsageError("--backend: only onnxrt is available for --precision int8 so far")
    check_output_paths({"--out": out, "--report": report}, [model, load_inputs, fp32_model])
    check_out_dir(out)
    onnx_model = load_model(model)
    reference = load_model(fp32_model) if fp32_model is not None else None
    if load_inputs is not None:
        feeds = read_inputs(load_inputs, model=onnx_model)[0]
    else:
        meta = graph_input_metadata(ModelGraph(onnx_model))
        feeds = generate_feeds(meta, seed=seed, shapes=parse_input_shapes(input_shapes or []))[0]
    with common.stderr_console().status("ranking quantizers") as status:
        result = find_fp32_set(onnx_model, feeds, fp32_model=reference, atol=atol, rtol=rtol, max_builds=max_builds,
                               fp32_source=str(fp32_model) if fp32_model else None,
                               progress=common.progress_to(status))
    write_results(result, out, report=report)
    console = common.stdout_console()
    before = "passes" if result.before["passed"] else "fails"
    console.print(f"the INT8 model {before} against FP32 ({'given' if fp32_model else 'derived'}; atol {atol}, "
                  f"rtol {rtol})", markup=False)
    for e in result.attribution[:5]:
        if e.introduced_error is not None:
            console.print(f"  {e.quantizer.name} on {e.tensor}: introduces {e.introduced_error:.3g} at the outputs "
                          f"(worst channel: local {_fmt(e.local_error)}, accumulated {_fmt(e.accumulated_error)}"
                          + (f", {e.clipped_fraction * 100:.2g}% saturated" if e.out_of_range else "") + ")", markup=False)
    if result.keep_fp32:
        console.print(f"keep in FP32 ({len(result.keep_fp32)} quantizer(s) taken out): {', '.join(result.keep_fp32)}",
                      markup=False)
    for note in result.notes:
        common.stderr_console().print(note, markup=False)
    console.print(f"{'passes' if result.passed else 'still fails'} after {result.builds} evaluation(s) in "
                  f"{result.seconds:.1f}s; wrote {out / 'report.json'} and {out / FIXED_MODEL}", markup=False)
    raise typer.Exit(0 if result.passed else 1)


def _fmt(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.3g}"
