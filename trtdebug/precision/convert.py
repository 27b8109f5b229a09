"""Convert an FP32 ONNX model to FP16 or BF16, keeping chosen nodes in FP32.

This is the one precision route every backend honours, and the only one TensorRT 11 has: a
strongly typed network runs each layer in the type the graph gives it.  The conversion

* splits the nodes into a *reduced* set and a *kept* (FP32) set: the user's keep set (node names,
  op types, ``A..B`` ranges, see :func:`resolve_keep_set`), plus nodes that cannot be converted
  (an op whose ONNX schema has no FP16/BF16 type, a custom op, an initializer or constant that would
  overflow the target type) - each with its reason;
* gives every float32 tensor a *home*: the set of the node that produces it (graph inputs: FP32
  unless ``keep_io_types=False``), and inserts one Cast per tensor and direction where a node of the
  other set reads it, so Casts sit only at the boundaries between the two sets;
* leaves alone inputs whose ONNX schema admits only float32 (Resize's scales and roi, ...) and
  non-float tensors (shapes, indices);
* converts subgraphs (If/Loop/Scan bodies) with their node: a reduced If runs its branches in the
  reduced type, and nodes of the keep set inside a body are honoured there too.

Types come from the ONNX schemas (``onnx.defs``), not from a hand-written op list, so a new opset
needs no change here.  The result is checked with strict ONNX shape inference before it is returned.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np

from trtdebug.errors import InputError, TrtDebugError, UsageError

LOW, FP32 = "low", "fp32"
TARGETS = ("fp16", "bf16")
FP16_MAX = float(np.finfo(np.float16).max)
CAST_PREFIX = "trtdebug_cast"


@dataclass
class Conversion:
    """The converted model and what the conversion decided, in ONNX names."""

    model: object  # onnx.ModelProto
    target: str  # "fp16" or "bf16"
    kept: Dict[str, str] = field(default_factory=dict)  # node kept in FP32 -> why
    casts: List[str] = field(default_factory=list)  # names of the Cast nodes inserted
    converted_nodes: int = 0
    reduced: Set[str] = field(default_factory=set)  # original tensors stored or read in the reduced type
    notes: List[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.converted_nodes} node(s) in {self.target.upper()}, {len(self.kept)} kept in FP32, "
                f"{len(self.casts)} Cast(s) inserted")

    def as_dict(self) -> Dict[str, object]:
        return {"target": self.target, "converted_nodes": self.converted_nodes, "kept_fp32": dict(self.kept),
                "casts": len(self.casts), "notes": list(self.notes)}


# -- the keep set ------------------------------------------------------------------------------

def _all_nodes(graph, depth: int = 0):
    """(node, depth) for every node of ``graph`` and of its subgraphs, outer ones first."""
    for node in graph.node:
        yield node, depth
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                yield from _all_nodes(sub, depth + 1)


def resolve_keep_set(model, specs: Iterable[str]) -> Dict[str, str]:
    """Node names to keep in FP32 -> why, from ``specs``: node names, op types, or ``A..B``.

    ``A..B`` keeps every main-graph node on a path from A to B, both included; A and B are tensor
    or node names (a tensor starts at its consumers / ends at its producer).  Anything else is a
    usage error naming the spec.
    """
    from trtdebug.model.graph import ModelGraph

    nodes = [n for n, _ in _all_nodes(model.graph)]
    by_name = {n.name: n for n in nodes if n.name}
    op_types = {n.op_type for n in nodes}
    keep: Dict[str, str] = {}
    for spec in specs:
        spec = spec.strip()
        if ".." in spec:
            start, _, end = spec.partition("..")
            for name in _between(model, ModelGraph(model), start.strip(), end.strip(), spec):
                keep.setdefault(name, f"between {spec}")
        elif spec in by_name:
            keep.setdefault(spec, "requested")
        elif spec in op_types:
            for n in nodes:
                if n.op_type == spec and n.name:
                    keep.setdefault(n.name, f"op type {spec}")
        else:
            raise UsageError(f"--keep-fp32 {spec!r}: no node or op type of that name in the model "
                             "(give a node name, an op type such as Softmax, or a range A..B of tensor/node names)")
    return keep


def _between(model, graph, start: str, end: str, spec: str) -> List[str]:
    producer = {o: n.name for n in model.graph.node for o in n.output if o}
    consumers: Dict[str, List[str]] = {}
    for n in model.graph.node:
        for t in n.input:
            consumers.setdefault(t, []).append(n.name)
    outputs = {n.name: [o for o in n.output if o] for n in model.graph.node}
    inputs = {n.name: [t for t in n.input if t] for n in model.graph.node}
    if start in outputs:
        first = [start]
    elif start in graph:
        first = consumers.get(start, [])
    else:
        raise UsageError(f"--keep-fp32 {spec!r}: {start!r} is neither a tensor nor a node of the main graph")
    if end in outputs:
        last = [end]
    elif end in producer:
        last = [producer[end]]
    else:
        raise UsageError(f"--keep-fp32 {spec!r}: {end!r} is neither a tensor produced by a node nor a node")
    down = _reachable(first, lambda n: [c for o in outputs[n] for c in consumers.get(o, [])])
    up = _reachable(last, lambda n: [producer[t] for t in inputs[n] if t in producer])
    chosen = down & up
    if not chosen:
        raise UsageError(f"--keep-fp32 {spec!r}: no path leads from {start!r} to {end!r}")
    return [n.name for n in model.graph.node if n.name in chosen]


def _reachable(start, neighbours) -> Set[str]:
    """The nodes reachable from ``start`` (included) by following ``neighbours`` (node -> nodes)."""
    seen: Set[str] = set()
    todo = list(start)
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo += neighbours(n)
    return seen


# -- types from the ONNX schemas ---------------------------------------------------------------

class _Schemas:
    """Which inputs/outputs of a node may hold the target type, from ``onnx.defs``."""

    def __init__(self, model, target_type: str) -> None:
        self.opsets = {o.domain or "": o.version for o in model.opset_import}
        self.target_type = target_type  # "tensor(float16)" / "tensor(bfloat16)"
        self.functions = {(f.domain, f.name) for f in model.functions}

    def schema(self, node):
        import onnx.defs

        domain = node.domain or ""
        if domain not in ("", "ai.onnx") or (domain, node.op_type) in self.functions:
            return None
        try:
            return onnx.defs.get_schema(node.op_type, self.opsets.get("", 1), "")
        except Exception:  # noqa: BLE001 - onnx raises SchemaError for unknown ops
            return None

    def _allows(self, schema, type_str: str) -> bool:
        for c in schema.type_constraints:
            if c.type_param_str == type_str:
                return self.target_type in c.allowed_type_strs
        return type_str == self.target_type

    def params(self, formal: Sequence, index: int):
        if not formal:
            return None
        if index < len(formal):
            return formal[index]
        last = formal[-1]
        return last if _is_variadic(last) else None

    def input_low(self, schema, index: int) -> bool:
        p = self.params(schema.inputs, index)
        return p is not None and self._allows(schema, p.type_str)

    def output_follows(self, schema, index: int, low_params: Set[str]) -> bool:
        """Output ``index`` becomes the reduced type: its type parameter is one a reduced input set."""
        p = self.params(schema.outputs, index)
        return p is not None and p.type_str in low_params

    def convertible(self, schema) -> bool:
        return any(self._allows(schema, p.type_str) for p in schema.inputs) or \
            any(self._allows(schema, p.type_str) for p in schema.outputs)


def _is_variadic(param) -> bool:
    import onnx.defs

    return param.option == onnx.defs.OpSchema.FormalParameterOption.Variadic


# -- the conversion ----------------------------------------------------------------------------

def convert(model, to: str = "fp16", keep_fp32: Iterable[str] = (), *, keep_io_types: bool = True,
            on_overflow: str = "keep") -> Conversion:
    """Convert ``model`` (FP32) to ``to`` ("fp16"/"bf16"), keeping ``keep_fp32`` specs in FP32.

    ``keep_io_types``: graph inputs and outputs stay float32 (Casts at the edges); False makes them
    the reduced type.  ``on_overflow``: "keep" keeps a node whose initializer or constant exceeds the
    target's range in FP32 (the reason is recorded); "refuse" raises a UsageError naming it.
    """
    import onnx
    from onnx import TensorProto

    if to not in TARGETS:
        raise UsageError(f"--to must be one of {', '.join(TARGETS)}, got {to!r}")
    if on_overflow not in ("keep", "refuse"):
        raise UsageError(f"on_overflow must be 'keep' or 'refuse', got {on_overflow!r}")
    low_type = TensorProto.FLOAT16 if to == "fp16" else TensorProto.BFLOAT16
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception as exc:  # noqa: BLE001 - onnx raises several types
        raise InputError(f"cannot convert: ONNX shape inference failed on the model ({exc})") from exc
    work = copy.deepcopy(inferred)
    keep = resolve_keep_set(work, keep_fp32)
    result = Conversion(model=work, target=to, kept=dict(keep))
    schemas = _Schemas(work, "tensor(float16)" if to == "fp16" else "tensor(bfloat16)")
    conv = _GraphConverter(schemas, low_type, result, on_overflow)
    io_home = FP32 if keep_io_types else LOW
    conv.run(work.graph, outer_home={}, input_home={i.name: io_home for i in work.graph.input},
             output_home=io_home, node_home=None)
    _strip_types(work.graph, conv.changed)
    try:
        checked = onnx.shape_inference.infer_shapes(work, strict_mode=True)
        onnx.checker.check_model(checked)
    except Exception as exc:  # noqa: BLE001 - a type mismatch here is a bug in this module
        raise TrtDebugError(f"internal error: the {to.upper()} model does not type-check ({exc})") from exc
    result.model = checked
    if keep_io_types:
        result.notes.append("graph inputs and outputs kept in float32")
    return result


class _GraphConverter:
    """Converts one graph (and, recursively, its subgraphs) in place."""

    def __init__(self, schemas: _Schemas, low_type: int, result: Conversion, on_overflow: str) -> None:
        self.schemas = schemas
        self.low_type = low_type
        self.result = result
        self.on_overflow = on_overflow
        self.changed: Set[str] = set()  # tensors whose declared type is no longer float32
        self.float_names: Set[str] = set()  # float32 tensors of every scope seen so far (names are unique)

    # ``node_home``: the set every node of this graph belongs to unless kept (None: the main graph,
    # where nodes are reduced unless kept); ``outer_home``: homes of the enclosing scopes' tensors.
    def run(self, graph, *, outer_home: Mapping[str, str], input_home: Mapping[str, str], output_home: str,
            node_home: Optional[str]) -> None:
        from onnx import TensorProto

        types = _elem_types(graph)
        self.float_names |= {n for n, t in types.items() if t == TensorProto.FLOAT}
        floats = self.float_names
        inits = {t.name: t for t in graph.initializer}
        home: Dict[str, str] = dict(outer_home)
        for vi in graph.input:
            if vi.name in floats:
                home[vi.name] = input_home.get(vi.name, FP32)
                if home[vi.name] == LOW:
                    vi.type.tensor_type.elem_type = self.low_type
        nodes = list(graph.node)  # protobuf hands out new wrappers per access: index, never id()
        domains = self._assign(nodes, inits, node_home)
        wants = [self._wants(node, d, floats) for node, d in zip(nodes, domains)]
        init_wants: Dict[str, Set[str]] = {}
        for node, d, want in zip(nodes, domains, wants):
            for t, w in zip(node.input, want):
                if t in inits and w is not None:
                    init_wants.setdefault(t, set()).add(w)
            for t in _body_outer_reads(node):
                if t in inits and t in floats:
                    init_wants.setdefault(t, set()).add(d)
        new_nodes: List = []
        casts: Dict[Tuple[str, str], str] = {}
        init_low: Dict[str, str] = {}  # fp32 initializer -> name of its reduced copy

        def as_type(tensor: str, want: str) -> str:
            """The name under which ``tensor`` is available in type ``want`` (adding a Cast if needed)."""
            if tensor in inits and tensor in floats:
                if want == FP32:
                    return tensor
                if tensor not in init_low:
                    init_low[tensor] = self._reduce_initializer(graph, inits[tensor], shared=FP32 in init_wants[tensor])
                    home[init_low[tensor]] = LOW
                return init_low[tensor]
            have = home.get(tensor)
            if have is None or have == want:
                return tensor
            key = (tensor, want)
            if key not in casts:
                casts[key] = self._cast(new_nodes, tensor, want)
                home[casts[key]] = want
                if want == LOW:
                    self.result.reduced.add(tensor)
            return casts[key]

        for node, d, node_wants in zip(nodes, domains, wants):
            schema = self.schemas.schema(node)
            low_params: Set[str] = set()
            for i, (t, want) in enumerate(zip(node.input, node_wants)):
                if want is None:
                    continue
                if want == LOW:
                    low_params.add(self.schemas.params(schema.inputs, i).type_str)
                node.input[i] = as_type(t, want)
            if d == LOW:
                self.result.converted_nodes += 1
                self._retype_attributes(node)
            for attr in node.attribute:  # bodies: outer tensors they read, in the body's set
                for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    self._convert_body(sub, d, home, as_type)
            for j, o in enumerate(node.output):
                if not o or o not in floats:
                    continue
                if d == LOW and self._output_low(node, schema, j, low_params):
                    home[o] = LOW
                    self.changed.add(o)
                    self.result.reduced.add(o)
                else:
                    home[o] = FP32
            new_nodes.append(node)
        # graph outputs: in ``output_home`` (a Cast named as the output where the producer's set differs)
        for out in graph.output:
            if out.name not in floats:
                continue
            if home.get(out.name, output_home) != output_home:
                self._cast_output(new_nodes, out.name, output_home, home)
            if output_home == LOW:
                out.type.tensor_type.elem_type = self.low_type
        del graph.node[:]
        graph.node.extend(new_nodes)

    def _wants(self, node, domain: str, floats: Set[str]) -> List[Optional[str]]:
        """Per input: the type the node reads it in (LOW/FP32), None for non-float inputs."""
        schema = self.schemas.schema(node)
        out: List[Optional[str]] = []
        for i, t in enumerate(node.input):
            if not t or t not in floats:
                out.append(None)
            elif domain == LOW and schema is not None and self.schemas.input_low(schema, i):
                out.append(LOW)
            else:
                out.append(FP32)
        return out

    def _assign(self, nodes, inits, node_home: Optional[str]) -> List[str]:
        domains: List[str] = []
        for node in nodes:
            reason = self.result.kept.get(node.name) if node.name else None
            if reason is None and node_home == FP32:
                domains.append(FP32)
                continue
            if reason is None:
                reason = self._cannot_convert(node, inits)
                if reason is not None:
                    self.result.kept[node.name or f"<unnamed {node.op_type}>"] = reason
            domains.append(FP32 if reason is not None else LOW)
        return domains

    def _cannot_convert(self, node, inits) -> Optional[str]:
        schema = self.schemas.schema(node)
        if schema is None:
            return f"{node.domain or 'ai.onnx'}::{node.op_type} has no ONNX schema (custom op): types unknown"
        if not self.schemas.convertible(schema):
            return f"{node.op_type} has no {self.result.target.upper()} type in its ONNX schema"
        if node.op_type.startswith("Random"):
            return f"{node.op_type} draws values: kept as written"
        for t in node.input:
            if t in inits and inits[t].data_type == 1:
                why = self._overflow(inits[t], f"initializer {t!r}")
                if why:
                    return why
        for attr in node.attribute:
            if attr.HasField("t") and attr.t.data_type == 1:
                why = self._overflow(attr.t, f"constant {attr.name!r}")
                if why:
                    return why
        return None

    def _overflow(self, tensor, what: str) -> Optional[str]:
        from onnx import numpy_helper

        if self.result.target != "fp16":  # bfloat16 has float32's exponent range
            return None
        values = numpy_helper.to_array(tensor)
        finite = np.isfinite(values)
        big = np.abs(values[finite]) > FP16_MAX if values.size else np.zeros(0, bool)
        if not big.any():
            return None
        why = (f"{what} has {int(big.sum())} value(s) beyond the FP16 range (max |value| "
               f"{float(np.abs(values[finite]).max()):.4g} > {FP16_MAX:.0f})")
        if self.on_overflow == "refuse":
            raise UsageError(f"cannot convert to FP16: {why}; keep its node in FP32 (--keep-fp32) or allow it to stay")
        return why

    def _output_low(self, node, schema, index: int, low_params: Set[str]) -> bool:
        if node.op_type == "Cast":
            return _attr_int(node, "to") == self.low_type
        if any(a.HasField("g") or len(a.graphs) for a in node.attribute):
            return True  # If/Loop/Scan: float outputs come from bodies converted with the node
        if node.op_type == "Constant":
            return any(a.HasField("t") and a.t.data_type == self.low_type for a in node.attribute)
        if schema is None:
            return False
        if self.schemas.output_follows(schema, index, low_params):
            return True
        # outputs typed by an attribute (already retyped by _retype_attributes)
        if node.op_type == "ConstantOfShape":
            return any(a.name == "value" and a.t.data_type == self.low_type for a in node.attribute)
        return node.op_type == "EyeLike" and _attr_int(node, "dtype") == self.low_type

    def _retype_attributes(self, node) -> None:
        """float32 literals and ``to=FLOAT`` of a reduced node become the reduced type."""
        from onnx import TensorProto

        for attr in node.attribute:
            if attr.name == "to" and node.op_type in ("Cast", "CastLike") and attr.i == TensorProto.FLOAT:
                attr.i = self.low_type
            elif attr.name == "dtype" and attr.i == TensorProto.FLOAT and node.op_type == "EyeLike":
                attr.i = self.low_type
            elif attr.HasField("t") and attr.t.data_type == TensorProto.FLOAT and node.op_type in ("Constant", "ConstantOfShape"):
                attr.t.CopyFrom(self._reduced_tensor(attr.t, attr.t.name))

    def _reduce_initializer(self, graph, init, *, shared: bool) -> str:
        """The reduced copy of ``init``: in place when no FP32 node reads it, else a second initializer."""
        if not shared:
            init.CopyFrom(self._reduced_tensor(init, init.name))
            self.changed.add(init.name)
            return init.name
        name = f"{init.name}__{self.result.target}"
        graph.initializer.append(self._reduced_tensor(init, name))
        return name

    def _reduced_tensor(self, tensor, name: str):
        from onnx import TensorProto, numpy_helper

        values = numpy_helper.to_array(tensor).astype(np.float32)
        if self.result.target == "fp16":
            out = numpy_helper.from_array(values.astype(np.float16), name)
        else:
            from trtdebug.runners.tensorrt.compat import float32_to_bf16_bits

            out = TensorProto(name=name, data_type=TensorProto.BFLOAT16, dims=list(values.shape),
                              raw_data=float32_to_bf16_bits(values).tobytes())
        return out

    def _cast(self, new_nodes: List, tensor: str, want: str) -> str:
        from onnx import TensorProto, helper

        suffix = self.result.target if want == LOW else "fp32"
        out = f"{tensor}__{suffix}"
        name = f"{CAST_PREFIX}/{tensor}/to_{suffix}"
        to = self.low_type if want == LOW else TensorProto.FLOAT
        new_nodes.append(helper.make_node("Cast", [tensor], [out], name=name, to=to))
        self.result.casts.append(name)
        if want == LOW:
            self.changed.add(out)
        return out

    def _cast_output(self, new_nodes: List, name: str, want: str, home: Dict[str, str]) -> None:
        """Rename the producer's output and Cast it back under the graph output's name."""
        inner = f"{name}__{self.result.target if home.get(name) == LOW else 'fp32'}_out"
        for node in new_nodes:
            for i, o in enumerate(node.output):
                if o == name:
                    node.output[i] = inner
            for i, t in enumerate(node.input):
                if t == name:
                    node.input[i] = inner
        home[inner] = home[name]
        if home[name] == LOW:
            self.changed.add(inner)
        from onnx import TensorProto, helper

        to = self.low_type if want == LOW else TensorProto.FLOAT
        cast = f"{CAST_PREFIX}/{name}/output"
        new_nodes.append(helper.make_node("Cast", [inner], [name], name=cast, to=to))
        self.result.casts.append(cast)
        if want == LOW:
            self.changed.add(name)
        else:
            self.changed.discard(name)

    def _convert_body(self, body, domain: str, home: Dict[str, str], as_type) -> None:
        """Convert a subgraph of a node in ``domain``: its inputs and outputs take the node's set, and
        the outer tensors it reads are made available in that set (renamed inside the body)."""
        from onnx import TensorProto

        renames = {}
        for t in _graph_outer_reads(body):
            if t in self.float_names:
                available = as_type(t, domain)
                if available != t:
                    renames[t] = available
        for n, _ in _all_nodes(body):
            for i, t in enumerate(n.input):
                if t in renames:
                    n.input[i] = renames[t]
        body_types = _elem_types(body)
        input_home = {i.name: domain for i in body.input if body_types.get(i.name) == TensorProto.FLOAT}
        self.run(body, outer_home=home, input_home=input_home, output_home=domain,
                 node_home=FP32 if domain == FP32 else None)


def _graph_outer_reads(graph) -> List[str]:
    """Tensors a (sub)graph reads from enclosing scopes."""
    local = {t.name for t in graph.initializer} | {i.name for i in graph.input}
    nodes = [n for n, _ in _all_nodes(graph)]
    for n in nodes:
        local |= set(n.output)
    return sorted({t for n in nodes for t in n.input if t and t not in local})


def _body_outer_reads(node) -> List[str]:
    out: List[str] = []
    for attr in node.attribute:
        for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
            out += _graph_outer_reads(sub)
    return out


def _attr_int(node, name: str) -> Optional[int]:
    for a in node.attribute:
        if a.name == name:
            return a.i
    return None


def _elem_types(graph) -> Dict[str, int]:
    types: Dict[str, int] = {}
    for vi in list(graph.input) + list(graph.output) + list(graph.value_info):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for t in graph.initializer:
        types[t.name] = t.data_type
    return types


def _strip_types(graph, changed: Set[str]) -> None:
    """Drop inferred types of retyped tensors (inference fills them in again); retype graph outputs."""
    keep = [vi for vi in graph.value_info if vi.name not in changed]
    del graph.value_info[:]
    graph.value_info.extend(keep)
    for n in graph.node:
        for attr in n.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                _strip_types(sub, changed)


def convert_file(src, dst, to: str = "fp16", keep_fp32: Sequence[str] = (), *, keep_io_types: bool = True,
                 on_overflow: str = "keep") -> Conversion:
    """Load ``src``, convert, and write ``dst`` (atomically; external data for models over 2 GB)."""
    from trtdebug.model.loader import load_model, save_model

    model = load_model(src, infer_shapes=False)
    result = convert(model, to, keep_fp32, keep_io_types=keep_io_types, on_overflow=on_overflow)
    save_model(result.model, dst)
    return result


# -- emulation: reduced-precision storage that ONNX Runtime's CPU provider honours ---------------

def emulate(model, to: str):
    """The float32 twin of a converted model: every value the model stores in ``to`` is rounded to
    it (a Cast to ``to`` and back) and every computation runs in float32.

    Why: ONNX Runtime's CPU provider has FP16 kernels for few ops; for the rest it computes in FP32
    and then drops its own FP32->FP16->FP32 round trips between such ops, so an FP16 model's
    intermediate overflow (an Inf that a later node would have seen) silently disappears there.
    Explicit Cast pairs are kept, so this twin shows what FP16/BF16 *storage* does - the error a
    TensorRT FP16 engine has too, whose kernels mostly accumulate in FP32.
    """
    from onnx import TensorProto

    low = TensorProto.FLOAT16 if to == "fp16" else TensorProto.BFLOAT16
    twin = copy.deepcopy(model)
    _emulate_graph(twin.graph, low)
    return twin


def _emulate_graph(graph, low: int) -> None:
    from onnx import TensorProto, helper, numpy_helper

    types = _elem_types(graph)
    for t in graph.initializer:
        if t.data_type == low:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name))
    for vi in list(graph.input) + list(graph.output):
        if vi.type.tensor_type.elem_type == low:
            vi.type.tensor_type.elem_type = TensorProto.FLOAT
    new_nodes = []
    for node in graph.node:
        for attr in node.attribute:
            if attr.name == "to" and node.op_type == "Cast" and attr.i == low:
                attr.i = TensorProto.FLOAT
            elif attr.name == "dtype" and attr.i == low:
                attr.i = TensorProto.FLOAT
            elif attr.HasField("t") and attr.t.data_type == low:
                attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float32), attr.t.name))
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                _emulate_graph(sub, low)
        new_nodes.append(node)
        for j, o in enumerate(node.output):
            if o and types.get(o) == low:
                exact = f"{o}__exact"
                node.output[j] = exact
                new_nodes.append(helper.make_node("Cast", [exact], [f"{o}__stored"], name=f"{CAST_PREFIX}/{o}/store", to=low))
                new_nodes.append(helper.make_node("Cast", [f"{o}__stored"], [o], name=f"{CAST_PREFIX}/{o}/load",
                                                  to=TensorProto.FLOAT))
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.value_info[:]
