"""Sanitize a model for a search, and cut any subset of its nodes out as a model of its own.

A search asks about arbitrary subsets of nodes, not only connected regions.  Any subset is a
valid model once every tensor it reads but does not compute becomes a graph input, and every
tensor it computes becomes a graph output: fed with the *true* values of those inputs (the
reference run's tensors), each node sees exactly what it saw in the whole model, so a divergent
node fails wherever it lands and nodes downstream of it do not.  That makes "the subset fails"
monotone in the subset, which is what lets bisection find one culprit in ~log2(N) steps.

Built with onnx.helper directly rather than onnx-graphsurgeon's ``cleanup``: a search cuts the
same model hundreds of times, and copying only the chosen nodes and the initializers they read
is linear in the subset, not in the model.
"""
from __future__ import annotations

import copy
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np

from trtdebug.errors import UsageError
from trtdebug.model.graph import ModelGraph, _implicit_inputs
from trtdebug.model.loader import infer_model_shapes


def sanitize(model, *, input_shapes: Optional[Mapping[str, Sequence[int]]] = None, fold: bool = True) -> Tuple[object, List[str]]:
    """Freeze input shapes (when given), fold constants and drop dead nodes; returns (model, notes).

    Folding (onnx-graphsurgeon, which evaluates constant subgraphs with ONNX Runtime) turns shape
    arithmetic and weight preprocessing into initializers, so the search spends no step on nodes
    that compute the same thing on every backend.  Node names are kept: they are the answer.
    """
    import onnx
    import onnx_graphsurgeon as gs

    notes: List[str] = []
    model = copy.deepcopy(model)
    if input_shapes:
        freeze_input_shapes(model, input_shapes)
        notes.append("input shapes frozen: " + ", ".join(f"{k}{list(v)}" for k, v in input_shapes.items()))
        # the symbolic shapes inferred before would keep Shape nodes from folding: infer again from the frozen ones
        del model.graph.value_info[:]
        model = infer_model_shapes(model)
    graph = gs.import_onnx(model)
    before = len(graph.nodes)
    if fold:
        try:
            graph.fold_constants()
        except Exception as exc:  # noqa: BLE001 - folding is an optimisation; the search works without it
            notes.append(f"constant folding skipped: {type(exc).__name__}: {exc}")
    graph.cleanup().toposort()
    folded = gs.export_onnx(graph)
    folded.ir_version = model.ir_version
    try:
        folded = onnx.shape_inference.infer_shapes(folded, data_prop=True)
    except Exception as exc:  # noqa: BLE001 - types are then taken from the reference arrays
        notes.append(f"shape inference failed after folding: {exc}")
    if len(folded.graph.node) != before:
        notes.append(f"{before - len(folded.graph.node)} node(s) folded or removed; {len(folded.graph.node)} left")
    return folded, notes


def freeze_input_shapes(model, shapes: Mapping[str, Sequence[int]]) -> None:
    known = {i.name: i for i in model.graph.input}
    unknown = [n for n in shapes if n not in known]
    if unknown:
        raise UsageError(f"--input-shapes names no input of the model: {', '.join(unknown)}")
    for name, dims in shapes.items():
        shape = known[name].type.tensor_type.shape
        if len(shape.dim) != len(dims):
            raise UsageError(f"--input-shapes {name}:{list(dims)} has rank {len(dims)}; the input has rank {len(shape.dim)}")
        for d, value in zip(shape.dim, dims):
            d.Clear()
            d.dim_value = int(value)


class Cutter:
    """Cuts node subsets out of one (sanitized) model.

    ``available``: tensors whose true values are known (graph inputs and reference tensors).
    A chosen node reading a tensor without a known value pulls in that tensor's producer, so
    every input of a cut can be fed; None means every tensor can be an input (no true values:
    the oracle makes up its own inputs).  ``dtypes`` fills in types shape inference did not know.
    """

    def __init__(self, model, *, available: Optional[Iterable[str]] = None,
                 dtypes: Optional[Mapping[str, np.dtype]] = None) -> None:
        self.model = model
        self.graph = ModelGraph(model)
        self.available: Optional[Set[str]] = None if available is None else set(available)
        self.dtypes = dict(dtypes or {})
        self.nodes = {n.name: n for n in self.graph.nodes}
        self.order = {n.name: i for i, n in enumerate(self.graph.nodes)}
        self.initializers = {t.name: t for t in model.graph.initializer}
        self.types = {vi.name: vi for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output)}
        if len(self.nodes) != len(self.graph.nodes):
            raise UsageError("the model has several nodes with one name; node names must be unique to report culprits")

    @property
    def candidates(self) -> List[str]:
        """Node names in topological order."""
        return [n.name for n in self.graph.nodes]

    def closure(self, names: Iterable[str]) -> List[str]:
        """``names`` plus the producers of every input whose true value is not known, in topological order."""
        chosen = set(names)
        todo = list(chosen)
        while todo and self.available is not None:
            node = self.nodes[todo.pop()]
            for t in self._reads(node):
                producer = self.graph.producers.get(t)
                if t not in self.available and producer is not None and producer.name not in chosen:
                    chosen.add(producer.name)
                    todo.append(producer.name)
        return sorted(chosen, key=self.order.__getitem__)

    def boundary(self, names: Sequence[str]) -> Tuple[List[str], List[str]]:
        """(inputs, outputs) of the subset ``names`` (already closed)."""
        produced: List[str] = []
        for name in names:
            produced += [o for o in self.nodes[name].output if o]
        made = set(produced)
        inputs: List[str] = []
        for name in names:
            for t in self._reads(self.nodes[name]):
                if t not in made and t not in self.initializers and t not in inputs:
                    inputs.append(t)
        return inputs, produced

    def cut(self, names: Iterable[str], *, name: str = "subgraph"):
        """A standalone model of the closure of ``names``: reads its boundary inputs, outputs every tensor it computes."""
        from onnx import ValueInfoProto, helper

        chosen = self.closure(names)
        if not chosen:
            raise UsageError("cannot cut an empty set of nodes")
        inputs, outputs = self.boundary(chosen)
        read = {t for n in chosen for t in self._reads(self.nodes[n])}
        graph = helper.make_graph(
            [copy.deepcopy(self.nodes[n]) for n in chosen], name,
            [self._value_info(t, required=True) for t in inputs],
            [self._value_info(t, required=False) or ValueInfoProto(name=t) for t in outputs],
            initializer=[self.initializers[t] for t in self.initializers if t in read])
        sub = helper.make_model(graph, opset_imports=list(self.model.opset_import), producer_name="trtdebug.debug")
        sub.ir_version = self.model.ir_version
        sub.functions.extend(self.model.functions)
        return sub

    def _reads(self, node) -> List[str]:
        return [t for t in list(node.input) + _implicit_inputs(node) if t]

    def _value_info(self, name: str, *, required: bool):
        from onnx import helper

        vi = self.types.get(name)
        if vi is not None and vi.type.tensor_type.elem_type:
            return copy.deepcopy(vi)
        dtype = self.dtypes.get(name)
        if dtype is not None:
            rank = None if vi is None or not vi.type.tensor_type.HasField("shape") else len(vi.type.tensor_type.shape.dim)
            shape = None if rank is None else [None] * rank
            return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(np.dtype(dtype)), shape)
        if required:
            raise UsageError(f"cannot cut a subgraph reading {name!r}: its type is unknown (shape inference failed "
                             "and there is no reference value)")
        return None


def true_values(names: Sequence[str], feeds: Sequence[Mapping[str, np.ndarray]], reference: Sequence[Mapping[str, np.ndarray]]
                ) -> List[Dict[str, np.ndarray]]:
    """Per iteration, the value of each tensor in ``names``: a graph input's feed or the reference tensor."""
    out = []
    for k, feed in enumerate(feeds):
        values = {}
        for name in names:
            if name in feed:
                values[name] = feed[name]
            elif k < len(reference) and name in reference[k]:
                values[name] = reference[k][name]
            else:
                raise UsageError(f"no reference value for tensor {name!r} (iteration {k})")
        out.append(values)
    return out
