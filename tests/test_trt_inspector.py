"""Engine layer information (IEngineInspector JSON) mapped back to ONNX nodes, for TensorRT 8.6 and 10.x output.

The JSON documents below are shaped like what each version emits: 10.x tags every layer with
``[ONNX Layer: ...]`` metadata joined by ``\\x1f``; 8.6 joins with ``\\x1e`` or (for engines whose
metadata is missing) only names layers after their ONNX nodes, with fusion punctuation.
"""
import json

import pytest
from onnx import TensorProto, helper

import trt_fakes

from trtdebug import zoo
from trtdebug.model import ModelGraph
from trtdebug.runners.tensorrt.inspector import (
    MAP_METADATA,
    MAP_NAME,
    MAP_NONE,
    MAP_RANGE,
    format_dtype,
    parse_engine_info,
    parse_metadata,
    split_profile,
)


@pytest.fixture(scope="module")
def tgraph():
    return ModelGraph(zoo.transformer(blocks=1))


def _t(name, dims, fmt, location="Device"):
    return {"Name": name, "Location": location, "Dimensions": dims, "Format/Datatype": fmt}


def _meta(*nodes, sep="\x1f"):
    return sep.join(f"[ONNX Layer: {n}]" for n in nodes)


# -- TensorRT 10.x style ------------------------------------------------------------------------------
def trt10_json(profile_copies=False):
    layers = [
        {"Name": "Reformatting CopyNode for Input Tensor 0 to __myl_LayNorm_myl0_0", "LayerType": "Reformat",
         "Inputs": [_t("x", [-1, -1, 64], "Row major linear FP32")],
         "Outputs": [_t("Reformatted Input Tensor 0 to __myl_LayNorm_myl0_0", [-1, -1, 64], "Row major linear FP16 format")],
         "TacticValue": "0x00000000000003ea", "StreamId": 0, "Metadata": ""},
        {"Name": "__myl_LayNorm_myl0_0", "LayerType": "kgen",
         "Inputs": [_t("Reformatted Input Tensor 0 to __myl_LayNorm_myl0_0", [-1, -1, 64], "Half")],
         "Outputs": [_t("block0/ln1_out", [-1, -1, 64], "Half")],
         "TacticName": "__myl_LayNorm_0x7c1d", "StreamId": 0, "Metadata": _meta("block0/ln1")},
        {"Name": "__myl_FcAdd_myl0_1", "LayerType": "gemm",
         "Inputs": [_t("block0/ln1_out", [-1, -1, 64], "Half")],
         "Outputs": [_t("block0/q_bias_out", [-1, -1, 64], "Half"), _t("__myl_internal_3", [-1, -1, 64], "Half")],
         "TacticName": "sm90_xmma_gemm_f16f16_f16f32_f32_tn_n_tilesize64x64x64", "TacticValue": "0x123",
         "Metadata": _meta("block0/q_proj", "block0/q_bias", "block0/k_proj", "block0/k_bias")},
        {"Name": "_gemm_mha_v2_myl0_2", "LayerType": "kgen",
         "Inputs": [_t("block0/q_bias_out", [-1, -1, 64], "Half")],
         "Outputs": [_t("block0/attn_v_out", [-1, 4, -1, 16], "Half")],
         "TacticName": "_gemm_mha_v2_0x1", "Metadata": _meta(
             "block0/q_reshape", "block0/q_transpose", "block0/k_reshape", "block0/k_transpose", "block0/qk_matmul",
             "block0/qk_scale", "block0/softmax", "block0/attn_v")},
        # a local function: the record names the inner node, then the graph node that called it
        {"Name": "__myl_Gelu_myl0_3", "LayerType": "kgen",
         "Inputs": [_t("block0/fc1_bias_out", [-1, -1, 256], "Half")],
         "Outputs": [_t("block0/gelu_out", [-1, -1, 256], "Half")],
         "TacticName": "__myl_Gelu", "Metadata": "[ONNX Layer: inner_erf | block0/gelu_erf (MyGelu)]\x1f"
                                                 + _meta("block0/gelu_div", "block0/gelu_add", "block0/gelu_mul", "block0/gelu")},
        {"Name": "block0.attn.out.weight", "LayerType": "Constant", "Inputs": [],
         "Outputs": [_t("block0.attn.out.weight", [64, 64], "Float")]},
        {"Name": "final_ln", "LayerType": "kgen",
         "Inputs": [_t("block0/residual2_out", [-1, -1, 64], "Half")],
         "Outputs": [_t("y", [-1, -1, 64], "Float")],
         "TacticName": "__myl_LayNorm", "Metadata": _meta("final_ln")},
    ]
    bindings = ["x", "y"]
    if profile_copies:
        extra = []
        for layer in layers:
            copy = json.loads(json.dumps(layer))
            copy["Name"] += " [profile 1]"
            for t in copy["Inputs"] + copy["Outputs"]:
                t["Name"] += " [profile 1]"
            extra.append(copy)
        layers += extra
        bindings += ["x [profile 1]", "y [profile 1]"]
    return {"Layers": layers, "Bindings": bindings}


def test_trt10_metadata_maps_fused_layers_to_onnx_nodes(tgraph):
    info = parse_engine_info(json.dumps(trt10_json()), tgraph)
    assert [layer.name for layer in info.layers][:2] == [
        "Reformatting CopyNode for Input Tensor 0 to __myl_LayNorm_myl0_0", "__myl_LayNorm_myl0_0"]
    mha = info.layer("_gemm_mha_v2_myl0_2")
    assert mha.mapping == MAP_METADATA
    assert mha.onnx_nodes[0] == "block0/q_reshape" and "block0/softmax" in mha.onnx_nodes and len(mha.onnx_nodes) == 8
    assert mha.precision == "FP16" and mha.tactic == "_gemm_mha_v2_0x1"
    fc = info.layer("__myl_FcAdd_myl0_1")
    assert fc.onnx_nodes == ("block0/q_proj", "block0/q_bias", "block0/k_proj", "block0/k_bias")
    assert fc.tactic.startswith("sm90_xmma_gemm")  # TacticName wins over TacticValue
    assert info.node_to_layers["block0/softmax"] == ["_gemm_mha_v2_myl0_2"]
    assert info.layers_for_node("block0/q_bias")[0].name == "__myl_FcAdd_myl0_1"


def test_trt10_reformat_and_constant_layers(tgraph):
    info = parse_engine_info(trt10_json(), tgraph)
    reformat = info.layers[0]
    assert reformat.is_reformat and reformat.onnx_nodes == ()
    assert reformat.input_dtypes == ["FP32"] and reformat.output_dtypes == ["FP16"]
    assert reformat.tactic == "0x00000000000003ea"
    const = info.layer("block0.attn.out.weight")
    assert const.onnx_nodes == () and const.mapping == MAP_NONE and not const.is_reformat
    # a reformat computes no ONNX node
    assert all("Reformatting" not in layers[0] for layers in info.node_to_layers.values())


def test_trt10_local_function_record_maps_to_the_calling_node(tgraph):
    info = parse_engine_info(trt10_json(), tgraph)
    gelu = info.layer("__myl_Gelu_myl0_3")
    assert gelu.onnx_nodes == ("block0/gelu_erf", "block0/gelu_div", "block0/gelu_add", "block0/gelu_mul", "block0/gelu")


def test_boundary_tensors_are_onnx_tensors_in_topological_order(tgraph):
    info = parse_engine_info(trt10_json(), tgraph)
    # internal Myelin tensors, reformatted copies and initializers are not boundaries
    assert info.boundary_tensors == ["block0/ln1_out", "block0/q_bias_out", "block0/attn_v_out", "block0/gelu_out", "y"]


def test_unmapped_nodes_and_bindings(tgraph):
    info = parse_engine_info(trt10_json(), tgraph)
    assert info.bindings == ["x", "y"]
    assert "block0/ln2" in info.unmapped_nodes and "block0/softmax" not in info.unmapped_nodes
    assert info.detailed


def test_profiles_are_filtered_and_suffixes_removed(tgraph):
    doc = trt10_json(profile_copies=True)
    p0 = parse_engine_info(doc, tgraph)
    p1 = parse_engine_info(doc, tgraph, profile=1)
    both = parse_engine_info(doc, tgraph, profile=None)
    assert len(p0.layers) == len(p1.layers) == 7 and len(both.layers) == 14
    assert p1.layers[1].name == "__myl_LayNorm_myl0_0" and p1.layers[1].profile == 1
    assert p1.layers[1].outputs[0].name == "block0/ln1_out"
    assert p1.bindings == ["x", "y"]
    assert p1.node_to_layers == p0.node_to_layers


def test_raw_control_characters_in_json_text(tgraph):
    # TensorRT writes the unit separator unescaped inside JSON strings; strict JSON rejects that
    text = json.dumps(trt10_json()).replace("\\u001f", "\x1f")
    assert "\x1f" in text
    info = parse_engine_info(text, tgraph)
    assert info.layer("__myl_FcAdd_myl0_1").onnx_nodes[-1] == "block0/k_bias"


# -- TensorRT 8.6 style -------------------------------------------------------------------------------------
def trt86_names_json():
    """8.6 engine whose layers carry no metadata: names only (with Myelin and point-wise fusions)."""
    return {"Layers": [
        {"Name": "Reformatting CopyNode for Input Tensor 0 to {ForeignNode[block0/ln1...block0/residual1]}",
         "LayerType": "Reformat", "Inputs": [_t("x", [-1, -1, 64], "Row major linear FP32")],
         "Outputs": [_t("Reformatted Input Tensor 0 to {ForeignNode[block0/ln1...block0/residual1]}", [-1, -1, 64],
                        "Row major linear FP16 format")],
         "ParameterType": "Reformat", "Origin": "REFORMAT", "TacticValue": "0x00000000000003e8"},
        {"Name": "{ForeignNode[block0/ln1...block0/residual1]}", "LayerType": "Myelin",
         "Inputs": [_t("Reformatted Input Tensor 0 to {ForeignNode[block0/ln1...block0/residual1]}", [-1, -1, 64],
                       "Row major linear FP16 format")],
         "Outputs": [_t("block0/residual1_out", [-1, -1, 64], "Row major linear FP16 format")],
         "TacticValue": "0x0000000000000000"},
        {"Name": "block0/ln2", "LayerType": "Normalization",
         "Inputs": [_t("block0/residual1_out", [-1, -1, 64], "Row major linear FP16 format")],
         "Outputs": [_t("block0/ln2_out", [-1, -1, 64], "Row major linear FP16 format")],
         "TacticValue": "0x0000000000000000"},
        {"Name": "block0/fc1 input reformatter 0", "LayerType": "Reformat",
         "Inputs": [_t("block0/ln2_out", [-1, -1, 64], "Row major linear FP16 format")],
         "Outputs": [_t("Reformatted Input Tensor 0 to block0/fc1 + block0/fc1_bias", [-1, -1, 64],
                        "Channel major FP16 format where channel % 8 == 0")]},
        {"Name": "block0/fc1 + block0/fc1_bias", "LayerType": "CaskGemmConvolution",
         "Inputs": [_t("Reformatted Input Tensor 0 to block0/fc1 + block0/fc1_bias", [-1, -1, 64],
                       "Channel major FP16 format where channel % 8 == 0")],
         "Outputs": [_t("block0/fc1_bias_out", [-1, -1, 256], "Channel major FP16 format where channel % 8 == 0")],
         "TacticName": "sm80_xmma_gemm_f16f16_f16f32_f32_nn_n_tilesize128x128x32_stage4_warpsize2x2x1_tensor16x8x16",
         "TacticValue": "0x5e2e5b1e4a5bd5f3"},
        {"Name": "PWN(PWN(PWN(block0/gelu_div + (Unnamed Layer* 41) [Shuffle], block0/gelu_erf), "
                 "PWN(block0/gelu_add)), block0/gelu_mul)", "LayerType": "PointWiseV2",
         "Inputs": [_t("block0/fc1_bias_out", [-1, -1, 256], "Row major linear FP16 format")],
         "Outputs": [_t("block0/gelu_mul_out", [-1, -1, 256], "Row major linear FP16 format")],
         "ParameterType": "PointWise", "TacticValue": "0x0000000000000009"},
        {"Name": "(Unnamed Layer* 44) [Shuffle]", "LayerType": "NoOp",
         "Inputs": [_t("block0/gelu_mul_out", [-1, -1, 256], "Row major linear FP16 format")],
         "Outputs": [_t("(Unnamed Layer* 44) [Shuffle]_output", [-1, -1, 256], "Row major linear FP16 format")]},
        {"Name": "block0/gelu || block0/fc2 + block0/fc2_bias", "LayerType": "CaskGemmConvolution",
         "Inputs": [_t("block0/gelu_mul_out", [-1, -1, 256], "Row major linear FP16 format")],
         "Outputs": [_t("block0/fc2_bias_out", [-1, -1, 64], "Row major linear FP16 format")],
         "TacticValue": "0x1"},
        {"Name": "block0/residual2_1", "LayerType": "ElementWise",  # second layer of a split node
         "Inputs": [_t("block0/fc2_bias_out", [-1, -1, 64], "Row major linear FP16 format")],
         "Outputs": [_t("block0/residual2_out", [-1, -1, 64], "Row major linear FP16 format")]},
        {"Name": "final_ln", "LayerType": "Normalization",
         "Inputs": [_t("block0/residual2_out", [-1, -1, 64], "Row major linear FP16 format")],
         "Outputs": [_t("Reformatted Output Tensor 0 to final_ln", [-1, -1, 64], "Row major linear FP16 format")]},
        {"Name": "Reformatting CopyNode for Output Tensor 0 to final_ln", "LayerType": "Reformat",
         "Inputs": [_t("Reformatted Output Tensor 0 to final_ln", [-1, -1, 64], "Row major linear FP16 format")],
         "Outputs": [_t("y", [-1, -1, 64], "Row major linear FP32")]},
    ], "Bindings": ["x", "y"]}


def test_trt86_fused_names(tgraph):
    info = parse_engine_info(trt86_names_json(), tgraph)
    fc1 = info.layer("block0/fc1 + block0/fc1_bias")
    assert fc1.onnx_nodes == ("block0/fc1", "block0/fc1_bias") and fc1.mapping == MAP_NAME
    assert fc1.precision == "FP16" and fc1.tactic.startswith("sm80_xmma_gemm")
    pwn = info.layers[5]
    assert pwn.onnx_nodes == ("block0/gelu_div", "block0/gelu_erf", "block0/gelu_add", "block0/gelu_mul")
    horizontal = info.layer("block0/gelu || block0/fc2 + block0/fc2_bias")
    assert horizontal.onnx_nodes == ("block0/gelu", "block0/fc2", "block0/fc2_bias")
    assert info.layer("block0/residual2_1").onnx_nodes == ("block0/residual2",)
    assert info.layer("block0/ln2").onnx_nodes == ("block0/ln2",)


def test_trt86_foreign_node_range_expands_in_topological_order(tgraph):
    info = parse_engine_info(trt86_names_json(), tgraph)
    myelin = info.layer("{ForeignNode[block0/ln1...block0/residual1]}")
    assert myelin.mapping == MAP_RANGE
    order = tgraph.node_names
    assert list(myelin.onnx_nodes) == order[order.index("block0/ln1"):order.index("block0/residual1") + 1]
    assert info.node_to_layers["block0/softmax"] == ["{ForeignNode[block0/ln1...block0/residual1]}"]


def test_trt86_reformat_layers(tgraph):
    info = parse_engine_info(trt86_names_json(), tgraph)
    first, fc1_reformat, last = info.layers[0], info.layer("block0/fc1 input reformatter 0"), info.layers[-1]
    assert first.is_reformat and first.onnx_nodes == () and first.reformat_for[0] == "block0/ln1"
    assert fc1_reformat.is_reformat and fc1_reformat.reformat_for == ("block0/fc1",)
    assert last.is_reformat and last.reformat_for == ("final_ln",)
    assert first.output_dtypes == ["FP16"] and last.output_dtypes == ["FP32"]
    noop = info.layer("(Unnamed Layer* 44) [Shuffle]")
    assert noop.is_reformat and noop.onnx_nodes == ()  # a NoOp with no ONNX name is bookkeeping
    assert "final_ln" in info.node_to_layers and info.node_to_layers["final_ln"] == ["final_ln"]


def test_trt86_boundaries_skip_reformatted_and_unnamed_tensors(tgraph):
    info = parse_engine_info(trt86_names_json(), tgraph)
    assert info.boundary_tensors == ["block0/residual1_out", "block0/ln2_out", "block0/fc1_bias_out",
                                     "block0/gelu_mul_out", "block0/fc2_bias_out", "block0/residual2_out", "y"]


def test_trt86_metadata_with_record_separator(tgraph):
    doc = trt86_names_json()
    doc["Layers"][1]["Metadata"] = _meta("block0/ln1", "block0/q_proj", "block0/softmax", sep="\x1e")
    info = parse_engine_info(doc, tgraph)
    myelin = info.layers[1]
    assert myelin.mapping == MAP_METADATA and myelin.onnx_nodes == ("block0/ln1", "block0/q_proj", "block0/softmax")


def test_foreign_node_with_helper_endpoints_uses_region_inputs_and_outputs(tgraph):
    doc = {"Layers": [
        {"Name": "{ForeignNode[(Unnamed Layer* 3) [Shuffle]...ONNXTRT_ShapeShuffle_12_output[Constant]]}",
         "LayerType": "Myelin", "Inputs": [_t("block0/residual1_out", [-1, -1, 64], "Half")],
         "Outputs": [_t("block0/residual2_out", [-1, -1, 64], "Half")]},
    ]}
    info = parse_engine_info(doc, tgraph)
    order = tgraph.node_names
    assert list(info.layers[0].onnx_nodes) == order[order.index("block0/ln2"):order.index("block0/residual2") + 1]


def test_foreign_range_leaves_nodes_other_layers_claim():
    # two parallel branches: the Myelin region covers branch a; branch b is its own layer
    m = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["a1"], name="a/relu"),
         helper.make_node("Sigmoid", ["x"], ["b1"], name="b/sigmoid"),
         helper.make_node("Neg", ["a1"], ["a2"], name="a/neg"),
         helper.make_node("Add", ["a2", "b1"], ["y"], name="join")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])]))
    graph = ModelGraph(m)
    doc = {"Layers": [
        {"Name": "{ForeignNode[a/relu...a/neg]}", "LayerType": "Myelin", "Inputs": [], "Outputs": []},
        {"Name": "b/sigmoid", "LayerType": "Activation", "Inputs": [], "Outputs": []},
        {"Name": "join", "LayerType": "ElementWise", "Inputs": [], "Outputs": []},
    ]}
    info = parse_engine_info(doc, graph)
    assert info.layers[0].onnx_nodes == ("a/relu", "a/neg")
    assert info.unmapped_nodes == []


def test_node_names_that_contain_fusion_punctuation():
    names = ["conv + bn", "relu", "x...y"]
    nodes = [helper.make_node("Identity", ["t0"], ["t1"], name=names[0]),
             helper.make_node("Relu", ["t1"], ["t2"], name=names[1]),
             helper.make_node("Identity", ["t2"], ["t3"], name=names[2])]
    m = helper.make_model(helper.make_graph(nodes, "g", [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [2])],
                                            [helper.make_tensor_value_info("t3", TensorProto.FLOAT, [2])]))
    graph = ModelGraph(m)
    info = parse_engine_info({"Layers": [{"Name": "conv + bn + relu", "LayerType": "X"},
                                         {"Name": "{ForeignNode[x...y...x...y]}", "LayerType": "Myelin"}]}, graph)
    assert info.layers[0].onnx_nodes == ("conv + bn", "relu")
    assert info.layers[1].onnx_nodes == ("x...y",)


def test_without_a_graph_names_are_taken_at_face_value():
    info = parse_engine_info(trt86_names_json())
    assert info.layer("block0/fc1 + block0/fc1_bias").onnx_nodes == ("block0/fc1", "block0/fc1_bias")
    myelin = info.layers[1]
    assert myelin.onnx_nodes == ("block0/ln1", "block0/residual1")  # the ends only: no graph to expand the range
    assert info.layer("(Unnamed Layer* 44) [Shuffle]").onnx_nodes == ()
    assert info.unmapped_nodes == []
    assert "(Unnamed Layer* 44) [Shuffle]_output" not in info.boundary_tensors
    assert info.boundary_tensors[-1] == "y"


def test_layer_names_only_verbosity():
    info = parse_engine_info({"Layers": ["block0/ln2", "block0/fc1 + block0/fc1_bias"], "Bindings": ["x", "y"]},
                             ModelGraph(zoo.transformer()))
    assert not info.detailed
    assert info.layers[1].onnx_nodes == ("block0/fc1", "block0/fc1_bias")
    assert info.layers[1].type is None and info.layers[1].precision is None


def test_bare_layer_list_and_bad_json():
    assert len(parse_engine_info([{"Name": "a", "LayerType": "X"}]).layers) == 1
    with pytest.raises(ValueError):
        parse_engine_info("{not json")
    with pytest.raises(ValueError):
        parse_engine_info({"Bindings": []})


def test_to_dict_is_json_serializable(tgraph):
    d = parse_engine_info(trt86_names_json(), tgraph).to_dict()
    text = json.dumps(d)
    assert "block0/fc1_bias" in text and d["layers"][1]["mapping"] == MAP_RANGE


# -- small pure helpers ------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt,dtype", [
    ("Row major linear FP32", "FP32"), ("Row major linear FP16 format", "FP16"),
    ("Channel major FP16 format where channel % 8 == 0", "FP16"), ("Half", "FP16"), ("Float", "FP32"),
    ("BFloat16", "BF16"), ("Row major linear BFloat16 format", "BF16"), ("Four wide channel vectorized row major Int8 format", "INT8"),
    ("Row major linear Int32", "INT32"), ("Row major linear Int64 format", "INT64"), ("Row major linear BOOL", "BOOL"),
    ("Row major linear UInt8 format", "UINT8"), ("Row major linear FP8 format", "FP8"), ("Int4", "INT4"),
    ("Unknown format", None), (None, None),
])
def test_format_dtype(fmt, dtype):
    assert format_dtype(fmt) == dtype


def test_parse_metadata_forms():
    assert parse_metadata("[ONNX Layer: a]\x1f[ONNX Layer: b]\x1e[ONNX Layer: c]") == ["a", "b", "c"]
    assert parse_metadata("[ONNX Layer: a][ONNX Layer: b]") == ["a", "b"]
    assert parse_metadata("[ONNX Layer: a | exported from torch.nn.Linear]") == ["a"]
    assert parse_metadata("[ONNX Layer: items[0]]") == ["items[0]"]
    assert parse_metadata("[ONNX Layer: a]\x1f[ONNX Layer: a]") == ["a"]
    assert parse_metadata("no onnx layer here") == [] and parse_metadata(None) == []
    # checked against the graph: unknown records (nodes in If bodies, truncation) are dropped
    assert parse_metadata("[ONNX Layer: a]\x1f[ONNX Layer: then_branch/x]\x1f[ONNX Layer: b ... z]", ["a", "b"]) == ["a"]
    assert parse_metadata("[ONNX Layer: inner | caller (Fn)]", ["caller"]) == ["caller"]


def test_split_profile():
    assert split_profile("conv [profile 2]") == ("conv", 2)
    assert split_profile("conv") == ("conv", 0)


# -- engine summary, against the release fakes' engines (tests/trt_fakes.py) -------------------------------------
FAMILIES = ("8.6.1", "10.13.3.9", "11.0.0.114")


def _engine(trt, info, **props):
    """Two profiles, a dynamic input ``x`` and a shape-tensor input ``target_shape``; ``info`` is the inspector's JSON."""
    trt._fake.engine_json = info
    tensors = {"x": ("INPUT", "FLOAT", (-1, -1, 64)), "target_shape": ("INPUT", "INT32", (3,)),
               "y": ("OUTPUT", "HALF", (-1, -1, 64))}
    profiles = [{"x": ((1, 1, 64), (2, 16 * (p + 1), 64), (4, 64 * (p + 1), 64))} for p in range(2)]
    values = [((1, 1, 64), (2, 8, 64), (4, 64, 64))] * 2
    defaults = dict(name="fake engine", num_layers=11, profiling_verbosity=trt.ProfilingVerbosity.DETAILED,
                    device_memory_size=1 << 20)
    return trt_fakes.engine(trt, tensors, profiles, shape_inputs={"target_shape": values}, **{**defaults, **props})


@pytest.mark.parametrize("version", FAMILIES)
def test_summarize_engine_with_fakes(tgraph, version):
    from trtdebug.inspect.engine import summarize_engine

    trt = trt_fakes.fake_trt(version)
    engine = _engine(trt, trt10_json(profile_copies=True), device_memory_size_v2=3 << 20)
    s = summarize_engine(engine, trt, graph=tgraph, profile=1)
    assert s.tensorrt_version == trt.__version__ and s.num_profiles == 2 and s.name == "fake engine"
    # device_memory_size_v2 where the release has it (10.1+), the old property on 8.6 (and it is gone in 11)
    assert s.device_memory_size == (3 << 20 if trt_fakes.has_member(version, "ICudaEngine", "device_memory_size_v2")
                                    else 1 << 20)
    assert s.profiling_verbosity == "DETAILED" and s.num_layers == 11
    x, shape_in, y = s.io
    assert (x.mode, x.dtype, x.shape, x.location) == ("input", "float32", (-1, -1, 64), "device")
    assert x.profiles[1] == {"min": [1, 1, 64], "opt": [2, 32, 64], "max": [4, 128, 64]}
    # a shape tensor's profile is of values: get_tensor_profile_values (10.0+), get_profile_shape_input (8.x)
    assert shape_in.is_shape_tensor and shape_in.profiles[0] == {"min": [1, 1, 64], "opt": [2, 8, 64], "max": [4, 64, 64]}
    assert (y.mode, y.dtype, y.profiles) == ("output", "float16", ())
    assert s.layer_info.profile == 1 and s.layer_info.layers[1].name == "__myl_LayNorm_myl0_0"
    assert s.notes == []
    json.dumps(s.to_dict())


def test_summarize_engine_flags_missing_detail():
    from trtdebug.inspect.engine import summarize_engine

    trt = trt_fakes.fake_trt("10.13.3.9")
    s = summarize_engine(_engine(trt, {"Layers": ["a", "b"]}, profiling_verbosity=trt.ProfilingVerbosity.LAYER_NAMES_ONLY),
                         trt, profile=2)
    assert s.profiling_verbosity == "LAYER_NAMES_ONLY"
    assert any("DETAILED" in n for n in s.notes) and any("profile 2 does not exist" in n for n in s.notes)


@pytest.mark.parametrize("version", ["8.6.1", "11.0.0.114"])
def test_cli_engine_with_fakes(tmp_path, monkeypatch, version):
    import trtdebug.inspect.engine as engine_mod
    from typer.testing import CliRunner

    from trtdebug.cli.inspect import inspect_app

    trt = trt_fakes.fake_trt(version)
    engine = _engine(trt, trt86_names_json())
    trt._fake.deserialize = lambda data: engine if data == b"ENGINE" else None
    monkeypatch.setattr(engine_mod, "_import_tensorrt", lambda module="tensorrt": trt)
    (tmp_path / "t.engine").write_bytes(b"ENGINE")
    model = tmp_path / "t.onnx"
    import onnx

    onnx.save(zoo.transformer(blocks=1), str(model))
    out = tmp_path / "e.json"
    result = CliRunner().invoke(inspect_app, ["engine", str(tmp_path / "t.engine"), "--model", str(model), "--json", str(out)],
                                env={"COLUMNS": "220"}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "{ForeignNode[block0/ln1...block0/residual1]}" in result.output and "block0/fc1, block0/fc1_bias" in result.output
    assert "[range]" in result.output and "(reformat for block0/fc1)" in result.output
    data = json.loads(out.read_text())
    assert data["layer_info"]["node_to_layers"]["block0/fc1"] == ["block0/fc1 + block0/fc1_bias"]
    assert data["io"][0]["profiles"][0]["opt"] == [2, 16, 64] and data["tensorrt_version"] == trt.__version__
    assert data["file_size"] == len(b"ENGINE")
    (tmp_path / "other.engine").write_bytes(b"built by another TensorRT")
    result = CliRunner().invoke(inspect_app, ["engine", str(tmp_path / "other.engine")])
    from trtdebug.errors import BackendError

    assert isinstance(result.exception, BackendError) and result.exception.exit_code == 3
    assert "could not load the engine" in str(result.exception)


def test_load_engine_errors(tmp_path, monkeypatch):
    import sys

    from trtdebug.errors import BackendUnavailableError, ModelLoadError
    from trtdebug.inspect.engine import load_engine

    with pytest.raises(ModelLoadError, match="not found"):
        load_engine(tmp_path / "missing.engine")
    (tmp_path / "a.engine").write_bytes(b"junk")
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendUnavailableError, match="tensorrt"):
        load_engine(tmp_path / "a.engine")
