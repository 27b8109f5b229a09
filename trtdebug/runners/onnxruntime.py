"""ONNX Runtime runner (CPU by default; CUDA / TensorRT execution providers where installed)."""
from __future__ import annotations

import os
import tempfile
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from trtdebug.errors import BackendError, InferenceError, UsageError, missing_dependency
from trtdebug.model.graph import ModelGraph
from trtdebug.model.loader import model_bytes_or_path
from trtdebug.model.surgery import OutputSelection
from trtdebug.runners.base import Runner, TensorMeta
from trtdebug.runners.onnx_common import OutputReport, graph_input_metadata, order_outputs, prepare_model

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "trt": "TensorrtExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "dml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
}


def resolve_providers(names: Sequence[str]) -> list:
    """Map short names (cpu, cuda, trt) to ONNX Runtime provider names and check they are installed."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise missing_dependency("onnxruntime", what="ONNX Runtime") from exc
    available = ort.get_available_providers()
    resolved = []
    for name in names or ["cpu"]:
        full = PROVIDER_ALIASES.get(name.lower(), name)
        if full not in available:
            raise UsageError(f"ONNX Runtime provider {name!r} is not available here (available: {', '.join(available)}); "
                             "for CUDA/TensorRT providers install onnxruntime-gpu instead of onnxruntime")
        resolved.append(full)
    return resolved


class OnnxRuntimeRunner(Runner):
    """Runs an ONNX model with ONNX Runtime, optionally returning every intermediate tensor."""

    def __init__(self, model, *, outputs: OutputSelection = OutputSelection(), providers: Sequence[str] = ("cpu",),
                 graph: Optional[ModelGraph] = None, name: str = "onnxrt", weights=None) -> None:
        """``weights``: a :class:`~trtdebug.model.loader.SharedWeights` whose weightless ``model`` this is
        (the session reads the weights from its data file)."""
        super().__init__(name)
        self._source = model
        self._weights = weights
        self._selection = outputs
        self._providers = list(providers)
        self._graph = graph
        self._session = None

    def _activate(self) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise missing_dependency("onnxruntime", what="ONNX Runtime") from exc
        providers = resolve_providers(self._providers)
        model, self._graph = prepare_model(self._source, self._selection, self._graph)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        with tempfile.TemporaryDirectory(prefix="trtdebug-ort-") as scratch:
            source = model_bytes_or_path(model, scratch, weights=self._weights)
            try:
                self._session = ort.InferenceSession(source, sess_options=opts, providers=providers)
            except Exception as exc:  # ORT raises its own Fail/InvalidGraph/NotImplemented types
                raise BackendError(f"ONNX Runtime could not load the model: {_first_line(exc)}") from exc
            finally:
                if self._weights is not None:
                    os.unlink(source)
        self._output_names = [o.name for o in self._session.get_outputs()]
        self._report = OutputReport(self._graph, self._selection)
        self.extra.update(self._report.as_extra())
        self.extra["providers"] = self._session.get_providers()
        self.extra["onnxruntime_version"] = ort.__version__

    def _input_metadata(self) -> Dict[str, TensorMeta]:
        return graph_input_metadata(self._graph)

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        try:
            values = self._session.run(self._output_names, dict(feeds))
        except Exception as exc:
            raise InferenceError(f"ONNX Runtime failed to run the model: {_first_line(exc)}") from exc
        names, arrays = self._report.keep_arrays(self._output_names, values)
        self.extra.update(self._report.as_extra())
        return order_outputs(names, arrays, self._graph)

    def _deactivate(self) -> None:
        self._session = None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
