"""Graph surgery: mark tensors as outputs, extract subgraphs.

Marking every tensor as a graph output is how the ONNX Runtime runner exposes every layer;
extraction is how capability reports and bisection cut models apart (with onnx-graphsurgeon:
set the graph's inputs and outputs, then ``cleanup()``).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Iterable, List, Optional, Sequence, Tuple

from trtdebug.errors import UsageError

# Outputs of these ops are weights or metadata, identical on every backend, and TensorRT
# folds them away; comparing them is noise.
CONSTANT_OPS = {"Constant", "ConstantOfShape"}
# Tensors computed from those and initializers alone are left out of --mark-all too, with this reason.
REASON_CONSTANT = "computed from weights alone (the same on every backend; TensorRT folds it)"


@dataclass(frozen=True)
class OutputSelection:
    """Which tensors a runner should return, beyond the graph outputs.

    ``mark_all`` returns every intermediate tensor; ``names`` adds specific ones; ``exclude``
    removes tensors from either.  The default returns only the model's own outputs.
    """

    mark_all: bool = False
    names: Sequence[str] = field(default_factory=tuple)
    exclude: Sequence[str] = field(default_factory=tuple)

    @property
    def is_default(self) -> bool:
        return not self.mark_all and not self.names


def select_tensors(graph, selection: OutputSelection) -> List[str]:
    """Tensor names (topological order) to mark as outputs, graph outputs included."""
    return plan_outputs(graph, selection)[0]


def plan_outputs(graph, selection: OutputSelection) -> Tuple[List[str], List[Tuple[str, str]]]:
    """(tensors to return, in topological order; [(name, reason)] for values left out).

    Sequences, maps and optionals (SplitToSequence, SequenceConstruct, ...) are left out with a
    reason: ONNX Runtime returns them as Python lists, the reference as lists or None, and
    neither is an array the comparator can measure.  Values shape inference could not type
    are kept; the runners drop them at run time if they turn out not to be arrays.
    """
    exclude = set(selection.exclude)
    wanted: List[str] = list(graph.output_names)
    skipped: List[Tuple[str, str]] = []
    if selection.mark_all:
        kept = set(graph.output_names) | set(selection.names) | exclude  # asked for (or away) by name
        for name in graph.tensor_order:
            info = graph.tensor(name)
            if info.is_graph_input or info.producer_op in CONSTANT_OPS:
                continue
            if name in graph.constant_tensors and name not in kept:
                skipped.append((name, REASON_CONSTANT))
                continue
            wanted.append(name)
    unknown = [n for n in selection.names if n not in graph]
    if unknown:
        raise UsageError(f"unknown tensor name(s) requested as outputs: {', '.join(unknown[:5])}")
    wanted += list(selection.names)
    seen = set()
    ordered: List[str] = []
    for name in sorted(wanted, key=graph.topo_index):
        if name in seen or name in exclude:
            continue
        seen.add(name)
        kind = graph.tensor(name).kind if name in graph else "tensor"
        if kind not in ("tensor", None):
            skipped.append((name, not_a_tensor_reason(kind)))
        else:
            ordered.append(name)
    return ordered, skipped


def not_a_tensor_reason(kind: str) -> str:
    return f"{kind} value, not a tensor (not compared)"


def mark_outputs(model, selection: OutputSelection, graph=None):
    """A copy of ``model`` whose graph outputs are the selected tensors, in topological order.

    Dtypes and shapes come from shape inference where it knew them; tensors it could not type
    are still marked with no type (ONNX Runtime accepts that), never with a guessed one.
    """
    from onnx import ValueInfoProto

    from trtdebug.model.graph import ModelGraph

    graph = graph or ModelGraph(model)
    names = select_tensors(graph, selection)
    # graph outputs that are not tensors stay outputs (a model needs its outputs); runners drop them
    keep = [n for n in graph.output_names if n not in names and n not in selection.exclude]
    names = sorted(names + keep, key=graph.topo_index)
    if names == graph.output_names:
        return model
    known = {vi.name: vi for vi in list(model.graph.value_info) + list(model.graph.output)}
    marked = type(model)()
    marked.CopyFrom(model)
    del marked.graph.output[:]
    for name in names:
        vi = known.get(name)
        marked.graph.output.append(copy.deepcopy(vi) if vi is not None else ValueInfoProto(name=name))
    return marked


def extract_subgraph(model, input_names: Iterable[str], output_names: Iterable[str], *, name: Optional[str] = None):
    """A standalone model computing ``output_names`` from ``input_names``.

    Inputs keep their inferred dtype and shape; if shape inference could not type an input,
    the extracted model would be invalid, so that is an error rather than a silent guess.
    """
    import onnx_graphsurgeon as gs

    gs_graph = gs.import_onnx(model)
    tensors = gs_graph.tensors()
    ins, outs = list(input_names), list(output_names)
    missing = [n for n in ins + outs if n not in tensors]
    if missing:
        raise UsageError(f"tensor(s) not in the model: {', '.join(missing[:5])}")
    new_inputs = []
    for n in ins:
        t = tensors[n]
        if isinstance(t, gs.Constant):
            continue
        if t.dtype is None:
            raise UsageError(f"cannot extract a subgraph with input {n!r}: its dtype is unknown (shape inference failed)")
        new_inputs.append(t)
    gs_graph.inputs = new_inputs
    gs_graph.outputs = [tensors[n] for n in outs]
    gs_graph.cleanup(remove_unused_graph_inputs=False)
    if name:
        gs_graph.name = name
    sub = gs.export_onnx(gs_graph)
    sub.ir_version = model.ir_version
    return sub
