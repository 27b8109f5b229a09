"""Every-layer comparison within a memory budget (``--max-memory``): windows of marked tensors.

Marking every tensor of a big model as an output makes a backend hold all of its activations at
once (a ViT at 1333x1333 fills 24 GB, an LLM far more).  Here the tensors to compare are cut, in
topological order, into *windows* whose estimated bytes fit the budget.  Each window is its own
session or engine marking only its tensors; it runs on the same inputs, its tensors go to the
output store on disk at once, and it is freed before the next window starts.  The store ends up
holding what one unbounded ``--mark-all`` run would have produced, so the comparison (and the
report) is the same one; the windows used are added to the report's meta.

Sizes are estimated before anything runs: shape inference on a weightless copy of the model with
the actual input shapes fixed (:func:`estimate_sizes`).  A tensor whose shape is still unknown
(data-dependent ops such as NonZero) is given the whole budget, i.e. a window of its own: the
conservative choice, said in a note.  A single tensor bigger than the budget also gets a window
of its own - it cannot be split further, and the note says so.

The onnx.reference golden is not windowed: ``run(..., intermediate=True)`` keeps every value of
the run alive by design, so it runs once and is streamed to disk (a note says its memory is not
bounded; use ONNX Runtime or ``--load-outputs`` as the reference for a bounded run).

With ``stop_at_first_failure`` the windows are walked in order, window by window over all
backends, and the walk stops after the first window holding a failing tensor: that answers
"where does it start?" without running the rest of the model's windows, which are reported as
skipped.
"""
from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from trtdebug.errors import UsageError

Feeds = Dict[str, np.ndarray]

@dataclass
class Window:
    """Consecutive tensors (topological order) that one session/engine marks together."""

    index: int
    tensors: List[str]
    nbytes: int  # estimated, per iteration
    status: str = "pending"  # pending -> ran | skipped

    def as_meta(self) -> Dict[str, Any]:
        return {"index": self.index, "tensors": len(self.tensors), "first": self.tensors[0], "last": self.tensors[-1],
                "estimated_bytes": self.nbytes, "status": self.status}


@dataclass
class WindowPlan:
    """The windows of a run, and what the sizing could not know."""

    budget: int
    windows: List[Window]
    unknown: List[str] = field(default_factory=list)  # tensors of unknown size (each alone in a window)
    oversized: List[str] = field(default_factory=list)  # tensors bigger than the budget (each alone)
    stopped_at: Optional[int] = None  # the window whose failure stopped the walk

    @property
    def total_bytes(self) -> int:
        return sum(w.nbytes for w in self.windows)

    def as_meta(self) -> Dict[str, Any]:
        return {"budget_bytes": self.budget, "estimated_total_bytes": self.total_bytes,
                "windows": [w.as_meta() for w in self.windows], "unknown_size": list(self.unknown),
                "oversized": list(self.oversized), "stopped_at_window": self.stopped_at}

    def notes(self) -> List[str]:
        ran = [w for w in self.windows if w.status == "ran"]
        lines = [f"--max-memory {_fmt_bytes(self.budget)}: {len(self.windows)} window(s) for "
                 f"{sum(len(w.tensors) for w in self.windows)} tensors (~{_fmt_bytes(self.total_bytes)} of activations "
                 f"per iteration); ran {len(ran)}"]
        if self.stopped_at is not None:
            skipped = [w for w in self.windows if w.status == "skipped"]
            line = f"stopped at window {self.stopped_at + 1}, the first with a failing tensor"
            if skipped:
                line += (f"; skipped windows {skipped[0].index + 1}-{skipped[-1].index + 1} "
                         f"({sum(len(w.tensors) for w in skipped)} tensors, from {skipped[0].tensors[0]!r})")
            lines.append(line)
        if self.unknown:
            lines.append(f"{len(self.unknown)} tensor(s) of unknown size after shape inference (e.g. "
                         f"{self.unknown[0]!r}) were each given a window of their own")
        if self.oversized:
            lines.append(f"{len(self.oversized)} tensor(s) are bigger than --max-memory alone (e.g. "
                         f"{self.oversized[0]!r}) and were each given a window of their own")
        return lines


def check_options(*, max_memory, stop_at_first_failure: bool, is_engine: bool, fused_boundaries: bool,
                  save_engine) -> Optional[int]:
    """Validate the windowing options before anything is loaded; returns the budget in bytes (or None)."""
    if max_memory is None:
        if stop_at_first_failure:
            raise UsageError("--stop-at-first-failure walks the windows of --max-memory: give --max-memory too")
        return None
    if isinstance(max_memory, str):
        from trtdebug.runners.tensorrt.config import parse_size

        budget = parse_size(max_memory, flag="--max-memory")
    else:
        budget = int(max_memory)
        if budget <= 0:
            raise UsageError(f"--max-memory: size must be positive, got {max_memory!r}")
    if is_engine:
        raise UsageError("--max-memory needs the ONNX model: a serialized engine cannot be re-marked window by window")
    if fused_boundaries:
        raise UsageError("--max-memory and --fused-boundaries do not combine (the boundaries come from one engine)")
    if save_engine:
        raise UsageError("--max-memory builds one engine per window: --save-engine would not save the model's engine")
    return budget


def applies(selection) -> bool:
    """Windowing only bounds every-layer marking; with the graph outputs alone it changes nothing."""
    return bool(selection.mark_all)


NO_OP_NOTE = "--max-memory has no effect without --mark-all (only the graph outputs are compared)"


# -- sizing ---------------------------------------------------------------------------------------

def estimate_sizes(model, names: Sequence[str], feeds: Sequence[Feeds]) -> Dict[str, Optional[int]]:
    """Bytes of each named tensor for the largest of ``feeds`` (None where shape inference cannot tell).

    Shape inference runs on a copy of the model without its weights (big initializers become
    typed graph inputs) and with the graph inputs fixed to the feeds' shapes, so symbolic
    dimensions (batch, sequence) resolve to numbers.
    """
    sizes: Dict[str, Optional[int]] = {n: None for n in names}
    shape_sets = {tuple((k, tuple(a.shape)) for k, a in sorted(f.items())) for f in feeds} or {()}
    for shape_set in shape_sets:
        typed = _inferred_types(model, dict(shape_set))
        for n in names:
            size = _nbytes(typed.get(n))
            if size is None:
                continue
            sizes[n] = size if sizes[n] is None else max(sizes[n], size)
    return sizes


def _inferred_types(model, input_shapes: Dict[str, Tuple[int, ...]]) -> Dict[str, Any]:
    import onnx

    from trtdebug.model.loader import weightless_copy

    light = weightless_copy(model, input_shapes)
    try:
        inferred = onnx.shape_inference.infer_shapes(light, strict_mode=False, data_prop=True)
    except Exception:  # inference is best effort: unknown sizes get windows of their own
        return {}
    g = inferred.graph
    return {vi.name: vi.type for vi in list(g.value_info) + list(g.output) + list(g.input)}


def _nbytes(type_proto) -> Optional[int]:
    from trtdebug.model.graph import onnx_dtype_to_numpy

    if type_proto is None or not type_proto.HasField("tensor_type"):
        return None
    tt = type_proto.tensor_type
    dtype = onnx_dtype_to_numpy(tt.elem_type)
    if dtype is None or not tt.HasField("shape"):
        return None
    dims = []
    for d in tt.shape.dim:
        if not d.HasField("dim_value") or d.dim_value < 0:
            return None
        dims.append(d.dim_value)
    return int(np.prod(dims, dtype=np.int64)) * dtype.itemsize


def plan_windows(names: Sequence[str], sizes: Dict[str, Optional[int]], budget: int) -> WindowPlan:
    """Greedy cut of ``names`` (topological order) into windows of at most ``budget`` estimated bytes."""
    windows: List[Window] = []
    unknown, oversized = [], []
    current: List[str] = []
    used = 0

    def close() -> None:
        nonlocal current, used
        if current:
            windows.append(Window(index=len(windows), tensors=current, nbytes=used))
        current, used = [], 0

    for name in names:
        size = sizes.get(name)
        if size is None or size > budget:
            (unknown if size is None else oversized).append(name)
            close()
            windows.append(Window(index=len(windows), tensors=[name], nbytes=budget if size is None else size))
            continue
        if used + size > budget:
            close()
        current.append(name)
        used += size
    close()
    return WindowPlan(budget=budget, windows=windows, unknown=unknown, oversized=oversized)


# -- running --------------------------------------------------------------------------------------

MakeRunner = Callable[[str, Any, Any], Any]  # (backend, OutputSelection, SharedWeights or None) -> Runner


def run_windowed(backends: Sequence[str], feeds: Sequence[Feeds], outcome, *, model, graph, selection, budget: int,
                 make_runner: MakeRunner, loaded: Sequence[Any] = (), tolerances=None,
                 stop_at_first_failure: bool = False, save_outputs=None, record_inputs: bool = True,
                 model_path: Optional[str] = None, on_status=None, open_store):
    """Run ``backends`` window by window into one output store; fills ``outcome`` (an empty
    :class:`trtdebug.api.Outcome`) and returns ``(outcome, WindowPlan)``.

    The filled Outcome is what :func:`trtdebug.api.run_runners` returns for an unbounded run (one
    RunResult per backend, its tensors on disk), so the caller compares and reports as usual.
    ``loaded``: saved reference outputs (``--load-outputs``), read from disk, never held.
    ``open_store``: :func:`trtdebug.api._open_store` (the store in ``save_outputs`` or a scratch one).
    ONNX Runtime windows share the weights (:class:`~trtdebug.model.loader.SharedWeights`, in a
    private temporary directory removed at the end): ``make_runner`` gets them as its third argument.
    """
    from trtdebug.model.surgery import OutputSelection, plan_outputs
    from trtdebug.results import RunResult, TensorSet
    from trtdebug.runners.onnx_common import OutputReport

    status = on_status or (lambda msg: None)
    names, _ = plan_outputs(graph, selection)
    status("sizing tensors")
    plan = plan_windows(names, estimate_sizes(model, names, feeds), budget)
    references = [r for lo in loaded for r in lo.results]
    with contextlib.ExitStack() as stack:
        weights = None
        if "onnxrt" in backends:
            from trtdebug.model.loader import SharedWeights

            status("writing the weights once for the windows' sessions")
            weights = SharedWeights(model, stack.enter_context(tempfile.TemporaryDirectory(prefix="trtdebug-weights-")))
        store = stack.enter_context(open_store(outcome, save_outputs, graph=graph, model_path=model_path))
        digests = store.record_inputs(feeds, save=save_outputs is not None and record_inputs)
        results: Dict[str, Any] = {}

        def run(backend: str, sel, wanted: Sequence[str]) -> None:
            runner = make_runner(backend, sel, weights if backend == "onnxrt" else None)
            if backend not in results:  # named after the runner, as an unbounded run's result is
                results[backend] = store.register(RunResult(
                    runner=runner.name, input_digests=list(digests), iterations=[TensorSet() for _ in feeds],
                    runtimes=[0.0] * len(feeds)))
            _run_window(runner, results[backend], feeds, wanted, store)

        if "ref" in backends:  # onnx.reference keeps every value of a run anyway: one pass
            status("reference: every tensor in one pass")
            run("ref", selection, names)
        windowed = [b for b in backends if b != "ref"]
        for window in plan.windows:
            window_set = set(window.tensors)
            window_sel = OutputSelection(names=tuple(window.tensors),
                                         exclude=tuple(n for n in graph.output_names if n not in window_set)
                                         + tuple(selection.exclude))
            for backend in windowed:
                status(f"{backend}: window {window.index + 1}/{len(plan.windows)}")
                run(backend, window_sel, window.tensors)
            window.status = "ran"
            if stop_at_first_failure and _window_fails(references + [results[b] for b in backends], window.tensors,
                                                       tolerances):
                plan.stopped_at = window.index
                for later in plan.windows[window.index + 1:]:
                    later.status = "skipped"
                ran = [n for w in plan.windows if w.status == "ran" for n in w.tensors]
                for result in references + ([results["ref"]] if "ref" in results else []):
                    result.iterations = [ts.subset(ran) for ts in result.iterations]  # skipped: not "only in ref"
                break
        for backend in windowed:
            if backend != "trt":  # what an unbounded run's ONNX runner says it left out (sequences, bodies)
                results[backend].extra.update(OutputReport(graph, selection).as_extra())
            results[backend].extra["windows"] = sum(w.status == "ran" for w in plan.windows)
    outcome.results = [results[b] for b in backends]
    outcome.notes.extend(plan.notes())
    if "ref" in backends:
        outcome.notes.append("the onnx.reference golden is not windowed (it keeps every value of a run): its memory "
                             "is not bounded by --max-memory; use --onnxrt or --load-outputs as the reference")
    return outcome, plan


def _run_window(runner, result, feeds: Sequence[Feeds], wanted: Sequence[str], store) -> None:
    """Run one window's runner over every feed; each iteration's tensors go to disk before the next."""
    wanted_set = set(wanted)
    with runner:
        for i, feed in enumerate(feeds):
            out = runner.infer(feed)
            tensors = result.iterations[i]
            for name, array in out.items():
                if name in wanted_set:
                    tensors.set_array(name, array)
            del out
            result.runtimes[i] += runner.last_inference_time or 0.0
            store.spill(result, i)
        _merge_extra(result.extra, runner.extra)


def _merge_extra(into: Dict[str, Any], extra: Dict[str, Any]) -> None:
    """Fold one window runner's facts into the backend's: lists of what was left out add up, counts
    sum, anything else is kept from the first window (it is the same for every window)."""
    for key, value in extra.items():
        if key not in into:
            into[key] = value
        elif isinstance(value, list) and isinstance(into[key], list):
            into[key] = into[key] + [v for v in value if v not in into[key]]
        elif key.endswith("_counts") and isinstance(value, dict):
            into[key] = {k: into[key].get(k, 0) + value.get(k, 0) for k in {**into[key], **value}}


def _window_fails(results, names: Sequence[str], tolerances) -> bool:
    """Does any test result fail a tensor of this window against the first result (the reference)?"""
    from trtdebug.comparison.comparator import compare_runs

    reference, tests = results[0], results[1:]
    ref_view = reference_view(reference, names)
    return any(not all(t.passed for t in compare_runs(ref_view, reference_view(test, names),
                                                     tolerances=tolerances).tensors)
               for test in tests)


def reference_view(result, names: Sequence[str]):
    """A RunResult holding only ``names`` of ``result`` (files stay where they are)."""
    from trtdebug.results import RunResult

    return RunResult(runner=result.runner, iterations=[ts.subset(names) for ts in result.iterations],
                     runtimes=list(result.runtimes), input_digests=list(result.input_digests))


def _fmt_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"
