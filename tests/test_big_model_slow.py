"""A real model over protobuf's 2 GiB, with external data: ``run --onnxrt --mark-all --max-memory``
and ``surgeon extract`` through the console script.  Slow (writes ~2.3 GiB, reads it twice, and
the windows' shared weights take as much again in the temporary directory): run with
``TRTDEBUG_SLOW_TESTS=1``.  The CI-sized form (a lowered limit) is in test_windows.py and
test_surgeon.py.

The model: nine embedding tables of 256 MiB each, gathered at the same indices and summed, so
its activations are tiny and its weights are everything; written one table at a time, so the
test itself never holds more than one table.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.external_data_helper import set_external_data

pytestmark = pytest.mark.skipif(os.environ.get("TRTDEBUG_SLOW_TESTS") != "1", reason="set TRTDEBUG_SLOW_TESTS=1")

SCRIPT = Path(sys.executable).with_name("trtdebug")
TABLES, ROWS, WIDTH = 9, 65536, 1024  # 9 x 256 MiB = 2.25 GiB
IDX = np.array([3, 70_000 % ROWS, 12_345, ROWS - 1], np.int64)


def _table(i: int) -> np.ndarray:
    return np.random.default_rng(i).standard_normal((ROWS, WIDTH), dtype=np.float32)


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    d = tmp_path_factory.mktemp("big")
    inits, nodes, acc = [], [], None
    with open(d / "big.data", "wb") as f:
        for i in range(TABLES):
            t = TensorProto(name=f"T{i}", data_type=TensorProto.FLOAT, dims=[ROWS, WIDTH])
            offset = f.tell()
            f.write(_table(i).tobytes())
            t.raw_data = b""
            set_external_data(t, "big.data", offset, ROWS * WIDTH * 4)
            t.ClearField("raw_data")
            inits.append(t)
            nodes.append(helper.make_node("Gather", [f"T{i}", "idx"], [f"g{i}"], name=f"gather{i}", axis=0))
            if acc is not None:
                nodes.append(helper.make_node("Add", [acc, f"g{i}"], [f"s{i}" if i < TABLES - 1 else "y"], name=f"add{i}"))
            acc = f"g{i}" if acc is None else nodes[-1].output[0]
    graph = helper.make_graph(nodes, "tables", [helper.make_tensor_value_info("idx", TensorProto.INT64, [len(IDX)])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [len(IDX), WIDTH])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), d / "big.onnx")
    np.savez(d / "inputs.npz", idx=IDX)
    assert (d / "big.data").stat().st_size > 2**31
    return d


def _timed(*args):
    start = time.perf_counter()
    proc = subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=1800)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # largest child so far, MiB
    print(f"{args[0]} {args[1]}: {time.perf_counter() - start:.1f} s, peak RSS of the largest child so far {peak:.0f} MiB")
    return proc


def test_windowed_mark_all_of_a_model_over_2_gib(big, tmp_path):
    before = {p.name: p.stat().st_mtime_ns for p in big.iterdir()}
    proc = _timed("run", big / "big.onnx", "--onnxrt", "--mark-all", "--max-memory", "48K", "--load-inputs",
                  big / "inputs.npz", "--save-outputs", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr[-3000:]
    index = json.loads((tmp_path / "out" / "index.json").read_text())
    tensors = {t["name"]: tmp_path / "out" / t["file"] for t in index["runners"][0]["iterations"][0]["tensors"]}
    assert len(tensors) == 2 * TABLES - 1
    expected = sum(_table(i)[IDX] for i in range(TABLES))
    np.testing.assert_allclose(np.load(tensors["y"]), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.load(tensors["g4"]), _table(4)[IDX])
    assert {p.name: p.stat().st_mtime_ns for p in big.iterdir()} == before


def test_surgeon_extract_of_a_model_over_2_gib(big, tmp_path):
    out = tmp_path / "piece.onnx"
    proc = _timed("surgeon", "extract", big / "big.onnx", "--inputs", "idx", "--outputs", "s2", "-o", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "piece.onnx.data").stat().st_size == 3 * ROWS * WIDTH * 4  # T0..T2 only
    import onnxruntime as ort

    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(["s2"], {"idx": IDX})[0]
    np.testing.assert_allclose(got, _table(0)[IDX] + _table(1)[IDX] + _table(2)[IDX], rtol=1e-6, atol=1e-6)
