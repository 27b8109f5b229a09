"""The results of comparisons, and their JSON form.

A :class:`Report` holds one :class:`Comparison` per (reference, test) pair of runners; a
Comparison holds one :class:`TensorComparison` per tensor both runners produced, in
topological order.  Renderers (console, HTML, JSON) read these objects and nothing else.

JSON (``Report.to_dict``) is strict JSON: non-finite floats are written as the strings
``"inf"``, ``"-inf"`` and ``"nan"`` (an SQNR of ``"inf"`` means identical tensors), and
``null`` means "not defined" (e.g. no relative error because every reference value is 0,
or no statistics because the shapes differ).  Every other number is a plain JSON number.

``Report.from_dict`` reads that JSON back into the same objects (``to_dict`` of the result
equals the original's), so a saved report can be rendered again; values derived from the
tensors (``passed``, ``summary``, ``per_op``, ``tolerances_to_pass``) are recomputed,
not read.  Malformed data raises :class:`~trtdebug.errors.ReportFormatError`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from trtdebug.comparison.jsonable import field_of, from_jsonable, json_float, require_mapping, to_jsonable, typed
from trtdebug.comparison.metrics import TensorStats
from trtdebug.comparison.tolerances import Tolerances
from trtdebug.errors import ReportFormatError

__all__ = ["REPORT_FORMAT", "REPORT_VERSION", "Comparison", "Report", "TensorComparison", "json_float", "to_jsonable"]

REPORT_FORMAT = "trtdebug-report"
REPORT_VERSION = 1


@dataclass
class TensorComparison:
    """One tensor: where it comes from in the model, and its statistics at the worst iteration."""

    name: str
    stats: TensorStats
    producer: Optional[str] = None  # ONNX node name; None for graph inputs or without topology
    producer_op: Optional[str] = None
    topo_index: Optional[int] = None  # None when the topology does not know the tensor
    is_graph_output: Optional[bool] = None  # None when unknown (no topology)
    iteration: int = 0  # the iteration whose statistics are kept (the worst one)

    @property
    def passed(self) -> bool:
        return self.stats.passed

    def to_dict(self) -> Dict[str, Any]:
        out = {"name": self.name, "producer": self.producer, "producer_op": self.producer_op,
               "topo_index": self.topo_index, "is_graph_output": self.is_graph_output, "iteration": self.iteration}
        out.update(to_jsonable(self.stats))
        out["failing_fraction"] = json_float(self.stats.failing_fraction)
        return out

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "TensorComparison":
        """The inverse of :meth:`to_dict` (the statistics sit beside the tensor's facts)."""
        require_mapping(data, "tensor")
        where = f"tensor {data.get('name')!r}"
        return cls(name=typed(str, field_of(data, "name", "tensor"), "tensor name"), stats=from_jsonable(TensorStats, data, where),
                   producer=typed(Optional[str], data.get("producer"), where), producer_op=typed(Optional[str], data.get("producer_op"), where),
                   topo_index=typed(Optional[int], data.get("topo_index"), where),
                   is_graph_output=typed(Optional[bool], data.get("is_graph_output"), where),
                   iteration=typed(int, data.get("iteration", 0), where))


@dataclass
class Comparison:
    """One test runner against the reference runner.

    ``passed`` needs at least one compared tensor: two runners with no tensor in common
    have not been shown to agree.  Tensors found on one side only are listed, not failed
    (TensorRT fuses layers, so intermediates routinely exist on one side only).
    """

    reference: str
    test: str
    tolerances: Tolerances
    tensors: List[TensorComparison] = field(default_factory=list)
    iterations: int = 0
    only_in_reference: List[str] = field(default_factory=list)
    only_in_test: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.tensors) and all(t.passed for t in self.tensors)

    @property
    def failed(self) -> List[TensorComparison]:
        return [t for t in self.tensors if not t.passed]

    @property
    def first_failing(self) -> Optional[TensorComparison]:
        """The earliest failing tensor in topological order: where divergence starts."""
        return next((t for t in self.tensors if not t.passed), None)

    def summary(self) -> Dict[str, int]:
        """Counts; graph outputs and intermediates count only tensors whose role is known."""
        outputs = [t for t in self.tensors if t.is_graph_output is True]
        inner = [t for t in self.tensors if t.is_graph_output is False]
        return {
            "tensors": len(self.tensors), "passed": sum(t.passed for t in self.tensors), "failed": len(self.failed),
            "graph_outputs": len(outputs), "graph_outputs_failed": sum(not t.passed for t in outputs),
            "intermediates": len(inner), "intermediates_failed": sum(not t.passed for t in inner),
            "only_in_reference": len(self.only_in_reference), "only_in_test": len(self.only_in_test),
        }

    def to_dict(self) -> Dict[str, Any]:
        first = self.first_failing
        return {
            "reference": self.reference, "test": self.test, "passed": self.passed,
            "first_failing": first.name if first else None,
            "first_failing_producer": first.producer if first else None,
            "first_failing_producer_op": first.producer_op if first else None,
            "iterations": self.iterations, "tolerances": to_jsonable(self.tolerances), "summary": self.summary(),
            "tolerances_to_pass": to_jsonable(self.tolerances_to_pass()), "per_op": to_jsonable(self.per_op()),
            "only_in_reference": list(self.only_in_reference), "only_in_test": list(self.only_in_test),
            "warnings": list(self.warnings), "tensors": [t.to_dict() for t in self.tensors],
        }

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "Comparison":
        """The inverse of :meth:`to_dict`; derived keys (``passed``, ``summary``, ...) are recomputed."""
        require_mapping(data, "comparison")
        tensors = typed(list, data.get("tensors", []), "comparison tensors")
        return cls(reference=typed(str, field_of(data, "reference", "comparison"), "comparison reference"),
                   test=typed(str, field_of(data, "test", "comparison"), "comparison test"),
                   tolerances=Tolerances.from_dict(field_of(data, "tolerances", "comparison")),
                   tensors=[TensorComparison.from_dict(t) for t in tensors],
                   iterations=typed(int, data.get("iterations", 0), "comparison iterations"),
                   only_in_reference=typed(List[str], data.get("only_in_reference", []), "only_in_reference"),
                   only_in_test=typed(List[str], data.get("only_in_test", []), "only_in_test"),
                   warnings=typed(List[str], data.get("warnings", []), "warnings"))

    def per_op(self) -> List[Dict[str, Any]]:
        """One row per producing op type: tensors, failures, and the worst statistics among them.

        Ordered by failures, then tensor count: "every BatchNormalization fails" is the first
        row.  Tensors without a known producer are grouped as ``(graph input)`` (the topology
        knows them) or ``(unknown)``.
        """
        rows: Dict[str, Dict[str, Any]] = {}
        for t in self.tensors:
            op = t.producer_op or ("(graph input)" if t.topo_index is not None else "(unknown)")
            row = rows.setdefault(op, {"op": op, "tensors": 0, "failed": 0, "worst_max_abs": None,
                                       "worst_max_rel": None, "worst_sqnr_db": None})
            row["tensors"] += 1
            row["failed"] += not t.passed
            s = t.stats
            row["worst_max_abs"] = _extreme(max, row["worst_max_abs"], s.max_abs)
            row["worst_max_rel"] = _extreme(max, row["worst_max_rel"], s.max_rel)
            row["worst_sqnr_db"] = _extreme(min, row["worst_sqnr_db"], s.sqnr_db)
        return sorted(rows.values(), key=lambda r: (-r["failed"], -r["tensors"], r["op"]))

    def tolerances_to_pass(self) -> Dict[str, Any]:
        """Tolerances under which every tensor passes: raise ``atol`` alone, or ``rtol`` alone.

        For each of ``atol`` / ``rtol``: the global value (the current one where no tensor
        it governs fails), the values for tensors that have their own override, and
        ``None`` with a reason when some failing tensor passes under no value.  Passing
        tensors never need more than the current value, so only failing ones count.
        """
        out: Dict[str, Any] = {}
        for key in ("atol", "rtol"):
            overrides = getattr(self.tolerances, f"per_tensor_{key}")
            value: Optional[float] = getattr(self.tolerances, key)
            reason: Optional[str] = None
            per_tensor: Dict[str, float] = {}
            for t in self.failed:
                need = getattr(t.stats, f"{key}_to_pass")
                if need is None:
                    reason = reason or f"{t.name}: {getattr(t.stats, f'{key}_to_pass_reason')}"
                elif t.name in overrides:
                    per_tensor[t.name] = need
                else:
                    value = max(value, need)
            out[key] = None if reason else value
            out[f"{key}_reason"] = reason
            out[f"{key}_per_tensor"] = per_tensor
        return out


@dataclass
class Report:
    """Every comparison of a run, plus facts about the run.

    ``meta`` is free-form JSON-able data; the renderers know ``model`` (path),
    ``inputs`` (``{name: {"shape": [...], "dtype": "float32"}}``) and ``timings``
    (``{runner: [seconds per iteration]}``) and list any other key as it is.
    """

    comparisons: List[Comparison] = field(default_factory=list)
    meta: Dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.comparisons)

    @property
    def runners(self) -> List[str]:
        names: List[str] = []
        for c in self.comparisons:
            names += [n for n in (c.reference, c.test) if n not in names]
        return names

    def to_dict(self) -> Dict[str, Any]:
        from trtdebug import __version__

        return {"format": REPORT_FORMAT, "version": REPORT_VERSION, "trtdebug_version": __version__,
                "passed": self.passed, "runners": self.runners, "meta": to_jsonable(self.meta),
                "comparisons": [c.to_dict() for c in self.comparisons]}

    @classmethod
    def from_dict(cls, data: Any) -> "Report":
        """A report from :meth:`to_dict` output; raises ReportFormatError for anything else.

        Reports of a newer format version are refused rather than half read.
        """
        if not isinstance(data, dict) or data.get("format") != REPORT_FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ReportFormatError(f"not a trtdebug report (format {found!r}, expected {REPORT_FORMAT!r})")
        version = data.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ReportFormatError(f"trtdebug report with an invalid version {version!r}")
        if version > REPORT_VERSION:
            raise ReportFormatError(f"report version {version} was written by a newer trtdebug "
                                    f"(this one reads up to version {REPORT_VERSION}); upgrade trtdebug")
        meta = data.get("meta", {})
        require_mapping(meta, "report meta")
        comparisons = typed(list, data.get("comparisons", []), "report comparisons")
        return cls(comparisons=[Comparison.from_dict(c) for c in comparisons], meta=dict(meta))


def _extreme(pick, current: Optional[float], value: Optional[float]) -> Optional[float]:
    """``pick(current, value)`` where both are defined; NaN and None never win."""
    if value is None or math.isnan(value):
        return current
    return value if current is None else pick(current, value)
