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
from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple, Union

import numpy as np

from trtdebug.errors import FeedError, TrtDebugError

Dim = Union[int, str, None]


@dataclass(frozen=True)
class TensorMeta:
    """dtype and shape of an input as the backend sees it; dims may be symbolic or unknown."""

    dtype: Optional[np.dtype]
    shape: Optional[Tuple[Dim, ...]]

    def accepts_shape(self, shape: Tuple[int, ...]) -> bool:
        if self.shape is None:
            return True
        if len(shape) != len(self.shape):
            return False
        return all(not isinstance(d, int) or d < 0 or d == s for d, s in zip(self.shape, shape))


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


def check_feed(feed: Mapping[str, np.ndarray], input_meta: Mapping[str, TensorMeta], *, where: str) -> None:
    """Raise FeedError (one line: where, input, what was given, what the model expects) on the first problem."""
    from trtdebug.inputs.spec import format_shape  # imported here: trtdebug.inputs imports this module

    unknown = [n for n in feed if n not in input_meta]
    if unknown:
        raise FeedError(f"{where}: unknown input(s) {', '.join(map(repr, unknown))}; "
                        f"the model's inputs are {', '.join(map(repr, input_meta)) or 'none'}")
    missing = [n for n in input_meta if n not in feed]
    if missing:
        raise FeedError(f"{where}: missing input(s) {', '.join(map(repr, missing))}")
    for name, arr in feed.items():
        meta = input_meta[name]
        if not isinstance(arr, np.ndarray):
            raise FeedError(f"{where}: input {name!r} is a {type(arr).__name__}, not a NumPy array")
        if meta.dtype is not None and arr.dtype != meta.dtype:
            raise FeedError(f"{where}: input {name!r} has dtype {arr.dtype}, the model expects {np.dtype(meta.dtype)}")
        if not meta.accepts_shape(tuple(arr.shape)):
            raise FeedError(f"{where}: input {name!r} has shape {list(arr.shape)}, "
                            f"the model expects {format_shape(name, meta.shape)}")
