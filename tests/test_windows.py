"""Windowed every-layer marking (``--max-memory``) and ``--stop-at-first-failure``."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import trtdebug
from trtdebug import windows, zoo
from trtdebug.errors import UsageError
from trtdebug.model import ModelGraph, OutputSelection
from trtdebug.model.surgery import plan_outputs
from trtdebug.runners.onnxruntime import OnnxRuntimeRunner

SCRIPT = Path(sys.executable).with_name("trtdebug")
SHAPE = {"x": [2, 8, 32]}
BUDGET = 24 << 10  # ~ six [2,8,32] float tensors: the 2-block transformer needs a dozen windows or more


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    """Two transformer blocks with dynamic batch and sequence (so sizes need the actual input shapes)."""
    path = tmp_path_factory.mktemp("m") / "encoder.onnx"
    onnx.save(zoo.transformer(blocks=2, hidden=32, heads=4), path)
    return path


def _verdicts(report) -> list:
    """What must not change with windowing: the tensors, their order, their verdicts, the first failure.

    The statistics may differ in the last bits: a window session leaves the tensors before it
    unmarked, so ONNX Runtime fuses them (Gelu, MatMul+Add) as an unbounded mark-all session cannot.
    """
    return [(c.reference, c.test, c.passed, c.first_failing and c.first_failing.name, c.only_in_reference,
             c.only_in_test, [(t.name, t.producer, t.topo_index, t.passed, t.stats.shape, t.stats.test_shape) for t in c.tensors])
            for c in report.comparisons]


@pytest.fixture
def ort_calls(monkeypatch):
    """Bytes and tensor names every ONNX Runtime inference returns."""
    calls = []
    real = OnnxRuntimeRunner._infer

    def spy(self, feeds):
        out = real(self, feeds)
        calls.append((sum(a.nbytes for a in out.values()), list(out)))
        return out

    monkeypatch.setattr(OnnxRuntimeRunner, "_infer", spy)
    return calls


def test_windowed_report_is_the_mark_all_report(encoder, ort_calls):
    with trtdebug.run(encoder, backends=("ref", "onnxrt"), mark_all=True, input_shapes=SHAPE) as full:
        expected = _verdicts(full.report)
        full_max = [t.stats.max_abs for t in full.report.comparisons[0].tensors]
        full_tensors = len(full.results[1].iterations[0])
    ort_calls.clear()
    with trtdebug.run(encoder, backends=("ref", "onnxrt"), mark_all=True, input_shapes=SHAPE,
                      max_memory=BUDGET) as windowed:
        assert _verdicts(windowed.report) == expected
        windowed_max = [t.stats.max_abs for t in windowed.report.comparisons[0].tensors]
        assert np.allclose(windowed_max, full_max, atol=1e-6)
        assert len(windowed.results[1].iterations[0]) == full_tensors
        meta = windowed.report.meta["windows"]
    assert len(meta["windows"]) >= 10 and meta["budget_bytes"] == BUDGET
    assert all(w["status"] == "ran" and w["estimated_bytes"] <= BUDGET for w in meta["windows"])
    # each ONNX Runtime session returned only its window's tensors, within the budget
    assert len(ort_calls) == len(meta["windows"])
    assert max(nbytes for nbytes, _ in ort_calls) <= BUDGET
    returned = [n for _, names in ort_calls for n in names]
    assert len(returned) == len(set(returned)) == full_tensors
    assert any(line.startswith("--max-memory 24.0 KiB: ") for line in windowed.notes)


def test_window_sessions_share_one_copy_of_the_weights(encoder, monkeypatch, tmp_path):
    """The weights are written once; every window's session gets a weightless marked copy."""
    from trtdebug.model import loader

    written, sources = [], []
    real_init, real_activate = loader.SharedWeights.__init__, OnnxRuntimeRunner._activate

    def init(self, model, directory):
        real_init(self, model, directory)
        written.append((directory, (self.directory / self.DATA).stat().st_size))

    def activate(self):
        sources.append(self._source.ByteSize())
        real_activate(self)

    monkeypatch.setattr(loader.SharedWeights, "__init__", init)
    monkeypatch.setattr(OnnxRuntimeRunner, "_activate", activate)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    full = loader.load_model(encoder)
    weight_bytes = sum(len(t.raw_data) for t in full.graph.initializer if len(t.raw_data) >= loader.EXTERNAL_THRESHOLD)
    with trtdebug.run(encoder, backends=("ref", "onnxrt"), mark_all=True, input_shapes=SHAPE,
                      max_memory=BUDGET) as windowed:
        assert windowed.passed  # the sessions read the weights from the shared file: they agree with the golden
        windows_ran = len(windowed.report.meta["windows"]["windows"])
    assert len(written) == 1 and written[0][1] >= weight_bytes > 30_000
    assert len(sources) == windows_ran and max(sources) < full.ByteSize() - weight_bytes + 4096
    assert not any(p.name.startswith("trtdebug-weights-") for p in tmp_path.iterdir())  # removed at the end


def test_sizes_come_from_the_actual_input_shapes(encoder):
    model = onnx.load(encoder)
    graph = ModelGraph(model)
    names, _ = plan_outputs(graph, OutputSelection(mark_all=True))
    feeds = [{"x": np.zeros((3, 5, 32), np.float32)}]
    sizes = windows.estimate_sizes(model, names, feeds)
    with trtdebug.run(encoder, backends=("onnxrt",), mark_all=True, inputs=feeds) as outcome:
        actual = {n: outcome.results[0].iterations[0][n].nbytes for n in outcome.results[0].iterations[0]}
    assert {n: sizes[n] for n in actual} == actual


def test_tensor_of_unknown_size_gets_a_window_of_its_own():
    """NonZero's output size depends on the data: no estimate, so it is windowed alone and said so."""
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node("NonZero", ["r"], ["nz"], name="nonzero"),
             helper.make_node("Cast", ["nz"], ["nzf"], name="cast", to=TensorProto.FLOAT),
             helper.make_node("ReduceSum", ["nzf"], ["y"], name="sum", keepdims=0)]
    model = helper.make_model(helper.make_graph(
        nodes, "nz", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]), opset_imports=[helper.make_opsetid("", 17)])
    graph = ModelGraph(model)
    names, _ = plan_outputs(graph, OutputSelection(mark_all=True))
    sizes = windows.estimate_sizes(model, names, [{"x": np.ones((4, 4), np.float32)}])
    assert sizes["r"] == 64 and sizes["nz"] is None
    plan = windows.plan_windows(names, sizes, budget=1 << 20)
    assert [w.tensors for w in plan.windows] == [["r"], ["nz"], ["nzf"], ["y"]]  # known ones around are not merged in
    assert plan.unknown == ["nz", "nzf"]
    assert any("unknown size" in line for line in plan.notes())


def test_oversized_tensor_is_alone_and_said():
    plan = windows.plan_windows(["a", "b", "c", "d"], {"a": 10, "b": 500, "c": 10, "d": 10}, budget=100)
    assert [w.tensors for w in plan.windows] == [["a"], ["b"], ["c", "d"]]
    assert plan.oversized == ["b"] and any("bigger than --max-memory" in line for line in plan.notes())


def test_max_memory_without_mark_all_is_a_no_op(encoder):
    with trtdebug.run(encoder, backends=("ref", "onnxrt"), input_shapes=SHAPE, max_memory="1K") as outcome:
        assert windows.NO_OP_NOTE in outcome.notes
        assert "windows" not in outcome.report.meta
        assert [t.name for t in outcome.report.comparisons[0].tensors] == ["y"]


def test_windowed_saved_outputs_read_back_as_the_full_run(encoder, tmp_path):
    with trtdebug.run(encoder, backends=("onnxrt",), mark_all=True, input_shapes=SHAPE, max_memory=BUDGET,
                      save_outputs=tmp_path / "win"):
        pass
    with trtdebug.run(encoder, backends=("onnxrt",), mark_all=True, input_shapes=SHAPE,
                      save_outputs=tmp_path / "full"):
        pass
    with trtdebug.compare(tmp_path / "full", tmp_path / "win", atol=1e-5, rtol=1e-5) as outcome:
        comparison = outcome.report.comparisons[0]
        assert comparison.passed and not comparison.only_in_reference and not comparison.only_in_test
        assert len(comparison.tensors) > 50


def _tamper(saved: Path, name: str) -> None:
    """Change one tensor of a saved run (as a wrong kernel would), in place in our own test copy."""
    index = json.loads((saved / "index.json").read_text())
    entry = next(t for t in index["runners"][0]["iterations"][0]["tensors"] if t["name"] == name)
    path = saved / entry["file"]
    array = np.load(path)
    array.flat[0] += 1.0
    np.save(path, array)


def test_stop_at_first_failure_stops_at_the_window_of_the_first_divergence(encoder, tmp_path, ort_calls):
    with trtdebug.run(encoder, backends=("onnxrt",), mark_all=True, input_shapes=SHAPE,
                      save_outputs=tmp_path / "golden") as golden:
        names = list(golden.results[0].iterations[0])
    bad = names[len(names) // 3]  # a third of the way in: windows before pass, windows after are skipped
    _tamper(tmp_path / "golden", bad)
    ort_calls.clear()
    with trtdebug.run(encoder, backends=("onnxrt",), mark_all=True, load_outputs=[tmp_path / "golden"],
                      inputs=tmp_path / "golden", max_memory=BUDGET, stop_at_first_failure=True) as outcome:
        assert outcome.exit_code == 1
        assert outcome.first_failing.name == bad
        meta = outcome.report.meta["windows"]
        comparison = outcome.report.comparisons[0]
        assert not comparison.only_in_reference  # skipped tensors are not "missing on one side"
    stopped = meta["stopped_at_window"]
    window_of_bad = next(w for w in meta["windows"] if names.index(w["first"]) <= names.index(bad) <= names.index(w["last"]))
    assert stopped == window_of_bad["index"]
    assert [w["status"] for w in meta["windows"]] == ["ran"] * (stopped + 1) + ["skipped"] * (len(meta["windows"]) - stopped - 1)
    assert len(ort_calls) == stopped + 1  # the skipped windows never ran
    assert comparison.tensors[-1].name == meta["windows"][stopped]["last"]
    assert any(f"stopped at window {stopped + 1}" in line and "skipped windows" in line for line in outcome.notes)


def test_stop_at_first_failure_on_a_passing_model_runs_every_window(encoder):
    with trtdebug.run(encoder, backends=("ref", "onnxrt"), mark_all=True, input_shapes=SHAPE, max_memory=BUDGET,
                      stop_at_first_failure=True, atol=1e-4, rtol=1e-4) as outcome:
        assert outcome.passed
        meta = outcome.report.meta["windows"]
        assert meta["stopped_at_window"] is None and all(w["status"] == "ran" for w in meta["windows"])


def test_option_misuse_is_a_usage_error(encoder, tmp_path):
    with pytest.raises(UsageError, match="give --max-memory too"):
        trtdebug.run(encoder, backends=("onnxrt",), mark_all=True, stop_at_first_failure=True)
    with pytest.raises(UsageError, match="--max-memory: 'lots' is not a size"):
        trtdebug.run(encoder, backends=("onnxrt",), mark_all=True, max_memory="lots")
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"x")
    with pytest.raises(UsageError, match="serialized engine"):
        trtdebug.run(engine, backends=("trt",), mark_all=True, max_memory="1G")


def test_cli_prints_the_windows_and_exit_codes(encoder, tmp_path):
    base = [str(SCRIPT), "run", str(encoder), "--onnxrt", "--ref", "--mark-all", "--input-shapes", "x:[2,8,32]"]
    ok = subprocess.run(base + ["--max-memory", "24K", "--report", str(tmp_path / "r.json")],
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert "--max-memory 24.0 KiB:" in ok.stderr and "window(s)" in ok.stderr
    assert json.loads((tmp_path / "r.json").read_text())["meta"]["windows"]["budget_bytes"] == BUDGET
    bad = subprocess.run(base + ["--max-memory", "-3"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "--max-memory" in bad.stderr
    alone = subprocess.run(base + ["--stop-at-first-failure"], capture_output=True, text=True, timeout=300)
    assert alone.returncode == 2 and "give --max-memory too" in alone.stderr


def _checksums(folder: Path) -> dict:
    import hashlib

    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def test_model_with_external_data_over_the_protobuf_limit(tmp_path, monkeypatch):
    """A model "over 2 GiB", CI-sized: the limit is lowered so a 2 MiB model crosses it.

    A real > 2 GiB file takes ~10 s to write and 2 GiB of CI disk (sparse files do not help:
    the weights must be read, and ONNX Runtime reads every byte); what the size changes is which
    code path runs (external data on save, a path instead of bytes for ONNX Runtime, no
    in-memory shape inference), and the lowered limit takes those paths.
    """
    from trtdebug.model import loader

    model = zoo.transformer(blocks=2, hidden=128, heads=4)  # ~1.6 MB of weights
    user = tmp_path / "user"
    user.mkdir()
    onnx.save(model, user / "big.onnx", save_as_external_data=True, location="big.onnx.data", size_threshold=1024)
    before = _checksums(user)
    monkeypatch.setattr(loader, "PROTOBUF_LIMIT", 1 << 20)
    with trtdebug.run(user / "big.onnx", backends=("onnxrt",), mark_all=True, input_shapes={"x": [1, 8, 128]},
                      max_memory="32K", save_outputs=tmp_path / "out") as windowed:
        meta = windowed.results[0]
        assert len(meta.iterations[0]) > 60
    monkeypatch.undo()
    with trtdebug.run(user / "big.onnx", backends=("onnxrt",), mark_all=True, load_outputs=[tmp_path / "out"],
                      inputs=tmp_path / "out", atol=1e-5, rtol=1e-5) as check:
        assert check.passed and len(check.report.comparisons[0].tensors) == len(meta.iterations[0])
    assert _checksums(user) == before  # the user's model and data file were neither written nor touched
