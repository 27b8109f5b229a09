"""CPU reference runner on ``onnx.reference``: an independent golden on any machine.

``onnx.reference`` implements each operator in plain numpy following the ONNX spec, which
makes it slow but independent of any inference engine's kernels - the right referee when
ONNX Runtime itself is suspect.  ``run(..., intermediate=True)`` returns every tensor.

Two things make it trustworthy as a golden rather than merely convenient:

* ops it computes wrongly are replaced (:mod:`trtdebug.runners.reference_ops`); the ones
  this model uses are listed in ``extra["overrides"]``;
* numpy's RuntimeWarnings (overflow in exp, invalid value in log, ...) are caught: they are
  the op computing inf/NaN as the spec says, which the comparison reports per tensor, so they
  are counted in ``extra["numpy_warnings"]`` instead of reaching stderr.
"""
from __future__ import annotations

import warnings
from typing import Dict, Mapping, Optional

import numpy as np

from trtdebug.errors import BackendError, InferenceError
from trtdebug.model.graph import ModelGraph
from trtdebug.model.surgery import OutputSelection
from trtdebug.runners.base import Runner, TensorMeta
from trtdebug.runners.onnx_common import OutputReport, graph_input_metadata, order_outputs, prepare_model


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

        from trtdebug.runners.reference_ops import overridden_ops, overrides_in

        model, self._graph = prepare_model(self._source, OutputSelection(), self._graph)
        self._report = OutputReport(self._graph, self._selection)
        try:
            self._evaluator = ReferenceEvaluator(model, new_ops=overridden_ops(model))
        except Exception as exc:  # unsupported op or malformed model, found at load time
            raise BackendError(f"the ONNX reference evaluator cannot load the model: {exc}") from exc
        self._warnings: Dict[str, int] = {}
        self.extra.update(self._report.as_extra())
        self.extra["overrides"] = {op: why for op, why in overrides_in(model)}

    def _input_metadata(self) -> Dict[str, TensorMeta]:
        return graph_input_metadata(self._graph)

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            try:
                everything = self._evaluator.run(None, dict(feeds), intermediate=True)
            except Exception as exc:
                raise InferenceError(f"the ONNX reference evaluator failed: {exc}") from exc
        self._count_warnings(caught)
        present = [n for n in self._report.wanted if n in everything]
        names, arrays = self._report.keep_arrays(present, [everything[n] for n in present])
        self.extra.update(self._report.as_extra())
        return order_outputs(names, arrays, self._graph)

    def _count_warnings(self, caught) -> None:
        """Count numpy's RuntimeWarnings by message; hand any other warning back to Python's filters."""
        for w in caught:
            if issubclass(w.category, RuntimeWarning):
                key = str(w.message)
                self._warnings[key] = self._warnings.get(key, 0) + 1
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
        if self._warnings:
            self.extra["numpy_warnings"] = dict(self._warnings)

    def _deactivate(self) -> None:
        self._evaluator = None
