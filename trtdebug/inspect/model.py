"""``trtdebug inspect model``: what an ONNX model contains, without any backend."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple, Union

from trtdebug.util.files import file_size

Dim = Union[int, str, None]


@dataclass(frozen=True)
class TensorSummary:
    name: str
    dtype: Optional[str]  # numpy name (float32, int64, ...) or the ONNX name when numpy has none (bfloat16)
    shape: Optional[Tuple[Dim, ...]]  # None: rank unknown; str: a named dynamic dim; None inside: unknown dim

    @property
    def dynamic_axes(self) -> List[Tuple[int, Dim]]:
        if self.shape is None:
            return []
        return [(i, d) for i, d in enumerate(self.shape) if not isinstance(d, int) or d < 0]

    def shape_text(self) -> str:
        if self.shape is None:
            return "unknown rank"
        return "[" + ", ".join("?" if d is None else str(d) for d in self.shape) + "]"

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype,
                "shape": list(self.shape) if self.shape is not None else None}


@dataclass
class ModelSummary:
    path: Optional[str]
    graph_name: str
    ir_version: int
    producer: str
    opset: int  # default domain
    opsets: Dict[str, int]  # every domain imported
    inputs: List[TensorSummary]
    outputs: List[TensorSummary]
    num_nodes: int
    num_initializers: int
    num_parameters: int  # elements in all initializers (dense and sparse) and Constant nodes
    weight_bytes: int  # the same, in bytes
    op_histogram: Dict[str, int]
    # the share of the above held in Constant nodes: PyTorch exports often put every weight there
    constant_parameters: int = 0
    constant_weight_bytes: int = 0
    num_constant_nodes: int = 0
    num_functions: int = 0
    file_size: Optional[int] = None
    notes: List[str] = field(default_factory=list)

    @property
    def dynamic_dims(self) -> List[Dict[str, Any]]:
        """Every dynamic dimension of the inputs and outputs: tensor, axis and its symbolic name (or None)."""
        out = []
        for kind, tensors in (("input", self.inputs), ("output", self.outputs)):
            for t in tensors:
                if t.shape is None:
                    out.append({"tensor": t.name, "kind": kind, "axis": None, "dim": None})
                for axis, dim in t.dynamic_axes:
                    out.append({"tensor": t.name, "kind": kind, "axis": axis, "dim": dim if isinstance(dim, str) else None})
        return out

    @property
    def dynamic_dim_names(self) -> List[str]:
        names: List[str] = []
        for d in self.dynamic_dims:
            if d["dim"] and d["dim"] not in names:
                names.append(d["dim"])
        return names

    def to_dict(self) -> Dict[str, Any]:
        return {
            "path": self.path, "graph_name": self.graph_name, "ir_version": self.ir_version,
            "producer": self.producer, "opset": self.opset, "opsets": dict(self.opsets),
            "inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs],
            "dynamic_dims": self.dynamic_dims, "num_nodes": self.num_nodes,
            "num_initializers": self.num_initializers, "num_parameters": self.num_parameters,
            "weight_bytes": self.weight_bytes, "constant_parameters": self.constant_parameters,
            "constant_weight_bytes": self.constant_weight_bytes, "num_constant_nodes": self.num_constant_nodes,
            "op_histogram": dict(self.op_histogram),
            "num_functions": self.num_functions, "file_size": self.file_size, "notes": list(self.notes),
        }


def _dtype_name(elem_type: int) -> Optional[str]:
    from onnx import TensorProto

    from trtdebug.model.graph import onnx_dtype_to_numpy

    if not elem_type:
        return None
    np_dtype = onnx_dtype_to_numpy(elem_type)
    if np_dtype is not None and np_dtype.kind != "V":
        return str(np_dtype)
    try:
        return TensorProto.DataType.Name(elem_type).lower()
    except ValueError:
        return f"onnx_type_{elem_type}"


def _value_info_summary(vi) -> TensorSummary:
    from trtdebug.model.graph import _shape_of

    elem = vi.type.tensor_type.elem_type if vi.type.HasField("tensor_type") else 0
    _, shape = _shape_of(vi.type)
    dtype = _dtype_name(elem)
    if dtype is None and not vi.type.HasField("tensor_type") and vi.type.WhichOneof("value"):
        dtype = vi.type.WhichOneof("value")  # sequence_type, map_type, optional_type
    return TensorSummary(name=vi.name, dtype=dtype, shape=shape)


def _elements(dims) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n


def _itemsize(elem_type: int) -> int:
    from onnx import TensorProto, helper

    if elem_type in (TensorProto.STRING, 0):
        return 0
    for name in ("INT4", "UINT4", "FLOAT4E2M1"):
        if elem_type == getattr(TensorProto, name, -1):
            return 1  # two per byte: rounded up per element here, close enough for a summary
    try:
        import numpy as np

        return int(np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).itemsize)
    except Exception:  # noqa: BLE001 - exotic types
        return 0


def _tensor_size(t) -> Tuple[int, int]:
    """``(elements, bytes)`` of a TensorProto from its dims (external data is not read)."""
    n = _elements(t.dims)
    return n, n * _itemsize(t.data_type)


def _sparse_size(st) -> Tuple[int, int]:
    """``(elements, bytes)`` of a SparseTensorProto: its dense element count, the bytes of its stored values."""
    return _elements(st.dims), _tensor_size(st.values)[1]


def _constant_size(attr) -> Tuple[int, int]:
    """``(elements, bytes)`` held by one attribute of a Constant node (any of its eight value forms)."""
    if attr.name == "value":
        return _tensor_size(attr.t)
    if attr.name == "sparse_value":
        return _sparse_size(attr.sparse_tensor)
    if attr.name == "value_float":
        return 1, 4
    if attr.name == "value_int":
        return 1, 8
    if attr.name == "value_floats":
        return len(attr.floats), 4 * len(attr.floats)
    if attr.name == "value_ints":
        return len(attr.ints), 8 * len(attr.ints)
    if attr.name == "value_string":
        return 1, len(attr.s)
    if attr.name == "value_strings":
        return len(attr.strings), sum(len(x) for x in attr.strings)
    return 0, 0


def _constant_weights(graph) -> Tuple[int, int, int]:
    """``(nodes, elements, bytes)`` of the main graph's Constant nodes."""
    nodes = [n for n in graph.node if n.op_type == "Constant" and n.domain in ("", "ai.onnx")]
    sizes = [_constant_size(a) for n in nodes for a in n.attribute]
    return len(nodes), sum(e for e, _ in sizes), sum(b for _, b in sizes)


def summarize_model(model, *, path: Optional[os.PathLike] = None) -> ModelSummary:
    """A :class:`ModelSummary` of an in-memory ``onnx.ModelProto`` (best after shape inference)."""
    from trtdebug.model.graph import ModelGraph

    graph = ModelGraph(model)
    g = model.graph
    init_names = graph.initializer_names
    inputs = [_value_info_summary(vi) for vi in g.input if vi.name not in init_names]
    outputs = [_value_info_summary(vi) for vi in g.output]
    sizes = [_tensor_size(t) for t in g.initializer] + [_sparse_size(st) for st in g.sparse_initializer]
    num_constants, constant_params, constant_bytes = _constant_weights(g)
    params = sum(e for e, _ in sizes) + constant_params
    weight_bytes = sum(b for _, b in sizes) + constant_bytes
    opsets = {(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import}
    producer = " ".join(x for x in (model.producer_name, model.producer_version) if x)
    notes = []
    if any(n.op_type in ("If", "Loop", "Scan") for n in g.node):
        notes.append("the model has control flow (If/Loop/Scan): nodes inside their bodies are not counted")
    size = file_size(path)
    return ModelSummary(
        path=str(path) if path is not None else None, graph_name=g.name, ir_version=int(model.ir_version),
        producer=producer, opset=graph.opset, opsets=opsets, inputs=inputs, outputs=outputs,
        num_nodes=len(g.node), num_initializers=len(g.initializer) + len(g.sparse_initializer),
        num_parameters=params, weight_bytes=weight_bytes, op_histogram=graph.op_histogram(),
        constant_parameters=constant_params, constant_weight_bytes=constant_bytes, num_constant_nodes=num_constants,
        num_functions=len(model.functions), file_size=size, notes=notes,
    )


def inspect_model(path: os.PathLike) -> ModelSummary:
    """Load ``path`` (raises :class:`~trtdebug.errors.ModelLoadError`) and summarize it."""
    from trtdebug.model.loader import load_model

    model = load_model(path)
    return summarize_model(model, path=path)


# -- console -------------------------------------------------------------------------------------------
def _human_bytes(n: Optional[int]) -> str:
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _constant_share(summary: ModelSummary) -> str:
    """``, 97% in 12 Constant nodes``: where the weights are when they are not initializers."""
    if not summary.constant_parameters:
        return ""
    share = summary.constant_weight_bytes / summary.weight_bytes if summary.weight_bytes else 1.0
    return f", {share:.0%} in {summary.num_constant_nodes} Constant node{'s' if summary.num_constant_nodes != 1 else ''}"


def render_model_summary(summary: ModelSummary, console=None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    console = console or Console()
    title = f"ONNX model {summary.path}" if summary.path else "ONNX model"
    console.print(f"[bold]{escape(title)}[/bold]")
    opsets = ", ".join(f"{d} {v}" for d, v in summary.opsets.items())
    line = f"  graph {summary.graph_name!r} | IR {summary.ir_version} | opset {opsets}"
    console.print(line + (f" | producer {summary.producer}" if summary.producer else ""), markup=False)
    console.print(f"  {summary.num_nodes} nodes, {summary.num_initializers} initializers, "
                  f"{summary.num_parameters:,} parameters ({_human_bytes(summary.weight_bytes)} of weights"
                  + _constant_share(summary) + ")"
                  + (f", {summary.num_functions} local functions" if summary.num_functions else "")
                  + (f", file {_human_bytes(summary.file_size)}" if summary.file_size is not None else ""))

    io = Table(title="Inputs and outputs", title_justify="left", show_edge=False)
    io.add_column("kind")
    io.add_column("name", overflow="fold")
    io.add_column("dtype")
    io.add_column("shape", overflow="fold")
    for kind, tensors in (("input", summary.inputs), ("output", summary.outputs)):
        for t in tensors:
            io.add_row(*[Text(v) for v in (kind, t.name, t.dtype or "?", t.shape_text())])
    console.print(io)
    if summary.dynamic_dims:
        named = summary.dynamic_dim_names
        parts = [f"{d['tensor']}[{d['axis']}]={d['dim'] or '?'}" if d["axis"] is not None else f"{d['tensor']} (unknown rank)"
                 for d in summary.dynamic_dims]
        console.print("  dynamic dims: " + ", ".join(parts) + (f"  (named: {', '.join(named)})" if named else ""), markup=False)
    else:
        console.print("  dynamic dims: none (all input and output shapes are static)")

    ops = Table(title="Operators", title_justify="left", show_edge=False)
    ops.add_column("op", overflow="fold")
    ops.add_column("count", justify="right")
    for op, count in summary.op_histogram.items():
        ops.add_row(Text(op), str(count))
    console.print(ops)
    for note in summary.notes:
        console.print(f"  note: {note}", markup=False)
