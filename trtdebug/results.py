"""Run results: ordered tensors per iteration per runner, in memory or streamed to disk.

Saved-outputs format (``--save-outputs DIR``), version 1 - documented in the README::

    DIR/index.json                     {"format": "trtdebug-outputs", "version": 1, ...}
    DIR/<runner>/<iteration>/t00042.npy   one plain .npy per tensor
    DIR/inputs.npz                     the feeds the run was made from (unless --no-save-inputs)

``index.json`` holds, per runner and iteration, the ordered list of tensors (``name``,
``file``, ``dtype``, ``shape``) and the digests of the inputs (``inputs``: ``{name: sha256}``,
see :mod:`trtdebug.inputs.digest`), the model's topological information per tensor
(``producer``, ``producer_op``, ``topo_index``, ``is_graph_output``) so that ``trtdebug
compare`` can name producers without the model, and ``inputs`` (``file``: ``inputs.npz`` or
null, ``digests``).  Files are numbered, not named after tensors, because ONNX tensor names
may hold any character.  The index is read as untrusted: a file entry must stay inside DIR.

A :class:`TensorSet` maps names to arrays; an entry is either an array in memory or a .npy
file that is memory-mapped when read, so comparing thousands of tensors never needs two
full copies in RAM.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from trtdebug.errors import OutputsFormatError
from trtdebug.inputs.digest import Digests, feed_digests
from trtdebug.inputs.io import OUTPUTS_INDEX, RECORDED_INPUTS, Feeds, load_inputs, save_inputs
from trtdebug.inputs.polygraphy_json import load_polygraphy_outputs
from trtdebug.util.files import unlisted_entry, write_text_atomic

FORMAT = "trtdebug-outputs"
FORMAT_VERSION = 1
INDEX = OUTPUTS_INDEX


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
            return _load_npy(self._path(item), name)
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

    def subset(self, names) -> "TensorSet":
        """The entries of ``names`` this set holds, in this set's order; files are shared, not copied."""
        wanted = set(names)
        out = TensorSet(root=self._root)
        out._items = {n: v for n, v in self._items.items() if n in wanted}
        return out

    def renamed(self, names: Mapping[str, str], drop=frozenset()) -> "TensorSet":
        """This set with entries renamed by ``names`` (others keep theirs) and those in ``drop`` left out, in
        this set's order; files are shared, not copied.  A renamed entry replaces one that had the new name."""
        out = TensorSet(root=self._root)
        taken = {names[n] for n in self._items if n in names}
        out._items = {names.get(n, n): v for n, v in self._items.items()
                      if n in names or (n not in taken and n not in drop)}
        return out

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
    # per iteration, {input name: digest} of the feed it ran on; empty when unknown (Polygraphy JSON)
    input_digests: List[Digests] = field(default_factory=list)


def _load_npy(path: Path, name: str) -> np.ndarray:
    """Memory-map one tensor file; a damaged file is a one-line OutputsFormatError naming it."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise OutputsFormatError(f"cannot read tensor {name!r} from {path}: {reason}") from exc
    if not isinstance(arr, np.ndarray):  # an .npz archive where a .npy should be
        arr.close()
        raise OutputsFormatError(f"cannot read tensor {name!r} from {path}: not a .npy file")
    return arr


def _safe(name: str) -> str:
    """A folder name for a runner: no separators, no leading dot (so never ``.`` or ``..``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).lstrip(".") or "runner"


def _link_or_copy(src: Path, dst: Path) -> None:
    """Put a tensor file of another store into this one: a hard link where the filesystem allows
    (tensor files are written once and never changed), else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


class OutputStore:
    """Writes run results to a directory, tensor by tensor, and indexes them.

    Arrays go to disk as soon as a runner hands them over, and the in-memory copy is dropped;
    later readers memory-map them.  ``graph`` (a ModelGraph) adds topological facts to the index.
    A result read from another store (or added to one before) has its files linked or copied in,
    so the new directory is complete on its own.
    """

    def __init__(self, root: Path, graph=None, model_path: Optional[str] = None) -> None:
        self.root = Path(root)
        self.graph = graph
        self.model_path = model_path
        self.results: List[RunResult] = []
        self.input_digests: List[Digests] = []
        self.inputs_file: Optional[str] = None
        self._dirs: Dict[int, str] = {}
        self._root_fn = lambda: self.root  # one object: a TensorSet rooted here is recognised by identity

    def record_inputs(self, feeds: Sequence[Mapping[str, np.ndarray]], *, save: bool = True) -> List[Digests]:
        """Digest the feeds of a run (and with ``save``, keep them as ``inputs.npz``); returns the digests."""
        self.input_digests = [feed_digests(feed) for feed in feeds]
        if save:
            save_inputs(self.root / RECORDED_INPUTS, feeds)
            self.inputs_file = RECORDED_INPUTS
        return self.input_digests

    def register(self, result: RunResult) -> RunResult:
        """Give ``result`` a directory of its own; its iterations are written by ``spill``."""
        self.results.append(result)
        self._dirs[id(result)] = self._unique_dir(result.runner)
        return result

    def add(self, result: RunResult) -> RunResult:
        """Register ``result`` and move all its tensors here: arrays in memory, files of another store."""
        self.register(result)
        for it in range(len(result.iterations)):
            self.spill(result, it)
        return result

    def spill(self, result: RunResult, iteration: int) -> None:
        """Write one iteration's in-memory arrays (and bring in other stores' files); drop them from memory."""
        tensors = result.iterations[iteration]
        if tensors._root is self._root_fn and tensors.nbytes_in_memory == 0:
            return
        sources = {}  # name -> file of another store, to link or copy here
        if tensors._root is not self._root_fn:
            for name in tensors:
                if tensors.file_of(name) is not None:
                    sources[name] = tensors._path(tensors.file_of(name))
        tensors._root = self._root_fn
        rel_dir = f"{self._dirs[id(result)]}/{iteration}"
        (self.root / rel_dir).mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(list(tensors)):
            rel = f"{rel_dir}/t{i:05d}.npy"
            if name in sources:
                _link_or_copy(sources[name], self.root / rel)
            elif tensors.file_of(name) is None:
                # np.asarray, not np.ascontiguousarray: that one turns 0-d arrays into shape (1,).
                np.save(self.root / rel, np.asarray(tensors[name]), allow_pickle=False)
            else:
                continue
            tensors.set_file(name, rel)

    def _unique_dir(self, runner: str) -> str:
        # Case-insensitive, for filesystems that are; the index and the inputs file are not runner names.
        taken = {d.lower() for d in self._dirs.values()} | {INDEX.lower(), RECORDED_INPUTS.lower()}
        base = _safe(runner)
        name, n = base, 1
        while name.lower() in taken:
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
            for k, tensors in enumerate(r.iterations):
                entries = []
                for name in tensors:
                    dtype, shape = tensors.meta(name)
                    entries.append({"name": name, "file": tensors.file_of(name), "dtype": dtype.str, "shape": list(shape)})
                digests = r.input_digests[k] if k < len(r.input_digests) else None
                iterations.append({"tensors": entries, "inputs": digests})
            runners.append({"name": r.runner, "runtimes": r.runtimes, "iterations": iterations, "extra": _jsonable(r.extra)})
        index = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "trtdebug_version": __version__,
            "model": self.model_path,
            "tensors": topology_of(self.graph) if self.graph is not None else {},
            "inputs": {"file": self.inputs_file, "digests": self.input_digests},
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
    inputs_file: Optional[Path] = None  # the recorded feeds; None when the run did not save them

    def feeds(self) -> Optional[List[Feeds]]:
        """The inputs the run was made from, read now (not at load time); None when not recorded."""
        return None if self.inputs_file is None else load_inputs(Path(self.source))


def load_outputs(path: Union[str, os.PathLike], *, model=None) -> LoadedOutputs:
    """Read saved outputs: a trtdebug directory, a Polygraphy ``--save-outputs`` JSON file, or ONNX
    test data (``test_data_set_*/output_*.pb``; ``model`` names unnamed tensors by position).

    ``index.json`` is not trusted: every file it names must lie inside the directory (no
    absolute paths, no ``..``, no symbolic link leading out); tensors are read when used, and a
    damaged one is an OutputsFormatError naming its file then.
    """
    p = Path(path)
    if not p.exists():
        raise OutputsFormatError(f"saved outputs not found: {p}")
    from trtdebug.inputs import onnx_testdata

    if onnx_testdata.is_testdata_dir(p):
        sets = onnx_testdata.load_testdata_outputs(p, model)
        result = RunResult(runner=onnx_testdata.RUNNER_NAME, iterations=[TensorSet(t) for t in sets],
                           runtimes=[float("nan")] * len(sets), extra={"source": str(p), "format": "onnx test data"})
        return LoadedOutputs(results=[result], topology={}, source=str(p))
    index_path = p / INDEX
    if p.is_file() or (not index_path.exists() and any(p.glob("*.json"))):
        # A Polygraphy file, or the directory of per-iteration files it writes for a path without extension.
        runs = load_polygraphy_outputs(p)
        results = [RunResult(runner=run.runner, iterations=[TensorSet(outputs) for outputs in run.iterations],
                             runtimes=list(run.runtimes)) for run in runs]
        return LoadedOutputs(results=results, topology={}, source=str(p))
    index = read_index(p)
    root = p.resolve()
    try:
        results = [_runner_from_index(_typed(r, dict, "a runner"), root, p) for r in _typed(index["runners"], list, "runners")]
        inputs_file = _typed(index.get("inputs") or {}, dict, "inputs").get("file")
        topology = _typed(index.get("tensors", {}), dict, "tensors")
    except KeyError as exc:
        raise OutputsFormatError(f"{index_path} is malformed: missing {exc}") from exc
    except _Malformed as exc:
        raise OutputsFormatError(f"{index_path} is malformed: {exc}") from exc
    if inputs_file is not None:
        if inputs_file != RECORDED_INPUTS:
            raise OutputsFormatError(f"{index_path} is malformed: recorded inputs must be {RECORDED_INPUTS!r}, not {inputs_file!r}")
        _inside(root, inputs_file, f"{p}: recorded inputs", "")
    return LoadedOutputs(results=results, topology=topology, model_path=index.get("model"), source=str(p),
                         inputs_file=p / inputs_file if inputs_file else None)


def _runner_from_index(r: Dict[str, Any], root: Path, source: Path) -> RunResult:
    runtimes = [float(_typed(t, (int, float), "a runtime")) for t in _typed(r.get("runtimes", []), list, "runtimes")]
    result = RunResult(runner=_typed(r["name"], str, "a runner name"), runtimes=runtimes,
                       extra=_typed(r.get("extra", {}), dict, "extra"))
    for it in _typed(r["iterations"], list, "iterations"):
        it = _typed(it, dict, "an iteration")
        tensors = TensorSet(root=lambda: root)
        for t in _typed(it["tensors"], list, "tensors"):
            name = _typed(_typed(t, dict, "a tensor")["name"], str, "a tensor name")
            tensors.set_file(name, _inside(root, t["file"], f"{source}: tensor file", f" for {name!r}"))
        result.iterations.append(tensors)
        if it.get("inputs") is not None:
            result.input_digests.append(_digests(it["inputs"]))
    if len(result.input_digests) != len(result.iterations):
        result.input_digests = []  # partial records are no records
    return result


def read_index(directory: Path) -> Dict[str, Any]:
    """The parsed ``index.json`` of a trtdebug outputs directory, checked for format and version."""
    index_path = directory / INDEX
    if not index_path.exists():
        raise OutputsFormatError(f"{directory} is not a trtdebug outputs directory (no {INDEX})")
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise OutputsFormatError(f"cannot read {index_path}: {exc}") from exc
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise OutputsFormatError(f"{index_path} is not a trtdebug outputs index")
    version = index.get("version", 0)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise OutputsFormatError(f"{index_path} has format version {version}; this trtdebug reads up to {FORMAT_VERSION}")
    return index


def outputs_dir_problem(directory: Path) -> Optional[str]:
    """Why ``directory`` is not an earlier ``--save-outputs`` directory we may replace (None: it is).

    Ours means: an index in our format, and nothing in the directory but what it lists (the
    index, the tensor files, the recorded inputs).  Anything else is the user's, and a swap
    would delete it.
    """
    if not (directory / INDEX).is_file():
        return f"it is not a trtdebug outputs directory (no {INDEX})"
    try:
        index = read_index(directory)
        listed = [INDEX] + [t["file"] for r in index["runners"] for it in r["iterations"] for t in it["tensors"]]
        inputs_file = (index.get("inputs") or {}).get("file")
    except OutputsFormatError as exc:
        return str(exc)
    except (KeyError, TypeError, AttributeError) as exc:
        return f"its {INDEX} is malformed ({exc})"
    listed = [f for f in listed + [inputs_file] if isinstance(f, str)]
    stray = unlisted_entry(directory, listed)
    return f"it holds {stray}, which trtdebug did not write" if stray else None


class _Malformed(Exception):
    """Raised while walking an index; load_outputs turns it into an OutputsFormatError naming the file."""


def _typed(value: Any, kind, what: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, kind):  # bool is an int to isinstance; never wanted here
        raise _Malformed(f"{what} is a {type(value).__name__}")
    return value


def _inside(root: Path, rel: Any, what: str, suffix: str) -> str:
    """``rel`` if it names a file inside ``root`` (after following links); else OutputsFormatError."""
    if not isinstance(rel, str) or not rel:
        raise _Malformed(f"{what}{suffix} is not a file name: {rel!r}")
    pure = PurePosixPath(rel)
    full = root / rel
    if pure.is_absolute() or ".." in pure.parts or root not in full.resolve().parents:
        raise OutputsFormatError(f"{what} {rel!r}{suffix} points outside the directory; refusing to read it")
    if not full.is_file():
        raise OutputsFormatError(f"{what} {rel}{suffix} is missing")
    return rel


def _digests(value: Any) -> Digests:
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise _Malformed("input digests are not {name: digest}")
    return value
