"""The smallest keep-in-FP32 set that makes a reduced-precision model pass, on ONNX Runtime.

1. The all-reduced model first: if it passes, say so and stop (one evaluation).
2. Otherwise rank nodes by the error they introduce (:mod:`~trtdebug.precision.attribution`) and
   add them to the keep set greedily - 1, 2, 4, ... at a time - until the outputs pass.  A node whose
   true output does not fit the target type comes with the consumers that read the overflowing
   value (kept alone, it would overflow at the Cast into them).
3. Then drop, one at a time, every added group the passing set does not need.

Each evaluation converts the model (:func:`~trtdebug.precision.convert.convert`) and runs its
storage-faithful twin (:func:`~trtdebug.precision.convert.emulate`) in ONNX Runtime.  The keep set is
ONNX node names, and the model that passes is the deliverable: it runs on every backend and is how
TensorRT 11 gets reduced precision.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Set

import numpy as np

from trtdebug.precision.attribution import Attribution, attribute, run_all_tensors
from trtdebug.precision.convert import convert, emulate

REPORT = "report.json"


@dataclass
class PrecisionSearch:
    passed: bool
    precision: str
    keep_fp32: List[str]
    attribution: Optional[Attribution]
    before: Dict[str, object]
    after: Dict[str, object]
    builds: int  # models converted and run (evaluations)
    seconds: float
    model: object = None  # the converted model that passes (or the last one tried)
    notes: List[str] = field(default_factory=list)

    def as_dict(self) -> Dict[str, object]:
        return {"passed": self.passed, "precision": self.precision, "backend": "onnxrt", "route": "onnx",
                "keep_fp32": list(self.keep_fp32),
                "attribution": self.attribution.as_dict()["attribution"] if self.attribution else [],
                "first_nonfinite": self.attribution.first_nonfinite if self.attribution else None,
                "first_out_of_range": self.attribution.first_out_of_range if self.attribution else None,
                "before": self.before, "after": self.after, "builds": self.builds,
                "seconds": round(self.seconds, 3), "notes": list(self.notes)}


def accuracy(reference: Mapping[str, np.ndarray], outputs: Mapping[str, np.ndarray], names: Sequence[str], *,
             atol: float, rtol: float) -> Dict[str, object]:
    """Per graph output: max abs error and the atol/rtol verdict (elementwise); overall ``passed``."""
    from trtdebug.comparison.metrics import compare_arrays

    per: Dict[str, object] = {}
    for name in names:
        stats = compare_arrays(reference[name], outputs[name], atol=atol, rtol=rtol)
        err = float("nan") if stats.max_abs is None else float(stats.max_abs)
        per[name] = {"passed": bool(stats.passed), "max_abs_error": _num(err),
                     "nonfinite": int(np.sum(~np.isfinite(np.asarray(outputs[name], np.float64))))}
    return {"passed": all(v["passed"] for v in per.values()), "outputs": per}


def _num(x: float):
    return float(x) if np.isfinite(x) else ("inf" if x == x else "nan")


def find_keep_set(model, feeds: Mapping[str, np.ndarray], *, precision: str = "fp16", atol: float = 1e-2,
                  rtol: float = 1e-2, max_builds: int = 48) -> PrecisionSearch:
    """Search a small keep-in-FP32 set for ``model`` in ``precision`` (see the module docstring)."""
    from trtdebug.model.loader import name_unnamed_nodes

    start = time.perf_counter()
    model = _copy(model)
    name_unnamed_nodes(model)
    names = [o.name for o in model.graph.output]
    reference = run_all_tensors(model, feeds)
    builds = 0
    last = {}

    def evaluate(keep: Sequence[str]) -> Dict[str, object]:
        nonlocal builds
        builds += 1
        converted = convert(model, precision, keep)
        values = run_all_tensors(emulate(converted.model, precision), feeds)
        verdict = accuracy(reference, values, names, atol=atol, rtol=rtol)
        last["model"], last["verdict"] = converted.model, verdict
        return verdict

    before = evaluate([])
    if before["passed"]:
        return PrecisionSearch(True, precision, [], None, before, before, builds, time.perf_counter() - start,
                               last["model"], ["the all-reduced model already passes: nothing to keep in FP32"])
    attrib = attribute(model, feeds, precision=precision, reference=reference)
    groups = _groups(model, attrib)
    chosen: List[List[str]] = []
    verdict, step, i = before, 1, 0
    passing_model = None
    while i < len(groups) and builds < max_builds:
        chosen += groups[i:i + step]
        i += step
        step *= 2
        verdict = evaluate(_flat(chosen))
        if verdict["passed"]:
            passing_model = last["model"]
            break
    notes: List[str] = []
    if passing_model is None:
        notes.append(f"no keep set from the {len(groups)} ranked node group(s) passed within {builds} evaluation(s)")
        return PrecisionSearch(False, precision, _flat(chosen), attrib, before, verdict, builds,
                               time.perf_counter() - start, last.get("model"), notes)
    for group in list(reversed(chosen)):  # drop what the passing set does not need
        if builds >= max_builds or len(chosen) == 1:
            break
        trial = [g for g in chosen if g is not group]
        result = evaluate(_flat(trial))
        if result["passed"]:
            chosen, verdict, passing_model = trial, result, last["model"]
    return PrecisionSearch(True, precision, _flat(chosen), attrib, before, verdict, builds,
                           time.perf_counter() - start, passing_model, notes)


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


def _owned(directory: Path) -> Optional[str]:
    from trtdebug.util.files import unlisted_entry

    extra = unlisted_entry(directory, [REPORT, "model_fp16.onnx", "model_bf16.onnx"])
    return None if extra is None else f"it holds {extra}, which trtdebug did not write"


def write_results(result: PrecisionSearch, out_dir, *, report: Optional[Path] = None) -> Path:
    """Write ``DIR/report.json`` and ``DIR/model_<precision>.onnx`` (the passing model) atomically."""
    from trtdebug.model.loader import save_model
    from trtdebug.util.files import atomic_directory, write_text_atomic

    text = json.dumps(result.as_dict(), indent=2)
    with atomic_directory(out_dir, owned=_owned) as staging:
        (staging / REPORT).write_text(text, encoding="utf-8")
        if result.model is not None:
            save_model(result.model, staging / f"model_{result.precision}.onnx")
    if report is not None:
        write_text_atomic(report, text)
    return Path(out_dir)


def check_out_dir(out_dir) -> None:
    """Refuse a non-empty directory trtdebug did not write, before the search starts."""
    from trtdebug.util.files import check_replaceable

    check_replaceable(out_dir, _owned)
