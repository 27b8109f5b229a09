"""The results of comparisons, and their JSON form.

A :class:`Report` holds one :class:`Comparison` per (reference, test) pair of runners; a
Comparison holds one :class:`TensorComparison` per tensor both runners produced, in
topological order.  Renderers (console, HTML, JSON) read these objects and nothing else.

JSON (``Report.to_dict``) is strict JSON: non-finite floats are written as the strings
``"inf"``, ``"-inf"`` and ``"nan"`` (an SQNR of ``"inf"`` means identical tensors), and
``null`` means "not defined" (e.g. no relative error because every reference value is 0,
or no statistics because the shapes differ).  Every other number is a plain JSON number.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np

from trtdebug.comparison.metrics import TensorStats
from trtdebug.comparison.tolerances import Tolerances

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
            "only_in_reference": list(self.only_in_reference), "only_in_test": list(self.only_in_test),
            "warnings": list(self.warnings), "tensors": [t.to_dict() for t in self.tensors],
        }


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


def json_float(x: Optional[float]) -> Any:
    """A float for strict JSON: non-finite values become "inf" / "-inf" / "nan"; None stays None."""
    if x is None:
        return None
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, tuples, numpy scalars and arrays as plain JSON values (floats via :func:`json_float`)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return json_float(obj)
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)
