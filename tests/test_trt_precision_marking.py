"""Marked tensors keep the precision their layers run in (issue 10, item 0), on the fakes of every release,
and every report counts layer precisions in the compared and the unmodified engine.

8.6 has no debug tensors: marked FP32 outputs are declared HALF/BF16; 10.x marks debug tensors instead
(they keep TensorRT's choice); 11.x and TensorRT-RTX are strongly typed: precision comes from the graph,
and ITensor.dtype is read-only there (the fake raises if anything sets it)."""
from __future__ import annotations

import pytest
from onnx import TensorProto, helper

import trt_fakes
from trtdebug.model import ModelGraph, OutputSelection
from trtdebug.runners.tensorrt import TrtBuildConfig, compat
from trtdebug.runners.tensorrt import precision as prec
from trtdebug.runners.tensorrt.builder import EngineBuilder

RELEASES = trt_fakes.releases()


def _model():
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="n_a"),
             helper.make_node("Cast", ["a"], ["i"], name="n_i", to=TensorProto.INT32),
             helper.make_node("Cast", ["i"], ["b"], name="n_b", to=TensorProto.FLOAT),
             helper.make_node("Add", ["a", "b"], ["y"], name="n_y")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    return m, ModelGraph(m)


def _network(trt):
    T, L = trt_fakes.tensor, trt_fakes.layer
    x, a, i, b, y = T(trt, "x"), T(trt, "a"), T(trt, "i", "INT32"), T(trt, "b"), T(trt, "y")
    layers = [L(trt, "n_a", "ACTIVATION", [x], [a]), L(trt, "n_i", "CAST", [a], [i]),
              L(trt, "n_b", "CAST", [i], [b]), L(trt, "n_y", "ELEMENTWISE", [a, b], [y])]
    return trt_fakes.network(trt, [x], layers, [y])


def _build(version, **cfg):
    trt = trt_fakes.fake_trt(version)
    trt._fake.network_factory = lambda: _network(trt)
    model, graph = _model()
    result = EngineBuilder(trt, model, graph, TrtBuildConfig(**cfg), show_progress=False).build(OutputSelection(mark_all=True))
    return trt, result, trt._fake.networks[-1]


def _types(network):
    return {t.name: compat.dtype_name(t.dtype) for layer in (network.get_layer(k) for k in range(network.num_layers))
            for t in (layer.get_output(j) for j in range(layer.num_outputs))}


@pytest.mark.parametrize("version", RELEASES)
def test_route_follows_what_the_release_offers(version):
    f = compat.detect(trt_fakes.fake_trt(version))
    fp16 = prec.choose_route(f, TrtBuildConfig(fp16=True))
    if f.strong_typing_required:
        assert fp16 == prec.ROUTE_STRONGLY_TYPED and not f.tensor_dtype_settable
    elif f.mark_debug:
        assert fp16 == prec.ROUTE_DEBUG  # 10.x: preferred even though output types are settable there
    else:
        assert fp16 == prec.ROUTE_OUTPUT_TYPES and f.tensor_dtype_settable  # 8.6
    if not f.strong_typing_required:
        assert prec.choose_route(f, TrtBuildConfig()) is None  # FP32 build: nothing to keep


@pytest.mark.parametrize("version", [v for v in RELEASES if not v.startswith(("11.", "rtx-"))])
@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_fp16_mark_all_keeps_marked_tensors_in_reduced_precision(version, precision):
    f = compat.detect(trt_fakes.fake_trt(version))
    if precision == "bf16" and not f.bf16_flag:
        pytest.skip("no BF16 on this release")
    trt, result, net = _build(version, **{precision: True})
    plan = result.marking
    want = "HALF" if precision == "fp16" else "BF16"
    if f.mark_debug:  # 10.x: debug tensors, network types untouched, nothing extra marked as output
        assert plan.route == prec.ROUTE_DEBUG and plan.as_debug == ["a", "i", "b"] and not plan.mark
        assert result.debug_tensors == ["a", "i", "b"] and result.engine_bytes == b"ENGINE:y"
        assert set(_types(net).values()) == {"FLOAT", "INT32"}
    else:  # 8.6: outputs declared in the reduced type (the INT32 one and the model's own output left alone)
        assert plan.route == prec.ROUTE_OUTPUT_TYPES and plan.reduced_outputs == ["a", "b"]
        assert _types(net) == {"a": want, "i": "INT32", "b": want, "y": "FLOAT"}
        assert result.engine_bytes == b"ENGINE:y,a,i,b"
    extra = plan.as_extra()
    assert extra["precision_route"] == plan.route and extra["marked_as_debug"] == plan.as_debug


@pytest.mark.parametrize("version", RELEASES)
def test_fp32_builds_and_strongly_typed_releases_change_no_types(version):
    f = compat.detect(trt_fakes.fake_trt(version))
    trt, result, net = _build(version)  # no precision flag; on 11.x the network is strongly typed
    assert set(_types(net).values()) == {"FLOAT", "INT32"} and not result.marking.as_debug
    assert result.marking.route == (prec.ROUTE_STRONGLY_TYPED if f.strong_typing_required else None)
    assert result.engine_bytes == b"ENGINE:y,a,i,b"


def _layer(name, fmt, meta=""):
    return {"Name": name, "LayerType": "CaskConvolution", "Metadata": meta,
            "Outputs": [{"Name": f"{name}_out", "Format/Datatype": fmt}], "Inputs": []}


def test_precision_counts_and_the_report_line():
    layers = [_layer("conv1", "Channel major FP16 format where channel % 8 == 0"), _layer("conv2", "Row major linear FP32"),
              _layer("conv3", "Row major linear FP16 format (kLINEAR)"),
              {"Name": "Reformatting CopyNode for Output Tensor 0 to conv3", "LayerType": "Reformat",
               "Outputs": [{"Name": "r", "Format/Datatype": "Row major linear FP32"}], "Inputs": []}]
    counts = prec.precision_counts(layers)
    assert counts == {"FP16": 2, "FP32": 1}  # the reformat is not a compute layer
    assert prec.precision_counts(["conv1", "conv2"]) == {}  # no DETAILED information: unknown, not zero
    line = prec.precision_note({"FP32": 414, "FP16": 20}, {"FP16": 400, "FP32": 34}, prec.ROUTE_OUTPUT_TYPES)
    assert line == ("layer precisions: compared engine 414 FP32, 20 FP16; unmodified engine 400 FP16, 34 FP32 "
                    "(marked tensors kept in reduced precision by: reduced-precision output types)")
