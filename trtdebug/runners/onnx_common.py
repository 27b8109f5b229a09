"""What the ONNX-based runners (ONNX Runtime, the reference) share: loading, output marking, and
saying which values they could not return."""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from trtdebug.model.graph import ModelGraph
from trtdebug.model.loader import load_model
from trtdebug.model.surgery import OutputSelection, mark_outputs, not_a_tensor_reason, plan_outputs
from trtdebug.runners.base import TensorMeta


def prepare_model(source: Union[str, "object"], outputs: OutputSelection, graph: Optional[ModelGraph] = None):
    """Load (if given a path) and mark the selected outputs; returns (marked model, graph of the original)."""
    model = load_model(source) if isinstance(source, str) else source
    graph = graph or ModelGraph(model)
    return mark_outputs(model, outputs, graph), graph


def graph_input_metadata(graph: ModelGraph) -> Dict[str, TensorMeta]:
    return {t.name: TensorMeta(dtype=t.dtype, shape=t.shape) for t in graph.inputs}


def order_outputs(names, values, graph: ModelGraph):
    """Pair names with values and sort them topologically, so every runner returns the same order."""
    pairs = sorted(zip(names, values), key=lambda nv: graph.topo_index(nv[0]))
    return dict(pairs)


class OutputReport:
    """What an ONNX runner returns and what it leaves out, with reasons, for the runner's ``extra``.

    Keys (shared with TensorRT's marking where they mean the same): ``skipped`` [{name, reason}],
    ``skipped_counts`` {reason: n}, and with ``mark_all`` ``not_compared`` {subgraph_tensors: N,
    nodes: [node names, topological order], per_node: {node: N}} for tensors inside If/Loop/Scan
    bodies, which no backend can return.
    """

    def __init__(self, graph: ModelGraph, selection: OutputSelection) -> None:
        self.wanted, self.skipped = plan_outputs(graph, selection)
        self.subgraphs = graph.subgraph_tensors() if selection.mark_all else {}

    def keep_arrays(self, names, values) -> Tuple[List[str], List[np.ndarray]]:
        """Drop values that are not arrays (a sequence output shape inference could not type)."""
        kept_names, kept = [], []
        for name, value in zip(names, values):
            if isinstance(value, np.ndarray) or np.isscalar(value):
                kept_names.append(name)
                kept.append(np.asarray(value))
            elif all(name != n for n, _ in self.skipped):
                kind = "sequence" if isinstance(value, list) else "map" if isinstance(value, dict) else type(value).__name__
                self.skipped.append((name, not_a_tensor_reason(kind)))
        return kept_names, kept

    def as_extra(self) -> Dict[str, object]:
        extra: Dict[str, object] = {}
        if self.skipped:
            counts: Dict[str, int] = {}
            for _, reason in self.skipped:
                counts[reason] = counts.get(reason, 0) + 1
            extra["skipped"] = [{"name": n, "reason": r} for n, r in self.skipped]
            extra["skipped_counts"] = counts
        if self.subgraphs:
            extra["not_compared"] = {"subgraph_tensors": sum(self.subgraphs.values()), "nodes": list(self.subgraphs),
                                     "per_node": dict(self.subgraphs)}
        return extra
