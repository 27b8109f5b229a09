"""``trtdebug debug reduce`` and ``debug unsupported``: thin commands over
:func:`trtdebug.debug.reduce.reduce_model` and :func:`trtdebug.debug.unsupported.find_unsupported`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import typer

from trtdebug.cli import common
from trtdebug.cli.typer_app import sub_app
from trtdebug.errors import UsageError

debug_app = sub_app("debug",
                "Find which piece of a model to blame: the nodes (reduce), what TensorRT cannot build (unsupported), "
                "the tactic (tactics), the fusion (fusion), the nodes that must stay FP32 (precision).")


# TensorRT build options, shared by the commands whose oracle builds engines
TRT_RTX = typer.Option(False, "--trt-rtx", help="TensorRT: use TensorRT-RTX (the 'rtx' extra), which builds without a GPU.")
FP16 = typer.Option(False, "--fp16", help="TensorRT: allow FP16 kernels.")
BF16 = typer.Option(False, "--bf16", help="TensorRT: allow BF16 kernels.")
INT8 = typer.Option(False, "--int8", help="TensorRT: allow INT8 kernels (needs Q/DQ nodes or scales).")
TF32 = typer.Option(None, "--tf32/--no-tf32", help="TensorRT: allow or forbid TF32 (default: TensorRT's own, on).")
OPT_LEVEL = typer.Option(None, "--builder-optimization-level", min=0, max=5,
                         help="TensorRT builder optimization level (0-5; 0 builds fastest, good for debugging builds).")


def _trt_options(*, trt_rtx: bool, fp16: bool, bf16: bool, int8: bool, tf32: Optional[bool],
                 builder_optimization_level: Optional[int]) -> Dict[str, Any]:
    """The TrtBuildConfig fields the flags ask for (only those given)."""
    options: Dict[str, Any] = {"module": "tensorrt_rtx"} if trt_rtx else {}
    options.update({k: True for k, v in (("fp16", fp16), ("bf16", bf16), ("int8", int8)) if v})
    if tf32 is not None:
        options["tf32"] = tf32
    if builder_optimization_level is not None:
        options["builder_optimization_level"] = builder_optimization_level
    return options


_PRECISION = {"fp16": (bool, FP16), "bf16": (bool, BF16), "int8": (bool, INT8), "tf32": (Optional[bool], TF32),
              "builder_optimization_level": (Optional[int], OPT_LEVEL)}
# the build flags with --trt-rtx, received as ``trt: Dict[str, Any]`` (the fields of _trt_options)
trt_flags = common.option_group("trt", {"trt_rtx": (bool, TRT_RTX), **_PRECISION}, _trt_options)
# the build flags without --trt-rtx (commands that record tactics or mark tensors need TensorRT's own)
precision_flags = common.option_group("trt", _PRECISION, lambda **flags: _trt_options(trt_rtx=False, **flags))


# how candidates are isolated: shared by every command whose candidates run in child processes
TIMEOUT = typer.Option(600.0, "--timeout", min=1, help="Seconds per candidate before it counts as a hang (its process group is killed).")
ON_CRASH = typer.Option("skip", "--on-crash", help="A crash or hang of a candidate means: skip (no answer) or bad (fails).")
DEVICES = typer.Option(None, "--devices", help="Judge candidates in parallel, one worker per GPU id: 0,1.")


def _workers(*, timeout: float, on_crash: str, devices: Optional[str]) -> Dict[str, Any]:
    common.check_choice(on_crash, ("skip", "bad"), "--on-crash")
    return {"timeout": timeout, "on_crash": on_crash, "devices": _devices(devices)}


# --timeout, --on-crash and --devices of the commands whose builds run in persistent build workers,
# received as ``workers: Dict[str, Any]`` (keywords of debug_tactics / debug_fusion)
worker_options = common.option_group("workers", {"timeout": (float, TIMEOUT), "on_crash": (str, ON_CRASH),
                                                 "devices": (Optional[str], DEVICES)}, _workers)


@dataclass
class _Reference:
    """The reference, inputs and tolerance options of the commands that compare engines with a reference run."""

    load_inputs: Optional[Path] = None
    input_shapes: Optional[List[str]] = None
    seed: Optional[int] = None
    reference: str = "onnxrt"
    atol: Optional[List[str]] = None
    rtol: Optional[List[str]] = None
    check_error_stat: str = "elemwise"
    report: Optional[Path] = None
    html: Optional[Path] = None

    def search_kwargs(self) -> Dict[str, Any]:
        """Check the options; give them as keywords of ``debug_tactics`` / ``debug_fusion``."""
        from trtdebug.api import make_tolerances
        from trtdebug.inputs.spec import parse_input_shapes

        from trtdebug.util.files import check_output_paths

        common.check_choice(self.reference, ("onnxrt", "ref"), "--reference")
        make_tolerances(self.atol, self.rtol, self.check_error_stat)
        check_output_paths({"--report": self.report, "--html": self.html}, [self.load_inputs])
        return {"inputs": self.load_inputs, "input_shapes": parse_input_shapes(self.input_shapes or []) or None,
                "seed": self.seed, "reference_backend": self.reference, "atol": self.atol, "rtol": self.rtol,
                "check_error_stat": self.check_error_stat, "report": self.report}

    def write_html(self, report: Dict[str, Any], console) -> None:
        if self.html is not None:
            from trtdebug.render.debug_html import write_debug_html

            write_debug_html(report, self.html)
            console.print(f"HTML report written to {self.html}", markup=False)


reference_options = common.option_group("ref", {
    "load_inputs": (Optional[Path], typer.Option(None, "--load-inputs", help="Inputs (.npz or Polygraphy JSON).")),
    "input_shapes": (Optional[List[str]], typer.Option(None, "--input-shapes", help="Shapes of dynamic inputs: NAME:[dims] (repeatable).")),
    "seed": (Optional[int], typer.Option(None, "--seed", min=0, help="Seed for synthetic inputs.")),
    "reference": (str, typer.Option("onnxrt", "--reference", help="Reference backend: onnxrt or ref.")),
    "atol": (Optional[List[str]], typer.Option(None, "--atol", help="Absolute tolerance: VALUE or NAME:VALUE (repeatable).")),
    "rtol": (Optional[List[str]], typer.Option(None, "--rtol", help="Relative tolerance: VALUE or NAME:VALUE (repeatable).")),
    "check_error_stat": (str, typer.Option("elemwise", "--check-error-stat", help="elemwise, max, mean, median or quantile.")),
    "report": (Optional[Path], typer.Option(None, "--report", metavar="FILE.json", show_default=False, help="Also write the report here.")),
    "html": (Optional[Path], typer.Option(None, "--html", metavar="FILE.html", show_default=False, help="Also write the report as an HTML page.")),
}, _Reference)


def _search_build_options(trt: Dict[str, Any], verbose: bool) -> Dict[str, Any]:
    """The failing build's TrtBuildConfig fields for ``debug tactics`` / ``debug fusion`` (flags left unset are left out)."""
    return {**trt, "verbose": True} if verbose else dict(trt)  # trt holds only the flags given, False and 0 included


@debug_app.command("reduce")
@trt_flags
def reduce_command(
    model: Path = typer.Argument(..., metavar="MODEL.onnx", help="The failing ONNX model.", show_default=False),
    out: Path = typer.Option(..., "--out", metavar="DIR", show_default=False,
                             help="Repro bundle directory (new, empty, or an earlier reduce directory: its journal is resumed)."),
    check: Optional[str] = typer.Option(None, "--check", metavar="CMD", show_default=False,
                                        help="Command judging a candidate: {model}, {inputs} (.npz of its true inputs), "
                                             "{reference} (its reference outputs) are filled in; non-zero exit = fails."),
    fail_code: Optional[List[int]] = typer.Option(None, "--fail-code", help="Only these exit codes of --check mean 'fails' (repeatable)."),
    fail_regex: Optional[List[str]] = typer.Option(None, "--fail-regex", help="--check fails only if its output matches (repeatable)."),
    backend: Optional[str] = typer.Option(None, "--backend", help="Built-in accuracy oracle: onnxrt or trt, compared with the true values."),
    onnxrt_fails: bool = typer.Option(False, "--onnxrt-fails", help="Built-in oracle: ONNX Runtime cannot load or run the candidate."),
    trt_build_fails: bool = typer.Option(False, "--trt-build-fails", help="Built-in oracle: TensorRT cannot parse or build the candidate."),
    load_outputs: Optional[Path] = typer.Option(None, "--load-outputs", metavar="DIR", show_default=False,
                                                help="Saved --mark-all outputs to use as true values (needs --load-inputs)."),
    load_inputs: Optional[Path] = typer.Option(None, "--load-inputs", help="Inputs (.npz or Polygraphy JSON), every iteration."),
    input_shapes: Optional[List[str]] = typer.Option(None, "--input-shapes", help="Freeze dynamic inputs: NAME:[dims] (repeatable)."),
    iterations: Optional[int] = typer.Option(None, "--iterations", min=1, help="Number of input sets (default 1, or every loaded set)."),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, help="Seed for synthetic inputs."),
    atol: Optional[List[str]] = typer.Option(None, "--atol", help="Absolute tolerance: VALUE or NAME:VALUE (repeatable)."),
    rtol: Optional[List[str]] = typer.Option(None, "--rtol", help="Relative tolerance: VALUE or NAME:VALUE (repeatable)."),
    check_error_stat: str = typer.Option("elemwise", "--check-error-stat", help="elemwise, max, mean, median or quantile."),
    timeout: float = TIMEOUT,
    on_crash: str = ON_CRASH,
    devices: Optional[str] = DEVICES,
    find_all: bool = typer.Option(False, "--all", help="Keep searching after the first culprit set, for independent ones."),
    repeat: int = typer.Option(1, "--repeat", min=1, help="Ask a flaky oracle this many times per candidate (one failure counts)."),
    no_fold: bool = typer.Option(False, "--no-fold", help="Do not fold constants first."),
    report: Optional[Path] = typer.Option(None, "--report", metavar="FILE.json", show_default=False, help="Also write the report here."),
    html: Optional[Path] = typer.Option(None, "--html", metavar="FILE.html", show_default=False, help="Also write the report as an HTML page."),
    verbose: bool = common.VERBOSE,
    *,
    trt: Dict[str, Any],
) -> None:
    """Shrink MODEL to the smallest set of nodes that still fails, and write a repro bundle to DIR."""
    from trtdebug.api import make_tolerances
    from trtdebug.debug import oracle as oracles
    from trtdebug.debug.reduce import reduce_model
    from trtdebug.inputs.spec import parse_input_shapes
    from trtdebug.render.debug_html import write_debug_html
    from trtdebug.util.files import check_output_paths

    common.check_choice(on_crash, ("skip", "bad"), "--on-crash")
    chosen = [flag for flag, on in (("--check", check), ("--backend", backend), ("--onnxrt-fails", onnxrt_fails),
                                    ("--trt-build-fails", trt_build_fails)) if on]
    if len(chosen) != 1:
        raise UsageError("give exactly one oracle: --check CMD, --backend onnxrt|trt, --onnxrt-fails or --trt-build-fails"
                         + (f" (got {', '.join(chosen)})" if chosen else ""))
    if (fail_code or fail_regex) and not check:
        raise UsageError("--fail-code and --fail-regex apply to --check")
    kw = {"timeout": timeout, "on_crash": on_crash}
    trt_options = trt
    if trt_options and not (trt_build_fails or backend == "trt"):
        raise UsageError("TensorRT build flags (--trt-rtx, --fp16, ...) apply to --backend trt and --trt-build-fails")
    check_output_paths({"--out": out, "--report": report, "--html": html}, [model])
    if check:
        oracle = oracles.CommandOracle(check, fail_codes=fail_code or (), fail_regex=fail_regex or (), **kw)
    elif backend:
        common.check_choice(backend, ("onnxrt", "trt"), "--backend")
        make_tolerances(atol, rtol, check_error_stat)
        oracle = oracles.AccuracyOracle(backend, atol=atol, rtol=rtol, check_error_stat=check_error_stat,
                                        trt_options=trt_options, **kw)
    elif onnxrt_fails:
        oracle = oracles.OnnxRuntimeFails(**kw)
    else:
        oracle = oracles.TrtBuildFails(trt_options=trt_options, **kw)
    device_ids = _devices(devices)

    err = common.stderr_console()
    with err.status("reducing") as status:
        progress = _progress(status, err, verbose, unit="oracle call")
        result = reduce_model(model, out, oracle=oracle, inputs=load_inputs,
                              input_shapes=parse_input_shapes(input_shapes or []) or None, iterations=iterations,
                              seed=seed, load_outputs=load_outputs, fold=not no_fold, devices=device_ids,
                              find_all=find_all, repeat=repeat, report=report, on_progress=progress,
                              on_status=status.update)
    data = result.report
    if html is not None:
        write_debug_html(data, html)
    console = common.stdout_console()
    console.print(f"culprit node(s): {', '.join(f'{n} ({op})' for n, op in zip(data['culprit_nodes'], data['culprit_ops']))}",
                  markup=False)
    console.print(f"{data['candidates']} nodes searched with {data['oracle_calls']} oracle call(s)"
                  + (f" ({data['reused_verdicts']} answers reused from the journal)" if data["reused_verdicts"] else "")
                  + f" in {data['seconds']:.1f}s", markup=False)
    console.print(f"minimal model: {result.minimal_model}", markup=False)
    console.print(f"reproduce: {result.out / 'repro.sh'}  ({data['repro']})", markup=False)


@debug_app.command("tactics")
@precision_flags
@reference_options
@worker_options
def tactics_command(
    model: Path = typer.Argument(..., metavar="MODEL.onnx", help="The model whose TensorRT engine is wrong.", show_default=False),
    out: Path = typer.Option(..., "--out", metavar="DIR", show_default=False,
                             help="Bundle directory (new, empty, or an earlier 'debug tactics' directory: resumed)."),
    good: str = typer.Option("auto", "--good", help="The good build: fp32 (same network without --fp16/--bf16/--int8), "
                                                    "rebuild (rebuilt until one passes), auto (fp32 if a reduced precision is given)."),
    rebuilds: int = typer.Option(6, "--rebuilds", min=2, help="With --good rebuild: at most this many recording builds."),
    verbose: bool = common.VERBOSE,
    *,
    trt: Dict[str, Any],
    ref: _Reference,
    workers: Dict[str, Any],
) -> None:
    """Find the layer(s) whose TensorRT tactic makes the outputs wrong; write a replay file that rebuilds a good engine.

    Every build runs in a build worker process (one per --devices id): a crash or hang is that candidate's verdict."""
    from trtdebug.debug.tactics import debug_tactics

    common.check_choice(good, ("auto", "fp32", "rebuild"), "--good")
    search = ref.search_kwargs()
    err = common.stderr_console()
    with err.status("debug tactics") as status:
        result = debug_tactics(model, out, build_options=_search_build_options(trt, verbose), good=good,
                               max_rebuilds=rebuilds, on_progress=_progress(status, err, verbose),
                               on_status=status.update, **search, **workers)
    data = result.report
    console = common.stdout_console()
    for t in data["culprit_tactics"]:
        where = t.get("layer") or t.get("timing_cache_key")
        nodes = t.get("onnx_nodes") or []
        console.print(f"culprit: {where}" + (f" (ONNX: {', '.join(nodes)})" if nodes else "")
                      + f": bad {t['bad']}, good {t['good']}", markup=False)
    console.print(f"{data['candidates']} candidates, {data['builds']} builds ({data['search_builds']} in the search) "
                  f"in {data['seconds']:.1f}s", markup=False)
    console.print(f"replay (engine that passes: {data['replay_verdict']}): {data['replay']}", markup=False)
    console.print(f"workaround: {data['workaround']}", markup=False)
    ref.write_html(data, err)


@debug_app.command("fusion")
@precision_flags
@reference_options
@worker_options
def fusion_command(
    model: Path = typer.Argument(..., metavar="MODEL.onnx", help="A model whose engine fails but passes with every tensor marked.", show_default=False),
    out: Path = typer.Option(..., "--out", metavar="DIR", show_default=False,
                             help="Bundle directory (new, empty, or an earlier 'debug fusion' directory: resumed)."),
    verbose: bool = common.VERBOSE,
    *,
    trt: Dict[str, Any],
    ref: _Reference,
    workers: Dict[str, Any],
) -> None:
    """Find the smallest set of tensors whose marking fixes the engine: the miscompiled fusion, and its workaround
    (DIR/workaround.onnx: the model with those tensors as extra outputs, a fusion barrier any deployment keeps).

    Every build runs in a build worker process (one per --devices id): a crash or hang is that candidate's verdict."""
    from trtdebug.debug.fusion import debug_fusion

    search = ref.search_kwargs()
    err = common.stderr_console()
    with err.status("debug fusion") as status:
        result = debug_fusion(model, out, build_options=_search_build_options(trt, verbose),
                              on_progress=_progress(status, err, verbose), on_status=status.update, **search, **workers)
    data, console = result.report, common.stdout_console()
    for layer in data["fused_layers"]:
        console.print(f"miscompiled fusion: engine layer {layer['layer']!r} (ONNX nodes: {', '.join(layer['onnx_nodes'])})",
                      markup=False)
    w = data["workaround"]
    lat = (f", {w['latency_ms']:.3f} ms vs {w['unmodified_latency_ms']:.3f} ms unmodified"
           if w.get("latency_ms") is not None and w.get("unmodified_latency_ms") is not None else "")
    console.print(f"workaround: {w['onnx']} (extra output(s) {', '.join(w['trt_outputs'])} as a fusion barrier; "
                  f"its engine: {w['verdict']}{lat})", markup=False)
    console.print(f"  check it: {w['onnx_command']}  (in {out}); or mark at build time: {w['command']}", markup=False)
    console.print(f"{data['candidates']} candidate tensors, {data['builds']} builds in {data['seconds']:.1f}s", markup=False)
    ref.write_html(data, err)


_STEP = "step {p.step} of about {p.estimate} ({p.phase}): {p.region}{per}"


def _progress(status, err, verbose: bool, *, unit: str = "build", status_format: str = _STEP):
    """A search progress callback: the status line, and with --verbose one printed line per step."""
    def progress(p) -> None:
        per = f", {p.seconds_per_call:.1f}s per {unit}" if p.seconds_per_call is not None else ""
        status.update(status_format.format(p=p, per=per))
        if verbose:
            err.print(_STEP.format(p=p, per=per), markup=False)
    return progress


@debug_app.command("unsupported")
@trt_flags
def unsupported_command(
    model: Path = typer.Argument(..., metavar="MODEL.onnx", help="The model TensorRT fails to parse or build.",
                                 show_default=False),
    out: Path = typer.Option(..., "--out", metavar="DIR", show_default=False,
                             help="Bundle directory (new, empty, or an earlier unsupported directory: its journals are resumed)."),
    input_shapes: Optional[List[str]] = typer.Option(None, "--input-shapes", help="Freeze dynamic inputs: NAME:[dims] (repeatable)."),
    timeout: float = typer.Option(600.0, "--timeout", min=1, help="Seconds per build before it counts as a hang."),
    on_crash: str = typer.Option("bad", "--on-crash", help="A build that crashes or hangs means: bad (fails, the default) or skip."),
    no_fold: bool = typer.Option(False, "--no-fold", help="Do not fold constants first."),
    report: Optional[Path] = typer.Option(None, "--report", metavar="FILE.json", show_default=False, help="Also write the report here."),
    html: Optional[Path] = typer.Option(None, "--html", metavar="FILE.html", show_default=False, help="Also write the report as an HTML page."),
    verbose: bool = common.VERBOSE,
    *,
    trt: Dict[str, Any],
) -> None:
    """Find the nodes of MODEL that TensorRT cannot parse (the parser says which) or build (building subgraphs finds them)."""
    from trtdebug.debug.unsupported import find_unsupported, render_unsupported
    from trtdebug.inputs.spec import parse_input_shapes
    from trtdebug.render.debug_html import write_debug_html
    from trtdebug.util.files import check_output_paths

    common.check_choice(on_crash, ("skip", "bad"), "--on-crash")
    options = dict(trt)
    module = options.pop("module", "tensorrt")
    check_output_paths({"--out": out, "--report": report, "--html": html}, [model])
    err = common.stderr_console()
    with err.status("checking") as status:
        progress = _progress(status, err, verbose,
                             status_format="bisecting: step {p.step} of about {p.estimate}: {p.region}{per}")
        result = find_unsupported(model, out, module=module, trt_options=options,
                                  input_shapes=parse_input_shapes(input_shapes or []) or None, fold=not no_fold,
                                  timeout=timeout, on_crash=on_crash, report=report, on_status=status.update,
                                  on_progress=progress)
    if html is not None:
        write_debug_html(result.report, html)
    render_unsupported(result.report, common.stdout_console())


def _devices(text: Optional[str]):
    if not text:
        return None
    try:
        ids = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"--devices takes GPU ids separated by commas, e.g. 0,1 (got {text!r})") from None
    if not ids or len(set(ids)) != len(ids):
        raise UsageError(f"--devices: give distinct GPU ids, e.g. 0,1 (got {text!r})")
    return ids
