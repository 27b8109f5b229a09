"""``debug tactics`` and ``debug fusion`` on TensorRT and a GPU (``pytest -m gpu tests/test_debug_tactics_gpu.py``).

Every build runs in this process from one parsed network (no new builder per build).  Budget:
about 20 builds of small models in all.
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


def test_debug_fusion_names_a_planted_bad_fusion(tmp_path):
    import tensorrt as trt

    from trtdebug.debug.fusion import search_fusion
    from trtdebug.debug.search import Judgement, Verdict
    from trtdebug.debug.trt_engines import engine_layers
    from trtdebug.runners.tensorrt.builder import EngineBuilder
    from trtdebug.runners.tensorrt.variants import NetworkVariants

    model = conv_chain()
    graph = ModelGraph(model)
    builder = EngineBuilder(trt, model, graph, TrtBuildConfig(persistent_cache=False, builder_optimization_level=0),
                            show_progress=False)

    def bad_when_fused(engine_bytes):  # the planted miscompile: conv2 and relu2 in one engine layer
        info = engine_layers(builder, graph, engine_bytes)
        together = any({"conv2", "relu2"} <= set(layer.onnx_nodes) for layer in info.compute_layers)
        return Judgement(Verdict.BAD if together else Verdict.GOOD, f"conv2+relu2 fused: {together}")

    with NetworkVariants(builder) as variants:
        result = search_fusion(variants, bad_when_fused, lambda b: engine_layers(builder, graph, b), graph, tmp_path)
    r = result.report
    print({k: r[k] for k in ("culprit_tensors", "culprit_layers", "culprit_nodes", "candidates", "builds", "seconds")})
    assert result.tensors == ["conv2_out"]
    assert {"conv2", "relu2"} <= set(result.nodes)
    assert r["workaround"]["verdict"] == "good"
    assert r["search_builds"] + 2 <= r["build_bound"]
