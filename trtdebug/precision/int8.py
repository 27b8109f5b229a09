"""Which quantizers of a Q/DQ (INT8) model break its accuracy, and the fewest to take out, on ONNX Runtime.

An explicitly quantized model fails for a few quantizers: a per-tensor scale stretched by one outlier
channel rounds every other value to a handful of levels, a saturating range clips what matters, a
weight with one huge row loses the rest.  Ranking quantizers by the error of their own DQ output in
the full INT8 run blames everything downstream of the first bad one, so each quantizer is measured
three ways (:class:`QuantizerError`):

* ``introduced_error``: the model outputs with *only this quantizer* active (every other one taken
  out) against the FP32 outputs - what it costs on its own, the ranking key;
* ``local_error``: ``DQ(Q(x))`` against ``x`` on the FP32 run's value of its tensor (no model run);
* ``accumulated_error``: its DQ output in the full INT8 run against the FP32 value.

Errors are noise-to-signal ratios, ``||test - ref|| / ||ref||`` (RMS error over the RMS of the FP32
value, i.e. 10^(-SQNR/20)), not ``max|error| / max|ref|``: INT8 rounding is uniform noise of one step,
and an outlier that makes the step huge keeps ``max|ref|`` huge too, which would hide exactly the
failure this tool is for.  At the outputs the ratio is over the whole tensor; at a quantizer it is the
worst channel's (:func:`worst_channel_nsr`), since an outlier channel holds most of the energy.

The search then takes quantizers out (:func:`~trtdebug.model.qdq.remove_quantizers`) greedily in
ranking order - 1, 2, 4, ... at a time - until the outputs pass ``atol``/``rtol``, and drops again
each one the passing set does not need.  The model with that set taken out is the deliverable: it
runs on every backend, TensorRT 11 included (which has no INT8 calibration), and keeps the rest INT8.
The FP32 reference is the model the Q/DQ model was made from when given (its weights are then
restored for taken-out weight quantizers), else the Q/DQ model with every quantizer taken out -
weights as their dequantized values, so weight quantizers introduce no error by that measure and
are left out of the ranking (a note says so).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from trtdebug.errors import UsageError
from trtdebug.model.qdq import ACTIVATION, QdqGraph, Quantizer, find_quantizers, fp32_name, original_weights
from trtdebug.model.qdq import remove_quantizers, strip_quantization, weight_fp32_names
from trtdebug.precision.result_dir import ResultDir

ProgressFn = Callable[[int, int, str], None]
FIXED_MODEL = "model_int8_fixed.onnx"


@dataclass
class QuantizerError:
    """One quantizer's share of the error, in ONNX names (``tensor``: the FP32 model's name)."""

    quantizer: Quantizer
    tensor: str
    introduced_error: Optional[float] = None
    local_error: Optional[float] = None
    accumulated_error: Optional[float] = None
    first_nonfinite: bool = False  # the first quantizer (graph order) whose INT8 output has NaN/Inf
    clipped_fraction: float = 0.0  # FP32 values beyond the representable range (saturated by Q)
    scale: Optional[float] = None  # per-tensor scale (the largest, for per-channel)
    kept_fp32: bool = False

    @property
    def out_of_range(self) -> bool:
        return self.clipped_fraction > 0

    def as_dict(self) -> Dict[str, object]:
        q = self.quantizer
        return {"node": q.name, "op": "QuantizeLinear" if q.kind == ACTIVATION else "DequantizeLinear",
                "kind": q.kind, "tensor": self.tensor, "dq_node": q.dq_node, "consumers": list(q.consumers),
                "introduced_error": _json(self.introduced_error), "local_error": _json(self.local_error),
                "accumulated_error": _json(self.accumulated_error), "first_nonfinite": self.first_nonfinite,
                "out_of_range": self.out_of_range, "clipped_fraction": self.clipped_fraction,
                "scale": _json(self.scale), "kept_fp32": self.kept_fp32}


@dataclass
class Int8Search:
    passed: bool
    keep_fp32: List[str]  # FP32 names of the tensors left unquantized
    removed: List[Quantizer]
    attribution: List[QuantizerError]  # ranked, largest introduced error first
    before: Dict[str, object]
    after: Dict[str, object]
    builds: int
    seconds: float
    model: object = None  # the Q/DQ model with ``removed`` taken out
    fp32_source: str = "derived"
    notes: List[str] = field(default_factory=list)

    @property
    def first_nonfinite(self) -> Optional[Dict[str, object]]:
        e = next((e for e in self.attribution if e.first_nonfinite), None)
        return None if e is None else {"node": e.quantizer.name, "tensor": e.tensor}

    def as_dict(self) -> Dict[str, object]:
        return {"passed": self.passed, "precision": "int8", "backend": "onnxrt", "route": "qdq",
                "fp32_model": self.fp32_source, "keep_fp32": list(self.keep_fp32),
                "removed": [{"node": q.name, "dq_node": q.dq_node, "kind": q.kind, "tensor": t}
                            for q, t in zip(self.removed, self.keep_fp32)],
                "attribution": [e.as_dict() for e in self.attribution], "first_nonfinite": self.first_nonfinite,
                "before": self.before, "after": self.after, "builds": self.builds,
                "seconds": round(self.seconds, 3), "notes": list(self.notes)}


def noise_to_signal(test: np.ndarray, ref: np.ndarray) -> float:
    """``||test - ref|| / ||ref||`` over elements where the reference is finite; inf for new NaN/Inf."""
    t, r = np.asarray(test, np.float64), np.asarray(ref, np.float64)
    if t.shape != r.shape:
        return float("inf")
    finite = np.isfinite(r)
    if not np.isfinite(t[finite]).all():
        return float("inf")
    signal = float(np.linalg.norm(r[finite]))
    noise = float(np.linalg.norm(t[finite] - r[finite]))
    return noise / signal if signal > 0 else noise


def find_fp32_set(qdq_model, feeds: Mapping[str, np.ndarray], *, fp32_model=None, atol: float = 1e-2,
                  rtol: float = 1e-2, max_builds: int = 48, fp32_source: Optional[str] = None,
                  progress: Optional[ProgressFn] = None) -> Int8Search:
    """Rank ``qdq_model``'s quantizers and search the fewest to take out (see the module docstring)."""
    from trtdebug.precision.attribution import run_all_tensors
    from trtdebug.precision.search import accuracy

    start = time.perf_counter()
    qdq = find_quantizers(qdq_model)
    if not qdq.quantizers:
        raise UsageError("--precision int8 needs a Q/DQ model (QuantizeLinear/DequantizeLinear nodes, e.g. from "
                         "onnxruntime.quantization.quantize_static); this one has none")
    if fp32_model is None:
        fp32_model = strip_quantization(qdq_model, qdq=qdq)
        weights, source = None, "derived"
    else:
        weights, source = original_weights(qdq, qdq_model, fp32_model), fp32_source or "given"
    fp32 = run_all_tensors(fp32_model, feeds)
    names = [o.name for o in qdq_model.graph.output]
    missing = [n for n in names if n not in fp32]
    if missing:
        raise UsageError(f"the FP32 model has no output {missing[0]!r} of the Q/DQ model: give the model it was "
                         "quantized from (--fp32-model)")
    builds = 0

    def outputs_of(model) -> Dict[str, np.ndarray]:
        nonlocal builds
        builds += 1
        return _outputs(model, feeds)

    def verdict(values) -> Dict[str, object]:
        return accuracy(fp32, values, names, atol=atol, rtol=rtol)

    int8 = run_all_tensors(qdq_model, feeds)
    before = verdict(int8)
    errors = _measure(qdq, fp32, int8, weights, weight_fp32_names(qdq, qdq_model, fp32_model))
    notes: List[str] = [] if weights is not None else [
        "no --fp32-model: the FP32 reference is the model without its quantizers, weights as their dequantized "
        "values, so weight quantizers are not ranked"]
    ranked = [e for e in errors if e.quantizer.kind == ACTIVATION or weights is not None]
    for k, e in enumerate(ranked, 1):  # what each costs alone: the only quantizer left in
        others = [q for q in qdq.quantizers if q is not e.quantizer]
        alone = outputs_of(remove_quantizers(qdq_model, others, qdq=qdq, weights=weights))
        e.introduced_error = max(noise_to_signal(alone[n], fp32[n]) for n in names)
        if progress is not None:
            progress(k, len(ranked), e.quantizer.name)
    ranked.sort(key=lambda e: -_sortable(e.introduced_error))
    ranked += [e for e in errors if e not in ranked]

    def evaluate(chosen: Sequence[QuantizerError]):
        model = remove_quantizers(qdq_model, [e.quantizer for e in chosen], qdq=qdq, weights=weights)
        return model, verdict(outputs_of(model))

    def result(passed, chosen, after, model) -> Int8Search:
        for e in errors:
            e.kept_fp32 = e in chosen
        return Int8Search(passed, [e.tensor for e in chosen], [e.quantizer for e in chosen], ranked, before, after,
                          builds, time.perf_counter() - start, model, source, notes)

    if before["passed"]:
        notes.append("the INT8 model already passes: nothing to keep in FP32")
        return result(True, [], before, qdq_model)
    chosen: List[QuantizerError] = []
    step, i, after, model = 1, 0, before, None
    candidates = [e for e in ranked if e.introduced_error]
    while i < len(candidates) and builds < max_builds:
        chosen += candidates[i:i + step]
        i, step = i + step, step * 2
        model, after = evaluate(chosen)
        if after["passed"]:
            break
    if not after["passed"]:
        notes.append(f"taking out {len(chosen)} of {len(candidates)} ranked quantizer(s) did not pass within "
                     f"{builds} evaluation(s)")
        return result(False, chosen, after, model)
    for e in list(reversed(chosen)):  # drop what the passing set does not need
        if builds >= max_builds or len(chosen) == 1:
            break
        trial = [c for c in chosen if c is not e]
        trial_model, trial_after = evaluate(trial)
        if trial_after["passed"]:
            chosen, model, after = trial, trial_model, trial_after
    return result(True, chosen, after, model)


def _measure(qdq: QdqGraph, fp32: Mapping[str, np.ndarray], int8: Mapping[str, np.ndarray],
             weights: Optional[Mapping[str, np.ndarray]], weight_names: Mapping[str, str]) -> List[QuantizerError]:
    """Local and accumulated error, saturation and scale of every quantizer, in graph order.

    ``weights``: the true FP32 weight per weight DQ output (None: unknown, the weights' error is not measured).
    """
    known = set(fp32)
    out: List[QuantizerError] = []
    seen_nonfinite = False
    for q in qdq.quantizers:
        activation = q.kind == ACTIVATION
        e = QuantizerError(q, fp32_name(q, known) if activation else weight_names.get(q.output, fp32_name(q)))
        scale = qdq.constants.get(q.scale)
        e.scale = None if scale is None else float(np.max(np.abs(scale)))
        x = fp32.get(e.tensor) if activation else (weights or {}).get(q.output)
        if x is None or scale is None or not np.issubdtype(np.asarray(x).dtype, np.floating):
            out.append(e)
            continue
        x = np.asarray(x, np.float32)
        if qdq.clamps_at_zero(q):  # it stands for a Relu: the FP32 value is the Relu's (see model.qdq)
            x = np.maximum(x, 0)
        axis = 1 if activation else int(qdq.attrs.get(q.dq_node, {}).get("axis", 0))
        e.local_error = worst_channel_nsr(qdq.qdq(q, x), x, axis)
        e.clipped_fraction = qdq.clipped_fraction(q, x)
        got = int8.get(q.output)
        if got is not None and activation:
            e.accumulated_error = worst_channel_nsr(got, x, axis)
            if not seen_nonfinite and not np.isfinite(np.asarray(got, np.float64)).all() and np.isfinite(x).all():
                e.first_nonfinite = seen_nonfinite = True
        out.append(e)
    return out


def worst_channel_nsr(test: np.ndarray, ref: np.ndarray, axis: int = 1) -> float:
    """The largest :func:`noise_to_signal` over the channels along ``axis`` (the whole tensor below rank 2).

    Per channel because per-tensor INT8 fails channel by channel: an outlier channel carries most of the
    energy, so the tensor's ratio stays small while the other channels are rounded away.  A channel with
    less than 1% of the mean channel's RMS counts as that 1% (near-zero channels are not signal).
    """
    t, r = np.asarray(test, np.float64), np.asarray(ref, np.float64)
    if t.shape != r.shape or r.ndim < 2 or not r.size:
        return noise_to_signal(t, r)
    if not np.isfinite(t[np.isfinite(r)]).all():
        return float("inf")
    t, r = np.moveaxis(np.nan_to_num(t), axis, 0).reshape(r.shape[axis], -1), \
        np.moveaxis(np.nan_to_num(r), axis, 0).reshape(r.shape[axis], -1)
    signal = np.sqrt(np.mean(r * r, axis=1))
    floor = 0.01 * float(np.mean(signal))
    if floor <= 0:
        return float(np.sqrt(np.mean((t - r) ** 2)))
    noise = np.sqrt(np.mean((t - r) ** 2, axis=1))
    return float(np.max(noise / np.maximum(signal, floor)))


def _outputs(model, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """The graph outputs of one ONNX Runtime CPU run."""
    from trtdebug.runners.onnxruntime import OnnxRuntimeRunner

    with OnnxRuntimeRunner(model) as runner:
        return dict(runner.infer(feeds))


def _sortable(x: Optional[float]) -> float:
    return -1.0 if x is None else (float("inf") if x != x else x)


def _json(x: Optional[float]):
    if x is None:
        return None
    return float(x) if np.isfinite(x) else ("inf" if x > 0 else "nan")


_RESULT_DIR = ResultDir([FIXED_MODEL])


def write_results(result: Int8Search, out_dir, *, report=None):
    """``DIR/report.json`` and ``DIR/model_int8_fixed.onnx`` (the quantizers of ``keep_fp32`` taken out), atomically."""
    return _RESULT_DIR.write(out_dir, result.as_dict(), result.model, FIXED_MODEL, report=report)


check_out_dir = _RESULT_DIR.check
