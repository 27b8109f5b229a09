"""Map TensorRT engine layers back to the ONNX nodes they implement.

An engine built with ``ProfilingVerbosity.DETAILED`` describes every layer through
``IEngineInspector`` as JSON::

    {"Layers": [{"Name": ..., "LayerType": ..., "Inputs": [{"Name", "Location", "Dimensions",
                 "Format/Datatype"}], "Outputs": [...], "TacticName"/"TacticValue", "Metadata": ...}],
     "Bindings": ["x", "y"]}

What each TensorRT version puts there differs, and :func:`parse_engine_info` accepts all of it:

* **Metadata** (TensorRT 8.6+; the ONNX parser calls ``ILayer.setMetadata``): one record per ONNX
  node, ``[ONNX Layer: <node>]``, optionally followed by `` | `` and a doc string or a local
  function stack (``[ONNX Layer: inner | outer (MyFunction)]``).  A fused layer joins the records of
  its nodes with ``\\x1e`` (8.6) or ``\\x1f`` (10.x), or with nothing at all; the parser truncates
  very long metadata in the middle with `` ... ``.
* **Layer names** (every version; the only source before 8.6 or when metadata is missing):
  the parser names layers after ONNX nodes, and TensorRT names fused layers after their parts:
  ``a + b`` (vertical fusion), ``a || b`` (horizontal fusion), ``PWN(PWN(a), b)`` (point-wise
  fusion), ``{ForeignNode[first...last]}`` (a Myelin region named by its first and last layer),
  ``Reformatting CopyNode for Input Tensor 0 to <layer>`` / ``<layer> input reformatter 0``
  (format conversions that implement no ONNX node), and a `` [profile N]`` suffix on the layers
  and tensors of every optimization profile after the first.
* With only ``LAYER_NAMES_ONLY`` verbosity, ``Layers`` is a list of plain names.

Everything here is pure: no TensorRT import except in :func:`engine_information`, which asks a
live engine for its JSON.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

# How a layer's ONNX nodes were found (most to least certain).
MAP_METADATA = "metadata"  # the parser's [ONNX Layer: ...] tags
MAP_NAME = "name"  # ONNX node names found in the layer name
MAP_RANGE = "range"  # a Myelin {ForeignNode[a...b]} region, expanded in topological order
MAP_NONE = "none"

_ONNX_LAYER_PREFIX = "[ONNX Layer: "
_RECORD_SEPARATORS = re.compile(r"[\x1e\x1f]")
_ONNX_LAYER_RE = re.compile(r"\[ONNX Layer: (.*?)\](?=\[ONNX Layer: |[\x1e\x1f]|$)", re.S)
_PROFILE_RE = re.compile(r"\s*\[profile (\d+)\]")
_FOREIGN_RE = re.compile(r"^\{ForeignNode\[(.*)\]\}$", re.S)
_REFORMAT_PREFIX_RE = re.compile(r"^Reformatting CopyNode for (Input|Output) Tensor \d+ to (.*)$", re.S)
_REFORMATTER_SUFFIX_RE = re.compile(r"^(.*) (input|output) reformatter \d+$", re.S)
_REFORMATTED_TENSOR_RE = re.compile(r"^Reformatted (Input|Output) Tensor \d+ to ")
# Separators TensorRT puts between the parts of a fused layer's name.
_NAME_SEPARATORS = re.compile(r"( \+ | \|\| |, |PWN\(|\)|\.\.\.|\{ForeignNode\[|\]\})")
# Prefixes the ONNX parser gives helper layers it adds around a node (8.x naming).
_HELPER_PREFIXES = ("reshape_before_", "reshape_after_", "transpose_before_", "transpose_after_")
_UNNAMED_RE = re.compile(r"\(Unnamed Layer\* ?\d+\) \[[^\]]*\](?:_output)?")
_REFORMAT_TYPES = {"Reformat", "Reformatting", "NoOp", "Copy"}

# dtype words in "Format/Datatype" strings: 8.x "Row major linear FP16 format", "Channel major
# FP32 format where channel % 4 == 0"; 10.x (kgen/Myelin) "Half", "Float", "BFloat16".
_DTYPE_WORDS: Tuple[Tuple[str, str], ...] = (
    (r"BFloat16|BF16", "BF16"),
    (r"FP16|Half", "FP16"),
    (r"FP32|Float", "FP32"),
    (r"FP8|E4M3", "FP8"),
    (r"FP4|E2M1", "FP4"),
    (r"Double|FP64", "FP64"),
    (r"UInt8", "UINT8"),
    (r"Int8", "INT8"),
    (r"Int4", "INT4"),
    (r"Int32", "INT32"),
    (r"Int64", "INT64"),
    (r"Bool", "BOOL"),
)
_DTYPE_RES = [(re.compile(rf"(?<![A-Za-z0-9])(?:{pat})(?![A-Za-z0-9])", re.I), name) for pat, name in _DTYPE_WORDS]


def format_dtype(fmt: Optional[str]) -> Optional[str]:
    """The data type named in a ``Format/Datatype`` string (``FP16``, ``FP32``, ``INT8`` ...), or None."""
    if not fmt:
        return None
    for rx, name in _DTYPE_RES:
        if rx.search(fmt):
            return name
    return None


def split_profile(name: str) -> Tuple[str, int]:
    """``("conv", 1)`` for ``"conv [profile 1]"``; profile 0 has no suffix."""
    m = _PROFILE_RE.search(name)
    if not m:
        return name, 0
    return _PROFILE_RE.sub("", name), int(m.group(1))


@dataclass(frozen=True)
class LayerTensor:
    """One input or output of an engine layer."""

    name: str
    shape: Optional[Tuple[int, ...]]
    format: Optional[str]  # TensorRT's "Format/Datatype" text
    dtype: Optional[str]  # parsed from format: FP32, FP16, BF16, INT8, ...
    location: Optional[str] = None  # Device / Host

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["shape"] = list(self.shape) if self.shape is not None else None
        return d


@dataclass(frozen=True)
class LayerInfo:
    """One engine layer and the ONNX nodes it implements."""

    index: int
    name: str  # as TensorRT reports it (profile suffix removed)
    type: Optional[str]  # LayerType (e.g. CaskConvolution, Myelin, kgen, Reformat)
    precision: Optional[str]  # dtype of the first output (else the first input)
    tactic: Optional[str]  # TacticName, else TacticValue
    inputs: Tuple[LayerTensor, ...]
    outputs: Tuple[LayerTensor, ...]
    onnx_nodes: Tuple[str, ...]  # ONNX nodes computed by this layer (empty for reformats)
    mapping: str  # how onnx_nodes were found: metadata / name / range / none
    is_reformat: bool  # a format/precision conversion TensorRT inserted, no ONNX node of its own
    reformat_for: Tuple[str, ...] = ()  # for reformats: ONNX nodes of the layer they feed or drain
    metadata: Optional[str] = None  # raw metadata text
    profile: int = 0
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def input_dtypes(self) -> List[Optional[str]]:
        return [t.dtype for t in self.inputs]

    @property
    def output_dtypes(self) -> List[Optional[str]]:
        return [t.dtype for t in self.outputs]

    def to_dict(self) -> Dict[str, Any]:
        return {
            "index": self.index, "name": self.name, "type": self.type, "precision": self.precision,
            "tactic": self.tactic, "onnx_nodes": list(self.onnx_nodes), "mapping": self.mapping,
            "is_reformat": self.is_reformat, "reformat_for": list(self.reformat_for),
            "inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs],
            "metadata": self.metadata, "profile": self.profile,
        }


@dataclass
class EngineInfo:
    """Parsed engine layer information, with the ONNX <-> TensorRT name map."""

    layers: List[LayerInfo]
    bindings: List[str]
    node_to_layers: Dict[str, List[str]]  # ONNX node name -> names of the layers computing it
    boundary_tensors: List[str]  # ONNX tensors produced at fused-layer boundaries (comparable as-is)
    unmapped_nodes: List[str]  # graph nodes no layer claims (folded constants, removed no-ops)
    detailed: bool  # False when the engine was built without DETAILED profiling verbosity
    profile: Optional[int] = 0

    def layer(self, name: str) -> LayerInfo:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def layers_for_node(self, node: str) -> List[LayerInfo]:
        names = set(self.node_to_layers.get(node, ()))
        return [layer for layer in self.layers if layer.name in names]

    @property
    def compute_layers(self) -> List[LayerInfo]:
        return [layer for layer in self.layers if not layer.is_reformat]

    def to_dict(self) -> Dict[str, Any]:
        return {
            "detailed": self.detailed, "profile": self.profile, "bindings": list(self.bindings),
            "layers": [layer.to_dict() for layer in self.layers],
            "node_to_layers": {k: list(v) for k, v in self.node_to_layers.items()},
            "boundary_tensors": list(self.boundary_tensors), "unmapped_nodes": list(self.unmapped_nodes),
        }


# -- metadata ----------------------------------------------------------------------------------
def parse_metadata(metadata: Optional[str], node_names: Optional[Iterable[str]] = None) -> List[str]:
    """ONNX node names in a layer's metadata, in order, without duplicates.

    With ``node_names`` (the graph's nodes), names are checked against the graph: a record whose
    name is unknown but whose local-function stack names a graph node maps to that node, and
    anything else (nodes inside If/Loop bodies, truncated records) is dropped.
    """
    if not metadata:
        return []
    known = set(node_names) if node_names is not None else None
    records: List[str] = []
    for part in _RECORD_SEPARATORS.split(metadata):
        part = part.strip()
        if not part:
            continue
        if part.startswith(_ONNX_LAYER_PREFIX) and part.endswith("]") and part.count(_ONNX_LAYER_PREFIX) == 1:
            records.append(part[len(_ONNX_LAYER_PREFIX):-1])
        else:  # records glued together without a separator, or a truncated record
            records += [m.group(1) for m in _ONNX_LAYER_RE.finditer(part)]
    out: List[str] = []
    for rec in records:
        name = _record_node(rec, known)
        if name is not None and name not in out:
            out.append(name)
    return out


def _record_node(record: str, known: Optional[set]) -> Optional[str]:
    if known is None:
        return record.split(" | ", 1)[0].strip() or None
    if record in known:
        return record
    parts = record.split(" | ")
    if parts[0] in known:
        return parts[0]
    # local function stack: "inner | outer_node (FunctionName)" (10.x) / "Local Function: F" (8.6)
    for extra in parts[1:]:
        candidate = re.sub(r" \([^()]*\)$", "", extra.strip())
        if candidate in known:
            return candidate
    return None


# -- layer names ---------------------------------------------------------------------------------
class _NameResolver:
    """Find ONNX node names inside TensorRT layer names."""

    def __init__(self, node_names: Optional[Sequence[str]]):
        self.known = set(node_names) if node_names is not None else None
        self._max_len = max((len(n) for n in node_names), default=0) if node_names else 0

    def resolve(self, text: str) -> List[str]:
        """Node names inside ``text``: the whole text if it is a node, else the longest node names
        made of consecutive parts between fusion separators."""
        text = text.strip()
        if not text:
            return []
        atoms = [a for a in _NAME_SEPARATORS.split(text) if a != ""]
        found: List[str] = []
        if self.known is None:  # no graph to check against: every part between separators is a name
            atoms = [a for a in _NAME_SEPARATORS.split(_UNNAMED_RE.sub("", text)) if a != ""]
            for atom in atoms:
                hit = self._lookup(atom)
                if hit and hit not in found:
                    found.append(hit)
            return found
        direct = self._lookup(text)
        if direct:
            return [direct]
        i = 0
        while i < len(atoms):
            match, end = None, i
            joined = ""
            for j in range(i, len(atoms)):
                joined += atoms[j]
                if self._max_len and len(joined.strip()) > self._max_len + 32:
                    break
                hit = self._lookup(joined)
                if hit:
                    match, end = hit, j
            if match is not None:
                if match not in found:
                    found.append(match)
                i = end + 1
            else:
                i += 1
        return found

    def _lookup(self, token: str) -> Optional[str]:
        if _NAME_SEPARATORS.fullmatch(token):
            return None
        token = token.strip()
        if not token:
            return None
        if self.known is None:
            if token.startswith("(Unnamed Layer*") or token.startswith("ONNXTRT_"):
                return None
            return token
        if token in self.known:
            return token
        for prefix in _HELPER_PREFIXES:
            if token.startswith(prefix) and token[len(prefix):] in self.known:
                return token[len(prefix):]
        # a node the parser split into several layers: "<node>_1", "<node>_2", ...
        m = re.match(r"^(.*)_\d+$", token)
        if m and m.group(1) in self.known:
            return m.group(1)
        return None


def _tensor(raw: Any) -> LayerTensor:
    if isinstance(raw, str):
        return LayerTensor(name=split_profile(raw)[0], shape=None, format=None, dtype=None)
    name = split_profile(str(raw.get("Name", "")))[0]
    dims = raw.get("Dimensions")
    shape = tuple(int(d) for d in dims) if isinstance(dims, (list, tuple)) else None
    fmt = raw.get("Format/Datatype", raw.get("Format", raw.get("Datatype")))
    fmt = str(fmt) if fmt is not None else None
    return LayerTensor(name=name, shape=shape, format=fmt, dtype=format_dtype(fmt), location=raw.get("Location"))


def _tactic(raw: Mapping[str, Any]) -> Optional[str]:
    for key in ("TacticName", "Tactic", "TacticValue"):
        value = raw.get(key)
        if value not in (None, ""):
            return str(value)
    return None


def _load(info: Union[str, bytes, Mapping[str, Any]]) -> Mapping[str, Any]:
    if isinstance(info, (str, bytes)):
        text = info.decode("utf-8", "replace") if isinstance(info, bytes) else info
        try:
            data = json.loads(text, strict=False)  # strict=False: metadata may hold raw control chars
        except json.JSONDecodeError as exc:
            raise ValueError(f"engine layer information is not valid JSON: {exc}") from exc
    else:
        data = info
    if isinstance(data, list):  # a bare layer list
        data = {"Layers": data}
    if not isinstance(data, Mapping) or "Layers" not in data:
        raise ValueError("engine layer information has no 'Layers' list")
    return data


def parse_engine_info(info: Union[str, bytes, Mapping[str, Any]], graph=None, *, profile: Optional[int] = 0) -> EngineInfo:
    """Parse ``IEngineInspector`` JSON (text or dict) into layers mapped to ONNX nodes.

    ``graph`` is the :class:`trtdebug.model.ModelGraph` of the ONNX model the engine was built from;
    without it, names are taken at face value (no validation, no range expansion).  ``profile``
    keeps the layers of one optimization profile (None keeps all).
    """
    data = _load(info)
    raw_layers = list(data.get("Layers") or [])
    node_order: Optional[List[str]] = list(graph.node_names) if graph is not None else None
    resolver = _NameResolver(node_order)
    detailed = bool(raw_layers) and all(isinstance(r, Mapping) for r in raw_layers)

    # pass 1: tensors, types, metadata and exact name matches
    staged: List[Dict[str, Any]] = []
    for raw in raw_layers:
        raw_map: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {"Name": str(raw)}
        full_name = str(raw_map.get("Name", ""))
        name, prof = split_profile(full_name)
        if profile is not None and prof != profile:
            continue
        metadata = raw_map.get("Metadata")
        metadata = str(metadata) if metadata not in (None, "") else None
        inputs = tuple(_tensor(t) for t in raw_map.get("Inputs", ()) or ())
        outputs = tuple(_tensor(t) for t in raw_map.get("Outputs", ()) or ())
        ltype = raw_map.get("LayerType", raw_map.get("ParameterType"))
        entry = dict(name=name, prof=prof, raw=raw_map, metadata=metadata, inputs=inputs, outputs=outputs,
                     type=str(ltype) if ltype is not None else None, nodes=[], mapping=MAP_NONE,
                     is_reformat=False, reformat_for=[], foreign=None)
        reformat_target = _reformat_target(name)
        if reformat_target is not None:
            entry["is_reformat"] = True
            entry["reformat_for"] = _resolve_layer_name(reformat_target, resolver)
        else:
            meta_nodes = parse_metadata(metadata, node_order)
            if meta_nodes:
                entry["nodes"], entry["mapping"] = meta_nodes, MAP_METADATA
            else:
                m = _FOREIGN_RE.match(name)
                if m:
                    entry["foreign"] = m.group(1)
                else:
                    nodes = resolver.resolve(name)
                    if nodes:
                        entry["nodes"], entry["mapping"] = nodes, MAP_NAME
            if not entry["nodes"] and entry["foreign"] is None and entry["type"] in _REFORMAT_TYPES:
                entry["is_reformat"] = True
        staged.append(entry)

    # pass 2: expand Myelin regions whose metadata was missing
    claimed = {n for e in staged for n in e["nodes"]}
    for entry in staged:
        if entry["foreign"] is not None:
            nodes = _expand_foreign(entry["foreign"], entry, resolver, graph, claimed)
            if nodes:
                entry["nodes"], entry["mapping"] = nodes, (MAP_RANGE if graph is not None else MAP_NAME)

    layers: List[LayerInfo] = []
    for index, e in enumerate(staged):
        outs, ins = e["outputs"], e["inputs"]
        precision = next((t.dtype for t in outs if t.dtype), None) or next((t.dtype for t in ins if t.dtype), None)
        layers.append(LayerInfo(
            index=index, name=e["name"], type=e["type"], precision=precision, tactic=_tactic(e["raw"]),
            inputs=ins, outputs=outs, onnx_nodes=tuple(e["nodes"]), mapping=e["mapping"],
            is_reformat=e["is_reformat"], reformat_for=tuple(e["reformat_for"]), metadata=e["metadata"],
            profile=e["prof"], raw=e["raw"],
        ))

    node_to_layers: Dict[str, List[str]] = {}
    for layer in layers:
        if layer.is_reformat:
            continue
        for node in layer.onnx_nodes:
            node_to_layers.setdefault(node, [])
            if layer.name not in node_to_layers[node]:
                node_to_layers[node].append(layer.name)

    boundary = _boundary_tensors(layers, graph)
    unmapped = [n for n in node_order if n not in node_to_layers] if node_order is not None else []
    bindings = []
    for b in data.get("Bindings", ()) or ():
        bname, bprof = split_profile(str(b))
        if profile is None or bprof == profile:
            bindings.append(bname)
    return EngineInfo(layers=layers, bindings=bindings, node_to_layers=node_to_layers, boundary_tensors=boundary,
                      unmapped_nodes=unmapped, detailed=detailed, profile=profile)


def _reformat_target(name: str) -> Optional[str]:
    m = _REFORMAT_PREFIX_RE.match(name)
    if m:
        return m.group(2)
    m = _REFORMATTER_SUFFIX_RE.match(name)
    if m:
        return m.group(1)
    return None


def _resolve_layer_name(name: str, resolver: _NameResolver) -> List[str]:
    """ONNX nodes named by a layer name of any form (plain, fused, or a Myelin region's ends)."""
    m = _FOREIGN_RE.match(name)
    if m:
        out: List[str] = []
        for end in _split_range(m.group(1), resolver):
            for n in end:
                if n not in out:
                    out.append(n)
        return out
    return resolver.resolve(name)


def _split_range(inner: str, resolver: _NameResolver) -> Tuple[List[str], List[str]]:
    """Split ``first...last`` where layer names may themselves contain '...'; pick the split that
    resolves the most names."""
    best: Tuple[int, List[str], List[str]] = (-1, [], [])
    positions = [m.start() for m in re.finditer(r"\.\.\.", inner)]
    for pos in positions:
        first, last = resolver.resolve(inner[:pos]), resolver.resolve(inner[pos + 3:])
        score = (1 if first else 0) + (1 if last else 0)
        if score > best[0]:
            best = (score, first, last)
    if not positions:
        both = resolver.resolve(inner)
        return both, both
    return best[1], best[2]


def _expand_foreign(inner: str, entry: Dict[str, Any], resolver: _NameResolver, graph, claimed: set) -> List[str]:
    first, last = _split_range(inner, resolver)
    if graph is None:
        out = []
        for n in first + last:
            if n not in out:
                out.append(n)
        return out
    order = graph.node_names
    index = {n: i for i, n in enumerate(order)}
    starts = [index[n] for n in first if n in index]
    ends = [index[n] for n in last if n in index]
    if not starts:  # the first layer was a helper ("(Unnamed Layer* 3) [Shuffle]"): use the region's inputs
        for t in entry["inputs"]:
            starts += [index[c.name] for c in graph.consumers.get(t.name, ()) if c.name in index]
    if not ends:  # likewise the last layer: use the producers of the region's outputs
        for t in entry["outputs"]:
            producer = graph.producers.get(t.name)
            if producer is not None and producer.name in index:
                ends.append(index[producer.name])
    if not starts and ends:
        starts = [min(ends)]
    if not ends and starts:
        ends = [max(starts)]
    if not starts:
        return []
    lo, hi = min(starts), max(ends)
    if hi < lo:
        lo, hi = hi, lo
    # nodes other layers implement by name or metadata sit on parallel branches, not in this region
    endpoints = set(first) | set(last)
    return [n for n in order[lo:hi + 1] if n in endpoints or n not in claimed]


def _boundary_tensors(layers: Sequence[LayerInfo], graph) -> List[str]:
    """Layer outputs that keep their ONNX tensor names: the tensors an unmodified engine exposes."""
    seen: List[str] = []
    for layer in layers:
        for t in layer.outputs:
            name = t.name
            if not name or _REFORMATTED_TENSOR_RE.match(name) or name in seen:
                continue
            if graph is not None:
                info = graph.get(name)
                if info is None or info.is_initializer or info.is_graph_input:
                    continue
            elif name.startswith("(Unnamed Layer*"):
                continue
            seen.append(name)
    if graph is not None:
        seen.sort(key=graph.topo_index)
    return seen


# -- TensorRT ------------------------------------------------------------------------------------
def engine_information(engine, context=None) -> str:
    """The ``IEngineInspector`` JSON of a deserialized engine (needs TensorRT)."""
    import tensorrt as trt

    inspector = engine.create_engine_inspector()
    if context is not None and hasattr(inspector, "execution_context"):
        inspector.execution_context = context
    return inspector.get_engine_information(trt.LayerInformationFormat.JSON)


def inspect_engine_layers(engine, graph=None, *, profile: Optional[int] = 0) -> EngineInfo:
    """:func:`parse_engine_info` on a live engine."""
    return parse_engine_info(engine_information(engine), graph, profile=profile)
