"""The smallest keep-in-FP32 set that makes a reduced-precision model pass.

1. The all-reduced model first: if it passes, say so and stop (one evaluation).
2. Otherwise rank nodes by the error they introduce (:mod:`~trtdebug.precision.attribution`, on
   ONNX Runtime with emulated reduced-precision storage: cheap, on the CPU) and add them to the
   keep set greedily - 1, 2, 4, ... groups at a time - until the outputs pass.  A node whose true
   output does not fit the target type comes with the consumers that read the overflowing value
   (kept alone, it would overflow at the Cast into them).
3. Then drop what the passing set does not need, by bisection over the added groups: a run of
   groups is dropped whole if the rest still passes, else split in two and each half tried
   (lowest-ranked first), so one needed group among k costs about 2 log2 k evaluations, not k.

"Passes" is the atol/rtol rule on every graph output, or the user's metric
(:mod:`~trtdebug.precision.metric`) when one is given.  An *evaluator* turns a keep set into the
candidate's outputs: :class:`OnnxRuntimeEvaluator` converts the model
(:func:`~trtdebug.precision.convert.convert`) and runs its storage-faithful twin
(:func:`~trtdebug.precision.convert.emulate`); :mod:`~trtdebug.precision.engines` builds and runs
TensorRT engines instead, by either route.  The keep set is ONNX node names.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Set

import numpy as np

from trtdebug.precision.attribution import Attribution, attribute, run_all_tensors
from trtdebug.precision.convert import convert, emulate
from trtdebug.precision.result_dir import ResultDir

RANKING_SOURCE = "ONNX Runtime (CPU), reduced-precision storage emulated by Cast pairs"


@dataclass
class Trial:
    """One candidate keep set, evaluated: its outputs, or why there are none, and what the backend measured."""

    outputs: Optional[Dict[str, np.ndarray]]
    model: object = None  # the converted model (ONNX route), None where the keep set lives in builder flags
    failure: Optional[str] = None  # the candidate could not be built or run (a verdict: it fails)
    info: Dict[str, object] = field(default_factory=dict)  # latency_ms, layer_precisions, build_s, ...


class OnnxRuntimeEvaluator:
    """Judge keep sets on ONNX Runtime's CPU provider, FP16/BF16 storage emulated (see convert.emulate)."""

    backend, route = "onnxrt", "onnx"

    def __init__(self, model, feeds: Mapping[str, np.ndarray], precision: str) -> None:
        self.model, self.feeds, self.precision = model, feeds, precision
        self.notes: List[str] = []

    def __call__(self, keep: Sequence[str]) -> Trial:
        converted = convert(self.model, self.precision, keep)
        values = run_all_tensors(emulate(converted.model, self.precision), self.feeds)
        return Trial({o.name: values[o.name] for o in self.model.graph.output}, converted.model)


Evaluator = Callable[[Sequence[str]], Trial]


@dataclass
class PrecisionSearch:
    passed: bool
    precision: str
    keep_fp32: List[str]
    attribution: Optional[Attribution]
    before: Dict[str, object]
    after: Dict[str, object]
    builds: int  # candidates converted (and built) and run: evaluations
    seconds: float
    model: object = None  # the converted model that passes (or the last one tried); None on the builder route
    notes: List[str] = field(default_factory=list)
    backend: str = "onnxrt"
    route: str = "onnx"
    metric: Optional[str] = None  # the --metric spec, when it replaced atol/rtol
    tolerances: Dict[str, float] = field(default_factory=dict)
    trials: List[Dict[str, object]] = field(default_factory=list)  # every evaluation, in order
    extra: Dict[str, object] = field(default_factory=dict)  # backend facts: route reason, TensorRT version, ...

    def as_dict(self) -> Dict[str, object]:
        return {"command": "precision", "passed": self.passed, "precision": self.precision, "backend": self.backend,
                "route": self.route, "metric": self.metric, "tolerances": dict(self.tolerances),
                "keep_fp32": list(self.keep_fp32),
                "attribution": self.attribution.as_dict()["attribution"] if self.attribution else [],
                "topological": [n.as_dict() for n in self.attribution.nodes] if self.attribution else [],
                "ranking_source": RANKING_SOURCE if self.attribution else None,
                "first_nonfinite": self.attribution.first_nonfinite if self.attribution else None,
                "first_out_of_range": self.attribution.first_out_of_range if self.attribution else None,
                "before": self.before, "after": self.after, "builds": self.builds,
                "latency_ms": {"unfixed": self.before.get("latency_ms"), "fixed": self.after.get("latency_ms")},
                "layer_precisions": {"unfixed": self.before.get("layer_precisions"),
                                     "fixed": self.after.get("layer_precisions")},
                "trials": list(self.trials), "seconds": round(self.seconds, 3), "notes": list(self.notes),
                **self.extra}


def accuracy(reference: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray], names: Sequence[str], *,
             atol: float, rtol: float, metric=None) -> Dict[str, object]:
    """Per graph output: max abs error and the atol/rtol verdict (elementwise); overall ``passed``.

    With ``metric`` (a :class:`~trtdebug.precision.metric.Metric`) the verdict is the metric's, and
    ``"metric": {"name", "score", "passed"}`` says so; the per-output errors are still reported.
    """
    from trtdebug.comparison.metrics import compare_arrays

    per: Dict[str, object] = {}
    for name in names:
        stats = compare_arrays(reference[name], outputs[name], atol=atol, rtol=rtol)
        err = float("nan") if stats.max_abs is None else float(stats.max_abs)
        per[name] = {"passed": bool(stats.passed), "max_abs_error": _num(err),
                     "nonfinite": int(np.sum(~np.isfinite(np.asarray(outputs[name], np.float64))))}
    result: Dict[str, object] = {"passed": all(v["passed"] for v in per.values()), "outputs": per}
    if metric is not None:
        score, passed = metric({n: reference[n] for n in names}, {n: outputs[n] for n in names})
        result["metric"] = {"name": metric.name, "score": score, "passed": passed}
        result["passed"] = passed
    return result


def _num(x: float):
    return float(x) if np.isfinite(x) else ("inf" if x == x else "nan")


def find_keep_set(model, feeds: Mapping[str, np.ndarray], *, precision: str = "fp16", atol: float = 1e-2,
                  rtol: float = 1e-2, max_builds: int = 48, metric=None,
                  evaluator: Optional[Callable[[object], Evaluator]] = None,
                  on_status: Optional[Callable[[str], None]] = None) -> PrecisionSearch:
    """Search a small keep-in-FP32 set for ``model`` in ``precision`` (see the module docstring).

    ``metric``: a callable ``(reference, test) -> bool | (score, passed)`` or a ``module:function``
    spec, used instead of atol/rtol.  ``evaluator(named_model)`` makes the judge of keep sets
    (default: :class:`OnnxRuntimeEvaluator`); it is given the model with every node named.
    """
    from trtdebug.model.loader import name_unnamed_nodes
    from trtdebug.precision.metric import as_metric

    status = on_status or (lambda msg: None)
    judge_metric = as_metric(metric)
    start = time.perf_counter()
    model = _copy(model)
    name_unnamed_nodes(model)
    names = [o.name for o in model.graph.output]
    status("FP32 reference run")
    reference = run_all_tensors(model, feeds)
    evaluate_keep = evaluator(model) if evaluator is not None else OnnxRuntimeEvaluator(model, feeds, precision)
    trials: List[Dict[str, object]] = []
    last: Dict[str, object] = {}

    known: Dict[frozenset, Dict[str, object]] = {}  # keep set -> verdict of a failing candidate already built

    def evaluate(keep: Sequence[str]) -> Dict[str, object]:
        if frozenset(keep) in known:  # e.g. dropping the whole last greedy batch leaves a prefix that failed
            return known[frozenset(keep)]
        status(f"evaluation {len(trials) + 1}: {len(keep)} node(s) kept in FP32")
        t0 = time.perf_counter()
        trial = evaluate_keep(list(keep))
        if trial.outputs is None:
            verdict: Dict[str, object] = {"passed": False, "failure": trial.failure, "outputs": {}}
        else:
            verdict = accuracy(reference, trial.outputs, names, atol=atol, rtol=rtol, metric=judge_metric)
        verdict.update(trial.info)
        trials.append({"keep": len(keep), "passed": verdict["passed"], "seconds": round(time.perf_counter() - t0, 3),
                       **({"failure": trial.failure} if trial.failure else {}),
                       **({"metric_score": verdict["metric"]["score"]} if "metric" in verdict else {}),
                       **({"latency_ms": trial.info["latency_ms"]} if trial.info.get("latency_ms") is not None else {})})
        last["model"], last["verdict"] = trial.model, verdict
        if not verdict["passed"]:
            known[frozenset(keep)] = verdict
        return verdict

    def result(passed: bool, keep: List[str], attrib, after, passing_model, notes: List[str]) -> PrecisionSearch:
        notes = list(getattr(evaluate_keep, "notes", [])) + notes
        return PrecisionSearch(passed, precision, keep, attrib, before, after, len(trials), time.perf_counter() - start,
                               passing_model, notes, backend=getattr(evaluate_keep, "backend", "custom"),
                               route=getattr(evaluate_keep, "route", "onnx"),
                               metric=judge_metric.name if judge_metric else None,
                               tolerances={} if judge_metric else {"atol": atol, "rtol": rtol}, trials=trials,
                               extra=dict(getattr(evaluate_keep, "extra", {})))

    before = evaluate([])
    if before["passed"]:
        return result(True, [], None, before, last["model"],
                      ["the all-reduced model already passes: nothing to keep in FP32"])
    status("attributing the error to nodes (ONNX Runtime)")
    attrib = attribute(model, feeds, precision=precision, reference=reference)
    groups = _groups(model, attrib)
    chosen: List[List[str]] = []
    verdict, step, i = before, 1, 0
    passing_model = None
    while i < len(groups) and len(trials) < max_builds:
        chosen += groups[i:i + step]
        i += step
        step *= 2
        verdict = evaluate(_flat(chosen))
        if verdict["passed"]:
            passing_model = last["model"]
            break
    if not verdict["passed"]:
        return result(False, _flat(chosen), attrib, verdict, last.get("model"),
                      [f"no keep set from the {len(groups)} ranked node group(s) passed within {len(trials)} "
                       "evaluation(s)"])
    state = {"chosen": chosen, "verdict": verdict, "model": passing_model}

    def drop(chunk: List[List[str]]) -> None:
        """Drop ``chunk`` (groups of state["chosen"]) if the rest passes; else bisect it."""
        if len(trials) >= max_builds or not chunk:
            return
        rest = [g for g in state["chosen"] if not any(g is c for c in chunk)]
        if rest:
            trial = evaluate(_flat(rest))
            if trial["passed"]:
                state.update(chosen=rest, verdict=trial, model=last["model"])
                return
        if len(chunk) > 1:
            mid = len(chunk) // 2
            drop(chunk[mid:])  # the lower-ranked half first
            drop([g for g in chunk[:mid] if any(g is c for c in state["chosen"])])

    if len(chosen) > 1:
        drop(list(chosen))
    return result(True, _flat(state["chosen"]), attrib, state["verdict"], state["model"], [])


def _groups(model, attrib: Attribution) -> List[List[str]]:
    """Ranked nodes, each with the consumers of its out-of-range outputs (transitively, while they overflow too)."""
    consumers: Dict[str, List[str]] = {}
    for n in model.graph.node:
        for t in n.input:
            consumers.setdefault(t, []).append(n.name)
    outputs = {n.name: [o for o in n.output if o] for n in model.graph.node}
    by_name = {e.node: e for e in attrib.nodes}
    groups: List[List[str]] = []
    taken: Set[str] = set()
    for entry in attrib.ranking():
        if entry.node in taken or entry.inputs_out_of_range or not entry.introduced_error:
            continue
        group, todo = [], [entry.node]
        while todo:
            name = todo.pop(0)
            if name in taken or name in group:
                continue
            group.append(name)
            info = by_name.get(name)
            if info is not None and info.out_of_range:
                todo += [c for o in outputs.get(name, []) for c in consumers.get(o, [])]
        taken.update(group)
        groups.append(group)
    return groups


def _flat(groups: Sequence[Sequence[str]]) -> List[str]:
    return [n for g in groups for n in g]


def _copy(model):
    copy = type(model)()
    copy.CopyFrom(model)
    return copy


_RESULT_DIR = ResultDir(["model_fp16.onnx", "model_bf16.onnx"])


def write_results(result: PrecisionSearch, out_dir, *, report: Optional[Path] = None) -> Path:
    """Write ``DIR/report.json`` and ``DIR/model_<precision>.onnx`` (the passing model) atomically."""
    return _RESULT_DIR.write(out_dir, result.as_dict(), result.model, f"model_{result.precision}.onnx", report=report)


check_out_dir = _RESULT_DIR.check
