"""``debug tactics`` and ``debug fusion`` on TensorRT and a GPU (``pytest -m gpu tests/test_debug_tactics_gpu.py``).

Every build runs in a persistent build worker (one spawned process per device, the network parsed
once there), as the commands run them; judges are picklable because they run there too.
Budget: about 40 builds of small models in all (the two-GPU test only where two GPUs are).
"""
from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtdebug.model import ModelGraph
from trtdebug.runners.tensorrt import TrtBuildConfig

pytestmark = pytest.mark.gpu
TOL = {"atol": 0.05, "rtol": 0.05}


def overflow_model():
    """x -> MatMul -> Tanh -> MatMul(x1e5 weights) -> Relu -> MatMul(x1e-5) -> y.

    The middle tensor reaches ~1e5, beyond FP16's 65504: any layer that stores or reads it in FP16
    gives inf; everything before it is harmless in FP16, and in FP32 the whole model is fine.
    """
    rng = np.random.default_rng(0)
    n = 1024
    w0 = (rng.standard_normal((n, n)) / math.sqrt(n)).astype(np.float32)
    w1 = (rng.standard_normal((n, n)) * 1e5 / math.sqrt(n)).astype(np.float32)
    w2 = (rng.standard_normal((n, n)) * 1e-5 / math.sqrt(n)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["h0"], name="mm0"),
             helper.make_node("Tanh", ["h0"], ["t0"], name="tanh0"),
             helper.make_node("MatMul", ["t0", "w1"], ["h1"], name="mm1_big"),
             helper.make_node("Relu", ["h1"], ["r1"], name="relu1"),
             helper.make_node("MatMul", ["r1", "w2"], ["y"], name="mm2_small")]
    g = helper.make_graph(nodes, "overflow", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [256, n])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [256, n])],
                          initializer=[numpy_helper.from_array(w, name) for w, name in ((w0, "w0"), (w1, "w1"), (w2, "w2"))])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_debug_tactics_names_the_fp16_overflow_layer_and_its_replay_passes(tmp_path):
    import trtdebug
    from trtdebug.debug.tactics import debug_tactics

    model_path = tmp_path / "overflow.onnx"
    onnx.save(overflow_model(), model_path)
    out = tmp_path / "out"
    result = debug_tactics(model_path, out, build_options={"fp16": True, "builder_optimization_level": 1},
                           good="fp32", **TOL)
    r = result.report
    print({k: r[k] for k in ("culprit_layers", "culprit_nodes", "candidates", "builds", "search_builds",
                             "oracle_calls", "seconds", "replay_verdict")})
    assert set(r["culprit_nodes"]) & {"mm1_big", "relu1", "mm2_small"}, r["culprit_tactics"]
    assert not set(r["culprit_nodes"]) & {"mm0", "tanh0"}
    assert any("HALF" in t["bad_choice"]["io"] for t in r["culprit_tactics"])
    assert r["search_builds"] + 2 <= r["build_bound"]  # recordings + bisection <= 2*ceil(log2 N) + 3
    assert r["replay_verdict"] == "good"
    # the replay file through the public API: good tactics pass, the bad ones reproduce the failure
    for name, passes in (("tactics.json", True), ("bad-tactics.json", False)):
        with trtdebug.run(model_path, backends=("trt",), inputs=out / "inputs.npz", load_outputs=[out / "reference"],
                          fp16=True, load_tactics=out / name, persistent_cache=False, **TOL) as outcome:
            assert outcome.passed is passes, name


def conv_chain():
    rng = np.random.default_rng(1)
    nodes, inits, prev = [], [], "image"
    for i in (1, 2, 3):
        w = (rng.standard_normal((8, 8, 3, 3)) * 0.2).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [f"conv{i}_out"], name=f"conv{i}", pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"conv{i}_out"], [f"relu{i}_out"], name=f"relu{i}"))
        prev = f"relu{i}_out"
    g = helper.make_graph(nodes, "convs", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 8, 32, 32])],
                          [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, 8, 32, 32])], initializer=inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


class FusedTogether:
    """The planted miscompile: BAD when ONNX nodes ``a`` and ``b`` run in one engine layer (read with the
    engine inspector, in the worker that built the engine)."""

    def __init__(self, model_path, a, b):
        self.model_path, self.a, self.b = str(model_path), a, b
        self._builder = self._graph = None

    def __getstate__(self):  # crosses to the worker without its TensorRT objects
        return {"model_path": self.model_path, "a": self.a, "b": self.b, "_builder": None, "_graph": None}

    def __call__(self, engine_bytes):
        import tensorrt as trt

        from trtdebug.debug.search import Judgement, Verdict
        from trtdebug.debug.trt_engines import engine_layers
        from trtdebug.model import load_model
        from trtdebug.runners.tensorrt.builder import EngineBuilder

        if self._builder is None:
            model = load_model(self.model_path)
            self._graph = ModelGraph(model)
            self._builder = EngineBuilder(trt, model, self._graph, TrtBuildConfig(persistent_cache=False),
                                          show_progress=False)
        info = engine_layers(self._builder, self._graph, engine_bytes)
        together = any({self.a, self.b} <= set(layer.onnx_nodes) for layer in info.compute_layers)
        return Judgement(Verdict.BAD if together else Verdict.GOOD, f"{self.a}+{self.b} fused: {together}")


def _fusion(tmp_path, out, **kw):
    from trtdebug.debug.fusion import debug_fusion

    model_path = tmp_path / "convs.onnx"
    onnx.save(conv_chain(), model_path)
    return debug_fusion(model_path, out, build_options={"builder_optimization_level": 0},
                        judge=FusedTogether(model_path, "conv2", "relu2"), timeout=300, **kw)


def test_debug_fusion_names_a_planted_bad_fusion_and_its_workaround_model_passes(tmp_path):
    result = _fusion(tmp_path, tmp_path / "out")
    r = result.report
    print({k: r[k] for k in ("culprit_tensors", "culprit_layers", "culprit_nodes", "candidates", "builds", "seconds")})
    assert result.tensors == ["conv2_out"]
    assert {"conv2", "relu2"} <= set(result.nodes)
    assert r["workaround"]["verdict"] == "good"  # the engine built from workaround.onnx splits the fusion
    assert [o.name for o in onnx.load(tmp_path / "out" / "workaround.onnx").graph.output] == ["relu3_out", "conv2_out"]
    assert r["search_builds"] + 2 <= r["build_bound"] and r["worker_restarts"] == 0


def test_two_gpus_give_the_one_gpu_answer(tmp_path):
    from trtdebug.runners.tensorrt.cuda import get_cuda

    if get_cuda().device_count() < 2:
        pytest.skip("needs two GPUs")
    one = _fusion(tmp_path, tmp_path / "one")
    two = _fusion(tmp_path, tmp_path / "two", devices=[0, 1])
    assert one.tensors == two.tensors == ["conv2_out"] and two.report["workers"] == 2


def test_cli_debug_tactics_runs_its_builds_in_workers(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    model_path = tmp_path / "overflow.onnx"
    onnx.save(overflow_model(), model_path)
    out = tmp_path / "out"
    script = Path(sys.executable).with_name("trtdebug")
    proc = subprocess.run([str(script), "debug", "tactics", str(model_path), "--out", str(out), "--fp16",
                           "--builder-optimization-level", "1", "--atol", "0.05", "--rtol", "0.05", "--timeout", "300",
                           "--on-crash", "skip"], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr
    r = json.loads((out / "report.json").read_text())
    assert r["workers"] == 1 and r["replay_verdict"] == "good" and "culprit:" in proc.stdout
