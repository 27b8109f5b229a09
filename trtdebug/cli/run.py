"""``trtdebug run``: parse options, call :func:`trtdebug.api.run`, print what it returns."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from trtdebug.cli import common
from trtdebug.cli.typer_app import app
from trtdebug.errors import UsageError


@app.command(help="Run MODEL on the chosen backends with the same inputs and compare every common tensor "
                  "against the first backend (order: --load-outputs, --ref, --onnxrt, --trt).")
@common.comparison_options
def run(
    model: Path = typer.Argument(..., help="ONNX model (or a serialized TensorRT engine with --trt)."),
    onnxrt: bool = typer.Option(False, "--onnxrt", help="Run with ONNX Runtime."),
    ref: bool = typer.Option(False, "--ref", help="Run with the CPU reference (onnx.reference): slow, independent golden."),
    trt: bool = typer.Option(False, "--trt", help="Run with TensorRT (needs the 'trt' extra and an NVIDIA GPU)."),
    trt_rtx: bool = typer.Option(False, "--trt-rtx", help="TensorRT: use TensorRT-RTX (the 'rtx' extra) instead; implies --trt. Builds without a GPU; runs on the GPUs it supports."),
    onnxrt_providers: Optional[List[str]] = typer.Option(None, "--onnxrt-providers", help="ONNX Runtime providers in priority order: cpu, cuda, trt (repeatable). Default cpu."),
    mark_all: bool = typer.Option(False, "--mark-all", help="Return and compare every intermediate tensor, not only the model outputs."),
    outputs: Optional[List[str]] = typer.Option(None, "--outputs", help="Extra tensors to return from every backend (repeatable)."),
    exclude_outputs: Optional[List[str]] = typer.Option(None, "--exclude-outputs", help="Tensors not to return (repeatable)."),
    # inputs
    seed: Optional[int] = typer.Option(None, "--seed", min=0, help="Seed for synthetic inputs. Default 1."),
    val_range: Optional[List[str]] = typer.Option(None, "--val-range", help="Value range of synthetic inputs: [lo,hi] or NAME:[lo,hi] (repeatable). Default [0,1]."),
    input_shapes: Optional[List[str]] = typer.Option(None, "--input-shapes", help="Shapes for dynamic inputs: NAME:[1,3,224,224] (repeatable)."),
    load_inputs: Optional[Path] = typer.Option(None, "--load-inputs", help="Read inputs from .npz, Polygraphy JSON or a trtdebug outputs directory instead of generating them."),
    save_inputs: Optional[Path] = typer.Option(None, "--save-inputs", help="Save the inputs used (.npz, or .json for Polygraphy)."),
    iterations: Optional[int] = typer.Option(None, "--iterations", min=1, help="Number of input sets to run (default 1, or every loaded set)."),
    # outputs on disk
    save_outputs: Optional[Path] = typer.Option(None, "--save-outputs", help="Save every runner's tensors to this directory (one .npy per tensor + index.json, and the inputs used)."),
    no_save_inputs: bool = typer.Option(False, "--no-save-inputs", help="With --save-outputs: record only the inputs' digests, not the inputs themselves."),
    load_outputs: Optional[List[Path]] = typer.Option(None, "--load-outputs", help="Saved outputs (trtdebug dir or Polygraphy JSON) to compare against, as the reference (repeatable)."),
    reference_model: Optional[Path] = typer.Option(None, "--reference-model", metavar="FP32.onnx", help="Run this FP32 model on ONNX Runtime (CPU) first, as the reference; a Q/DQ MODEL is then compared in its names through the quantizers."),
    # TensorRT
    fp16: bool = typer.Option(False, "--fp16", help="TensorRT: allow FP16 kernels."),
    bf16: bool = typer.Option(False, "--bf16", help="TensorRT: allow BF16 kernels."),
    int8: bool = typer.Option(False, "--int8", help="TensorRT: allow INT8 kernels (needs Q/DQ nodes or scales)."),
    calibration_data: Optional[Path] = typer.Option(None, "--calibration-data", metavar="FILE.npz|DIR", help="TensorRT 8.6-10.x, with --int8: calibrate on these inputs (every input set of the .npz, or of every .npz in DIR, is one batch)."),
    calibrator: str = typer.Option("entropy", "--calibrator", help="With --calibration-data: entropy (IInt8EntropyCalibrator2) or minmax (IInt8MinMaxCalibrator)."),
    calibration_cache: Optional[Path] = typer.Option(None, "--calibration-cache", metavar="FILE", help="With --int8: calibration cache, read if it exists (no calibration then), else written after calibrating."),
    tf32: Optional[bool] = typer.Option(None, "--tf32/--no-tf32", help="TensorRT: allow or forbid TF32 (default: TensorRT's own, on)."),
    strongly_typed: bool = typer.Option(False, "--strongly-typed", help="TensorRT: build a strongly typed network (types from the ONNX model)."),
    workspace: Optional[str] = typer.Option(None, "--workspace", help="TensorRT workspace pool limit, e.g. 4G, 512M or bytes."),
    trt_min_shapes: Optional[List[str]] = typer.Option(None, "--trt-min-shapes", help="Profile min shapes NAME:[dims] (repeat the three flags for several profiles)."),
    trt_opt_shapes: Optional[List[str]] = typer.Option(None, "--trt-opt-shapes", help="Profile opt shapes NAME:[dims]."),
    trt_max_shapes: Optional[List[str]] = typer.Option(None, "--trt-max-shapes", help="Profile max shapes NAME:[dims]."),
    builder_optimization_level: Optional[int] = typer.Option(None, "--builder-optimization-level", min=0, max=5, help="TensorRT builder optimization level (0-5; lower builds faster)."),
    timing_cache: Optional[Path] = typer.Option(None, "--timing-cache", help="TensorRT timing cache file: read if it exists, updated after the build (default: one per GPU and TensorRT version in ~/.cache/trtdebug)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="TensorRT: do not read or update the persistent timing cache."),
    save_engine: Optional[Path] = typer.Option(None, "--save-engine", help="Save the built TensorRT engine here."),
    load_tactics: Optional[Path] = typer.Option(None, "--load-tactics", help="TensorRT: pin the tactics of this replay file (written by 'trtdebug debug tactics')."),
    trt_outputs: Optional[List[str]] = typer.Option(None, "--trt-outputs", help="Extra tensors to mark in TensorRT only (repeatable)."),
    trt_exclude_outputs: Optional[List[str]] = typer.Option(None, "--trt-exclude-outputs", help="Tensors not to mark in TensorRT (repeatable)."),
    fused_boundaries: bool = typer.Option(False, "--fused-boundaries", help="TensorRT: compare only tensors at fused-layer boundaries of the unmodified engine, keeping its fusions."),
    max_memory: Optional[str] = typer.Option(None, "--max-memory", help="With --mark-all: mark tensors in windows (topological order) whose activations fit this size, e.g. 8G; one session/engine per window."),
    stop_at_first_failure: bool = typer.Option(False, "--stop-at-first-failure", help="With --max-memory: stop after the first window holding a failing tensor."),
    verbose: bool = common.VERBOSE,
    *,
    opts: common.ComparisonOptions,
) -> int:
    import trtdebug
    from trtdebug.inputs.spec import parse_input_shapes, parse_val_ranges

    build_flags = {"--fp16": fp16, "--bf16": bf16, "--int8": int8, "--tf32/--no-tf32": tf32 is not None,
                   "--strongly-typed": strongly_typed, "--workspace": workspace, "--trt-min-shapes": trt_min_shapes,
                   "--trt-opt-shapes": trt_opt_shapes, "--trt-max-shapes": trt_max_shapes,
                   "--builder-optimization-level": builder_optimization_level is not None,
                   "--timing-cache": timing_cache, "--no-cache": no_cache, "--save-engine": save_engine,
                   "--load-tactics": load_tactics, "--calibration-data": calibration_data,
                   "--calibrator": calibrator != "entropy", "--calibration-cache": calibration_cache}
    trt = trt or trt_rtx
    given = [flag for flag, value in build_flags.items() if value]
    if given and not trt:
        raise UsageError(f"{', '.join(given)}: TensorRT option(s) given without --trt")
    val_default, val_per_input = parse_val_ranges(val_range or [])
    backends = [name for name, chosen in (("ref", ref), ("onnxrt", onnxrt), ("trt", trt)) if chosen]
    err = common.stderr_console()
    with err.status("running") as status:
        outcome = trtdebug.run(
            model, backends=backends, mark_all=mark_all, outputs=outputs or (), exclude_outputs=exclude_outputs or (),
            inputs=load_inputs, seed=seed, val_range=val_default, input_ranges=val_per_input or None,
            input_shapes=parse_input_shapes(input_shapes or []) or None, iterations=iterations,
            save_inputs=save_inputs, save_outputs=save_outputs, record_inputs=not no_save_inputs,
            load_outputs=load_outputs or (), reference_model=reference_model,
            onnxrt_providers=onnxrt_providers or ("cpu",),
            trt_config=_trt_config(fp16=fp16, bf16=bf16, int8=int8, tf32=tf32, strongly_typed=strongly_typed,
                                   workspace=workspace, trt_min_shapes=trt_min_shapes, trt_opt_shapes=trt_opt_shapes,
                                   trt_max_shapes=trt_max_shapes, builder_optimization_level=builder_optimization_level,
                                   timing_cache=timing_cache, persistent_cache=not no_cache,
                                   save_engine=save_engine, load_tactics=load_tactics, verbose=verbose,
                                   calibration_data=calibration_data, calibrator=calibrator,
                                   calibration_cache=calibration_cache,
                                   module="tensorrt_rtx" if trt_rtx else "tensorrt") if trt else None,
            trt_outputs=trt_outputs or (), trt_exclude_outputs=trt_exclude_outputs or (),
            fused_boundaries=fused_boundaries, max_memory=max_memory, stop_at_first_failure=stop_at_first_failure,
            report=opts.report, html=opts.html,
            on_status=status.update, on_progress=common.progress_to(status), **opts.tolerance_kwargs())
    with outcome:
        for result in outcome.results[len(load_outputs or []):]:
            tensors = len(result.iterations[0]) if result.iterations else 0
            left_out = "; ".join(f"{n} left out: {why.split(' (')[0]}"  # the reason's head; the report has it whole
                                 for why, n in result.extra.get("skipped_counts", {}).items())
            err.print(f"{result.runner}: {tensors} tensors{f' ({left_out})' if left_out else ''}, "
                      f"{_fmt_time(result.runtimes)} per inference", markup=False)
            for note in result.extra.get("notes", []):  # e.g. marking dropped, layer precisions, RTX limits
                err.print(f"  {note}", markup=False)
        return common.show_outcome(outcome, opts)


def _trt_config(*, workspace, trt_min_shapes, trt_opt_shapes, trt_max_shapes, **fields):
    from trtdebug.runners.tensorrt.config import TrtBuildConfig, parse_size, profiles_from_args

    return TrtBuildConfig(workspace=parse_size(workspace) if workspace else None,
                          profiles=tuple(profiles_from_args(trt_min_shapes or [], trt_opt_shapes or [],
                                                            trt_max_shapes or [])), **fields)


def _fmt_time(runtimes) -> str:
    if not runtimes:
        return "-"
    return f"{sum(runtimes) / len(runtimes) * 1e3:.2f} ms"
