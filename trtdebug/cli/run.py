"""``trtdebug run``: run a model on several backends with the same inputs and compare them."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from trtdebug.cli.typer_app import app
from trtdebug.cli import common
from trtdebug.errors import UsageError


@app.command(help="Run MODEL on the chosen backends with the same inputs and compare every common tensor "
                  "against the first backend (order: --load-outputs, --ref, --onnxrt, --trt).")
def run(
    model: Path = typer.Argument(..., help="ONNX model (or a serialized TensorRT engine with --trt)."),
    onnxrt: bool = typer.Option(False, "--onnxrt", help="Run with ONNX Runtime."),
    ref: bool = typer.Option(False, "--ref", help="Run with the CPU reference (onnx.reference): slow, independent golden."),
    trt: bool = typer.Option(False, "--trt", help="Run with TensorRT (needs the 'trt' extra and an NVIDIA GPU)."),
    onnxrt_providers: Optional[List[str]] = typer.Option(None, "--onnxrt-providers", help="ONNX Runtime providers in priority order: cpu, cuda, trt (repeatable). Default cpu."),
    mark_all: bool = typer.Option(False, "--mark-all", help="Return and compare every intermediate tensor, not only the model outputs."),
    outputs: Optional[List[str]] = typer.Option(None, "--outputs", help="Extra tensors to return from every backend (repeatable)."),
    exclude_outputs: Optional[List[str]] = typer.Option(None, "--exclude-outputs", help="Tensors not to return (repeatable)."),
    # inputs
    seed: int = typer.Option(1, "--seed", help="Seed for synthetic inputs."),
    val_range: Optional[List[str]] = typer.Option(None, "--val-range", help="Value range of synthetic inputs: [lo,hi] or NAME:[lo,hi] (repeatable). Default [0,1]."),
    input_shapes: Optional[List[str]] = typer.Option(None, "--input-shapes", help="Shapes for dynamic inputs: NAME:[1,3,224,224] (repeatable)."),
    load_inputs: Optional[Path] = typer.Option(None, "--load-inputs", help="Read inputs from .npz or Polygraphy JSON instead of generating them."),
    save_inputs: Optional[Path] = typer.Option(None, "--save-inputs", help="Save the inputs used (.npz, or .json for Polygraphy)."),
    iterations: int = typer.Option(1, "--iterations", min=1, help="Number of input sets to run."),
    # outputs on disk
    save_outputs: Optional[Path] = typer.Option(None, "--save-outputs", help="Save every runner's tensors to this directory (one .npy per tensor + index.json)."),
    load_outputs: Optional[List[Path]] = typer.Option(None, "--load-outputs", help="Saved outputs (trtdebug dir or Polygraphy JSON) to compare against, as the reference (repeatable)."),
    # TensorRT
    fp16: bool = typer.Option(False, "--fp16", help="TensorRT: allow FP16 kernels."),
    bf16: bool = typer.Option(False, "--bf16", help="TensorRT: allow BF16 kernels."),
    int8: bool = typer.Option(False, "--int8", help="TensorRT: allow INT8 kernels (needs Q/DQ nodes or scales)."),
    tf32: Optional[bool] = typer.Option(None, "--tf32/--no-tf32", help="TensorRT: allow or forbid TF32 (default: TensorRT's own, on)."),
    strongly_typed: bool = typer.Option(False, "--strongly-typed", help="TensorRT: build a strongly typed network (types from the ONNX model)."),
    workspace: Optional[str] = typer.Option(None, "--workspace", help="TensorRT workspace pool limit, e.g. 4G, 512M or bytes."),
    trt_min_shapes: Optional[List[str]] = typer.Option(None, "--trt-min-shapes", help="Profile min shapes NAME:[dims] (repeat the three flags for several profiles)."),
    trt_opt_shapes: Optional[List[str]] = typer.Option(None, "--trt-opt-shapes", help="Profile opt shapes NAME:[dims]."),
    trt_max_shapes: Optional[List[str]] = typer.Option(None, "--trt-max-shapes", help="Profile max shapes NAME:[dims]."),
    builder_optimization_level: Optional[int] = typer.Option(None, "--builder-optimization-level", help="TensorRT builder optimization level (0-5; lower builds faster)."),
    timing_cache: Optional[Path] = typer.Option(None, "--timing-cache", help="TensorRT timing cache file: read if it exists, updated after the build."),
    save_engine: Optional[Path] = typer.Option(None, "--save-engine", help="Save the built TensorRT engine here."),
    trt_outputs: Optional[List[str]] = typer.Option(None, "--trt-outputs", help="Extra tensors to mark in TensorRT only (repeatable)."),
    trt_exclude_outputs: Optional[List[str]] = typer.Option(None, "--trt-exclude-outputs", help="Tensors not to mark in TensorRT (repeatable)."),
    fused_boundaries: bool = typer.Option(False, "--fused-boundaries", help="TensorRT: compare only tensors at fused-layer boundaries of the unmodified engine, keeping its fusions."),
    # comparison and reports
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
    from trtdebug.model import OutputSelection
    from trtdebug.util.files import check_output_paths

    out = common.stdout_console()
    err = common.stderr_console()
    tolerances = common.make_tolerances(atol, rtol, check_error_stat, error_quantile)
    common.check_choice(order, ("topo", "worst"), "--order")
    if not (onnxrt or ref or trt):
        raise UsageError("choose at least one backend: --onnxrt, --ref or --trt")
    loaded = [_load_outputs(p) for p in (load_outputs or [])]
    is_engine = model.suffix.lower() in (".engine", ".plan", ".trt")
    if is_engine and (onnxrt or ref):
        raise UsageError("a serialized engine can only be run with --trt; give the ONNX model for --onnxrt/--ref")
    check_output_paths({"--save-inputs": save_inputs, "--report": report, "--html": html, "--save-engine": save_engine,
                        "--save-outputs": save_outputs}, [model, load_inputs, *(load_outputs or [])])

    graph = onnx_model = None
    if not is_engine:
        from trtdebug.model import ModelGraph, load_model

        onnx_model = load_model(model)
        graph = ModelGraph(onnx_model)
    # With --fused-boundaries TensorRT decides which tensors exist; the ONNX backends return them all
    # (cheap for them) so that every boundary tensor has a counterpart.
    selection = OutputSelection(mark_all=mark_all or fused_boundaries, names=tuple(outputs or ()),
                                exclude=tuple(exclude_outputs or ()))

    runners = []
    if ref:
        from trtdebug.runners.reference import ReferenceRunner

        runners.append(ReferenceRunner(onnx_model, outputs=selection, graph=graph))
    if onnxrt:
        from trtdebug.runners.onnxruntime import OnnxRuntimeRunner

        runners.append(OnnxRuntimeRunner(onnx_model, outputs=selection, graph=graph, providers=onnxrt_providers or ["cpu"]))
    if trt:
        runners.append(_trt_runner(
            model, onnx_model, graph, selection, is_engine, trt_outputs, trt_exclude_outputs, fused_boundaries,
            fp16=fp16, bf16=bf16, int8=int8, tf32=tf32, strongly_typed=strongly_typed, workspace=workspace,
            trt_min_shapes=trt_min_shapes, trt_opt_shapes=trt_opt_shapes, trt_max_shapes=trt_max_shapes,
            builder_optimization_level=builder_optimization_level, timing_cache=timing_cache,
            save_engine=save_engine, verbose=verbose))

    feeds = _feeds(runners[0], graph, seed=seed, iterations=iterations, val_range=val_range, input_shapes=input_shapes,
                   load_inputs=load_inputs)
    if save_inputs:
        from trtdebug.inputs.io import save_inputs as write_inputs

        write_inputs(save_inputs, feeds)
        err.print(f"inputs saved to {save_inputs}")

    topology = _topology(graph, loaded)
    meta = {"model": str(model), "iterations": len(feeds), "mark_all": mark_all,
            "input_shapes": {n: list(a.shape) for n, a in feeds[0].items()} if feeds else {}, "seed": seed}
    with err.status("running") as status:
        with pipeline.execute(runners, feeds, save_dir=save_outputs, graph=graph, model_path=str(model),
                              status=lambda msg: status.update(msg)) as execution:
            results = [r for lo in loaded for r in lo.results] + execution.results
            for r in execution.results:
                err.print(f"{r.runner}: {len(r.iterations[0]) if r.iterations else 0} tensors, "
                          f"{_fmt_time(r.runtimes)} per inference")
            meta["runners"] = {r.runner: r.extra for r in results}
            if len(results) < 2:
                err.print("one backend only: nothing to compare" + (f"; outputs saved to {save_outputs}" if save_outputs else ""))
                return 0
            rep = pipeline.compare_all(results, tolerances=tolerances, topology=topology, meta=meta,
                                       progress=common.progress_to(status))
    if save_outputs:
        err.print(f"outputs saved to {save_outputs}")
    code = common.emit_report(rep, report_path=report, html_path=html, order=order, max_rows=max_rows,
                              failing_only=failing_only, quiet=quiet, console=out)
    hint = tf32_hint(rep, trt=trt, tf32=tf32, reduced_precision=fp16 or bf16 or int8)
    if hint:
        err.print(hint)
    return code


MATRIX_OPS = {"MatMul", "Gemm", "Conv", "ConvTranspose", "Einsum"}


def tf32_hint(report, *, trt: bool, tf32: Optional[bool], reduced_precision: bool) -> Optional[str]:
    """A hint when TensorRT's default TF32 is the likely cause of an FP32 failure.

    TF32 is on unless asked otherwise and rounds matrix-product inputs to 10 mantissa bits
    (~1e-3 relative error), which fails tight FP32 tolerances at the first MatMul/Conv.
    """
    if not trt or tf32 is not None or reduced_precision:
        return None
    for comparison in report.comparisons:
        first = comparison.first_failing
        if first is not None and first.producer_op in MATRIX_OPS:
            return (f"hint: TF32 is on (TensorRT's default) and the first failure is a {first.producer_op}; "
                    "re-run with --no-tf32 to tell TF32 rounding from a real error")
    return None


def _load_outputs(path: Path):
    from trtdebug.results import load_outputs

    return load_outputs(path)


def _topology(graph, loaded) -> dict:
    if graph is not None:
        from trtdebug.results import topology_of

        return topology_of(graph)
    for lo in loaded:
        if lo.topology:
            return lo.topology
    return {}


def _feeds(first_runner, graph, *, seed, iterations, val_range, input_shapes, load_inputs):
    """Inputs for every iteration: loaded and validated, or generated from the model's metadata."""
    from trtdebug.inputs.spec import parse_input_shapes, parse_val_ranges
    from trtdebug.runners.onnx_common import graph_input_metadata

    if graph is not None:
        meta = graph_input_metadata(graph)
    else:  # an engine: only the runner knows its inputs
        first_runner.activate()
        meta = first_runner.input_metadata()
    if load_inputs:
        from trtdebug.inputs.io import load_inputs as read_inputs, validate_feeds

        feeds = read_inputs(load_inputs)
        validate_feeds(feeds, meta)
        return feeds
    from trtdebug.inputs.synthetic import generate_feeds

    default_range, per_input = parse_val_ranges(val_range or [])
    return generate_feeds(meta, seed=seed, iterations=iterations, shapes=parse_input_shapes(input_shapes or []),
                          val_range=default_range, per_input_ranges=per_input)


def _trt_runner(model_path, onnx_model, graph, selection, is_engine, trt_outputs, trt_exclude_outputs, fused_boundaries, **opts):
    from trtdebug.model import OutputSelection
    from trtdebug.runners.tensorrt import make_trt_runner
    from trtdebug.runners.tensorrt.config import TrtBuildConfig, parse_size, profiles_from_args

    config = TrtBuildConfig(
        fp16=opts["fp16"], bf16=opts["bf16"], int8=opts["int8"], tf32=opts["tf32"], strongly_typed=opts["strongly_typed"],
        workspace=parse_size(opts["workspace"]) if opts["workspace"] else None,
        profiles=tuple(profiles_from_args(opts["trt_min_shapes"] or [], opts["trt_opt_shapes"] or [], opts["trt_max_shapes"] or [])),
        builder_optimization_level=opts["builder_optimization_level"], timing_cache=opts["timing_cache"],
        save_engine=opts["save_engine"], verbose=opts["verbose"],
    )
    trt_selection = OutputSelection(mark_all=selection.mark_all, names=tuple(selection.names) + tuple(trt_outputs or ()),
                                    exclude=tuple(selection.exclude) + tuple(trt_exclude_outputs or ()))
    return make_trt_runner(str(model_path) if is_engine else onnx_model, config=config, outputs=trt_selection,
                           graph=graph, model=onnx_model, boundaries=fused_boundaries)


def _fmt_time(runtimes) -> str:
    if not runtimes:
        return "-"
    mean = sum(runtimes) / len(runtimes)
    return f"{mean * 1e3:.2f} ms"
