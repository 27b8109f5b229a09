"""Choose which tensors of a TensorRT network to mark as outputs, and say why the rest were not.

The rules (each skip is recorded with its reason, so a report can say why a tensor that ONNX
Runtime produced has no TensorRT counterpart):

* **loops and conditionals**: tensors inside ``ILoop`` / ``IIfConditional`` bodies cannot be
  network outputs.  Layers are found by data flow from the boundary layers (iterator,
  recurrence, conditional input) up to the loop/conditional outputs.
* **constants and shape computations**: outputs of CONSTANT and SHAPE layers, and shape
  tensors (``is_shape_tensor``) or tensors that are not execution tensors.  Marking them
  either fails or forces shape math onto the GPU, and their values are not what a
  numerical comparison is about.
* **no ONNX name**: the ONNX parser keeps the ONNX tensor name on the last tensor a node
  produces; every other tensor gets a generated name.  Only names of the main graph's
  tensors (:class:`~trtdebug.model.graph.ModelGraph`) are marked, which is what makes the
  comparison line up with ONNX Runtime and keeps ``--mark-all`` from marking the helper
  tensors of decomposed ops (the difference with Polygraphy's ``mark_layerwise``, which marks
  every output of every non-constant, non-shape layer outside loops).
* dtypes numpy cannot hold (FP8, INT4) are skipped.

Everything here works on the network object only through ``num_layers``/``get_layer`` and
the layer/tensor attributes, so the tests drive it with fakes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Set, Tuple

from trtdebug.errors import UsageError
from trtdebug.model.surgery import OutputSelection
from trtdebug.runners.tensorrt import compat

LOOP_ENTRY = ("ITERATOR", "RECURRENCE", "CONDITIONAL_INPUT")
LOOP_EXIT = ("LOOP_OUTPUT", "CONDITIONAL_OUTPUT")
LOOP_BOUNDARY = LOOP_ENTRY + LOOP_EXIT + ("TRIP_LIMIT", "CONDITION")
NON_NUMERIC_LAYERS = {"CONSTANT": "constant", "SHAPE": "shape computation"}
READABLE_DTYPES = {"FLOAT", "HALF", "BF16", "INT8", "INT32", "INT64", "BOOL", "UINT8"}

REASON_LOOP = "inside a loop or conditional (TensorRT cannot output it)"
REASON_SHAPE_TENSOR = "shape tensor"
REASON_NOT_EXECUTION = "not an execution tensor"
REASON_NO_ONNX_NAME = "internal TensorRT tensor (no ONNX tensor of that name)"
REASON_EXCLUDED = "excluded by the user"
REASON_NOT_IN_NETWORK = "not in the TensorRT network (folded or removed by the parser)"
REASON_INPUT = "graph input"


@dataclass
class MarkPlan:
    """Tensors to mark (new outputs), those that already are outputs, and the skipped ones."""

    mark: List[str] = field(default_factory=list)
    already_outputs: List[str] = field(default_factory=list)
    skipped: List[Tuple[str, str]] = field(default_factory=list)
    unmark: List[str] = field(default_factory=list)  # model outputs the user excluded
    # Reduced precision kept (see precision.py): tensors exposed as debug tensors instead of outputs,
    # and marked outputs declared HALF/BF16; ``route`` says which remedy this TensorRT allowed.
    as_debug: List[str] = field(default_factory=list)
    reduced_outputs: List[str] = field(default_factory=list)
    route: Optional[str] = None

    @property
    def outputs(self) -> List[str]:
        return [n for n in self.already_outputs if n not in self.unmark] + self.mark

    def skipped_counts(self) -> Dict[str, int]:
        counts: Dict[str, int] = {}
        for _, reason in self.skipped:
            counts[reason] = counts.get(reason, 0) + 1
        return counts

    def as_extra(self) -> Dict[str, object]:
        return {
            "marked": list(self.mark),
            "network_outputs": [n for n in self.already_outputs if n not in self.unmark],
            "unmarked": list(self.unmark),
            "skipped": [{"name": n, "reason": r} for n, r in self.skipped],
            "skipped_counts": self.skipped_counts(),
            "marked_as_debug": list(self.as_debug),
            "reduced_precision_outputs": list(self.reduced_outputs),
            "precision_route": self.route,
        }


def layer_type_name(layer) -> str:
    return compat.dtype_name(layer.type)  # same "enum member name" logic


def layers(network) -> List[object]:
    return [network.get_layer(i) for i in range(network.num_layers)]


def _outputs(layer) -> List[object]:
    return [t for t in (layer.get_output(j) for j in range(layer.num_outputs)) if t is not None]


def _inputs(layer) -> List[object]:
    """A layer's input tensors; optional inputs that are absent come back as None and are dropped."""
    return [t for t in (layer.get_input(j) for j in range(layer.num_inputs)) if t is not None]


def loop_body_layers(all_layers: List[object]) -> Set[int]:
    """Indices of layers inside a loop or conditional body (boundary layers included,
    except the exit layers, whose outputs live outside)."""
    consumers: Dict[str, List[int]] = {}
    for i, layer in enumerate(all_layers):
        for t in _inputs(layer):
            consumers.setdefault(t.name, []).append(i)
    inside: Set[int] = set()
    frontier: List[int] = []
    for i, layer in enumerate(all_layers):
        kind = layer_type_name(layer)
        if kind in LOOP_BOUNDARY and kind not in LOOP_EXIT:
            inside.add(i)
            if kind in LOOP_ENTRY:
                frontier.append(i)
    while frontier:
        i = frontier.pop()
        for t in _outputs(all_layers[i]):
            for c in consumers.get(t.name, []):
                if c in inside or layer_type_name(all_layers[c]) in LOOP_EXIT:
                    continue
                inside.add(c)
                frontier.append(c)
    return inside


def _skip_reason(tensor, layer_kind: str, graph) -> Optional[str]:
    if layer_kind in NON_NUMERIC_LAYERS:
        return NON_NUMERIC_LAYERS[layer_kind]
    if getattr(tensor, "is_shape_tensor", False):
        return REASON_SHAPE_TENSOR
    if not getattr(tensor, "is_execution_tensor", True):
        return REASON_NOT_EXECUTION
    dtype = compat.dtype_name(tensor.dtype)
    if dtype not in READABLE_DTYPES:
        return f"dtype {dtype} cannot be read into numpy"
    if graph is not None:
        info = graph.get(tensor.name)
        if info is None or info.is_initializer:
            return REASON_NO_ONNX_NAME
        if info.is_graph_input:
            return REASON_INPUT
    return None


def plan_marking(network, graph, selection: OutputSelection) -> MarkPlan:
    """Decide what to mark for ``selection`` (mark-all, names, exclusions) on ``network``.

    ``graph`` (a ModelGraph) restricts marking to ONNX tensor names; without it (rare: a bare
    network) every eligible tensor may be marked.  Explicitly requested names that are not
    ONNX tensors are a usage error; ones TensorRT cannot output are skipped with a reason.
    """
    if graph is not None:
        unknown = [n for n in selection.names if n not in graph]
        if unknown:
            raise UsageError(f"--trt-outputs: unknown tensor name(s) {', '.join(unknown[:5])}")
    exclude = set(selection.exclude)
    all_layers = layers(network)
    in_body = loop_body_layers(all_layers)
    plan = MarkPlan()
    seen: Set[str] = set()
    requested = set(selection.names)
    found: Set[str] = set()

    def consider(tensor, layer_index: int, kind: str) -> None:
        name = tensor.name
        if name in seen:
            return
        seen.add(name)
        if name in requested:
            found.add(name)
        if not selection.mark_all and name not in requested and not tensor.is_network_output:
            return
        if tensor.is_network_output:
            plan.already_outputs.append(name)
            if name in exclude:
                plan.unmark.append(name)
            return
        if name in exclude:
            plan.skipped.append((name, REASON_EXCLUDED))
            return
        if layer_index in in_body:
            plan.skipped.append((name, REASON_LOOP))
            return
        reason = _skip_reason(tensor, kind, graph)
        if reason is not None:
            plan.skipped.append((name, reason))
            return
        plan.mark.append(name)

    for i, layer in enumerate(all_layers):
        kind = layer_type_name(layer)
        for t in _outputs(layer):
            consider(t, i, kind)
    for i in range(network.num_outputs):  # outputs that are network inputs (no producing layer)
        t = network.get_output(i)
        if t is not None and t.name not in seen:
            seen.add(t.name)
            plan.already_outputs.append(t.name)
    for name in selection.names:
        if name not in found and name not in exclude:
            plan.skipped.append((name, REASON_INPUT if graph is not None and graph.get(name) is not None
                                 and graph.get(name).is_graph_input else REASON_NOT_IN_NETWORK))
    if graph is not None:
        plan.mark.sort(key=graph.topo_index)
    if plan.unmark and not plan.outputs:
        raise UsageError("--trt-exclude-outputs would leave the TensorRT network with no outputs")
    return plan


def tensors_by_name(network) -> Dict[str, object]:
    found: Dict[str, object] = {}
    for i in range(network.num_inputs):
        t = network.get_input(i)
        found.setdefault(t.name, t)
    for layer in layers(network):
        for t in _outputs(layer):
            found.setdefault(t.name, t)
    return found


def apply_marking(network, plan: MarkPlan) -> None:
    """Mark the plan's tensors as network outputs (and unmark excluded model outputs)."""
    table = tensors_by_name(network)
    for name in plan.mark:
        tensor = table[name]
        if not tensor.is_network_output:
            network.mark_output(tensor)
    unmark(network, plan.unmark)


def unmark(network, names: Iterable[str]) -> None:
    table = tensors_by_name(network)
    for name in names:
        t = table.get(name)
        if t is not None and t.is_network_output:
            network.unmark_output(t)


def tensor_roles(network) -> Dict[str, Tuple[str, frozenset]]:
    """Per tensor name: (producing layer type, consuming layer types) - what a tensor "is" to TensorRT's fuser."""
    producer: Dict[str, str] = {}
    consumers: Dict[str, Set[str]] = {}
    for layer in layers(network):
        kind = layer_type_name(layer)
        for t in _outputs(layer):
            producer.setdefault(t.name, kind)
        for t in _inputs(layer):
            consumers.setdefault(t.name, set()).add(kind)
    return {name: (kind, frozenset(consumers.get(name, ()))) for name, kind in producer.items()}


def similar_roles(roles: Dict[str, Tuple[str, frozenset]]):
    """``similar(a, b)``: same producer type, and consumed by a layer type other than the producer's
    own that both share (e.g. an elementwise add feeding a normalization: a residual before LayerNorm)."""
    def similar(a: str, b: str) -> bool:
        ra, rb = roles.get(a), roles.get(b)
        if ra is None or rb is None or ra[0] != rb[0]:
            return False
        return bool((ra[1] - {ra[0]}) & (rb[1] - {rb[0]}))
    return similar


def find_buildable_subset(names: List[str], try_build, *, max_builds: int = 40, similar=None):
    """When TensorRT cannot build with all of ``names`` as outputs, keep as many as it can.

    TensorRT 8.6 fails FP16 builds ("Could not find any implementation for node
    {ForeignNode[...]}") when a fused region has too many of its tensors marked, although each
    one alone builds.  Walking ``names`` in topological order, this keeps the longest prefix
    that builds (binary search), drops the tensor whose marking breaks the build, and carries
    on with the rest.  ``try_build(names)`` returns a build result or None.  Failing builds are
    typically cheap (TensorRT fails before timing tactics); each dropped tensor costs about
    log2(len(names)) trial builds, and at most ``max_builds`` are made (the rest is dropped).

    ``similar(a, b)`` (optional) speeds this up: once a culprit is found, the remaining tensors
    similar to it are dropped too, on trial - if the rest then builds, the search is over.

    Returns ``(kept, dropped, result for kept or None, builds made)``.
    """
    accepted: List[str] = []
    dropped: List[str] = []
    rest = list(names)
    best = None  # a result built with exactly ``accepted`` marked
    builds = 0
    while rest and builds < max_builds:
        result = try_build(accepted + rest)
        builds += 1
        if result is not None:
            accepted += rest
            rest = []
            best = result
            break
        lo, hi, lo_result = 0, len(rest), best  # accepted + rest[:lo] builds (assumed for lo=0); rest[:hi] fails
        while hi - lo > 1 and builds < max_builds:
            mid = (lo + hi) // 2
            result = try_build(accepted + rest[:mid])
            builds += 1
            if result is not None:
                lo, lo_result = mid, result
            else:
                hi = mid
        if lo == 0 and best is None:  # nothing extra builds: does the model build at all?
            best = try_build(accepted)
            builds += 1
            if best is None:  # no: the failure is not about marking
                return accepted, dropped + rest, None, builds
        accepted += rest[:lo]
        best = lo_result if lo else best
        if hi - lo > 1:  # out of builds before the culprit was found: keep what is known to build
            rest = rest[lo:]
            break
        culprit = rest[lo]
        dropped.append(culprit)
        rest = rest[lo + 1:]
        if similar is not None and rest and builds < max_builds:
            alike = [n for n in rest if similar(culprit, n)]
            if alike:
                others = [n for n in rest if n not in alike]
                result = try_build(accepted + others)
                builds += 1
                if result is not None:
                    accepted += others
                    dropped += alike
                    rest = []
                    best = result
                    break
    dropped += rest
    if best is None:  # nothing extra built yet: the model's own outputs only
        best = try_build(accepted)
        builds += 1
    return accepted, dropped, best, builds
