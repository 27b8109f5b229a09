"""Save, load and check input feeds: ``.npz`` (ours), Polygraphy JSON (``.json`` or a directory),
or the inputs recorded in a trtdebug ``--save-outputs`` directory (read only).

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
from typing import Callable, Dict, List, Mapping, Sequence, Union

import numpy as np

from trtdebug.errors import FeedError, UsageError
from trtdebug.inputs.meta import TensorMeta, check_feed
from trtdebug.inputs.polygraphy_json import load_polygraphy_inputs, save_polygraphy_inputs
from trtdebug.inputs import onnx_testdata
from trtdebug.util.files import atomic_path

PathLike = Union[str, os.PathLike]
Feeds = Dict[str, np.ndarray]

_ITER_KEY = re.compile(r"it(\d+)/(.+)", re.DOTALL)

# In a ``--save-outputs`` directory: its index (``trtdebug.results.INDEX``; this module sits below
# ``results`` and cannot import it) and the inputs the run was made from, in this module's .npz layout.
OUTPUTS_INDEX = "index.json"
RECORDED_INPUTS = "inputs.npz"


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
    """Read feeds saved by :func:`save_inputs`, by ``polygraphy run --save-inputs``, recorded in a
    trtdebug ``--save-outputs`` directory (the inputs that run was made from), or ONNX test data
    (``test_data_set_*/input_*.pb``; ``model`` names unnamed tensors by position)."""
    p = Path(path)
    if not p.exists():
        raise FeedError(f"input data file not found: {p}")
    feeds = _reader_for(p, model)(p)
    if not feeds:
        raise FeedError(f"input data {p} holds no feeds")
    return feeds


def _reader_for(p: Path, model=None) -> Callable[[Path], List[Feeds]]:
    """The reader for ``p``'s format, told by what the path is (one branch per layout)."""
    if p.is_dir():
        if (p / OUTPUTS_INDEX).is_file():
            return _load_recorded
        if onnx_testdata.is_testdata_dir(p):
            return lambda d: onnx_testdata.load_testdata_inputs(d, model)
        return load_polygraphy_inputs
    suffix = p.suffix.lower()
    if suffix == ".json":
        return load_polygraphy_inputs
    if suffix == ".npz":
        return lambda f: _split_iterations(_load_npz(f))
    raise FeedError(f"cannot read input data {p}: expected a .npz or Polygraphy .json file, "
                    "a trtdebug outputs directory or ONNX test data (test_data_set_*)")


def _load_recorded(directory: Path) -> List[Feeds]:
    """The inputs a ``--save-outputs`` directory recorded (``inputs.npz`` beside its index)."""
    recorded = directory / RECORDED_INPUTS
    if not recorded.is_file():
        raise FeedError(f"{directory} holds saved outputs but not the inputs they were made from "
                        "(saved with --no-save-inputs); give the inputs themselves with --load-inputs")
    return _split_iterations(_load_npz(recorded))


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
