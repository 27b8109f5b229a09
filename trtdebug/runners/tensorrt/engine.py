"""Serialized engines: save, load, deserialize, describe I/O, read layer information.

Layer information is TensorRT's ``IEngineInspector`` JSON (one dict per layer at DETAILED
profiling verbosity); it is kept raw here, the inspector module maps it to ONNX names.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from trtdebug.errors import BackendError, BackendUnavailableError, ModelLoadError
from trtdebug.runners.tensorrt import compat
from trtdebug.util.files import write_bytes_atomic

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def is_engine_path(source) -> bool:
    return isinstance(source, (str, Path)) and Path(source).suffix.lower() in ENGINE_SUFFIXES


def save_engine(path, data: bytes) -> Path:
    return write_bytes_atomic(path, data)


def read_engine_file(path) -> bytes:
    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"engine file not found: {p}")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"cannot read engine file {p}: {exc}") from exc
    if not data:
        raise ModelLoadError(f"engine file {p} is empty")
    return data


def deserialize(trt, logger, data: bytes, *, what: str = "engine"):
    """An ICudaEngine from bytes; failure (other TensorRT version, other GPU, corrupt file) -> BackendError.

    Where TensorRT can say beforehand whether the engine runs here (RTX), that is asked first: no
    usable GPU, or one of a compute capability the library does not support, is a one-line
    BackendUnavailableError saying which.
    """
    runtime = trt.Runtime(logger)
    features = compat.detect(trt)
    if features.engine_validity:
        require_runnable(trt, runtime, logger, data, features, what=what)
    logger.messages.mark()
    try:
        engine = runtime.deserialize_cuda_engine(data)
    except Exception as exc:  # noqa: BLE001
        raise BackendError(f"TensorRT could not load the {what}: {logger.messages.error_text(str(exc))}") from exc
    if engine is None:
        raise BackendError(f"TensorRT {getattr(trt, '__version__', '')} could not load the {what}: "
                           + logger.messages.error_text("deserialization failed (built by another TensorRT version "
                                                        "or for another GPU?)"))
    return runtime, engine


# EngineInvalidityDiagnostics member -> what it means for the user, most specific first
_DIAGNOSTICS = (
    ("UNSUPPORTED_CC", None),  # worded with the compute capability, below
    ("OLD_CUDA_DRIVER", "the NVIDIA driver is missing or too old"),
    ("OLD_CUDA_RUNTIME", "the CUDA runtime is too old"),
    ("INSUFFICIENT_GPU_MEMORY", "not enough free GPU memory"),
    ("VERSION_MISMATCH", "the engine was built by another version"),
    ("MALFORMED_ENGINE", "the engine data is malformed"),
    ("CUDA_ERROR", "no usable CUDA device"),
)


def require_runnable(trt, runtime, logger, data: bytes, features: compat.Features, *, what: str = "engine") -> None:
    """Raise, in one line, why ``data`` cannot run here (``Runtime.get_engine_validity``; RTX)."""
    logger.messages.mark()
    try:
        validity, diagnostics = runtime.get_engine_validity(data)
    except Exception:  # noqa: BLE001 - the check is advisory; deserializing reports the real failure
        logger.messages.mark()
        return
    if compat.enum_name(validity) != "INVALID":
        return
    bits = int(diagnostics)
    reasons = []
    for member, text in _DIAGNOSTICS:
        value = getattr(getattr(trt, "EngineInvalidityDiagnostics", None), member, None)
        if value is not None and bits & int(value):
            reasons.append(text or _unsupported_cc(features, logger.messages.errors()))
    logged = "; ".join(_one_line(m) for m in dict.fromkeys(logger.messages.errors()))
    if not reasons:  # no diagnostic bit: TensorRT could not even query the GPU
        reasons.append("no usable CUDA device")
    line = f"{features.label} cannot run the {what} here: {', '.join(reasons)}"
    if logged:
        line += f" ({logged})"
    cls = ModelLoadError if reasons == ["the engine data is malformed"] else BackendUnavailableError
    raise cls(line)


def _unsupported_cc(features: compat.Features, logged: List[str]) -> str:
    text = " ".join(logged)
    found = re.search(r"compute capability \(?(\d+\.\d+)", text)
    head = f"compute capability {found.group(1)}" if found else "this GPU's compute capability"
    targets = ""
    if features.compute_capabilities and "supported" not in text:  # TensorRT's own list wins when it gives one
        targets = f" (its targets: {', '.join(features.compute_capabilities)})"
    return f"{head} is not supported by {features.product}{targets}"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


@dataclass(frozen=True)
class IOTensor:
    name: str
    is_input: bool
    trt_dtype: object
    dtype: np.dtype  # host storage dtype (uint16 for BF16)
    shape: Tuple[int, ...]  # -1 for dynamic dims

    @property
    def is_bf16(self) -> bool:
        return compat.is_bf16(self.trt_dtype)


def describe_io(trt, engine) -> List[IOTensor]:
    out = []
    for name in compat.io_tensor_names(engine):
        trt_dtype = engine.get_tensor_dtype(name)
        out.append(IOTensor(
            name=name,
            is_input=compat.tensor_is_input(trt, engine, name),
            trt_dtype=trt_dtype,
            dtype=compat.numpy_dtype(trt_dtype),
            shape=tuple(int(d) for d in engine.get_tensor_shape(name)),
        ))
    return out


def layer_information(trt, engine, features: Optional[compat.Features] = None, context=None) -> List[object]:
    """Per-layer JSON dicts from IEngineInspector (strings at low verbosity); [] if unavailable."""
    features = features or compat.detect(trt)
    if not features.engine_inspector:
        return []
    try:
        inspector = engine.create_engine_inspector()
        if context is not None and hasattr(inspector, "execution_context"):
            inspector.execution_context = context
        text = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
        info = parse_inspector_json(text)
    except Exception:  # noqa: BLE001 - layer info is an extra, never a reason to fail a run
        return []
    layers = info.get("Layers", []) if isinstance(info, dict) else []
    return list(layers)


def parse_inspector_json(text: str):
    """IEngineInspector JSON.  TensorRT 8.6 joins the metadata of fused layers with a raw control
    character (U+001F), which strict JSON forbids inside strings, so parse leniently."""
    return json.loads(text, strict=False)


def layer_names(layers: List[object]) -> List[str]:
    return [entry.get("Name", "") if isinstance(entry, dict) else str(entry) for entry in layers]


def layer_output_names(layer: object) -> List[str]:
    if not isinstance(layer, dict):
        return []
    names = []
    for out in layer.get("Outputs", []) or []:
        if isinstance(out, dict) and out.get("Name"):
            names.append(out["Name"])
        elif isinstance(out, str):
            names.append(out)
    return names
