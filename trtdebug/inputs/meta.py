"""What a model expects of its inputs (:class:`TensorMeta`) and the check of a feed against it.

Both the input tools (generate, load, validate feeds) and every runner need these; they live
here, below the runners, so the dependency points one way (runners -> inputs).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Tuple, Union

import numpy as np

from trtdebug.errors import FeedError
from trtdebug.inputs.spec import format_shape

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


def check_feed(feed: Mapping[str, np.ndarray], input_meta: Mapping[str, TensorMeta], *, where: str) -> None:
    """Raise FeedError (one line: where, input, what was given, what the model expects) on the first problem."""
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
