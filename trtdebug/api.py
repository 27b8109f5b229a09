"""The public Python API: everything ``trtdebug run`` and ``trtdebug compare`` do, without the CLI.

    import trtdebug
    outcome = trtdebug.run("model.onnx", backends=("ref", "onnxrt"), mark_all=True, report="r.json")
    print(outcome.passed, outcome.first_failing)

The CLI only parses options, calls these functions and prints what they return, so a search
(bisection, precision triage) that runs hundreds of candidates gets exactly the behaviour users
see on the command line.  Keyword names mirror the CLI options (``--mark-all`` -> ``mark_all``).

Why the work is ordered as it is:

* every check that can fail on the user's input (names, paths, option combinations) runs before
  any backend is loaded, so a typo costs nothing and never leaves a half-written artifact;
* runners run one at a time over every input set, their tensors streamed into an
  :class:`~trtdebug.results.OutputStore` (on disk when large or when ``save_outputs`` asks), and
  the comparison reads them back one tensor at a time;
* the returned :class:`Outcome` owns the store's scratch directory, so its results stay readable
  until it is closed (or garbage collected).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from trtdebug.errors import EXIT_MISMATCH, EXIT_OK, UsageError

PathLike = Union[str, "os.PathLike[str]"]
Feeds = Dict[str, np.ndarray]
Range = Tuple[float, float]
StatusFn = Callable[[str], None]
ProgressFn = Callable[[int, int, str], None]

#: Backend names, in the order the CLI runs them (the first one is the reference).
BACKENDS = ("ref", "onnxrt", "trt")
_ALIASES = {"reference": "ref", "onnxruntime": "onnxrt", "ort": "onnxrt", "tensorrt": "trt"}
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
MATRIX_OPS = {"MatMul", "Gemm", "Conv", "ConvTranspose", "Einsum"}


@dataclass
class Outcome:
    """What a run or a comparison produced, and the exit code it implies.

    ``results`` are every runner's tensors (loaded reference outputs first), readable while the
    outcome is open; ``feeds`` the inputs used, one dict per iteration; ``report`` is None when
    there was nothing to compare (one backend); ``notes`` are lines worth telling the user
    (hints, what was saved where).
    """

    report: Any = None  # trtdebug.comparison.report.Report
    results: List[Any] = field(default_factory=list)  # trtdebug.results.RunResult
    feeds: List[Feeds] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    saved_outputs: Optional[Path] = None
    _scratch: Optional[tempfile.TemporaryDirectory] = field(default=None, repr=False)

    @property
    def passed(self) -> bool:
        """True when every compared tensor passed, or when nothing was compared."""
        return self.report is None or self.report.passed

    @property
    def exit_code(self) -> int:
        """The CLI's exit code for this outcome: 0 passed (or nothing to compare), 1 accuracy failure."""
        return EXIT_OK if self.passed else EXIT_MISMATCH

    @property
    def first_failing(self):
        """The earliest failing tensor of the first comparison that failed, or None."""
        if self.report is None:
            return None
        return next((c.first_failing for c in self.report.comparisons if c.first_failing is not None), None)

    def close(self) -> None:
        """Delete the scratch copy of the results (saved outputs stay where they were saved)."""
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    def __enter__(self) -> "Outcome":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def run(
    model: Union[PathLike, Any],
    *,
    backends: Sequence[str] = ("onnxrt",),
    mark_all: bool = False,
    outputs: Sequence[str] = (),
    exclude_outputs: Sequence[str] = (),
    inputs: Union[None, PathLike, Feeds, Sequence[Feeds]] = None,
    seed: Optional[int] = None,
    val_range: Optional[Range] = None,
    input_ranges: Optional[Mapping[str, Range]] = None,
    input_shapes: Optional[Mapping[str, Sequence[int]]] = None,
    iterations: Optional[int] = None,
    save_inputs: Optional[PathLike] = None,
    save_outputs: Optional[PathLike] = None,
    record_inputs: bool = True,
    load_outputs: Sequence[PathLike] = (),
    reference_model: Optional[PathLike] = None,
    onnxrt_providers: Sequence[str] = ("cpu",),
    trt_config: Any = None,
    trt_outputs: Sequence[str] = (),
    trt_exclude_outputs: Sequence[str] = (),
    fused_boundaries: bool = False,
    max_memory: Union[None, int, str] = None,
    stop_at_first_failure: bool = False,
    atol: Union[float, Mapping[str, float], None] = None,
    rtol: Union[float, Mapping[str, float], None] = None,
    check_error_stat: str = "elemwise",
    error_quantile: float = 0.99,
    tolerances: Any = None,
    report: Optional[PathLike] = None,
    html: Optional[PathLike] = None,
    on_status: Optional[StatusFn] = None,
    on_progress: Optional[ProgressFn] = None,
    **trt_options: Any,
) -> Outcome:
    """Run ``model`` on ``backends`` with the same inputs and compare each against the first.

    ``model``: an ONNX path or ``onnx.ModelProto``, or a serialized TensorRT engine (``.engine``,
    ``.plan``, ``.trt``) for ``backends=("trt",)``.  ``backends``: ``"ref"`` (onnx.reference, the
    CPU golden), ``"onnxrt"``, ``"trt"``, in the order given; saved outputs in ``load_outputs``
    come first and so are the reference.  ``inputs``: a path (``.npz``, Polygraphy JSON, a trtdebug
    outputs directory, ONNX test data) or feeds in memory; None means the inputs recorded with the
    first of ``load_outputs`` that has them, else seeded synthetic inputs.
    TensorRT build options are ``trt_config`` (a :class:`~trtdebug.runners.tensorrt.TrtBuildConfig`)
    or its fields as keywords (``fp16=True``, ``tf32=False``, ``workspace="4G"``...).
    ``atol``/``rtol``: a number, or ``{tensor name: value}`` with an optional ``"*"`` default.
    ``save_outputs`` also records the inputs (``inputs.npz`` and digests), unless ``record_inputs``
    is False; the digests alone are always kept, so comparing runs made from different inputs
    is refused.  ``reference_model``: an FP32 ONNX model run first on ONNX Runtime (CPU) as the
    reference, e.g. the model a Q/DQ ``model`` was quantized from; a Q/DQ model's tensors are compared
    with a reference of other names through their quantizers (:mod:`trtdebug.comparison.matching`).
    """
    from trtdebug.model import OutputSelection

    status = on_status or (lambda msg: None)
    order = _backends(backends)
    model_path = None if _is_model_proto(model) else Path(model)
    is_engine = model_path is not None and model_path.suffix.lower() in ENGINE_SUFFIXES
    if is_engine and set(order) - {"trt"}:
        raise UsageError("a serialized engine can only be run with TensorRT (--trt); give the ONNX model for "
                         "--onnxrt/--ref")
    if reference_model is not None and (is_engine or max_memory is not None):
        raise UsageError("--reference-model needs the ONNX model (not an engine) and does not combine with --max-memory")
    trt_config = _trt_config(trt_config, trt_options, wanted="trt" in order)
    if trt_config is not None:
        from trtdebug.runners.tensorrt.calibration import check_options

        check_options(trt_config)
    if "trt" not in order and (trt_outputs or trt_exclude_outputs or fused_boundaries):
        raise UsageError("--trt-outputs, --trt-exclude-outputs and --fused-boundaries apply to TensorRT only: "
                         "add --trt")
    from trtdebug import windows

    budget = windows.check_options(max_memory=max_memory, stop_at_first_failure=stop_at_first_failure,
                                   is_engine=is_engine, fused_boundaries=fused_boundaries,
                                   save_engine=getattr(trt_config, "save_engine", None))
    _check_input_options(inputs, seed=seed, val_range=val_range, input_ranges=input_ranges, iterations=iterations)
    tolerances = tolerances or make_tolerances(atol, rtol, check_error_stat, error_quantile)
    _check_artifact_paths(
        {"--save-inputs": save_inputs, "--save-outputs": save_outputs, "--report": report, "--html": html,
         "--save-engine": getattr(trt_config, "save_engine", None)},
        [model_path, inputs if _is_path(inputs) else None, reference_model, *load_outputs])

    onnx_model = graph = None
    if not is_engine:
        from trtdebug.model import ModelGraph, load_model

        status("loading model")
        onnx_model = model if model_path is None else load_model(model_path)
        graph = ModelGraph(onnx_model)
    loaded = [_load_outputs(p, model=graph) for p in load_outputs]
    _check_tensor_names(tolerances, graph)
    notes: List[str] = []
    recorded = next((lo for lo in loaded if lo.inputs_file is not None), None)
    if inputs is None and recorded is not None and seed is None and not (val_range or input_ranges):
        # the usual loop: compare against saved outputs on exactly the inputs they were made from
        inputs = recorded.feeds()
        notes.append(f"inputs: the ones recorded with {recorded.source}")

    # With fused boundaries TensorRT decides which tensors exist; the ONNX backends return them all
    # (cheap for them) so that every boundary tensor has a counterpart.
    selection = OutputSelection(mark_all=mark_all or fused_boundaries, names=tuple(outputs),
                                exclude=tuple(exclude_outputs))
    runners = [_make_runner(b, model_path if is_engine else onnx_model, graph, selection,
                            providers=onnxrt_providers, trt_config=trt_config, trt_outputs=trt_outputs,
                            trt_exclude_outputs=trt_exclude_outputs, fused_boundaries=fused_boundaries)
               for b in order]
    fp32_graph = None
    if reference_model is not None:
        fp32_runner, fp32_graph = _reference_model_runner(reference_model, selection)
        runners.insert(0, fp32_runner)

    feeds = _feeds(runners[0], graph, inputs, seed=seed, iterations=iterations, val_range=val_range,
                   input_ranges=input_ranges, input_shapes=input_shapes)
    if save_inputs is not None:
        from trtdebug.inputs.io import save_inputs as write_inputs

        write_inputs(save_inputs, feeds)
        notes.append(f"inputs saved to {save_inputs}")

    plan = None
    if budget is not None and not windows.applies(selection):
        notes.append(windows.NO_OP_NOTE)
    elif budget is not None:
        def window_runner(backend, sel, weights):
            return _make_runner(backend, onnx_model, graph, sel, providers=onnxrt_providers, trt_config=trt_config,
                                trt_outputs=trt_outputs, trt_exclude_outputs=trt_exclude_outputs, fused_boundaries=False,
                                weights=weights)
        outcome, plan = windows.run_windowed(
            order, feeds, Outcome(feeds=list(feeds)), model=onnx_model, graph=graph, selection=selection, budget=budget,
            make_runner=window_runner, loaded=loaded, tolerances=tolerances,
            stop_at_first_failure=stop_at_first_failure, save_outputs=save_outputs, record_inputs=record_inputs,
            model_path=str(model_path) if model_path else None, on_status=status, open_store=_open_store)
    if plan is None:
        outcome = run_runners(runners, feeds, save_outputs=save_outputs, record_inputs=record_inputs, graph=graph,
                              model_path=str(model_path) if model_path else None, on_status=status)
    outcome.notes[:0] = notes
    outcome.results = [r for lo in loaded for r in lo.results] + outcome.results
    if len(outcome.results) < 2:
        outcome.notes.append("one backend only: nothing to compare")
        return outcome

    meta = {"model": str(model_path) if model_path else None, "iterations": len(feeds), "mark_all": mark_all,
            "input_shapes": {n: list(a.shape) for n, a in feeds[0].items()} if feeds else {}, "seed": seed,
            "runners": {r.runner: r.extra for r in outcome.results}}
    if plan is not None:
        meta["windows"] = plan.as_meta()
    topology = _topology(graph, loaded)
    if onnx_model is not None:
        topology = _match_qdq(outcome, onnx_model, len(order), _topology(fp32_graph, loaded) or topology, topology,
                              meta, label=model_path.name if model_path else "the model")
    status("comparing")
    outcome.report = compare_results(outcome.results, tolerances=tolerances, topology=topology, meta=meta,
                                     progress=on_progress)
    _add_runner_warnings(outcome.report, outcome.results)
    hint = tf32_hint(outcome.report, trt="trt" in order, config=trt_config)
    if hint:
        outcome.notes.append(hint)
    _write_reports(outcome, report, html)
    return outcome


def compare(
    reference: PathLike,
    test: PathLike,
    *,
    ref_runner: Optional[str] = None,
    test_runner: Optional[str] = None,
    model: Optional[PathLike] = None,
    atol: Union[float, Mapping[str, float], None] = None,
    rtol: Union[float, Mapping[str, float], None] = None,
    check_error_stat: str = "elemwise",
    error_quantile: float = 0.99,
    tolerances: Any = None,
    report: Optional[PathLike] = None,
    html: Optional[PathLike] = None,
    on_progress: Optional[ProgressFn] = None,
) -> Outcome:
    """Compare two saved output sets (trtdebug ``--save-outputs`` directories or Polygraphy JSON).

    ``ref_runner``/``test_runner`` pick a runner when a set holds several (a name or its prefix);
    ``model`` supplies topological order and producers when the saved sets lack them.
    """
    from trtdebug.results import topology_of

    tolerances = tolerances or make_tolerances(atol, rtol, check_error_stat, error_quantile)
    reference, test = Path(reference), Path(test)
    _check_artifact_paths({"--report": report, "--html": html}, [reference, test, model])
    ref_set, test_set = _load_outputs(reference), _load_outputs(test)
    ref_result = _pick(ref_set.results, ref_runner, reference, "--ref-runner")
    test_result = _pick(test_set.results, test_runner, test, "--test-runner")
    if model is not None:
        from trtdebug.model import ModelGraph, load_model

        graph = ModelGraph(load_model(model))
        topology = topology_of(graph)
    else:
        graph, topology = None, ref_set.topology or test_set.topology
    _check_tensor_names(tolerances, graph, extra_names=set(ref_result.iterations[0]) if ref_result.iterations else ())
    if ref_result.runner == test_result.runner:  # keep the two sides apart in the report
        ref_result.runner = f"{ref_result.runner} ({reference.name})"
        test_result.runner = f"{test_result.runner} ({test.name})"
    outcome = Outcome(results=[ref_result, test_result])
    meta = {"reference_source": str(reference), "test_source": str(test)}
    outcome.report = compare_results(outcome.results, tolerances=tolerances, topology=topology, meta=meta,
                                     progress=on_progress)
    _write_reports(outcome, report, html)
    return outcome


def load_report(path: PathLike):
    """A JSON report written by ``run``/``compare`` (``--report``), as the same Report objects."""
    from trtdebug.render.json import load_report as _load

    return _load(path)


def render_report(report_or_path, *, html: Optional[PathLike] = None, json_path: Optional[PathLike] = None):
    """Write a (saved or in-memory) report again, e.g. the HTML page of a report made in CI."""
    inputs = [report_or_path] if _is_path(report_or_path) else []
    _check_artifact_paths({"--html": html, "--json": json_path}, inputs)
    report = load_report(report_or_path) if _is_path(report_or_path) else report_or_path
    outcome = Outcome(report=report)
    _write_reports(outcome, json_path, html)
    return outcome


# -- building blocks the bisectors reuse ---------------------------------------------------------

def make_tolerances(atol=None, rtol=None, check_error_stat: str = "elemwise", error_quantile: float = 0.99):
    """Tolerances from numbers, ``{name: value}`` mappings (``"*"``: every tensor) or CLI strings."""
    from trtdebug.comparison.tolerances import Tolerances
    from trtdebug.comparison.metrics import DEFAULT_ATOL, DEFAULT_RTOL

    def split(value, default, flag):
        if value is None:
            return default, {}
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value), {}
        if isinstance(value, Mapping):
            per = {str(k): float(v) for k, v in value.items() if k != "*"}
            return float(value.get("*", default)), per
        from trtdebug.comparison.tolerances import parse_tolerance_args

        glob, per = parse_tolerance_args([value] if isinstance(value, str) else list(value), flag)
        return (default if glob is None else glob), per

    a, per_a = split(atol, DEFAULT_ATOL, "--atol")
    r, per_r = split(rtol, DEFAULT_RTOL, "--rtol")
    return Tolerances(atol=a, rtol=r, per_tensor_atol=per_a, per_tensor_rtol=per_r,
                      check_error_stat=check_error_stat, error_quantile=error_quantile)


def compare_results(results, *, tolerances, topology: Optional[dict] = None, progress=None, meta=None):
    """Compare the first result (the reference) against each of the others: a Report."""
    from trtdebug.comparison.comparator import compare_runs
    from trtdebug.comparison.report import Report
    from trtdebug.inputs.digest import check_same_inputs

    reference = results[0]
    for test in results[1:]:  # before any work: "different inputs" is the whole answer then
        check_same_inputs(reference, test)
    comparisons = [compare_runs(reference, test, tolerances=tolerances, topology=topology, progress=progress)
                   for test in results[1:]]
    return Report(comparisons=comparisons, meta=dict(meta or {}))


def tf32_hint(report, *, trt: bool, config=None) -> Optional[str]:
    """A hint when TensorRT's default TF32 is the likely cause of an FP32 failure.

    TF32 is on unless asked otherwise and rounds matrix-product inputs to 10 mantissa bits
    (~1e-3 relative error), which fails tight FP32 tolerances at the first MatMul/Conv.
    """
    if not trt or report is None:
        return None
    if config is not None and (config.tf32 is not None or config.fp16 or config.bf16 or config.int8):
        return None
    for comparison in report.comparisons:
        first = comparison.first_failing
        if first is not None and first.producer_op in MATRIX_OPS:
            return (f"hint: TF32 is on (TensorRT's default) and the first failure is a {first.producer_op}; "
                    "re-run with --no-tf32 to tell TF32 rounding from a real error")
    return None


# -- helpers ---------------------------------------------------------------------------------------

def _backends(backends: Sequence[str]) -> List[str]:
    if isinstance(backends, str):
        backends = [backends]
    order: List[str] = []
    for b in backends:
        name = _ALIASES.get(str(b).lower(), str(b).lower())
        if name not in BACKENDS:
            raise UsageError(f"unknown backend {b!r}; choose from {', '.join(BACKENDS)}")
        if name in order:
            raise UsageError(f"backend {name!r} given twice")
        order.append(name)
    if not order:
        raise UsageError("choose at least one backend: --onnxrt, --ref or --trt")
    return order


def _is_model_proto(obj) -> bool:
    return type(obj).__name__ == "ModelProto"


def _is_path(obj) -> bool:
    return isinstance(obj, (str, os.PathLike))


def _trt_config(config, options: Mapping[str, Any], *, wanted: bool):
    """The TensorRT build config from a TrtBuildConfig and/or its fields as keywords."""
    if not options and config is None:
        if not wanted:
            return None
        from trtdebug.runners.tensorrt.config import TrtBuildConfig

        return TrtBuildConfig()
    from trtdebug.runners.tensorrt.config import TrtBuildConfig, parse_size

    known = {f.name for f in fields(TrtBuildConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise TypeError(f"run() got unexpected keyword argument(s) {', '.join(unknown)}")
    if not wanted:
        given = ", ".join(sorted(options)) or "trt_config"
        raise UsageError(f"TensorRT build options ({given}) given without the TensorRT backend: add --trt")
    options = dict(options)
    if isinstance(options.get("workspace"), str):
        options["workspace"] = parse_size(options["workspace"])
    base = config or TrtBuildConfig()
    return base if not options else type(base)(**{**{f.name: getattr(base, f.name) for f in fields(base)}, **options})


def _check_input_options(inputs, *, seed, val_range, input_ranges, iterations) -> None:
    """Options that only shape synthetic inputs make no sense with loaded ones: say so instead of ignoring them."""
    if iterations is not None and iterations < 1:
        raise UsageError(f"--iterations must be at least 1, got {iterations}")
    if inputs is None:
        return
    given = [flag for flag, value in (("--seed", seed is not None), ("--val-range", val_range or input_ranges)) if value]
    if given:
        raise UsageError(f"{'/'.join(given)} only shape synthetic inputs and would be ignored with loaded inputs "
                         "(--load-inputs); drop one or the other")


def _check_loaded_shapes(feeds: Sequence[Feeds], input_shapes: Optional[Mapping[str, Sequence[int]]]) -> None:
    """With loaded inputs, ``--input-shapes`` is a check that they have the shapes the user expects."""
    for name, shape in (input_shapes or {}).items():
        for k, feed in enumerate(feeds):
            if name not in feed:
                raise UsageError(f"--input-shapes names {name!r}, which the loaded inputs do not hold")
            if tuple(feed[name].shape) != tuple(shape):
                raise UsageError(f"--input-shapes {name}:{list(shape)} but the loaded input {name!r} "
                                 f"(iteration {k}) has shape {list(feed[name].shape)}")


def _check_artifact_paths(outputs: Mapping[str, Optional[PathLike]], inputs: Sequence[Optional[PathLike]]) -> None:
    """No artifact may overwrite an input, share a path with another, or be a directory (but saved outputs)."""
    from trtdebug.util.files import check_output_paths, resolved

    check_output_paths(outputs, [p for p in inputs if _is_path(p)])
    for flag, path in outputs.items():
        if path is not None and flag != "--save-outputs" and resolved(path).is_dir():
            raise UsageError(f"{flag} {path} is a directory; give a file name")
    if outputs.get("--save-outputs") is not None:
        from trtdebug.results import outputs_dir_problem
        from trtdebug.util.files import check_replaceable

        check_replaceable(outputs["--save-outputs"], outputs_dir_problem)


def _check_tensor_names(tolerances, graph, extra_names=()) -> None:
    """A per-tensor tolerance for a tensor that does not exist would silently do nothing."""
    names = set(tolerances.per_tensor_atol) | set(tolerances.per_tensor_rtol)
    if not names or (graph is None and not extra_names):
        return
    known = set(extra_names)
    if graph is not None:
        known |= set(graph.tensor_order)
    unknown = sorted(n for n in names if n not in known)
    if unknown:
        import difflib

        close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UsageError(f"--atol/--rtol name tensor(s) the model does not have: {', '.join(map(repr, unknown[:5]))}"
                         f"{hint}")


def _load_outputs(path: PathLike, model=None):
    from trtdebug.results import load_outputs

    return load_outputs(path, model=model)


def _make_runner(backend: str, model, graph, selection, *, providers, trt_config, trt_outputs,
                 trt_exclude_outputs, fused_boundaries, weights=None):
    if backend == "ref":
        from trtdebug.runners.reference import ReferenceRunner

        return ReferenceRunner(model, outputs=selection, graph=graph)
    if backend == "onnxrt":
        from trtdebug.runners.onnxruntime import OnnxRuntimeRunner

        if weights is not None:  # a window: the weightless copy, reading the weights written once
            return OnnxRuntimeRunner(weights.model, outputs=selection, graph=graph, providers=list(providers),
                                     weights=weights)
        return OnnxRuntimeRunner(model, outputs=selection, graph=graph, providers=list(providers))
    from trtdebug.model import OutputSelection
    from trtdebug.runners.tensorrt import make_trt_runner

    trt_selection = OutputSelection(mark_all=selection.mark_all, names=tuple(selection.names) + tuple(trt_outputs),
                                    exclude=tuple(selection.exclude) + tuple(trt_exclude_outputs))
    source = str(model) if isinstance(model, Path) else model
    return make_trt_runner(source, config=trt_config, outputs=trt_selection, graph=graph,
                           model=None if isinstance(model, Path) else model, boundaries=fused_boundaries)


def _feeds(first_runner, graph, inputs, *, seed, iterations, val_range, input_ranges, input_shapes) -> List[Feeds]:
    """Inputs for every iteration: given, loaded and validated, or generated from the model's metadata."""
    from trtdebug.runners.onnx_common import graph_input_metadata

    if graph is not None:
        meta = graph_input_metadata(graph)
    else:  # an engine: only the runner knows its inputs
        first_runner.activate()
        meta = first_runner.input_metadata()
    if inputs is not None:
        from trtdebug.inputs.io import load_inputs, validate_feeds

        if _is_path(inputs):
            feeds = load_inputs(inputs, model=graph)
        else:
            feeds = [dict(inputs)] if isinstance(inputs, Mapping) else [dict(f) for f in inputs]
        if iterations is not None:
            if iterations > len(feeds):
                raise UsageError(f"--iterations {iterations}: the loaded inputs hold only {len(feeds)} set(s)")
            feeds = feeds[:iterations]
        _check_loaded_shapes(feeds, input_shapes)
        validate_feeds(feeds, meta)
        return feeds
    from trtdebug.inputs.synthetic import generate_feeds

    return generate_feeds(meta, seed=1 if seed is None else seed, iterations=iterations or 1,
                          shapes={k: tuple(v) for k, v in (input_shapes or {}).items()},
                          val_range=val_range, per_input_ranges=input_ranges)


def run_runners(runners: Sequence, feeds: Sequence[Feeds], *, save_outputs: Optional[PathLike] = None,
                record_inputs: bool = True, graph=None, model_path: Optional[str] = None,
                on_status: Optional[StatusFn] = None) -> Outcome:
    """Run ready-made runners (any :class:`~trtdebug.runners.base.Runner`) over ``feeds`` into a store.

    With ``save_outputs`` the store is that directory, built aside and swapped in when complete
    (an existing one is replaced only if it is trtdebug's own and holds nothing else); otherwise
    a scratch directory the returned Outcome owns.  ``run`` uses this; so can a search that makes
    its own runners.
    """
    from trtdebug import pipeline

    outcome = Outcome(feeds=list(feeds))
    with _open_store(outcome, save_outputs, graph=graph, model_path=model_path) as store:
        pipeline.execute(runners, feeds, store, save_all=save_outputs is not None,
                         save_inputs=save_outputs is not None and record_inputs, status=on_status)
    outcome.results = list(store.results)
    return outcome


@contextlib.contextmanager
def _open_store(outcome: Outcome, save_outputs: Optional[PathLike], *, graph, model_path: Optional[str]):
    """The OutputStore a run writes to: ``save_outputs``, built aside and swapped in (with its index)
    when the block completes, or a scratch directory ``outcome`` owns.  On success a saved store is
    recorded on ``outcome``; on an error the half-built directory is dropped.  ``windows`` gets it
    passed in (it cannot import this module, which imports it)."""
    from trtdebug.results import OutputStore, outputs_dir_problem
    from trtdebug.util.files import atomic_directory

    with contextlib.ExitStack() as stack:
        if save_outputs is not None:
            root = stack.enter_context(atomic_directory(save_outputs, owned=outputs_dir_problem))
        else:
            outcome._scratch = tempfile.TemporaryDirectory(prefix="trtdebug-")
            root = Path(outcome._scratch.name)
        store = OutputStore(root, graph=graph, model_path=model_path)
        yield store
        if save_outputs is not None:
            store.write_index()
    if save_outputs is not None:
        store.root = Path(save_outputs)  # the staging directory was renamed there
        outcome.saved_outputs = Path(save_outputs)
        outcome.notes.append(f"outputs saved to {save_outputs}")


def _reference_model_runner(path: PathLike, selection):
    """ONNX Runtime (CPU) on the FP32 model given as ``reference_model``, marking what ``selection`` marks."""
    from trtdebug.model import ModelGraph, OutputSelection, load_model
    from trtdebug.runners.onnxruntime import OnnxRuntimeRunner

    fp32 = load_model(path)
    graph = ModelGraph(fp32)
    runner = OnnxRuntimeRunner(fp32, outputs=OutputSelection(mark_all=selection.mark_all), graph=graph,
                               name=f"onnxrt ({Path(path).name})")
    return runner, graph


def _match_qdq(outcome: Outcome, onnx_model, own: int, fp32_topology: dict, topology: dict, meta: dict, *,
               label: str) -> dict:
    """Name the ``own`` last results (runs of a Q/DQ ``onnx_model``) as the reference - an FP32 run - names
    its tensors; returns the topology to compare in (the FP32 one when they were renamed)."""
    from trtdebug.comparison.matching import match_qdq

    reference = outcome.results[0]
    if len(outcome.results) <= own or not reference.iterations:  # the reference is a run of this model
        return topology
    match = match_qdq(onnx_model, reference.iterations[0])
    if match is None:
        return topology
    outcome.results[-own:] = [match.apply(r) for r in outcome.results[-own:]]
    meta["qdq_matching"] = match.as_meta()
    outcome.notes.append(match.note(label))
    return fp32_topology


def _topology(graph, loaded) -> dict:
    if graph is not None:
        from trtdebug.results import topology_of

        return topology_of(graph)
    return next((lo.topology for lo in loaded if lo.topology), {})


def _add_runner_warnings(report, results) -> None:
    """What a runner could not compare or had to correct, said in every comparison it takes part in."""
    said = {}
    for r in results:
        lines = []
        not_compared = r.extra.get("not_compared") or {}
        if not_compared.get("subgraph_tensors"):
            nodes = ", ".join(not_compared.get("nodes", [])[:5])
            lines.append(f"{r.runner}: {not_compared['subgraph_tensors']} tensor(s) inside If/Loop/Scan bodies are not "
                         f"compared (nodes {nodes})")
        warnings = r.extra.get("numpy_warnings") or {}
        if warnings:
            lines.append(f"{r.runner}: numpy warned while computing: "
                         + "; ".join(f"{msg} (x{n})" for msg, n in list(warnings.items())[:3]))
        overrides = r.extra.get("overrides") or {}
        if overrides:
            lines.append(f"{r.runner}: onnx.reference ops replaced by corrected ones: {', '.join(sorted(overrides))}")
        said[r.runner] = lines
    for comparison in report.comparisons:
        for runner in (comparison.reference, comparison.test):
            comparison.warnings.extend(w for w in said.get(runner, []) if w not in comparison.warnings)


def _pick(results, name: Optional[str], source: Path, flag: str):
    if not results:
        raise UsageError(f"{source} holds no runner results")
    if name is None:
        if len(results) > 1:
            raise UsageError(f"{source} holds several runners ({', '.join(r.runner for r in results)}); "
                             f"choose one with {flag}")
        return results[0]
    for r in results:
        if r.runner == name or r.runner.startswith(name):
            return r
    raise UsageError(f"{source} has no runner {name!r} (it has: {', '.join(r.runner for r in results)})")


def _write_reports(outcome: Outcome, report_path: Optional[PathLike], html_path: Optional[PathLike]) -> None:
    if report_path is not None:
        from trtdebug.render.json import write_json

        write_json(outcome.report, report_path)
        outcome.notes.append(f"report written to {report_path}")
    if html_path is not None:
        from trtdebug.render.html import write_html

        write_html(outcome.report, html_path)
        outcome.notes.append(f"HTML report written to {html_path}")
