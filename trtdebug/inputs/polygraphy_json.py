"""Read and write Polygraphy's JSON data files, without importing Polygraphy.

Users arrive with files from ``polygraphy run --save-inputs/--save-outputs``; reading them
directly lets ``trtdebug compare`` reuse a Polygraphy run.  The format (Polygraphy 0.53, with
the older spellings it still reads):

* an array: ``{"array": base64(np.save bytes), "polygraphy_class": "ndarray"}``.  Older files
  mark classes with ``{"__polygraphy_encoded_<Class>": "polygraphy_serialized_json_type"}``,
  and the oldest hold the .npy bytes as a latin-1 string or an .npz archive;
* run results: ``{"lst": [[runner, [IterationResult, ...]], ...], "polygraphy_class": "RunResults"}``
  with ``IterationResult = {"outputs": {name: LazyArray or array}, "runtime": seconds,
  "runner_name": str}`` and ``LazyArray = {"values": array}`` (alias ``LazyNumpyArray``);
* input data: a JSON list of ``{name: array}`` feeds (or a single feed).

Polygraphy 0.53 saves to a directory of per-iteration files (``0000000000.json`` ...) when
the path has no extension, each file holding one iteration (of every runner, for outputs);
both readers accept such directories.

Arrays are decoded while the JSON is parsed (``object_pairs_hook``), so each base64 string is
dropped as soon as its array exists: a file of N bytes needs about N for its text plus the
decoded arrays, never the strings and arrays of the whole file at once.  ``np.load`` runs with
``allow_pickle=False``: a data file can never execute code.
"""
from __future__ import annotations

import base64
import binascii
import io
import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Type, Union

import numpy as np

from trtdebug.errors import FeedError, InputError, OutputsFormatError
from trtdebug.util.files import atomic_path

PathLike = Union[str, os.PathLike]

TYPE_KEY = "polygraphy_class"
_LEGACY_PREFIX = "__polygraphy_encoded_"
_LEGACY_MARKER = "polygraphy_serialized_json_type"
_ALIASES = {"LazyNumpyArray": "LazyArray"}
_DISPLAY_NAMES = {"Tensor": "torch.Tensor"}
_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"


@dataclass
class _Iteration:
    """A decoded IterationResult."""

    outputs: Dict[str, np.ndarray]
    runtime: Optional[float]


@dataclass
class PolygraphyRun:
    """One runner's outputs from a Polygraphy file: plain arrays, one dict per iteration.

    Plain data, not a :class:`trtdebug.results.RunResult`: ``results`` builds those from it, and
    this module stays below ``results`` (no import cycle).
    """

    runner: str
    iterations: List[Dict[str, np.ndarray]] = field(default_factory=list)
    runtimes: List[float] = field(default_factory=list)


@dataclass
class _RunResults:
    """A decoded RunResults: ``[(runner name, [_Iteration, ...]), ...]``."""

    lst: Any


def encode_array(arr: np.ndarray) -> Dict[str, str]:
    """An array as Polygraphy encodes it (readable by ``polygraphy.json.load_json``)."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(arr), allow_pickle=False)
    return {"array": base64.b64encode(buf.getbuffer()).decode("ascii"), TYPE_KEY: "ndarray"}


def decode_array(obj: Mapping[str, Any]) -> np.ndarray:
    """The array in an encoded-ndarray object; ValueError (one line) if it is not one."""
    payload = obj.get("array") if isinstance(obj, Mapping) else None
    if not isinstance(payload, str):
        raise ValueError("an encoded array has no 'array' string")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        try:
            data = payload.encode("latin-1")  # how early Polygraphy versions stored the .npy bytes
        except UnicodeEncodeError:
            raise ValueError("an array payload is neither base64 nor latin-1") from None
    if not data.startswith((_NPY_MAGIC, _ZIP_MAGIC)):
        raise ValueError("an array payload is not .npy data")
    try:
        loaded = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"an array payload cannot be read ({exc})") from exc
    if isinstance(loaded, np.ndarray):
        return loaded
    with loaded:  # an .npz archive, as very old versions wrote: its first array is the value
        if not loaded.files:
            raise ValueError("an array payload is an empty .npz archive")
        return loaded[loaded.files[0]]


def _class_of(dct: Dict[str, Any]) -> Optional[str]:
    name = dct.get(TYPE_KEY)
    if not isinstance(name, str):
        name = next((k[len(_LEGACY_PREFIX):] for k, v in dct.items()
                     if k.startswith(_LEGACY_PREFIX) and isinstance(v, str) and v == _LEGACY_MARKER), None)
    return _ALIASES.get(name, name) if name else None


def _array_field(dct: Dict[str, Any], key: str) -> np.ndarray:
    value = dct.get(key)
    if not isinstance(value, np.ndarray):
        raise ValueError(f"expected an array in {key!r}, found {type(value).__name__}")
    return value


def _decode_iteration(dct: Dict[str, Any]) -> _Iteration:
    outputs = dct.get("outputs")
    if not isinstance(outputs, dict):
        raise ValueError("an IterationResult has no 'outputs'")
    runtime = dct.get("runtime")
    return _Iteration(outputs={name: _array_field(outputs, name) for name in outputs},
                      runtime=float(runtime) if isinstance(runtime, (int, float)) else None)


_DECODERS = {
    "ndarray": decode_array,
    "LazyArray": lambda dct: _array_field(dct, "values"),
    "IterationResult": _decode_iteration,
    "RunResults": lambda dct: _RunResults(dct.get("lst")),
}


def _object_hook(pairs: List[Tuple[str, Any]]) -> Any:
    dct = dict(pairs)
    cls = _class_of(dct)
    if cls is None:
        return dct
    decoder = _DECODERS.get(cls)
    if decoder is None:
        raise ValueError(f"it holds a {_DISPLAY_NAMES.get(cls, cls)}, which trtdebug cannot read (it reads NumPy arrays only)")
    return decoder(dct)


def _parse(path: Path, error: Type[InputError]) -> Any:
    """Decoded contents of one JSON file; every failure becomes ``error`` naming the file."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f, object_pairs_hook=_object_hook)
    except FileNotFoundError:
        raise error(f"file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path} is not a JSON file ({exc})") from exc
    except ValueError as exc:
        raise error(f"cannot read {path}: {exc}") from exc
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror or exc}") from exc


def _iteration_files(directory: Path, error: Type[InputError]) -> List[Path]:
    """A directory's per-iteration ``*.json`` files in index order (their names are zero-padded)."""
    files = sorted(directory.glob("*.json"))
    if not files:
        raise error(f"{directory} is a directory without Polygraphy *.json files")
    return files


def _runs_in(path: Path) -> List[Tuple[str, Sequence[_Iteration]]]:
    obj = _parse(path, OutputsFormatError)
    lst = obj.lst if isinstance(obj, _RunResults) else None
    well_formed = isinstance(lst, list) and all(
        isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str) and isinstance(entry[1], list)
        and all(isinstance(it, _Iteration) for it in entry[1]) for entry in lst)
    if not well_formed:
        raise OutputsFormatError(f"{path} is not a Polygraphy RunResults file (from polygraphy run --save-outputs)")
    return [(name, iterations) for name, iterations in lst]


def _extend(run: PolygraphyRun, iterations: Sequence[_Iteration]) -> None:
    for it in iterations:
        run.iterations.append(it.outputs)
        run.runtimes.append(it.runtime if it.runtime is not None else math.nan)


def load_polygraphy_outputs(path: PathLike) -> List[PolygraphyRun]:
    """One PolygraphyRun per runner of a ``--save-outputs`` file, in file order, one dict per iteration.

    A directory of per-iteration files is joined by runner name, as Polygraphy itself does;
    within one file, runners sharing a name stay separate.  A missing runtime reads as NaN.
    """
    p = Path(path)
    if p.is_dir():
        merged: Dict[str, PolygraphyRun] = {}
        for f in _iteration_files(p, OutputsFormatError):
            for name, iterations in _runs_in(f):
                _extend(merged.setdefault(name, PolygraphyRun(runner=name)), iterations)
        return list(merged.values())
    runs = []
    for name, iterations in _runs_in(p):
        runs.append(PolygraphyRun(runner=name))
        _extend(runs[-1], iterations)
    return runs


def load_polygraphy_inputs(path: PathLike) -> List[Dict[str, np.ndarray]]:
    """The feeds of a ``--save-inputs`` file (a list of feeds or one feed), or of a directory of them."""
    p = Path(path)
    feeds = []
    for f in _iteration_files(p, FeedError) if p.is_dir() else [p]:
        obj = _parse(f, FeedError)
        for feed in obj if isinstance(obj, list) else [obj]:
            if not isinstance(feed, dict) or not all(isinstance(v, np.ndarray) for v in feed.values()):
                raise FeedError(f"{f} is not Polygraphy input data (a JSON list of {{input name: array}})")
            feeds.append(feed)
    return feeds


def save_polygraphy_inputs(path: PathLike, feeds_list: Sequence[Mapping[str, np.ndarray]]) -> Path:
    """Write feeds as Polygraphy's ``--load-inputs`` reads them, one array encoded at a time."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write("[")
        for i, feed in enumerate(feeds_list):
            f.write(",\n {" if i else "\n {")
            for j, (name, arr) in enumerate(feed.items()):
                f.write(",\n  " if j else "\n  ")
                f.write(f"{json.dumps(name)}: {json.dumps(encode_array(arr))}")
            f.write("\n }")
        f.write("\n]\n")
    return Path(path)
