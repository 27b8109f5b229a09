"""Read the ONNX test-data layout: ``test_data_set_N/input_K.pb`` and ``output_K.pb``.

The ONNX model zoo and the backend test data inside the ``onnx`` wheel ship each model with
one or more data sets in this layout, each file one serialized ``TensorProto``::

    model_dir/test_data_set_0/input_0.pb  input_1.pb  output_0.pb
    model_dir/test_data_set_1/...

Either the directory holding the ``test_data_set_*`` folders or one such folder is accepted;
each data set is one iteration.  A tensor is named by its ``TensorProto.name``; exporters often
leave that empty (PyTorch's do), and then ``input_K`` / ``output_K`` is the model's K-th input
(initializers excluded) / output, which needs the model.  Only tensors are read: sequence and
map values (``SequenceProto``, ``MapProto``) are not inputs any of our runners take.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Type, Union

import numpy as np

from trtdebug.errors import FeedError, InputError, OutputsFormatError

PathLike = Union[str, os.PathLike]
RUNNER_NAME = "onnx-testdata"

_SET_DIR = re.compile(r"test_data_set_(\d+)")
_PB_FILE = re.compile(r"(input|output)_(\d+)\.pb")


def is_testdata_dir(path: PathLike) -> bool:
    """True for a directory of ``test_data_set_*`` folders or for one such folder holding ``.pb`` files."""
    p = Path(path)
    if not p.is_dir():
        return False
    if _SET_DIR.fullmatch(p.name) and any(_PB_FILE.fullmatch(f.name) for f in p.iterdir()):
        return True
    return any(_SET_DIR.fullmatch(d.name) and d.is_dir() for d in p.iterdir())


def load_testdata_inputs(path: PathLike, model=None) -> List[Dict[str, np.ndarray]]:
    """One feed per data set.  ``model``: a ModelProto or ModelGraph, for unnamed tensors."""
    names = _input_names(model) if model is not None else None
    return [_read_tensors(d, "input", names, FeedError) for d in data_set_dirs(path, FeedError)]


def load_testdata_outputs(path: PathLike, model=None) -> List[Dict[str, np.ndarray]]:
    """The expected outputs, one ``{name: array}`` per data set (results.load_outputs makes a RunResult of them)."""
    names = _output_names(model) if model is not None else None
    sets = []
    for d in data_set_dirs(path, OutputsFormatError):
        tensors = _read_tensors(d, "output", names, OutputsFormatError)
        if not tensors:
            raise OutputsFormatError(f"{d} holds no output_*.pb files")
        sets.append(tensors)
    return sets


def data_set_dirs(path: PathLike, error: Type[InputError] = InputError) -> List[Path]:
    """The data set folders in numeric order (``test_data_set_10`` after ``_9``)."""
    p = Path(path)
    if not p.is_dir():
        raise error(f"ONNX test data not found: {p} is not a directory")
    sets = sorted((int(m.group(1)), d) for d in p.iterdir() if d.is_dir() and (m := _SET_DIR.fullmatch(d.name)))
    loose = sorted(f.name for f in p.iterdir() if _PB_FILE.fullmatch(f.name))
    if sets and loose:
        raise error(f"{p} mixes test_data_set_* folders with loose .pb files ({loose[0]}); give one data set or the folder of sets")
    if sets:
        return [d for _, d in sets]
    if loose:
        return [p]
    raise error(f"{p} holds no ONNX test data (test_data_set_*/input_*.pb)")


def _read_tensors(folder: Path, kind: str, names: Optional[Sequence[str]], error: Type[InputError]) -> Dict[str, np.ndarray]:
    files = sorted((int(m.group(2)), f) for f in folder.iterdir()
                   if (m := _PB_FILE.fullmatch(f.name)) and m.group(1) == kind)
    gap = next((k for k, (index, _) in enumerate(files) if index != k), None)
    if gap is not None:
        raise error(f"{folder}: {kind}_{gap}.pb is missing (found {files[gap][1].name})")
    if names is not None and len(files) > len(names):
        raise error(f"{folder}: {len(files)} {kind} files but the model has {len(names)} {kind}s")
    tensors: Dict[str, np.ndarray] = {}
    for index, f in files:
        name, array = _read_pb(f, error)
        if not name:
            if names is None:
                raise error(f"{f} holds an unnamed tensor; give the model so {kind}s are matched by position")
            name = names[index]
        if name in tensors:
            raise error(f"{folder}: two {kind} files hold tensor {name!r}")
        tensors[name] = array
    return tensors


def _read_pb(f: Path, error: Type[InputError]):
    from google.protobuf.message import DecodeError
    from onnx import TensorProto, numpy_helper

    proto = TensorProto()
    try:
        proto.ParseFromString(f.read_bytes())
    except (DecodeError, OSError) as exc:
        raise error(f"cannot read {f}: not a serialized ONNX TensorProto ({exc})") from exc
    if proto.data_type == TensorProto.UNDEFINED:
        raise error(f"cannot read {f}: not a serialized ONNX TensorProto (no data type; a sequence or map?)")
    try:
        return proto.name, numpy_helper.to_array(proto)
    except Exception as exc:  # onnx raises assorted errors for inconsistent sizes or unknown types
        raise error(f"cannot read {f}: malformed TensorProto ({exc})") from exc


def _input_names(model) -> List[str]:
    if hasattr(model, "input_names"):  # a ModelGraph
        return list(model.input_names)
    initializers = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in initializers]


def _output_names(model) -> List[str]:
    if hasattr(model, "output_names"):
        return list(model.output_names)
    return [o.name for o in model.graph.output]
