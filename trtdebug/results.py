"""Run results: ordered tensors per iteration per runner, in memory or streamed to disk.

Saved-outputs format (``--save-outputs DIR``), version 1 - documented in the README::

    DIR/index.json                     {"format": "trtdebug-outputs", "version": 1, ...}
    DIR/<runner>/<iteration>/t00042.npy   one plain .npy per tensor

``index.json`` holds, per runner and iteration, the ordered list of tensors (``name``,
``file``, ``dtype``, ``shape``) and the model's topological information per tensor
(``producer``, ``producer_op``, ``topo_index``, ``is_graph_output``) so that ``trtdebug
compare`` can name producers without the model.  Files are numbered, not named after
tensors, because ONNX tensor names may hold any character.

A :class:`TensorSet` maps names to arrays; an entry is either an array in memory or a .npy
file that is memory-mapped when read, so comparing thousands of tensors never needs two
full copies in RAM.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple, Union

import numpy as np

from trtdebug.errors import OutputsFormatError
from trtdebug.util.files import write_text_atomic

FORMAT = "trtdebug-outputs"
FORMAT_VERSION = 1
INDEX = "index.json"


class TensorSet(Mapping[str, np.ndarray]):
    """An ordered ``name -> array`` mapping whose arrays may live on disk.

    Disk entries are paths relative to ``root()``, a callable so a store can move its
    directory (staging -> final) without invalidating the sets that point into it.
    """

    def __init__(self, arrays: Optional[Mapping[str, np.ndarray]] = None, *, root: Optional[Callable[[], Path]] = None) -> None:
        self._items: Dict[str, Union[np.ndarray, str]] = dict(arrays or {})
        self._root = root

    def __getitem__(self, name: str) -> np.ndarray:
        item = self._items[name]
        if isinstance(item, str):
            return np.load(self._path(item), mmap_mode="r", allow_pickle=False)
        return item

    def __contains__(self, name: object) -> bool:
        # Mapping's default would call __getitem__, i.e. open and map the file, to answer
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def _path(self, rel: str) -> Path:
        if self._root is None:
            raise OutputsFormatError(f"tensor file {rel} has no directory")
        return self._root() / rel

    def set_array(self, name: str, array: np.ndarray) -> None:
        self._items[name] = array

    def set_file(self, name: str, rel: str) -> None:
        self._items[name] = rel

    def file_of(self, name: str) -> Optional[str]:
        item = self._items[name]
        return item if isinstance(item, str) else None

    def meta(self, name: str) -> Tuple[np.dtype, Tuple[int, ...]]:
        """dtype and shape without reading the data (a file is only memory-mapped, which reads its header).

        Not ``np.lib.format._read_array_header``: private, and gone in NumPy 2.4.
        """
        arr = self[name]
        return arr.dtype, tuple(arr.shape)

    @property
    def nbytes_in_memory(self) -> int:
        return sum(v.nbytes for v in self._items.values() if isinstance(v, np.ndarray))


@dataclass
class RunResult:
    """Everything one runner produced: one TensorSet per iteration, with timings."""

    runner: str
    iterations: List[TensorSet] = field(default_factory=list)
    runtimes: List[float] = field(default_factory=list)
    extra: Dict[str, Any] = field(default_factory=dict)  # backend facts, e.g. TensorRT layer info


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "runner"


class OutputStore:
    """Writes run results to a directory, tensor by tensor, and indexes them.

    Arrays go to disk as soon as a runner hands them over, and the in-memory copy is dropped;
    later readers memory-map them.  ``graph`` (a ModelGraph) adds topological facts to the index.
    """

    def __init__(self, root: Path, graph=None, model_path: Optional[str] = None) -> None:
        self.root = Path(root)
        self.graph = graph
        self.model_path = model_path
        self.results: List[RunResult] = []
        self._dirs: Dict[int, str] = {}

    def register(self, result: RunResult) -> RunResult:
        """Give ``result`` a directory of its own; its iterations are written by ``spill``."""
        self.results.append(result)
        self._dirs[id(result)] = self._unique_dir(result.runner)
        return result

    def add(self, result: RunResult) -> RunResult:
        """Register ``result`` and move all its in-memory arrays to disk."""
        self.register(result)
        for it in range(len(result.iterations)):
            self.spill(result, it)
        return result

    def spill(self, result: RunResult, iteration: int) -> None:
        """Write one iteration's in-memory arrays to disk and drop them from memory."""
        tensors = result.iterations[iteration]
        tensors._root = lambda: self.root
        rel_dir = f"{self._dirs[id(result)]}/{iteration}"
        (self.root / rel_dir).mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(list(tensors)):
            if tensors.file_of(name) is not None:
                continue
            rel = f"{rel_dir}/t{i:05d}.npy"
            # np.asarray, not np.ascontiguousarray: that one turns 0-d arrays into shape (1,).
            np.save(self.root / rel, np.asarray(tensors[name]), allow_pickle=False)
            tensors.set_file(name, rel)

    def _unique_dir(self, runner: str) -> str:
        base = _safe(runner)
        name, n = base, 1
        while name in self._dirs.values():
            n += 1
            name = f"{base}-{n}"
        return name

    def write_index(self) -> None:
        from trtdebug import __version__

        runners = []
        for r in self.results:
            for it in range(len(r.iterations)):  # iterations appended after add() and never spilled
                self.spill(r, it)
            iterations = []
            for tensors in r.iterations:
                entries = []
                for name in tensors:
                    dtype, shape = tensors.meta(name)
                    entries.append({"name": name, "file": tensors.file_of(name), "dtype": dtype.str, "shape": list(shape)})
                iterations.append({"tensors": entries})
            runners.append({"name": r.runner, "runtimes": r.runtimes, "iterations": iterations, "extra": _jsonable(r.extra)})
        index = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "trtdebug_version": __version__,
            "model": self.model_path,
            "tensors": topology_of(self.graph) if self.graph is not None else {},
            "runners": runners,
        }
        write_text_atomic(self.root / INDEX, json.dumps(index, indent=1))


def topology_of(graph) -> Dict[str, Dict[str, Any]]:
    """Per-tensor topological facts of a ModelGraph, as stored in index.json."""
    out = {}
    for name in graph.tensor_order:
        t = graph.tensor(name)
        out[name] = {"producer": t.producer, "producer_op": t.producer_op, "topo_index": t.topo_index,
                     "is_graph_output": t.is_graph_output}
    return out


def _jsonable(obj):
    try:
        json.dumps(obj)
        return obj
    except TypeError:
        return {}


@dataclass
class LoadedOutputs:
    """Results read back from disk, with whatever topology the file recorded."""

    results: List[RunResult]
    topology: Dict[str, Dict[str, Any]]
    model_path: Optional[str] = None
    source: str = ""


def load_outputs(path: Union[str, os.PathLike], *, model=None) -> LoadedOutputs:
    """Read saved outputs: a trtdebug directory, a Polygraphy ``--save-outputs`` JSON file, or ONNX
    test data (``test_data_set_*/output_*.pb``; ``model`` names unnamed tensors by position)."""
    p = Path(path)
    if not p.exists():
        raise OutputsFormatError(f"saved outputs not found: {p}")
    from trtdebug.inputs import onnx_testdata

    if onnx_testdata.is_testdata_dir(p):
        return LoadedOutputs(results=[onnx_testdata.load_testdata_outputs(p, model)], topology={}, source=str(p))
    index_path = p / INDEX
    if p.is_file() or (not index_path.exists() and any(p.glob("*.json"))):
        # A Polygraphy file, or the directory of per-iteration files it writes for a path without extension.
        from trtdebug.inputs.polygraphy_json import load_polygraphy_outputs

        return LoadedOutputs(results=load_polygraphy_outputs(p), topology={}, source=str(p))
    if not index_path.exists():
        raise OutputsFormatError(f"{p} is not a trtdebug outputs directory (no {INDEX})")
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise OutputsFormatError(f"cannot read {index_path}: {exc}") from exc
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise OutputsFormatError(f"{index_path} is not a trtdebug outputs index")
    if index.get("version", 0) > FORMAT_VERSION:
        raise OutputsFormatError(f"{index_path} has format version {index['version']}; this trtdebug reads up to {FORMAT_VERSION}")
    root = p.resolve()
    results = []
    try:
        for r in index["runners"]:
            rr = RunResult(runner=r["name"], runtimes=list(r.get("runtimes", [])), extra=r.get("extra", {}))
            for it in r["iterations"]:
                ts = TensorSet(root=lambda root=root: root)
                for t in it["tensors"]:
                    if not (root / t["file"]).is_file():
                        raise OutputsFormatError(f"{p}: tensor file {t['file']} for {t['name']!r} is missing")
                    ts.set_file(t["name"], t["file"])
                rr.iterations.append(ts)
            results.append(rr)
    except KeyError as exc:
        raise OutputsFormatError(f"{index_path} is malformed: missing {exc}") from exc
    except TypeError as exc:
        raise OutputsFormatError(f"{index_path} is malformed: {exc}") from exc
    return LoadedOutputs(results=results, topology=index.get("tensors", {}), model_path=index.get("model"), source=str(p))
