"""Save, load and check input feeds: ``.npz`` (ours) or Polygraphy JSON (``.json`` or a directory).

``.npz`` layout: with one iteration the keys are the input names; with several, the keys
are ``it<k>/<name>``.  The saver switches to the ``it<k>/`` form whenever a name alone could
be mistaken for it, so every file reads back exactly.  Archives are written entry by entry
with ``zipfile`` rather than ``np.savez``, whose keyword arguments would collide with inputs
named ``file`` or ``allow_pickle``.
"""
from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Union

import numpy as np

from trtdebug.errors import FeedError, UsageError
from trtdebug.inputs.polygraphy_json import load_polygraphy_inputs, save_polygraphy_inputs
from trtdebug.runners.base import TensorMeta, check_feed
from trtdebug.util.files import atomic_path

PathLike = Union[str, os.PathLike]
Feeds = Dict[str, np.ndarray]

_ITER_KEY = re.compile(r"it(\d+)/(.+)", re.DOTALL)


def save_inputs(path: PathLike, feeds_list: Sequence[Mapping[str, np.ndarray]]) -> Path:
    """Write feeds atomically; the suffix picks the format (``.npz`` or ``.json``)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".json":
        return save_polygraphy_inputs(p, feeds_list)
    if suffix != ".npz":
        raise UsageError(f"cannot save inputs to {p}: the file name must end in .npz or .json")
    prefixed = len(feeds_list) != 1 or any(_ITER_KEY.fullmatch(n) for n in feeds_list[0])
    with atomic_path(p) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for k, feed in enumerate(feeds_list):
            for name, arr in feed.items():
                key = f"it{k}/{name}" if prefixed else name
                with zf.open(key + ".npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.asarray(arr), allow_pickle=False)
    return p


def load_inputs(path: PathLike, *, model=None) -> List[Feeds]:
    """Read feeds saved by :func:`save_inputs`, by ``polygraphy run --save-inputs``, or ONNX test data
    (``test_data_set_*/input_*.pb``; ``model`` names unnamed tensors by position)."""
    p = Path(path)
    if not p.exists():
        raise FeedError(f"input data file not found: {p}")
    from trtdebug.inputs import onnx_testdata

    if onnx_testdata.is_testdata_dir(p):
        feeds = onnx_testdata.load_testdata_inputs(p, model)
    elif p.is_dir() or p.suffix.lower() == ".json":
        feeds = load_polygraphy_inputs(p)
    elif p.suffix.lower() == ".npz":
        feeds = _split_iterations(_load_npz(p))
    else:
        raise FeedError(f"cannot read input data {p}: expected a .npz or Polygraphy .json file")
    if not feeds:
        raise FeedError(f"input data {p} holds no feeds")
    return feeds


def _load_npz(p: Path) -> Dict[str, np.ndarray]:
    if not zipfile.is_zipfile(p):
        raise FeedError(f"cannot read input data {p}: not a .npz (zip) archive")
    try:
        with np.load(p, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise FeedError(f"cannot read input data {p}: corrupt .npz archive ({exc})") from exc
    stray = next((key for key, v in arrays.items() if not isinstance(v, np.ndarray)), None)
    if stray is not None:  # np.load returns other zip members as raw bytes
        raise FeedError(f"cannot read input data {p}: member {stray!r} is not a .npy array")
    return arrays


def _split_iterations(arrays: Dict[str, np.ndarray]) -> List[Feeds]:
    matches = {key: _ITER_KEY.fullmatch(key) for key in arrays}
    if not all(matches.values()):
        return [arrays]
    by_iteration: Dict[int, Feeds] = {}
    for key, m in matches.items():
        by_iteration.setdefault(int(m.group(1)), {})[m.group(2)] = arrays[key]
    return [by_iteration[k] for k in sorted(by_iteration)]


def validate_feeds(feeds_list: Sequence[Mapping[str, np.ndarray]], input_meta: Mapping[str, TensorMeta]) -> None:
    """FeedError (one line: iteration, input, what was given, what the model expects) on the first problem."""
    for k, feed in enumerate(feeds_list):
        check_feed(feed, input_meta, where=f"input data iteration {k}")
