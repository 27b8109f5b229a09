"""Seeded synthetic input data, generated from the model's input metadata.

Defaults match Polygraphy's data loader, so a trtdebug run and a Polygraphy run see data
of the same kind: floating inputs are uniform in ``[0, 1)`` and integer inputs uniform in
``[0, 1]`` (inclusive), unless a value range is given; booleans are uniform True/False and
ignore ranges.  (The values themselves differ from Polygraphy's: to compare on identical data,
save the feeds from one tool and load them in the other.)

Each array has its own random stream, seeded by ``(seed, iteration, crc32(input name))``,
so the data of one input never depends on which other inputs exist or in what order they
come: adding an input to a model, or cutting a subgraph, leaves the others' data unchanged.
"""
from __future__ import annotations

import math
import zlib
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np

from trtdebug.errors import UsageError
from trtdebug.inputs.spec import Range, format_shape
from trtdebug.inputs.meta import TensorMeta

DEFAULT_RANGE: Range = (0.0, 1.0)


def generate_feeds(
    input_meta: Mapping[str, TensorMeta],
    *,
    seed: int = 1,
    iterations: int = 1,
    shapes: Optional[Mapping[str, Tuple[int, ...]]] = None,
    val_range: Optional[Range] = None,
    per_input_ranges: Optional[Mapping[str, Range]] = None,
) -> List[Dict[str, np.ndarray]]:
    """One ``{input name: array}`` per iteration, in the model's input order.

    ``shapes`` fixes dynamic dimensions (``--input-shapes``); ``val_range`` is the default
    range and ``per_input_ranges`` overrides it per input (``--val-range``).  A dynamic
    dimension without a given shape is a UsageError that says which flag to pass.
    """
    shapes = dict(shapes or {})
    per_input_ranges = dict(per_input_ranges or {})
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UsageError(f"--seed must be a non-negative integer, got {seed!r}")
    if iterations < 1:
        raise UsageError(f"--iterations must be at least 1, got {iterations}")
    _check_names(shapes, input_meta, "--input-shapes")
    _check_names(per_input_ranges, input_meta, "--val-range")

    resolved = {name: _resolve_shape(name, meta, shapes.get(name)) for name, meta in input_meta.items()}
    feeds = []
    for iteration in range(iterations):
        feed = {}
        for name, meta in input_meta.items():
            rng = np.random.default_rng([seed, iteration, zlib.crc32(name.encode("utf-8"))])
            dtype = np.dtype(meta.dtype) if meta.dtype is not None else np.dtype(np.float32)
            rng_range = per_input_ranges.get(name, val_range or DEFAULT_RANGE)
            feed[name] = _random_array(rng, name, dtype, resolved[name], rng_range)
        feeds.append(feed)
    return feeds


def _check_names(given: Mapping[str, object], input_meta: Mapping[str, TensorMeta], flag: str) -> None:
    unknown = [n for n in given if n not in input_meta]
    if unknown:
        raise UsageError(f"{flag}: unknown input(s) {', '.join(map(repr, unknown))}; "
                         f"the model's inputs are {', '.join(map(repr, input_meta)) or 'none'}")


def _resolve_shape(name: str, meta: TensorMeta, given: Optional[Tuple[int, ...]]) -> Tuple[int, ...]:
    """The concrete shape to generate: ``given`` if compatible, else the static model shape."""
    if given is not None:
        if not meta.accepts_shape(tuple(given)):
            raise UsageError(f"--input-shapes {format_shape(name, given)} does not fit the model's input "
                             f"{format_shape(name, meta.shape)}")
        return tuple(given)
    if meta.shape is None:
        raise UsageError(f"input {name!r} has an unknown shape; give one with --input-shapes {name}:[d0,d1,...]")
    if any(not isinstance(d, int) or d < 0 for d in meta.shape):
        raise UsageError(f"input {format_shape(name, meta.shape)} has dynamic dimensions; give its shape with "
                         f"--input-shapes {_suggest(name, meta.shape)}")
    return tuple(meta.shape)


def _suggest(name: str, shape: Tuple[object, ...]) -> str:
    """``x:[1,S_value,64]`` for ``x:[B,S,64]``: batch 1 (what debugging usually wants), a placeholder elsewhere."""
    dims = []
    for i, d in enumerate(shape):
        if isinstance(d, int) and d >= 0:
            dims.append(str(d))
        elif i == 0:
            dims.append("1")
        else:
            dims.append(f"{d if isinstance(d, str) else f'dim{i}'}_value")
    return f"{name}:[{','.join(dims)}]"


def _random_array(rng: np.random.Generator, name: str, dtype: np.dtype, shape: Tuple[int, ...], val_range: Range) -> np.ndarray:
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape, dtype=np.uint8).astype(np.bool_)
    lo, hi = val_range
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        lo_i, hi_i = max(math.ceil(lo), int(info.min)), min(math.floor(hi), int(info.max))
        if lo_i > hi_i:
            raise UsageError(f"--val-range [{lo:g},{hi:g}] holds no {dtype} value for input {name!r}")
        return np.asarray(rng.integers(lo_i, hi_i, size=shape, dtype=dtype, endpoint=True))
    if np.issubdtype(dtype, np.inexact):
        # float64 draws cast down: the same stream for every float width.
        return np.asarray(rng.uniform(lo, hi, size=shape)).astype(dtype)
    raise UsageError(f"input {name!r} has dtype {dtype}, for which trtdebug cannot generate data; "
                     f"supply it with --load-inputs")
