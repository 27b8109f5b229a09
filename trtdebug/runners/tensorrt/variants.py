"""Parse once, build many: variants of one TensorRT network for a search.

A bisection builds many engines of one model that differ only in which tensors are outputs
and which ONNX nodes are kept in FP32.  Parsing a large model takes seconds each time, so
:class:`NetworkVariants` parses it into an ``INetworkDefinition`` once and, for each variant,
changes the network in place, builds, and undoes the change - the next variant starts from the
parsed network as it was.  Every build attaches the process's timing cache (``timing_cache.py``),
so tactics measured for one variant are reused by the next.

What can change without a re-parse, and what cannot (TensorRT decides, not us):

* **outputs**: ``mark_output``/``unmark_output`` (every release).  Model outputs the variant
  excludes are marked again afterwards, at the end of the output list; engines are read by
  tensor name, so the order does not matter.
* **FP32 layers**: ``ILayer.precision``/``set_output_type`` and their ``reset_*`` (8.6, 10.x)
  with the precision-constraint builder flag.  TensorRT 11 has no per-layer precision (networks
  are strongly typed, types come from the model), and a strongly typed network on 10.x ignores
  it; there, keeping nodes in FP32 is done in the ONNX graph and needs a new parse.
* **needs a re-parse**: anything fixed when the network is created (strong typing, the
  explicit-batch flag), removing or replacing layers (INetworkDefinition cannot delete a layer:
  cutting subgraphs is ONNX surgery), new weights (the parser owns them), and static input
  shapes the parser already folded into shape computations.  Debug tensors are not offered here:
  they are the fused-boundary mode's business (``boundaries.py``).
"""
from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from trtdebug.errors import UsageError
from trtdebug.model.surgery import OutputSelection
from trtdebug.runners.tensorrt import compat, marking
from trtdebug.runners.tensorrt.builder import BuildResult, EngineBuilder, Shapes, force_fp32, layers_of_nodes

Undo = Callable[[], None]


class NetworkVariants:
    """One parsed network of ``builder``'s model, built again and again with variations.

    ``feed_shapes`` completes the optimization profile of dynamic inputs, as in
    :meth:`EngineBuilder.build`.  Use as a context manager (or call :meth:`close`) to release
    the network and the parser's weights.  Not thread-safe: one build at a time.
    """

    def __init__(self, builder: EngineBuilder, *, feed_shapes: Optional[Shapes] = None) -> None:
        self.builder = builder
        self.feed_shapes = feed_shapes
        self.parsed = builder.parse()
        self.builds = 0

    def __enter__(self) -> "NetworkVariants":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.parsed = None

    def build(self, outputs: Union[OutputSelection, Sequence[str]] = OutputSelection(), *,
              fp32_nodes: Sequence[str] = (), configure: Optional[Callable[[object], object]] = None) -> BuildResult:
        """Build the network with ``outputs`` (tensor names, or a selection) marked as outputs
        besides the model's, and the layers of ``fp32_nodes`` (ONNX node names) kept in FP32.
        ``configure(builder_config)`` changes the configuration last (an algorithm selector, a
        timing cache of its own); what it returns is kept alive until the build ends.

        The network is restored afterwards whether the build succeeds or fails; the timing
        cache is saved after each build (a search in isolated processes must not lose it).
        """
        if self.parsed is None:
            raise RuntimeError("NetworkVariants is closed")
        if not isinstance(outputs, OutputSelection):
            outputs = OutputSelection(names=tuple(outputs))
        if fp32_nodes:
            self._check_layer_precision()
        network = self.parsed.network
        notes: List[str] = []
        undo: List[Undo] = []
        plan = marking.plan_marking(network, self.builder.graph, outputs)
        try:
            undo.append(_mark(network, plan))
            undo.extend(self._keep_fp32(network, fp32_nodes, notes))
            config, profiles = self.builder._make_config(self.parsed, self.feed_shapes, notes)  # noqa: SLF001
            if fp32_nodes:
                config.set_flag(compat.precision_constraint_flag(self.builder.trt, self.builder.features))
            keep = configure(config) if configure is not None else None
            start = time.perf_counter()
            engine = self.builder._build_serialized(self.parsed, config)  # noqa: SLF001
            seconds = time.perf_counter() - start
            del keep
        finally:
            for step in reversed(undo):
                step()
        self.builds += 1
        self.builder.save_timing_cache()
        return BuildResult(engine, plan, seconds, notes, profiles)

    # -- FP32 -------------------------------------------------------------------------------------
    def _check_layer_precision(self) -> None:
        b = self.builder
        strongly = compat.wants_strong_typing(b.features, b.config.strongly_typed)
        if not b.features.layer_precision or strongly or compat.precision_constraint_flag(b.trt, b.features) is None:
            why = ("has no per-layer precision" if not b.features.layer_precision
                   else "builds strongly typed networks, which take every type from the model")
            raise UsageError(f"cannot keep ONNX nodes in FP32 on {b.features.label}: it {why}; keep them "
                             "in FP32 in the ONNX graph instead (Cast to float32 around them) and build that model")

    def _keep_fp32(self, network, nodes: Sequence[str], notes: List[str]) -> List[Undo]:
        if not nodes:
            return []
        if not self.builder.features.layer_precision:  # checked in build(); said again where the names are used
            self._check_layer_precision()
            return []
        by_node = layers_of_nodes(network, self.builder.graph, nodes)
        undo: List[Undo] = []
        for node_layers in by_node.values():
            for layer in node_layers:
                undo.append(_remember_precision(layer))
                force_fp32(layer, self.builder.trt.float32)
        missing = [n for n in nodes if n not in by_node]
        notes.append(f"FP32 kept on {len(by_node)} ONNX node(s)"
                     + (f"; no TensorRT layer found for {', '.join(missing[:5])}" if missing else ""))
        return undo


def _mark(network, plan: marking.MarkPlan) -> Undo:
    """Apply ``plan``; the returned step puts the network's outputs back as they were."""
    table = marking.tensors_by_name(network)
    newly = [table[n] for n in plan.mark if not table[n].is_network_output]
    marking.apply_marking(network, plan)

    def restore() -> None:
        for tensor in newly:
            if tensor.is_network_output:
                network.unmark_output(tensor)
        for name in plan.unmark:
            tensor = table.get(name)
            if tensor is not None and not tensor.is_network_output:
                network.mark_output(tensor)

    return restore


def _remember_precision(layer) -> Undo:
    """The step that resets ``layer``'s precision and output types to what they are now."""
    had_precision: Tuple[bool, object] = (bool(layer.precision_is_set), layer.precision)
    had_types = [(bool(layer.output_type_is_set(j)), layer.get_output_type(j)) for j in range(layer.num_outputs)]

    def restore() -> None:
        was_set, value = had_precision
        if was_set:
            layer.precision = value
        else:
            layer.reset_precision()
        for j, (set_, dtype) in enumerate(had_types):
            if set_:
                layer.set_output_type(j, dtype)
            else:
                layer.reset_output_type(j)

    return restore
