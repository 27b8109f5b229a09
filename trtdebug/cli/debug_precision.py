"""``trtdebug debug precision``: thin command over :func:`trtdebug.precision.debug.debug_precision`."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from trtdebug.cli import common
from trtdebug.cli.debug import OPT_LEVEL, TF32, TRT_RTX, debug_app
from trtdebug.errors import UsageError


@debug_app.command("precision")
def precision_command(
    model: Path = typer.Argument(..., metavar="MODEL.onnx", help="The FP32 ONNX model.", show_default=False),
    out: Path = typer.Option(..., "--out", metavar="DIR", show_default=False,
                             help="Result directory: report.json and the converted model that passes (new, empty, or an earlier one)."),
    precision: str = typer.Option("fp16", "--precision", help="Reduced precision: fp16 or bf16; int8 for a Q/DQ MODEL (which quantizers to take out)."),
    backend: str = typer.Option("onnxrt", "--backend", help="Judge with: onnxrt (FP16/BF16 storage emulated on CPU) or "
                                                            "trt (TensorRT engines, each built in a child process)."),
    atol: float = typer.Option(1e-2, "--atol", min=0, help="Absolute tolerance on the model outputs."),
    rtol: float = typer.Option(1e-2, "--rtol", min=0, help="Relative tolerance on the model outputs."),
    load_inputs: Optional[Path] = typer.Option(None, "--load-inputs", help="Inputs (.npz or Polygraphy JSON); the first set is used."),
    input_shapes: Optional[List[str]] = typer.Option(None, "--input-shapes", help="Shapes for dynamic inputs: NAME:[dims] (repeatable)."),
    seed: int = typer.Option(1, "--seed", min=0, help="Seed for synthetic inputs."),
    max_builds: int = typer.Option(48, "--max-builds", min=1, help="Most models converted and run by the search."),
    report: Optional[Path] = typer.Option(None, "--report", metavar="FILE.json", show_default=False, help="Also write the report here."),
    fp32_model: Optional[Path] = typer.Option(None, "--fp32-model", metavar="FP32.onnx", show_default=False, help="--precision int8: the FP32 model MODEL was quantized from (default: MODEL without its Q/DQ nodes)."),
    verbose: bool = common.VERBOSE,
    metric: Optional[str] = typer.Option(None, "--metric", metavar="MODULE:FUNCTION", show_default=False,
                                         help="Pass rule instead of --atol/--rtol: a function (reference, test) -> bool or "
                                              "(score, passed) over the output dicts; module:function or path/file.py:function."),
    html: Optional[Path] = typer.Option(None, "--html", metavar="FILE.html", show_default=False, help="Also write the report as an HTML page."),
    route: str = typer.Option("auto", "--route", help="--backend trt: onnx (convert the model, build it strongly typed), builder "
                                                      "(FP32 layer precisions + OBEY_PRECISION_CONSTRAINTS; TensorRT <= 10.x) or auto."),
    trt_rtx: bool = TRT_RTX,
    tf32: Optional[bool] = TF32,
    builder_optimization_level: Optional[int] = OPT_LEVEL,
    timeout: float = typer.Option(600.0, "--timeout", min=1, help="--backend trt: seconds per candidate build and run before it counts as a hang."),
) -> None:
    """Find the nodes to keep in FP32 so that MODEL passes in FP16/BF16: all-reduced first, then the nodes
    that introduce the most error, then drop what is not needed. Exit 0 if a passing set was found, 1 if not."""
    from trtdebug.inputs.spec import parse_input_shapes
    from trtdebug.precision.debug import debug_precision

    if precision == "int8":
        from trtdebug.cli.debug_precision_int8 import int8_command

        given = [flag for flag, v in (("--metric", metric), ("--html", html), ("--route", route != "auto"),
                                      ("--trt-rtx", trt_rtx)) if v]
        if given:
            raise UsageError(f"{', '.join(given)}: not available with --precision int8 yet (ONNX Runtime, atol/rtol, JSON report)")

        int8_command(model, out=out, fp32_model=fp32_model, backend=backend, atol=atol, rtol=rtol,
                     load_inputs=load_inputs, input_shapes=input_shapes, seed=seed, max_builds=max_builds, report=report)
    if fp32_model is not None:
        raise UsageError("--fp32-model applies to --precision int8 only")
    common.check_choice(precision, ("fp16", "bf16"), "--precision")
    common.check_choice(backend, ("onnxrt", "trt"), "--backend")
    common.check_choice(route, ("auto", "onnx", "builder"), "--route")
    options = {"module": "tensorrt_rtx"} if trt_rtx else {}
    options.update({k: v for k, v in (("tf32", tf32), ("builder_optimization_level", builder_optimization_level))
                    if v is not None})
    if verbose and backend == "trt":
        options["verbose"] = True
    with common.stderr_console().status("searching") as status:
        result = debug_precision(model, out, precision=precision, backend=backend, route=route, metric=metric, atol=atol,
                                 rtol=rtol, inputs=load_inputs, input_shapes=parse_input_shapes(input_shapes or []),
                                 seed=seed, max_builds=max_builds, build_options=options, timeout=timeout,
                                 report=report, html=html, on_status=status.update)
    _print(result, common.stdout_console(), out=out, html=html)
    raise typer.Exit(0 if result.passed else 1)


_MAX_LISTED = 30  # a tolerance FP16 cannot meet keeps hundreds of nodes: the console lists these, the report all


def _print(result, console, *, out: Path, html: Optional[Path]) -> None:
    data = result.as_dict()
    rule = f"metric {result.metric}" if result.metric else f"atol {result.tolerances['atol']}, rtol {result.tolerances['rtol']}"
    p = result.precision.upper()
    say = lambda text: console.print(text, markup=False)  # noqa: E731 - names from the model hold brackets
    say(f"judged by {result.backend}, route {result.route}" + (f" ({data['route_reason']})" if data.get("route_reason") else ""))
    if not result.keep_fp32 and result.passed:
        say(f"the all-{p} model passes ({rule}): nothing to keep in FP32")
    else:
        shown = ", ".join(result.keep_fp32[:_MAX_LISTED])
        more = f", ... ({len(result.keep_fp32) - _MAX_LISTED} more in report.json)" if len(result.keep_fp32) > _MAX_LISTED else ""
        say(f"keep in FP32 ({len(result.keep_fp32)}): {shown}{more}")
    if result.attribution is not None and result.attribution.ranking():
        top = result.attribution.ranking()[0]
        say(f"top error introducer: {top.node} ({top.op}), introduced {top.introduced_error:.3g}")
        if result.attribution.first_nonfinite:
            f = result.attribution.first_nonfinite
            say(f"first NaN/Inf: {f['tensor']} from {f['node']}")
    for label, v in (("before", result.before), ("after", result.after)):
        if v is result.before and not result.keep_fp32:
            continue
        errs = ", ".join(_error_text(n, o) for n, o in v.get("outputs", {}).items())
        line = f"{label}: {'pass' if v['passed'] else 'fail'}" + (f" ({v['failure']})" if v.get("failure") else "")
        if "metric" in v and v["metric"]["score"] is not None:
            line += f", metric score {v['metric']['score']:.6g}"
        if errs:
            line += f", max abs error {errs}"
        if v.get("latency_ms") is not None:
            line += f", {v['latency_ms']:.3f} ms"
        if v.get("layer_precisions"):
            line += ", layers " + ", ".join(f"{c} {k}" for k, c in v["layer_precisions"].items())
        say(line)
    say(f"{'passes' if result.passed else 'still fails'} after {result.builds} evaluation(s) in "
        f"{result.seconds:.1f}s; wrote {out}" + (f" and {html}" if html else ""))


def _error_text(name: str, o) -> str:
    err = o["max_abs_error"]
    text = f"{name} {err:.3g}" if isinstance(err, float) else f"{name} {err}"
    return text + (f" ({o['nonfinite']} NaN/Inf)" if o.get("nonfinite") else "")
