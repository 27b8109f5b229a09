"""The saved-outputs store (trtdebug.results) and the atomic directory swap it is written through."""
from __future__ import annotations

import json

import numpy as np
import pytest

from trtdebug import zoo
from trtdebug.errors import OutputsFormatError, UsageError
from trtdebug.model.graph import ModelGraph
from trtdebug.results import INDEX, OutputStore, RunResult, TensorSet, load_outputs, outputs_dir_problem
from trtdebug.util.files import atomic_directory

TENSORS = {
    "a/b:0": np.linspace(-1, 1, 6, dtype=np.float16).reshape(2, 3),
    "ids": np.arange(4, dtype=np.int64),
    "mask": np.array([True, False, True]),
    "température/été": np.float32(2.5) * np.ones((1, 1, 2), np.float32),
    "scalar": np.array(3.0, dtype=np.float64),
    "empty": np.zeros((0, 4), np.float32),
    "fortran": np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3)),
    "strided": np.arange(12, dtype=np.float32)[::3],
}


def tensors(k=0):
    return {name: np.asarray(arr + k if arr.dtype != np.bool_ else arr) for name, arr in TENSORS.items()}


def make_results():
    """Two runners named alike, two iterations each, and a third runner."""
    out = []
    for n, name in enumerate(["trt", "trt", "onnxrt/cpu"]):
        result = RunResult(runner=name, runtimes=[0.5 + n, 1.5 + n], extra={"n": n})
        result.iterations = [TensorSet(tensors(k + n)) for k in range(2)]
        out.append(result)
    return out


def assert_same(got, expected):
    assert list(got) == list(expected)
    for name in expected:
        assert got[name].dtype == expected[name].dtype and got[name].shape == expected[name].shape, name
        np.testing.assert_array_equal(got[name], expected[name])


def write_store(root, results, graph=None):
    store = OutputStore(root, graph=graph, model_path="model.onnx")
    for r in results:
        store.add(r)
    store.write_index()
    return store


def test_round_trip(tmp_path):
    results = make_results()
    store = write_store(tmp_path / "out", results)
    for r in store.results:  # spilled: nothing stays in memory, reads come from disk
        for ts in r.iterations:
            assert ts.nbytes_in_memory == 0
            assert all(ts.file_of(name) for name in ts)
    loaded = load_outputs(tmp_path / "out")
    assert loaded.model_path == "model.onnx" and loaded.source == str(tmp_path / "out")
    assert [r.runner for r in loaded.results] == ["trt", "trt", "onnxrt/cpu"]
    for n, r in enumerate(loaded.results):
        assert r.runtimes == [0.5 + n, 1.5 + n] and r.extra == {"n": n}
        assert len(r.iterations) == 2
        for k, ts in enumerate(r.iterations):
            assert_same(ts, tensors(k + n))


def test_same_named_runners_get_separate_directories(tmp_path):
    write_store(tmp_path, make_results())
    index = json.loads((tmp_path / INDEX).read_text(encoding="utf-8"))
    dirs = [r["iterations"][0]["tensors"][0]["file"].split("/")[0] for r in index["runners"]]
    assert len(set(dirs)) == 3


def test_reads_are_memory_mapped_and_meta_reads_no_data(tmp_path):
    write_store(tmp_path, make_results())
    ts = load_outputs(tmp_path).results[0].iterations[0]
    assert isinstance(ts["a/b:0"], np.memmap)
    assert not ts["a/b:0"].flags.writeable
    assert ts.meta("fortran") == (np.dtype(np.int32), (2, 3))
    assert ts.meta("scalar") == (np.dtype(np.float64), ())
    assert ts.nbytes_in_memory == 0


def test_streaming_register_and_spill(tmp_path):
    """The pipeline registers a result first and spills iterations as they come; write_index
    writes any iteration that was appended but never spilled."""
    store = OutputStore(tmp_path)
    first, second = store.register(RunResult("trt")), store.register(RunResult("trt"))
    for k in range(2):
        for r in (first, second):
            r.iterations.append(TensorSet({"y": np.full(3, k + (r is second) * 10, np.int64)}))
            r.runtimes.append(float(k))
        store.spill(first, k)  # `second` is left in memory
    store.write_index()
    loaded = load_outputs(tmp_path).results
    assert [ts["y"][0] for ts in loaded[0].iterations] == [0, 1]
    assert [ts["y"][0] for ts in loaded[1].iterations] == [10, 11]


def test_store_survives_a_move(tmp_path):
    """Sets written into a staging directory stay readable once it is renamed into place."""
    with atomic_directory(tmp_path / "final", owned=outputs_dir_problem) as staging:
        store = write_store(staging, make_results())
    store.root = tmp_path / "final"
    assert_same(store.results[0].iterations[1], tensors(1))
    assert_same(load_outputs(tmp_path / "final").results[2].iterations[0], tensors(2))


def test_topology_and_unserialisable_extra(tmp_path):
    graph = ModelGraph(zoo.conv_net())
    result = RunResult("ort", runtimes=[0.1], extra={"bad": object()})
    result.iterations.append(TensorSet({graph.tensor_order[-1]: np.zeros(2, np.float32)}))
    write_store(tmp_path, [result], graph=graph)
    loaded = load_outputs(tmp_path)
    last = graph.tensor(graph.tensor_order[-1])
    assert set(loaded.topology) == set(graph.tensor_order)
    assert loaded.topology[last.name] == {"producer": last.producer, "producer_op": last.producer_op,
                                          "topo_index": last.topo_index, "is_graph_output": last.is_graph_output}
    assert loaded.results[0].extra == {}


def test_in_memory_tensor_set():
    ts = TensorSet({"x": np.ones(3, np.float32)})
    assert ts.meta("x") == (np.dtype(np.float32), (3,)) and ts.nbytes_in_memory == 12 and ts.file_of("x") is None
    ts.set_file("y", "y.npy")
    with pytest.raises(OutputsFormatError, match="no directory"):
        ts["y"]


# -- unreadable saved outputs --------------------------------------------------------------------

def _edit_index(root, change):
    path = root / INDEX
    index = json.loads(path.read_text(encoding="utf-8"))
    index = change(index)
    path.write_text(json.dumps(index), encoding="utf-8")


@pytest.mark.parametrize("breakage,expected", [
    (lambda root: (root / INDEX).unlink(), "not a trtdebug outputs directory"),
    (lambda root: (root / INDEX).write_text("{oops"), "cannot read"),
    (lambda root: _edit_index(root, lambda i: [i]), "not a trtdebug outputs index"),
    (lambda root: _edit_index(root, lambda i: {**i, "format": "something-else"}), "not a trtdebug outputs index"),
    (lambda root: _edit_index(root, lambda i: {**i, "version": 99}), "format version 99; this trtdebug reads up to 1"),
    (lambda root: _edit_index(root, lambda i: {k: v for k, v in i.items() if k != "runners"}), "malformed: missing 'runners'"),
    (lambda root: _edit_index(root, lambda i: {**i, "runners": [{"name": "x", "iterations": [{"tensors": [{"name": "t", "file": None}]}]}]}),
     "malformed"),
    (lambda root: next(root.rglob("t00001.npy")).unlink(), "tensor file .*t00001.npy for 'ids' is missing"),
])
def test_unreadable_outputs(tmp_path, breakage, expected):
    write_store(tmp_path, make_results())
    breakage(tmp_path)
    with pytest.raises(OutputsFormatError, match=expected) as info:
        load_outputs(tmp_path)
    assert "\n" not in str(info.value)


def test_missing_outputs(tmp_path):
    with pytest.raises(OutputsFormatError, match="not found"):
        load_outputs(tmp_path / "nope")


# -- atomic_directory ----------------------------------------------------------------------------

def test_atomic_directory_refuses_a_foreign_directory(tmp_path):
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "thesis.tex").write_text("precious")
    with pytest.raises(UsageError, match="refusing to replace .*mine: it is not a trtdebug outputs directory"):
        with atomic_directory(dest, owned=outputs_dir_problem):
            pytest.fail("must not be entered")
    assert (dest / "thesis.tex").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_atomic_directory_refuses_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        with atomic_directory(tmp_path / "f", owned=outputs_dir_problem):
            pass


@pytest.mark.parametrize("previous", ["ours", "empty", "absent"])
def test_atomic_directory_replaces(tmp_path, previous):
    dest = tmp_path / "out"
    if previous != "absent":
        dest.mkdir()
    if previous == "ours":
        write_store(dest, make_results())
    with atomic_directory(dest, owned=outputs_dir_problem) as staging:
        (staging / INDEX).write_text("new")
    assert sorted(p.name for p in dest.iterdir()) == [INDEX]
    assert (dest / INDEX).read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging or trash left


def test_atomic_directory_keeps_the_old_one_on_failure(tmp_path):
    dest = tmp_path / "out"
    write_store(dest, make_results())
    old = (dest / INDEX).read_text()
    with pytest.raises(RuntimeError):
        with atomic_directory(dest, owned=outputs_dir_problem) as staging:
            (staging / INDEX).write_text("half")
            raise RuntimeError("interrupted")
    assert (dest / INDEX).read_text() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
