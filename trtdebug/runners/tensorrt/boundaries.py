"""Compare only at fused-layer boundaries of the *unmodified* engine.

Marking every tensor as an output changes what TensorRT fuses, and so can change the very
numbers being debugged.  This mode keeps the engine's fusion:

1. build the model unmodified (DETAILED verbosity) and read its layers (IEngineInspector);
2. the outputs of those layers that are ONNX tensor names are the *boundary* tensors: values
   that exist in memory in the real engine;
3. expose exactly those, by the best means the TensorRT version offers:

   * ``unfused-debug`` (10.12+, ``mark_unfused_tensors_as_debug_tensors``): a single build
     whose every unfused tensor is a debug tensor, captured by an ``IDebugListener`` - no
     second build at all;
   * ``debug`` (10.0+, ``mark_debug`` + ``IDebugListener``): rebuild with the boundary
     tensors as debug tensors (no extra network outputs);
   * ``outputs`` (8.6): rebuild with them marked as outputs, reusing the first build's timing
     cache in memory (so it is fast), then check that the layer list did not change.

``extra`` records the mode, the boundary tensors, and whether fusion was preserved (with the
changed layers if not).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from trtdebug.runners.tensorrt import compat, engine as engine_mod

MODE_UNFUSED_DEBUG = "unfused-debug"
MODE_DEBUG = "debug"
MODE_OUTPUTS = "outputs"


def choose_mode(features: compat.Features, *, prefer_outputs: bool = False) -> str:
    if prefer_outputs:
        return MODE_OUTPUTS
    if features.mark_unfused_debug and features.mark_debug:
        return MODE_UNFUSED_DEBUG
    if features.mark_debug:
        return MODE_DEBUG
    return MODE_OUTPUTS


def boundary_tensors(layers: List[object], graph) -> List[str]:
    """ONNX tensor names produced by the engine's layers, in topological order.

    Graph inputs, initializers and the model's own outputs are left out (the latter are
    outputs already)."""
    names: List[str] = []
    seen = set()
    for layer in layers:
        for name in engine_mod.layer_output_names(layer):
            if name in seen:
                continue
            seen.add(name)
            info = graph.get(name) if graph is not None else None
            if info is None or info.is_graph_input or info.is_initializer or info.is_graph_output:
                continue
            names.append(name)
    if graph is not None:
        names.sort(key=graph.topo_index)
    return names


def _is_reformat(layer: object) -> bool:
    if isinstance(layer, dict):
        kind = str(layer.get("LayerType", "")).lower()
        name = str(layer.get("Name", ""))
    else:
        kind, name = "", str(layer)
    return kind in ("reformat", "reformatting") or "Reformatting CopyNode" in name or name.endswith(" copy")


@dataclass
class FusionCheck:
    preserved: bool
    removed: List[str] = field(default_factory=list)  # layers of the unmodified engine that are gone
    added: List[str] = field(default_factory=list)  # layers that appeared
    layers_before: int = 0
    layers_after: int = 0
    reformats_added: int = 0

    def as_extra(self) -> Dict[str, object]:
        return {"fusion_preserved": self.preserved, "changed_layers": {"removed": self.removed, "added": self.added},
                "layers_before": self.layers_before, "layers_after": self.layers_after,
                "reformat_layers_added": self.reformats_added}


def compare_layers(before: List[object], after: List[object]) -> FusionCheck:
    """Did marking keep the unmodified engine's layers?  Reformat/copy layers that TensorRT adds
    to write an output in its own format are counted, not treated as broken fusion."""
    b_all, a_all = engine_mod.layer_names(before), engine_mod.layer_names(after)
    b = [n for n, l in zip(b_all, before) if not _is_reformat(l)]
    a = [n for n, l in zip(a_all, after) if not _is_reformat(l)]
    removed = [n for n in b if n not in set(a)]
    added = [n for n in a if n not in set(b)]
    reformats = sum(1 for l in after if _is_reformat(l)) - sum(1 for l in before if _is_reformat(l))
    return FusionCheck(preserved=not removed and not added and len(a) == len(b), removed=removed, added=added,
                       layers_before=len(before), layers_after=len(after), reformats_added=max(reformats, 0))


def make_debug_listener(trt, cuda, keep: Optional[set] = None):
    """An ``IDebugListener`` copying each debug tensor to the host (TensorRT 10.0+).

    ``keep``: names worth copying (ONNX tensor names); others are counted and dropped, since
    unfused debug tensors carry TensorRT's internal post-fusion names.
    """
    from trtdebug.runners.tensorrt.cuda import pointer_value

    class Listener(trt.IDebugListener):
        def __init__(self) -> None:
            trt.IDebugListener.__init__(self)
            self.captured: Dict[str, np.ndarray] = {}
            self.dropped: List[str] = []
            self.errors: List[str] = []

        def process_debug_tensor(self, addr, location, type, shape, name, stream):  # noqa: A002 - TensorRT's names
            try:
                name = str(name)
                if keep is not None and name not in keep:
                    self.dropped.append(name)
                    return True
                dims = tuple(int(d) for d in shape)
                host = np.empty(dims, dtype=compat.numpy_dtype(type))
                ptr = pointer_value(addr)
                location_name = compat.dtype_name(location)
                if location_name == "HOST":
                    import ctypes

                    ctypes.memmove(host.ctypes.data, ptr, host.nbytes)
                else:
                    cuda.dtoh_async(host, ptr, stream)
                    cuda.stream_sync(stream)
                if compat.is_bf16(type):
                    host = compat.bf16_bits_to_float32(host)
                self.captured[name] = host
            except Exception as exc:  # noqa: BLE001 - must not raise into TensorRT
                self.errors.append(f"{name}: {exc}")
            return True

    return Listener()
