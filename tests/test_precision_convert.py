"""ONNX-level FP16/BF16 conversion with a keep-in-FP32 set: runs in ONNX Runtime with FP16-like
accuracy, Casts only at the boundaries, schema-typed inputs left alone, subgraphs converted, and
TensorRT-RTX (the real builder, on CPU) builds the result strongly typed."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtdebug import zoo
from trtdebug.errors import UsageError
from trtdebug.precision.convert import CAST_PREFIX, convert, resolve_keep_set

SCRIPT = Path(sys.executable).with_name("trtdebug")


def ort_run(model, feeds):
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def cases():
    rng = np.random.default_rng(0)
    return {
        "transformer": (zoo.transformer(batch=2, seq=8), {"x": rng.standard_normal((2, 8, 64)).astype(np.float32)}),
        "conv_net": (zoo.conv_net(batch=2), {"image": rng.standard_normal((2, 3, 32, 32)).astype(np.float32)}),
        "paddle_conv_net": (zoo.paddle_conv_net(), {"image": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)}),
    }


def elem_types(model):
    g = onnx.shape_inference.infer_shapes(model).graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(g.value_info) + list(g.input) + list(g.output)}
    types.update({t.name: t.data_type for t in g.initializer})
    return types


@pytest.mark.parametrize("name", ["transformer", "conv_net", "paddle_conv_net"])
def test_fp16_model_runs_in_onnxruntime_with_fp16_like_accuracy(name):
    model, feeds = cases()[name]
    ref = ort_run(model, feeds)
    result = convert(model, "fp16")
    out = ort_run(result.model, feeds)
    for k, want in ref.items():
        got = out[k]
        assert got.dtype == np.float32  # graph I/O kept
        err = float(np.abs(got - want).max() / (np.abs(want).max() + 1e-6))
        assert 1e-6 < err < 1e-2, (k, err)  # really FP16 (not exact), and not garbage
    assert result.converted_nodes == len(model.graph.node) and not result.kept
    assert len(result.casts) == len(model.graph.input) + len(model.graph.output)  # only at the edges
    types = elem_types(result.model)
    floats = [i.name for i in model.graph.initializer if i.data_type == TensorProto.FLOAT]
    assert all(types[n] == TensorProto.FLOAT16 for n in floats)


def test_keep_set_by_op_type_puts_casts_only_at_the_boundaries():
    model, feeds = cases()["transformer"]
    result = convert(model, "fp16", ["Softmax", "LayerNormalization"])
    kept = {n.name for n in model.graph.node if n.op_type in ("Softmax", "LayerNormalization")}
    assert set(result.kept) == kept
    graph = result.model.graph
    producer = {o: n for n in graph.node for o in n.output}
    for node in graph.node:
        if node.op_type != "Cast" or not node.name.startswith(CAST_PREFIX):
            continue  # every inserted Cast joins an FP32 node and an FP16 one (or a graph edge)
        src = producer.get(node.input[0])
        readers = [n for n in graph.node if node.output[0] in n.input]
        assert src is None or src.name in kept or node.name.endswith("to_fp32") or not readers
    ref, out = ort_run(model, feeds)["y"], ort_run(result.model, feeds)["y"]
    assert np.abs(out - ref).max() < 2e-2
    types = elem_types(result.model)
    assert types["block0/softmax_out"] == TensorProto.FLOAT and types["block0/attn_v_out"] == TensorProto.FLOAT16


def test_range_keeps_every_node_between_two_tensors():
    model = zoo.transformer(batch=1, seq=4)
    keep = resolve_keep_set(model, ["block0/fc1_bias_out..block0/gelu"])  # the GELU: 5 nodes, two paths
    assert list(keep) == ["block0/gelu_div", "block0/gelu_erf", "block0/gelu_add", "block0/gelu_mul", "block0/gelu"]
    assert all(why.startswith("between") for why in keep.values())
    a, b = model.graph.node[3], model.graph.node[8]
    with pytest.raises(UsageError, match="no path"):
        resolve_keep_set(model, [f"{b.output[0]}..{a.name}"])
    with pytest.raises(UsageError, match="no node or op type"):
        resolve_keep_set(model, ["NoSuchThing"])


def _overflow_model(scale=1e5):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    nodes = [helper.make_node("Mul", ["x", "big"], ["m"], name="scale_up"),
             helper.make_node("Div", ["m", "big2"], ["y"], name="scale_down")]
    inits = [numpy_helper.from_array(np.array([scale], np.float32), "big"),
             numpy_helper.from_array(np.array([2.0], np.float32), "big2")]
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", 17)])


def test_initializer_beyond_fp16_range_is_kept_in_fp32_or_refused():
    result = convert(_overflow_model(), "fp16")
    assert "scale_up" in result.kept and "beyond the FP16 range" in result.kept["scale_up"]
    assert "scale_down" not in result.kept
    x = np.array([1, 2, 3, 4], np.float32)
    np.testing.assert_allclose(ort_run(result.model, {"x": x})["y"], x * 5e4, rtol=1e-3)
    with pytest.raises(UsageError, match="beyond the FP16 range"):
        convert(_overflow_model(), "fp16", on_overflow="refuse")
    assert not convert(_overflow_model(), "bf16").kept  # bfloat16 has float32's range


def test_resize_scales_and_shape_inputs_stay_as_their_schema_wants():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 128])
    nodes = [helper.make_node("Resize", ["x", "", "scales"], ["r"], name="resize", mode="nearest"),
             helper.make_node("Reshape", ["r", "shape"], ["y"], name="flatten")]
    inits = [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
             numpy_helper.from_array(np.array([1, 128], np.int64), "shape")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", 17)])
    result = convert(model, "fp16")
    types = elem_types(result.model)
    assert types["scales"] == TensorProto.FLOAT and types["shape"] == TensorProto.INT64
    assert types["r"] == TensorProto.FLOAT16
    feed = np.random.default_rng(1).standard_normal((1, 2, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(ort_run(result.model, {"x": feed})["y"], ort_run(model, {"x": feed})["y"], atol=2e-3)


def _if_and_loop_model():
    """x -> Relu -> If(cond: branch reads outer ``h`` and its own weights) -> Loop (carried float, 3 trips)."""
    then_out = helper.make_tensor_value_info("t_out", TensorProto.FLOAT, [4])
    else_out = helper.make_tensor_value_info("e_out", TensorProto.FLOAT, [4])
    then_g = helper.make_graph([helper.make_node("Mul", ["h", "w_then"], ["t_out"], name="then_mul")], "then", [], [then_out],
                               [numpy_helper.from_array(np.full(4, 2.0, np.float32), "w_then")])
    else_g = helper.make_graph([helper.make_node("Sigmoid", ["h"], ["e_sig"], name="else_sigmoid"),
                                helper.make_node("Add", ["e_sig", "outer_bias"], ["e_out"], name="else_add")],
                               "else", [], [else_out])
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"], name="loop_cond"),
         helper.make_node("Mul", ["carry", "outer_bias"], ["carry_out"], name="loop_mul")],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("carry", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("carry_out", TensorProto.FLOAT, [4])])
    nodes = [helper.make_node("Relu", ["x"], ["h"], name="relu"),
             helper.make_node("If", ["flag"], ["branch"], name="branch", then_branch=then_g, else_branch=else_g),
             helper.make_node("Loop", ["trips", "", "branch"], ["y"], name="loop", body=body)]
    inits = [numpy_helper.from_array(np.array(3, np.int64), "trips"),
             numpy_helper.from_array(np.full(4, 1.5, np.float32), "outer_bias")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4]),
                                            helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("keep", [(), ("else_sigmoid",), ("loop",)], ids=["all", "body-node-kept", "loop-kept"])
def test_if_and_loop_bodies_are_converted_with_their_node(keep):
    model = _if_and_loop_model()
    result = convert(model, "fp16", keep)
    x = np.array([-1.0, 0.5, 1.25, 3.0], np.float32)
    for flag in (True, False):
        feeds = {"x": x, "flag": np.array(flag)}
        np.testing.assert_allclose(ort_run(result.model, feeds)["y"], ort_run(model, feeds)["y"], rtol=5e-3)
    branch = next(n for n in result.model.graph.node if n.name == "branch")
    then_g = next(a.g for a in branch.attribute if a.name == "then_branch")
    assert then_g.initializer[0].data_type == TensorProto.FLOAT16
    loop = next(n for n in result.model.graph.node if n.name == "loop")
    body = next(a.g for a in loop.attribute if a.name == "body")
    assert body.input[2].type.tensor_type.elem_type == (TensorProto.FLOAT if "loop" in keep else TensorProto.FLOAT16)


def test_io_types_can_be_converted_too():
    model, feeds = cases()["conv_net"]
    result = convert(model, "fp16", keep_io_types=False)
    assert not result.casts
    out = ort_run(result.model, {k: v.astype(np.float16) for k, v in feeds.items()})
    assert all(v.dtype == np.float16 for v in out.values())


def test_bf16_conversion_follows_the_opset_schemas():
    model, _ = cases()["transformer"]
    result = convert(model, "bf16")
    assert result.converted_nodes > 0.8 * len(model.graph.node)
    types = elem_types(result.model)
    assert any(t == TensorProto.BFLOAT16 for t in types.values())
    paddle = convert(zoo.paddle_conv_net(), "bf16")  # opset 11: no bfloat16 in these ops' schemas
    assert paddle.converted_nodes == 0 and all("no BF16 type" in why for why in paddle.kept.values())


def test_cli_convert_writes_the_model_and_refuses_to_overwrite(tmp_path):
    src = tmp_path / "m.onnx"
    onnx.save(zoo.transformer(batch=1, seq=4), str(src))
    out = tmp_path / "m16.onnx"
    cmd = [str(SCRIPT), "convert", str(src), "--to", "fp16", "--keep-fp32", "Softmax", "-o", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "1 kept in FP32" in done.stdout and "block0/softmax" in done.stdout
    onnx.checker.check_model(onnx.load(str(out)))
    again = subprocess.run(cmd, capture_output=True, text=True)
    assert again.returncode == 2 and "exists" in again.stderr and "Traceback" not in again.stderr
    bad = subprocess.run(cmd[:-2] + ["--to", "fp8", "-o", str(tmp_path / "x.onnx")], capture_output=True, text=True)
    assert bad.returncode == 2 and "--to must be one of" in bad.stderr


# -- TensorRT-RTX: the real builder, strongly typed, on CPU ------------------------------------

@pytest.mark.rtx
@pytest.mark.parametrize("to", ["fp16", "bf16"])
def test_converted_model_builds_strongly_typed_in_tensorrt_rtx(to):
    pytest.importorskip("tensorrt_rtx")
    from trtdebug.model.graph import ModelGraph
    from trtdebug.runners.tensorrt import compat, marking
    from trtdebug.runners.tensorrt.builder import EngineBuilder
    from trtdebug.runners.tensorrt.config import TrtBuildConfig

    trt = compat.import_tensorrt("tensorrt_rtx")
    model = convert(zoo.transformer(batch=1, seq=8), to, ["Softmax"]).model
    builder = EngineBuilder(trt, model, ModelGraph(model), TrtBuildConfig(module="tensorrt_rtx", builder_optimization_level=0),
                            show_progress=False)
    network = builder.parse().network
    types = [compat.dtype_name(t.dtype) for layer in marking.layers(network)
             for t in (layer.get_output(j) for j in range(layer.num_outputs))]
    low = "HALF" if to == "fp16" else "BF16"
    assert types.count(low) > types.count("FLOAT")  # the network really is in reduced precision
    assert len(builder.build().engine_bytes) > 1000
