"""A read-only topological view of an ONNX model's main graph.

Reports list tensors "in topological order", name the node that produced each tensor and
say which tensors are graph outputs; bisection needs producers and consumers.  This class
computes all of it once.  Only the main graph is covered: tensors inside If/Loop/Scan bodies
cannot be marked as outputs by any backend, so they never appear in comparisons -
:meth:`ModelGraph.subgraph_tensors` counts them so a report can say what was not compared.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

Dim = Union[int, str, None]  # an int, a symbolic name, or unknown


@dataclass(frozen=True)
class TensorInfo:
    """What the model says about one tensor of the main graph."""

    name: str
    dtype: Optional[np.dtype]
    shape: Optional[Tuple[Dim, ...]]  # None when the rank is unknown
    producer: Optional[str]  # node name; None for graph inputs and initializers
    producer_op: Optional[str]
    topo_index: int  # position in ModelGraph.tensor_order; -1 for initializers
    is_graph_input: bool = False
    is_graph_output: bool = False
    is_initializer: bool = False
    kind: Optional[str] = "tensor"  # value type: tensor, sequence, map, optional, sparse_tensor; None = unknown

    @property
    def is_dynamic(self) -> bool:
        return self.shape is None or any(not isinstance(d, int) or d < 0 for d in self.shape)


def onnx_dtype_to_numpy(elem_type: int) -> Optional[np.dtype]:
    """Numpy dtype for an ONNX TensorProto element type, or None when numpy has none (e.g. bfloat16)."""
    from onnx import helper

    if not elem_type:
        return None
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, TypeError, ValueError):
        return None


def value_kind(type_proto) -> Optional[str]:
    """Which kind of value a TypeProto describes (``tensor``, ``sequence``, ...); None when untyped."""
    kind = type_proto.WhichOneof("value")
    return {"tensor_type": "tensor", "sequence_type": "sequence", "map_type": "map",
            "optional_type": "optional", "sparse_tensor_type": "sparse_tensor"}.get(kind)


def _shape_of(type_proto) -> Tuple[Optional[np.dtype], Optional[Tuple[Dim, ...]]]:
    if not type_proto.HasField("tensor_type"):
        return None, None
    tt = type_proto.tensor_type
    dtype = onnx_dtype_to_numpy(tt.elem_type)
    if not tt.HasField("shape"):
        return dtype, None
    dims: List[Dim] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return dtype, tuple(dims)


def topological_sort(nodes, available) -> list:
    """Kahn's algorithm, stable with respect to the file's node order.

    ONNX requires sorted nodes but not every exporter obeys; a cycle or an input that nothing
    produces leaves the remaining nodes in file order at the end rather than failing here
    (the backends will report the real problem).
    """
    produced_by = {}
    for i, n in enumerate(nodes):
        for o in n.output:
            if o:
                produced_by[o] = i
    deps = []
    for n in nodes:
        d = set()
        for t in list(n.input) + _implicit_inputs(n):
            if t and t not in available and t in produced_by:
                d.add(produced_by[t])
        deps.append(d)
    users: Dict[int, List[int]] = {i: [] for i in range(len(nodes))}
    missing = [len(d) for d in deps]
    for i, d in enumerate(deps):
        for j in d:
            users[j].append(i)
    import heapq

    ready = [i for i, m in enumerate(missing) if m == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users[i]:
            missing[u] -= 1
            if missing[u] == 0:
                heapq.heappush(ready, u)
    if len(order) < len(nodes):
        seen = set(order)
        order += [i for i in range(len(nodes)) if i not in seen]
    return [nodes[i] for i in order]


def _implicit_inputs(node) -> List[str]:
    """Outer-scope tensors read by a node's subgraphs (If/Loop/Scan bodies)."""
    names: List[str] = []
    for attr in node.attribute:
        graphs = ([attr.g] if attr.HasField("g") else []) + list(attr.graphs)
        for g in graphs:
            local = {i.name for i in g.input} | {i.name for i in g.initializer}
            for n in g.node:
                local.update(n.output)
            for n in g.node:
                names += [t for t in n.input if t and t not in local]
                names += [t for t in _implicit_inputs(n) if t not in local]
    return names


def _body_tensor_count(node) -> int:
    count = 0
    for attr in node.attribute:
        for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
            for inner in g.node:
                count += sum(1 for o in inner.output if o) + _body_tensor_count(inner)
    return count


# Ops whose output is not a function of their inputs: never "constant", whatever feeds them.
_RANDOM_OPS = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}


def _constant_tensors(nodes, initializers) -> frozenset:
    """Tensors computed from weights alone (initializers and Constant nodes, no graph input upstream).

    Exporters write many: TorchScript exports an Identity per shared weight, Q/DQ models dequantize
    their weights, and reshapes/transposes of weights are common.  They are the same on every backend
    and TensorRT folds them, so every-layer comparison leaves them out."""
    constant = set(initializers)
    for node in nodes:
        ins = [t for t in list(node.input) + _implicit_inputs(node) if t]
        if node.op_type == "Constant" or (ins and node.op_type not in _RANDOM_OPS and all(t in constant for t in ins)):
            constant.update(o for o in node.output if o)
    return frozenset(constant - set(initializers))


class ModelGraph:
    """Topological view: node order, tensor order, producers, consumers, tensor metadata."""

    def __init__(self, model) -> None:
        self.model = model
        graph = model.graph
        self.initializer_names = {t.name for t in graph.initializer}
        self.input_names = [i.name for i in graph.input if i.name not in self.initializer_names]
        self.output_names = [o.name for o in graph.output]
        self.nodes = topological_sort(list(graph.node), set(self.input_names) | self.initializer_names)

        types, kinds = {}, {}
        for vi in list(graph.value_info) + list(graph.input) + list(graph.output):
            types[vi.name] = _shape_of(vi.type)
            kinds[vi.name] = value_kind(vi.type)

        self.producers: Dict[str, object] = {}
        self.consumers: Dict[str, List[object]] = {}
        order: List[str] = list(self.input_names)
        for node in self.nodes:
            for t in list(node.input) + _implicit_inputs(node):
                if t:
                    self.consumers.setdefault(t, []).append(node)
            for o in node.output:
                if o and o not in self.producers:
                    self.producers[o] = node
                    order.append(o)
        self.tensor_order: List[str] = order
        self.constant_tensors = _constant_tensors(self.nodes, self.initializer_names)
        # name lookups are dictionaries: reports and TensorRT layer maps look up thousands of names
        self._node_names: List[str] = [n.name for n in self.nodes]
        self._nodes_by_name: Dict[str, object] = {}
        for node in self.nodes:
            self._nodes_by_name.setdefault(node.name, node)  # the first in topological order, as before
        self._index = {name: i for i, name in enumerate(order)}
        outputs = set(self.output_names)
        inputs = set(self.input_names)
        self._info: Dict[str, TensorInfo] = {}
        for name in order:
            node = self.producers.get(name)
            dtype, shape = types.get(name, (None, None))
            self._info[name] = TensorInfo(
                name=name, dtype=dtype, shape=shape,
                producer=node.name if node is not None else None,
                producer_op=node.op_type if node is not None else None,
                topo_index=self._index[name], is_graph_input=name in inputs,
                is_graph_output=name in outputs, kind=kinds.get(name),
            )
        for init in graph.initializer:
            if init.name not in self._info:
                self._info[init.name] = TensorInfo(
                    name=init.name, dtype=onnx_dtype_to_numpy(init.data_type), shape=tuple(init.dims),
                    producer=None, producer_op=None, topo_index=-1, is_initializer=True,
                )

    def __contains__(self, name: str) -> bool:
        return name in self._info

    def tensor(self, name: str) -> TensorInfo:
        return self._info[name]

    def get(self, name: str) -> Optional[TensorInfo]:
        return self._info.get(name)

    def topo_index(self, name: str) -> int:
        """Position in topological order; unknown names sort last."""
        return self._index.get(name, len(self._index))

    @property
    def inputs(self) -> List[TensorInfo]:
        return [self._info[n] for n in self.input_names]

    @property
    def node_names(self) -> List[str]:
        """Node names in topological order (one shared list: do not modify it)."""
        return self._node_names

    def node(self, name: str):
        """The node called ``name`` (KeyError if none), in constant time."""
        return self._nodes_by_name[name]

    def subgraph_tensors(self) -> Dict[str, int]:
        """Per main-graph node with If/Loop/Scan bodies: how many tensors its bodies compute (nested
        bodies included).  No backend can return these, so they are never compared."""
        return {n.name: count for n in self.nodes if (count := _body_tensor_count(n))}

    def op_histogram(self) -> Dict[str, int]:
        hist: Dict[str, int] = {}
        for n in self.nodes:
            key = n.op_type if not n.domain or n.domain == "ai.onnx" else f"{n.domain}::{n.op_type}"
            hist[key] = hist.get(key, 0) + 1
        return dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])))

    @property
    def opset(self) -> int:
        for o in self.model.opset_import:
            if o.domain in ("", "ai.onnx"):
                return int(o.version)
        return 0
