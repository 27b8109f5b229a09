"""What the ONNX-based runners (ONNX Runtime, the reference) share: loading and output marking."""
from __future__ import annotations

from typing import Dict, Optional, Union

from trtdebug.model.graph import ModelGraph
from trtdebug.model.loader import load_model
from trtdebug.model.surgery import OutputSelection, mark_outputs
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
