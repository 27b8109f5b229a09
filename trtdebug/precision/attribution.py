"""Which nodes *introduce* reduced-precision error, and which merely *inherit* it.

In a full FP16 run every node's error mixes what it adds with what its inputs already carried;
ranking nodes by that accumulated error blames everything downstream of the first bad node.
Here each node is also run alone in reduced precision on the FP32 reference's values of its
inputs: its error there is the error it introduces.  Cost: one FP32 run and one reduced run of
the model (every tensor marked), plus ONE ONNX Runtime session holding a copy of every node cut
out with its inputs as graph inputs (:class:`~trtdebug.debug.subgraph.Cutter`), converted to the
reduced type as a whole - not one session per node.

Errors are scale-free: ``max |test - ref| / max |ref|`` over a node's float outputs (inf where the
test has NaN/Inf and the reference does not), so a large tensor is not blamed for being large.

Overflow is attributed to its producer: a value beyond the target type's range becomes Inf when
stored, which is the producer's doing, so a node whose *inputs'* true values are out of range is
ranked after every node whose inputs are in range (``inputs_out_of_range``), and a node's outputs
are compared as its consumers will read them (rounded to the target type where they are read in
reduced precision - a node kept in FP32 that feeds an FP16 node overflows at that boundary).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

from trtdebug.errors import UsageError
from trtdebug.precision.convert import CAST_PREFIX, convert, emulate

RANGE = {"fp16": float(np.finfo(np.float16).max), "bf16": float(np.finfo(np.float32).max)}
LOCAL_PREFIX = "local"


@dataclass
class NodeError:
    """One node's share of the error, in ONNX names (``None``: no float output to measure)."""

    node: str
    op: str
    introduced_error: Optional[float]
    accumulated_error: Optional[float]
    first_nonfinite: bool = False  # the first node (topological order) whose reduced output has NaN/Inf
    out_of_range: bool = False  # its FP32 reference output has values beyond the target type's range
    max_abs_reference: Optional[float] = None
    nonfinite: int = 0  # NaN/Inf elements in its reduced-precision outputs where the reference is finite
    inputs_out_of_range: List[str] = field(default_factory=list)  # inputs whose true values do not fit
    kept_fp32: bool = False

    def as_dict(self) -> Dict[str, object]:
        return {"node": self.node, "op": self.op, "introduced_error": _json_float(self.introduced_error),
                "accumulated_error": _json_float(self.accumulated_error), "first_nonfinite": self.first_nonfinite,
                "out_of_range": self.out_of_range, "max_abs_reference": _json_float(self.max_abs_reference),
                "nonfinite": self.nonfinite, "inputs_out_of_range": list(self.inputs_out_of_range),
                "kept_fp32": self.kept_fp32}


@dataclass
class Attribution:
    precision: str
    nodes: List[NodeError]  # topological order
    first_nonfinite: Optional[Dict[str, object]] = None  # {"node", "tensor", "count"}
    first_out_of_range: Optional[Dict[str, object]] = None  # {"node", "tensor", "max_abs"}
    notes: List[str] = field(default_factory=list)

    def ranking(self) -> List[NodeError]:
        """Nodes by introduced error, largest first; nodes fed out-of-range values after the rest."""
        measured = [n for n in self.nodes if n.introduced_error is not None]
        return sorted(measured, key=lambda n: (bool(n.inputs_out_of_range), -_sort_value(n.introduced_error)))

    def top(self, k: int = 10) -> List[NodeError]:
        return self.ranking()[:k]

    def as_dict(self) -> Dict[str, object]:
        return {"precision": self.precision, "attribution": [n.as_dict() for n in self.ranking()],
                "first_nonfinite": self.first_nonfinite, "first_out_of_range": self.first_out_of_range,
                "notes": list(self.notes)}


def _sort_value(x: float) -> float:
    return float("inf") if x != x else x  # NaN error sorts as worst


def _json_float(x: Optional[float]):
    if x is None:
        return None
    return x if np.isfinite(x) else ("inf" if x > 0 else "nan")


# -- running ---------------------------------------------------------------------------------

def run_all_tensors(model, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Every main-graph tensor of ``model`` (inputs included) from one ONNX Runtime CPU run."""
    from trtdebug.model.surgery import OutputSelection, mark_outputs

    ours = tuple(o for n in model.graph.node if n.name.startswith(CAST_PREFIX + "/") for o in n.output
                 if o.endswith("__stored"))  # bfloat16: numpy cannot hold it, and it is no user's tensor
    marked = mark_outputs(model, OutputSelection(mark_all=True, exclude=ours))
    values = dict(_ort_run(marked, feeds))
    values.update({k: np.asarray(v) for k, v in feeds.items()})
    return values


def _ort_run(model, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    import onnxruntime as ort

    from trtdebug.errors import BackendError

    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        wanted = {i.name for i in session.get_inputs()}
        return dict(zip(names, session.run(None, {k: v for k, v in feeds.items() if k in wanted})))
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
        raise BackendError(f"ONNX Runtime could not run the model: {str(exc).splitlines()[0]}") from exc


def round_to(values: np.ndarray, precision: str) -> np.ndarray:
    """``values`` as the target type stores them, widened back to float32."""
    values = np.asarray(values, dtype=np.float32)
    if precision == "fp16":
        with np.errstate(over="ignore"):
            return values.astype(np.float16).astype(np.float32)
    from trtdebug.runners.tensorrt.compat import bf16_bits_to_float32, float32_to_bf16_bits

    return bf16_bits_to_float32(float32_to_bf16_bits(values)).reshape(values.shape)


def relative_error(test: np.ndarray, ref: np.ndarray) -> float:
    """``max |test - ref| / max |ref|`` over elements where the reference is finite; inf for new NaN/Inf."""
    t = np.asarray(test, dtype=np.float64)
    r = np.asarray(ref, dtype=np.float64)
    if t.shape != r.shape:
        return float("inf")
    finite = np.isfinite(r)
    if not finite.any():
        return 0.0
    if not np.isfinite(t[finite]).all():
        return float("inf")
    scale = float(np.abs(r[finite]).max())
    diff = float(np.abs(t[finite] - r[finite]).max())
    return diff / scale if scale > 0 else diff


def _is_float(a) -> bool:
    return isinstance(a, np.ndarray) and np.issubdtype(a.dtype, np.floating)


# -- the local runs, batched -------------------------------------------------------------------

def _local_model(model, reference: Mapping[str, np.ndarray], names: Sequence[str]):
    """One model holding a copy of every node in ``names``, each reading its own graph inputs.

    Node ``n``'s tensors are renamed ``local/<k>/<tensor>`` (``k``: its index), so copies never share
    a tensor; initializers are shared.  Returns (model, per node: {renamed input -> original tensor},
    per node: {renamed output -> original tensor}).
    """
    from onnx import helper

    from trtdebug.debug.subgraph import Cutter

    dtypes = {k: v.dtype for k, v in reference.items() if isinstance(v, np.ndarray)}
    cutter = Cutter(model, available=reference.keys(), dtypes=dtypes)
    nodes, inputs, outputs, inits = [], [], [], {}
    feeds_of: Dict[str, Dict[str, str]] = {}
    outs_of: Dict[str, Dict[str, str]] = {}
    for k, name in enumerate(names):
        cut = cutter.cut([name])
        prefix = f"{LOCAL_PREFIX}/{k}/"
        local_inits = {t.name for t in cut.graph.initializer}
        renames = {vi.name: prefix + vi.name for vi in list(cut.graph.input) + list(cut.graph.output)}
        for t in cut.graph.initializer:
            inits.setdefault(t.name, t)
        for node in cut.graph.node:
            node.name = prefix + node.name
            _rename_inputs(node, renames)
            for j, o in enumerate(node.output):
                if o in renames:
                    node.output[j] = renames[o]
            nodes.append(node)
        feeds_of[name] = {}
        for vi in cut.graph.input:
            if vi.name in local_inits:
                continue
            value = np.asarray(reference[vi.name])
            inputs.append(helper.make_tensor_value_info(renames[vi.name], helper.np_dtype_to_tensor_dtype(value.dtype),
                                                        list(value.shape)))
            feeds_of[name][renames[vi.name]] = vi.name
        outs_of[name] = {}
        for vi in cut.graph.output:
            ref = reference.get(vi.name)
            if not _is_float(ref):
                continue
            outputs.append(helper.make_tensor_value_info(renames[vi.name], helper.np_dtype_to_tensor_dtype(ref.dtype),
                                                         list(ref.shape)))
            outs_of[name][renames[vi.name]] = vi.name
    graph = helper.make_graph(nodes, "local_runs", inputs, outputs, initializer=list(inits.values()))
    merged = helper.make_model(graph, opset_imports=list(model.opset_import), producer_name="trtdebug.precision")
    merged.ir_version = model.ir_version
    merged.functions.extend(model.functions)
    return merged, feeds_of, outs_of


def _rename_inputs(node, renames: Mapping[str, str]) -> None:
    """Rename what ``node`` (and any subgraph of it) reads; bodies read outer tensors by name."""
    for i, t in enumerate(node.input):
        if t in renames:
            node.input[i] = renames[t]
    for attr in node.attribute:
        for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
            for inner in sub.node:
                _rename_inputs(inner, renames)


# -- the attribution ---------------------------------------------------------------------------

def attribute(model, feeds: Mapping[str, np.ndarray], *, precision: str = "fp16", keep_fp32: Iterable[str] = (),
              reference: Optional[Mapping[str, np.ndarray]] = None) -> Attribution:
    """Introduced vs accumulated error of every node of ``model`` in ``precision`` (fp16/bf16).

    ``feeds``: one input set.  ``keep_fp32``: keep-set specs (see :func:`convert.resolve_keep_set`),
    honoured in both the full and the local runs.  ``reference``: every tensor of an FP32 run, if the
    caller has it (else one ONNX Runtime run makes it).
    """
    from trtdebug.model.graph import ModelGraph
    from trtdebug.model.loader import name_unnamed_nodes

    if precision not in RANGE:
        raise UsageError(f"--precision must be one of {', '.join(RANGE)} for attribution, got {precision!r}")
    model = _copy(model)
    name_unnamed_nodes(model)
    keep = list(keep_fp32)
    ref = dict(reference) if reference is not None else run_all_tensors(model, feeds)
    full = convert(model, precision, keep)
    low = run_all_tensors(emulate(full.model, precision), feeds)
    graph = ModelGraph(model)
    names = [n.name for n in graph.nodes]
    local_model, feeds_of, outs_of = _local_model(model, ref, names)
    renamed_keep = [f"{LOCAL_PREFIX}/{k}/{n}" for k, n in enumerate(names) if n in full.kept]
    local_conv = convert(local_model, precision, renamed_keep)
    local_feeds = {new: ref[old] for per in feeds_of.values() for new, old in per.items()}
    local = _ort_run(emulate(local_conv.model, precision), local_feeds)
    limit = RANGE[precision]
    reduced_reads = full.reduced
    result = Attribution(precision=precision, nodes=[])
    for node in graph.nodes:
        outs = outs_of[node.name]
        entry = NodeError(node=node.name, op=node.op_type, introduced_error=None, accumulated_error=None,
                          kept_fp32=node.name in full.kept)
        if outs:
            introduced, accumulated, biggest = 0.0, 0.0, 0.0
            for new, old in outs.items():
                r = ref[old]
                mine = local[new]
                if old in reduced_reads:
                    mine = round_to(mine, precision)
                introduced = max(introduced, relative_error(mine, r))
                if old in low:
                    accumulated = max(accumulated, relative_error(low[old], r))
                    bad = int(np.sum(~np.isfinite(np.asarray(low[old], np.float64)) & np.isfinite(r)))
                    entry.nonfinite += bad
                    if bad and result.first_nonfinite is None:
                        entry.first_nonfinite = True
                        result.first_nonfinite = {"node": node.name, "tensor": old, "count": bad}
                finite = r[np.isfinite(r)]
                m = float(np.abs(finite).max()) if finite.size else 0.0
                biggest = max(biggest, m)
                if m > limit and result.first_out_of_range is None:
                    result.first_out_of_range = {"node": node.name, "tensor": old, "max_abs": m}
            entry.introduced_error, entry.accumulated_error, entry.max_abs_reference = introduced, accumulated, biggest
            entry.out_of_range = biggest > limit
        entry.inputs_out_of_range = [old for old in feeds_of[node.name].values()
                                     if _is_float(ref[old]) and _max_abs(ref[old]) > limit]
        result.nodes.append(entry)
    if full.kept:
        result.notes.append(f"{len(full.kept)} node(s) kept in FP32: " + ", ".join(list(full.kept)[:5]))
    return result


def _max_abs(a: np.ndarray) -> float:
    a = np.asarray(a, np.float64)
    finite = a[np.isfinite(a)]
    return float(np.abs(finite).max()) if finite.size else 0.0


def _copy(model):
    copy = type(model)()
    copy.CopyFrom(model)
    return copy
