"""Keep every-layer comparisons in the precision the engine would really run in.

Marking a tensor as a network output makes it an FP32 binding by default, so with FP16/BF16
enabled its producer stops running in reduced precision (measured on TensorRT 8.6 with a YOLOv8n
export: 414 of 434 layer outputs FP32 under ``--mark-all``) and the comparison describes an
engine nobody ships.  Two remedies, chosen by what the installed TensorRT offers (by name):

* **debug tensors** (``INetworkDefinition.mark_debug``, 10.0+): the tensor stays internal and keeps
  the type TensorRT chose; the values are copied out by the debug listener - preferred;
* **reduced-precision outputs** (``ITensor.dtype`` settable, 8.6 and 10.x): the marked output is
  declared HALF/BF16, the type its layer produces in reduced precision; values are widened to
  float32 on the host for comparison.

On TensorRT 11 and TensorRT-RTX there is nothing to do: networks are strongly typed, every
tensor's type comes from the ONNX graph, and a marked output keeps it.

Either way the report says how many engine layers ran in each precision, in the compared engine
and in the unmodified one (:func:`precision_counts`, from the engine inspector).
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence

from trtdebug.runners.tensorrt import compat, marking

ROUTE_DEBUG = "debug tensors"
ROUTE_OUTPUT_TYPES = "reduced-precision output types"
ROUTE_STRONGLY_TYPED = "strongly typed (types from the model)"
ROUTE_NONE = "none available"


def reduced_dtype_name(features: compat.Features, config) -> Optional[str]:
    """``HALF``/``BF16`` when the build enables FP16/BF16 kernels by builder flag, else None."""
    if getattr(config, "strongly_typed", False) or features.strong_typing_required:
        return None
    if config.fp16 and features.fp16_flag:
        return "HALF"
    if config.bf16 and features.bf16_flag:
        return "BF16"
    return None


def choose_route(features: compat.Features, config) -> Optional[str]:
    """How marked tensors keep their reduced precision on this TensorRT; None: no reduced precision asked."""
    if features.strong_typing_required or getattr(config, "strongly_typed", False):
        return ROUTE_STRONGLY_TYPED
    if reduced_dtype_name(features, config) is None:
        return None
    if features.mark_debug:
        return ROUTE_DEBUG
    if features.tensor_dtype_settable:
        return ROUTE_OUTPUT_TYPES
    return ROUTE_NONE


def set_output_types(trt, network, names: Sequence[str], dtype_name: str) -> List[str]:
    """Declare the marked FP32 outputs ``names`` as ``dtype_name``; returns those changed."""
    dtype = getattr(trt.DataType, dtype_name)
    table = marking.tensors_by_name(network)
    changed = []
    for name in names:
        t = table.get(name)
        if t is None or compat.dtype_name(t.dtype) != "FLOAT":
            continue
        t.dtype = dtype
        changed.append(name)
    return changed


def precision_counts(layers: Sequence[object], graph=None) -> Dict[str, int]:
    """Compute layers per precision (``{"FP16": 120, "FP32": 14}``) from inspector JSON; reformats excluded."""
    from trtdebug.runners.tensorrt.inspector import parse_engine_info

    if not layers or not all(isinstance(entry, Mapping) for entry in layers):
        return {}
    info = parse_engine_info({"Layers": list(layers)}, graph, profile=None)
    counts: Dict[str, int] = {}
    for entry in info.compute_layers:  # inspector LayerInfo, not an ILayer
        key = entry.precision or "unknown"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def precision_note(compared: Mapping[str, int], unmodified: Optional[Mapping[str, int]], route: Optional[str]) -> str:
    """One line for the report: layer precisions in the compared engine vs the unmodified one."""
    def fmt(counts: Mapping[str, int]) -> str:
        return ", ".join(f"{n} {p}" for p, n in counts.items()) if counts else "unknown (no layer information)"

    text = f"layer precisions: compared engine {fmt(compared)}"
    if unmodified is not None:
        text += f"; unmodified engine {fmt(unmodified)}"
    if route:
        text += f" (marked tensors kept in reduced precision by: {route})"
    return text
