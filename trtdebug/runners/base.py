"""The runner interface shared by every backend.

A runner is a context manager.  The public methods (``activate``, ``infer``,
``deactivate``) do the bookkeeping every backend needs - state checks, feed validation,
timing - and delegate to one small private method per backend (``_activate``, ``_infer``,
``_deactivate``, ``_input_metadata``).  Backends import their libraries inside
``_activate``, never at module import time.
"""
from __future__ import annotations

import abc
import time
from typing import Dict, Mapping, Optional

import numpy as np

from trtdebug.errors import TrtDebugError
from trtdebug.inputs.meta import TensorMeta, check_feed

__all__ = ["Runner", "TensorMeta", "check_feed"]  # TensorMeta, check_feed: re-exported for the backends


class Runner(abc.ABC):
    """Run a model on one backend; ``infer`` returns an ordered ``{tensor name: array}``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.is_active = False
        self.last_inference_time: Optional[float] = None
        self.extra: Dict[str, object] = {}  # backend facts worth reporting (engine layers, providers)

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> "Runner":
        self.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.deactivate()

    def activate(self) -> None:
        if self.is_active:
            return
        self._activate()
        self.is_active = True

    def deactivate(self) -> None:
        if not self.is_active:
            return
        try:
            self._deactivate()
        finally:
            self.is_active = False

    # -- queries -----------------------------------------------------------------------------
    def input_metadata(self) -> Dict[str, TensorMeta]:
        self._require_active()
        return self._input_metadata()

    def infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Run once.  Feeds are checked against the input metadata first, so a wrong feed is a
        FeedError (bad input, exit 2) rather than a backend crash (exit 3)."""
        self._require_active()
        self.check_feeds(feeds)
        self._prepare(feeds)
        start = time.perf_counter()
        outputs = self._infer(feeds)
        self.last_inference_time = time.perf_counter() - start
        return outputs

    def check_feeds(self, feeds: Mapping[str, np.ndarray]) -> None:
        check_feed(feeds, self._input_metadata(), where=self.name)

    def _require_active(self) -> None:
        if not self.is_active:
            raise TrtDebugError(f"runner {self.name} used before activate()")

    # -- per backend -------------------------------------------------------------------------
    @abc.abstractmethod
    def _activate(self) -> None: ...

    @abc.abstractmethod
    def _input_metadata(self) -> Dict[str, TensorMeta]: ...

    @abc.abstractmethod
    def _infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]: ...

    def _prepare(self, feeds: Mapping[str, np.ndarray]) -> None:
        """Work that depends on the feeds but is not inference (e.g. a build for their shapes); not timed."""

    def _deactivate(self) -> None:
        """Release backend resources; the default has nothing to release."""
