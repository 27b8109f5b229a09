"""Q/DQ (explicitly quantized) ONNX graphs: find the quantizers, emulate them, take them out.

A model made by ``onnxruntime.quantization.quantize_static`` (or ModelOpt, or a QAT export) says
where INT8 is used with ``QuantizeLinear -> DequantizeLinear`` pairs on activations and a lone
``DequantizeLinear`` on each quantized weight.  Everything INT8 tooling needs is in that
structure: which FP32 tensor a pair stands for (the Q input), what consumers read instead (the DQ
output), and how to remove a pair (consumers read the float tensor again) - which is how a layer is
"kept in FP32" on every backend, TensorRT 11 included.

Why removal is not always a plain bypass: ``quantize_static`` drops a ``Relu`` whose output is
quantized with a range that starts at 0 (zero point at the type's minimum), because the Q clamps
negative values anyway.  Bypassing such a pair would let negative values through, so a removed
quantizer whose range starts at 0 becomes a ``Relu`` instead of an ``Identity`` (harmless where
the value was non-negative already: calibration saw no negative value there).

Only main-graph quantizers are handled; per-tensor and per-axis scales (blocked quantization,
opset 21's ``block_size``, is refused where its arithmetic is needed).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Set, Tuple

import numpy as np

from trtdebug.errors import UsageError

Q_OP, DQ_OP = "QuantizeLinear", "DequantizeLinear"
ACTIVATION, WEIGHT = "activation", "weight"
# the suffixes quantize_static gives the tensors it adds
DQ_SUFFIX, Q_INPUT_SUFFIX, Q_SUFFIX = "_DequantizeLinear_Output", "_QuantizeLinear_Input", "_QuantizeLinear_Output"
REMOVED_SUFFIX = "/kept_fp32"


@dataclass(frozen=True)
class Quantizer:
    """One quantization point, in the model's ONNX names.

    ``tensor`` is the float value being quantized (the Q input for an activation, the quantized
    initializer for a weight); ``quantized`` the integer values (the DQ input); ``output`` the
    DequantizeLinear output that consumers read instead; ``consumers`` the nodes reading it.
    """

    kind: str  # ACTIVATION or WEIGHT
    tensor: str
    quantized: str
    output: str
    dq_node: str
    q_node: Optional[str]  # None for a weight
    scale: str
    zero_point: Optional[str]
    consumers: Tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The node that identifies this quantizer in reports: the Q of a pair, the DQ of a weight."""
        return self.q_node or self.dq_node

    def as_dict(self) -> Dict[str, object]:
        return {"kind": self.kind, "tensor": self.tensor, "quantized": self.quantized, "output": self.output, "q_node": self.q_node,
                "dq_node": self.dq_node, "consumers": list(self.consumers)}


@dataclass
class QdqGraph:
    """Every quantizer of a model, with the constants their arithmetic needs."""

    quantizers: List[Quantizer]
    constants: Dict[str, np.ndarray] = field(default_factory=dict)  # initializers and Constant outputs
    attrs: Dict[str, Dict[str, object]] = field(default_factory=dict)  # per DQ/Q node: axis, block_size

    @property
    def activations(self) -> List[Quantizer]:
        return [q for q in self.quantizers if q.kind == ACTIVATION]

    @property
    def weights(self) -> List[Quantizer]:
        return [q for q in self.quantizers if q.kind == WEIGHT]

    def by_name(self) -> Dict[str, Quantizer]:
        return {q.name: q for q in self.quantizers}

    def qdq(self, quantizer: Quantizer, x: np.ndarray) -> np.ndarray:
        """``DQ(Q(x))`` as the model computes it: round half to even, saturate, dequantize (float32)."""
        scale, zp, axis = self._params(quantizer)
        lo, hi = _range_of(zp)
        q = np.clip(np.rint(np.asarray(x, np.float32) / _along(scale, axis, np.ndim(x))) + _along(zp, axis, np.ndim(x)),
                    lo, hi)
        return ((q - _along(zp, axis, np.ndim(x))) * _along(scale, axis, np.ndim(x))).astype(np.float32)

    def clipped_fraction(self, quantizer: Quantizer, x: np.ndarray) -> float:
        """The share of ``x`` beyond what the quantizer represents, i.e. saturated (below 0 does not count
        where the range starts at 0: that is the Relu it stands for)."""
        scale, zp, axis = self._params(quantizer)
        lo, hi = _range_of(zp)
        x = np.asarray(x, np.float64)
        if not x.size:
            return 0.0
        low = np.zeros(()) if self.clamps_at_zero(quantizer) else _along((lo - zp.astype(np.float64)) * scale, axis, x.ndim)
        high = _along((hi - zp.astype(np.float64)) * scale, axis, x.ndim)
        return float(np.mean((x < low) | (x > high)))

    def dequantized_weight(self, quantizer: Quantizer) -> np.ndarray:
        """The float weight a weight DequantizeLinear produces."""
        scale, zp, axis = self._params(quantizer)
        w = self.constants[quantizer.tensor].astype(np.float64)
        return ((w - _along(zp, axis, w.ndim)) * _along(scale, axis, w.ndim)).astype(np.float32)

    def clamps_at_zero(self, quantizer: Quantizer) -> bool:
        """True when the range starts at exactly 0: the quantizer stands in for a Relu (see the module doc)."""
        zp = self.constants.get(quantizer.zero_point) if quantizer.zero_point else None
        if zp is None or zp.dtype.kind not in "iu":
            return False
        return bool(np.all(zp == np.iinfo(zp.dtype).min))

    def _params(self, quantizer: Quantizer) -> Tuple[np.ndarray, np.ndarray, int]:
        if quantizer.scale not in self.constants:
            raise UsageError(f"quantizer {quantizer.name}: scale {quantizer.scale!r} is not a constant")
        scale = self.constants[quantizer.scale].astype(np.float64)
        zp = (self.constants[quantizer.zero_point] if quantizer.zero_point in self.constants
              else np.zeros(scale.shape, np.uint8))
        if zp.dtype.kind not in "iu":
            raise UsageError(f"quantizer {quantizer.name}: {zp.dtype} quantization is not supported (integer types only)")
        attrs = self.attrs.get(quantizer.dq_node, {})
        if attrs.get("block_size"):
            raise UsageError(f"quantizer {quantizer.name}: blocked quantization (block_size) is not supported")
        return scale, zp, int(attrs.get("axis", 1))


def _range_of(zp: np.ndarray) -> Tuple[int, int]:
    info = np.iinfo(zp.dtype)
    return int(info.min), int(info.max)


def _along(values: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    """A per-tensor (scalar) or per-axis (1-D) parameter shaped to broadcast over a rank-``ndim`` tensor."""
    values = np.asarray(values, np.float64)
    if values.ndim == 0 or values.size == 1:
        return values.reshape(())
    shape = [1] * ndim
    shape[axis % ndim] = values.size
    return values.reshape(shape)


def find_quantizers(model) -> QdqGraph:
    """Every Q->DQ pair on an activation and every DQ on a constant (weight), in graph order.

    A DequantizeLinear fed by anything else (a QLinear* op, a graph input) is not a quantizer
    trtdebug can remove and is left out.
    """
    from onnx import numpy_helper

    g = model.graph
    constants = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for node in g.node:
        if node.op_type == "Constant" and node.output:
            value = next((a for a in node.attribute if a.name == "value"), None)
            if value is not None:
                constants[node.output[0]] = numpy_helper.to_array(value.t)
    producers = {o: n for n in g.node for o in n.output if o}
    consumers: Dict[str, List[str]] = {}
    for n in g.node:
        for t in n.input:
            consumers.setdefault(t, []).append(n.name)
    attrs: Dict[str, Dict[str, object]] = {}
    found: List[Quantizer] = []
    for node in g.node:
        if node.op_type not in (Q_OP, DQ_OP):
            continue
        attrs[node.name] = {a.name: a.i for a in node.attribute if a.name in ("axis", "block_size")}
        if node.op_type != DQ_OP or not node.output:
            continue
        x = node.input[0]
        scale, zp = node.input[1], (node.input[2] if len(node.input) > 2 and node.input[2] else None)
        reads = tuple(consumers.get(node.output[0], ()))
        producer = producers.get(x)
        if x in constants and (producer is None or producer.op_type == "Constant"):
            found.append(Quantizer(WEIGHT, x, x, node.output[0], node.name, None, scale, zp, reads))
        elif producer is not None and producer.op_type == Q_OP:
            found.append(Quantizer(ACTIVATION, producer.input[0], x, node.output[0], node.name, producer.name,
                                   scale, zp, reads))
    return QdqGraph(found, constants, attrs)


def fp32_name(quantizer: Quantizer, known: Optional[Set[str]] = None) -> str:
    """The FP32 model's name for what ``quantizer`` quantizes.

    quantize_static keeps the float tensor's name for an activation's Q input, except for a graph
    output, whose name moves to the DQ output (the producer then writes ``<name>_QuantizeLinear_Input``);
    a weight ``w`` becomes ``w_quantized`` and its DQ output ``w_DequantizeLinear_Output`` (or ``w``
    itself, as it names biases).  With ``known`` (the FP32 names) the first candidate that is one wins.
    """
    if quantizer.kind == ACTIVATION:
        candidates = [_strip(quantizer.tensor, Q_INPUT_SUFFIX), quantizer.tensor, _strip(quantizer.output, DQ_SUFFIX),
                      quantizer.output]
    else:
        candidates = [_strip(quantizer.output, DQ_SUFFIX), _strip(quantizer.tensor, "_quantized"), quantizer.output]
    return next((c for c in candidates if known is None or c in known), candidates[0])


def _strip(name: str, suffix: str) -> str:
    return name[: -len(suffix)] if name.endswith(suffix) and len(name) > len(suffix) else name


def remove_quantizers(model, quantizers: Iterable[Quantizer], *, qdq: Optional[QdqGraph] = None,
                      weights: Optional[Mapping[str, np.ndarray]] = None):
    """A copy of ``model`` with ``quantizers`` taken out (their tensors left in FP32); names are kept.

    An activation's DQ becomes ``Identity`` (``Relu`` where the range starts at 0) of the Q input,
    named ``<dq node>/kept_fp32``, and its Q goes when nothing else reads it; a weight's DQ becomes a
    float initializer of the DQ output's name holding ``weights[dq output]`` when given (the true
    FP32 weight), else the dequantized value.  Constants nobody reads any more are dropped.
    """
    from onnx import helper, numpy_helper

    qdq = qdq or find_quantizers(model)
    out = type(model)()
    out.CopyFrom(model)
    g = out.graph
    chosen = {q.dq_node: q for q in quantizers}
    new_nodes, new_inits = [], []
    for node in g.node:
        q = chosen.get(node.name)
        if q is None or node.op_type != DQ_OP:
            new_nodes.append(node)
        elif q.kind == ACTIVATION:
            op = "Relu" if qdq.clamps_at_zero(q) else "Identity"
            new_nodes.append(helper.make_node(op, [q.tensor], [q.output], name=node.name + REMOVED_SUFFIX))
        else:
            value = weights.get(q.output) if weights else None
            value = qdq.dequantized_weight(q) if value is None else np.asarray(value, np.float32)
            new_inits.append(numpy_helper.from_array(value, q.output))
    del g.node[:]
    g.node.extend(new_nodes)
    g.initializer.extend(new_inits)
    _drop_unread(out)
    return out


def _drop_unread(model) -> None:
    """Remove Q nodes and constants that nothing reads any more (graph outputs count as readers)."""
    g = model.graph
    while True:
        read = _read_names(g) | {o.name for o in g.output}
        dead = [n for n in g.node if n.op_type in (Q_OP, "Constant") and n.output and not any(o in read for o in n.output)]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
    read = _read_names(g) | {o.name for o in g.output}
    keep = [t for t in g.initializer if t.name in read]
    del g.initializer[:]
    g.initializer.extend(keep)
    names = {t.name for t in keep} | {o for n in g.node for o in n.output} | {i.name for i in g.input}
    keep_vi = [v for v in g.value_info if v.name in names]
    del g.value_info[:]
    g.value_info.extend(keep_vi)


def _read_names(graph) -> Set[str]:
    """Every tensor name any node reads, in this graph and in the bodies of If/Loop/Scan."""
    names: Set[str] = set()
    for n in graph.node:
        names.update(n.input)
        for a in n.attribute:
            for sub in list(a.graphs) + ([a.g] if a.HasField("g") else []):
                names |= _read_names(sub)
    return names


def strip_quantization(model, *, qdq: Optional[QdqGraph] = None):
    """The FP32 model a Q/DQ model stands for: every quantizer removed (weights as their dequantized values)."""
    qdq = qdq or find_quantizers(model)
    return remove_quantizers(model, qdq.quantizers, qdq=qdq)


def original_weights(qdq: QdqGraph, qdq_model, fp32_model) -> Dict[str, np.ndarray]:
    """The FP32 model's weight for each weight quantizer's DQ output (see :func:`weight_fp32_names`)."""
    from onnx import numpy_helper

    inits = {t.name: t for t in fp32_model.graph.initializer}
    return {dq_out: numpy_helper.to_array(inits[name]).astype(np.float32)
            for dq_out, name in weight_fp32_names(qdq, qdq_model, fp32_model).items() if name in inits}


def weight_fp32_names(qdq: QdqGraph, qdq_model, fp32_model=None) -> Dict[str, str]:
    """{weight DQ output: the FP32 model's name of that weight}.

    With the FP32 model, matched by the consuming node and input position (node names survive
    quantization where tensor names do not); without it, by quantize_static's naming convention.
    """
    if fp32_model is None:
        return {q.output: fp32_name(q) for q in qdq.weights}
    twins = {n.name: n for n in fp32_model.graph.node if n.name}
    seen: Dict[str, str] = {}
    for node in qdq_model.graph.node:
        twin = twins.get(node.name)
        if twin is not None:
            for i, name in enumerate(node.input[: len(twin.input)]):
                seen.setdefault(name, twin.input[i])
    return {q.output: seen.get(q.output, fp32_name(q)) for q in qdq.weights}
