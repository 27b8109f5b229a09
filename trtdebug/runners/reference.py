"""CPU reference runner on ``onnx.reference``: an independent golden on any machine.

``onnx.reference`` implements each operator in plain numpy following the ONNX spec, which
makes it slow but independent of any inference engine's kernels - the right referee when
ONNX Runtime itself is suspect.  ``run(..., intermediate=True)`` returns every tensor.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional

import numpy as np

from trtdebug.errors import BackendError, InferenceError
from trtdebug.model.graph import ModelGraph
from trtdebug.model.surgery import OutputSelection, select_tensors
from trtdebug.runners.base import Runner, TensorMeta
from trtdebug.runners.onnx_common import graph_input_metadata, order_outputs, prepare_model


class ReferenceRunner(Runner):
    def __init__(self, model, *, outputs: OutputSelection = OutputSelection(), graph: Optional[ModelGraph] = None,
                 name: str = "reference") -> None:
        super().__init__(name)
        self._source = model
        self._selection = outputs
        self._graph = graph
        self._evaluator = None

    def _activate(self) -> None:
        from onnx.reference import ReferenceEvaluator

        model, self._graph = prepare_model(self._source, OutputSelection(), self._graph)
        self._wanted = select_tensors(self._graph, self._selection)
        try:
            self._evaluator = ReferenceEvaluator(model)
        except Exception as exc:  # unsupported op or malformed model, found at load time
            raise BackendError(f"the ONNX reference evaluator cannot load the model: {exc}") from exc

    def _input_metadata(self) -> Dict[str, TensorMeta]:
        return graph_input_metadata(self._graph)

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        try:
            everything = self._evaluator.run(None, dict(feeds), intermediate=True)
        except Exception as exc:
            raise InferenceError(f"the ONNX reference evaluator failed: {exc}") from exc
        names = [n for n in self._wanted if n in everything]
        return order_outputs(names, [np.asarray(everything[n]) for n in names], self._graph)

    def _deactivate(self) -> None:
        self._evaluator = None
