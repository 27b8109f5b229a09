"""The TensorRT backend's version-adaptive logic, driven by fake ``tensorrt`` modules (no GPU, no TensorRT).

The fakes (tests/trt_fakes.py) have exactly the names of real releases - 8.6.1, 10.13 and 11.0 here;
tests/test_trt_api_surfaces.py covers every snapshotted release - so flags, marking, boundaries, the
builder and the runner's I/O loop are exercised against what each release really offers.  A test
that needs a release we have no snapshot of (before 8.6) deletes names from 8.6.1's fake, and says so.
"""
from __future__ import annotations

import enum
import types

import numpy as np
import pytest
from onnx import TensorProto, helper

import trt_fakes
from trtdebug import zoo
from trtdebug.errors import BackendError, BackendUnavailableError, BuildError, FeedError, ParseError, UsageError
from trtdebug.model import ModelGraph, OutputSelection
from trtdebug.runners.tensorrt import Profile, TrtBuildConfig, compat, marking, parse_size, profiles_from_args
from trtdebug.runners.tensorrt import boundaries as bnd
from trtdebug.runners.tensorrt.builder import EngineBuilder, layer_onnx_node, parse_error_message

V86, V10, V11 = "8.6.1", "10.13.3.9", "11.0.0.114"


def trt86():
    return trt_fakes.fake_trt(V86)


def trt10():
    return trt_fakes.fake_trt(V10)


def trt11():
    return trt_fakes.fake_trt(V11)


def new_config(trt):
    """An IBuilderConfig as the fake builder makes it."""
    return trt.Builder(None).create_builder_config()


def flags_of(config):
    return config._p.get("flags", set())


# ----------------------------------------------------------------------------------------------
# feature detection (per release: test_trt_api_surfaces.py)
# ----------------------------------------------------------------------------------------------

def test_detect_without_name_based_io_is_refused():
    t = trt86()
    delattr(t.IExecutionContext, "execute_async_v3")  # a TensorRT before 8.5
    with pytest.raises(BackendError, match="8.6 or newer"):
        compat.require_name_based_io(compat.detect(t))


def test_network_flags_per_version():
    t = trt86()
    assert compat.network_flags(t, compat.detect(t), strongly_typed=False) == 1 << int(t.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    with pytest.raises(UsageError, match="strongly-typed"):
        compat.network_flags(t, compat.detect(t), strongly_typed=True)
    t = trt10()
    assert compat.network_flags(t, compat.detect(t), strongly_typed=False) == 0
    assert compat.network_flags(t, compat.detect(t), strongly_typed=True) == 1 << int(t.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    t = trt11()
    f = compat.detect(t)
    assert compat.wants_strong_typing(f, False)
    assert compat.network_flags(t, f, strongly_typed=True) == 1 << int(t.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert "NetworkDefinitionCreationFlag.EXPLICIT_BATCH" not in t._fake.reads  # gone in 11: never touched


# ----------------------------------------------------------------------------------------------
# builder configuration
# ----------------------------------------------------------------------------------------------

def test_precision_flags_on_8_6():
    t = trt86()
    cfg = new_config(t)
    notes = compat.apply_precision_flags(t, cfg, compat.detect(t), TrtBuildConfig(fp16=True, int8=True, tf32=False))
    assert flags_of(cfg) == {"FP16", "INT8"} and "FP16 enabled" in notes and "TF32 disabled" in notes
    with pytest.raises(UsageError, match="BF16"):
        compat.apply_precision_flags(t, new_config(t), compat.detect(t), TrtBuildConfig(bf16=True))


def test_fp16_on_tensorrt_11_is_a_clear_usage_error():
    t = trt11()
    with pytest.raises(UsageError) as info:
        compat.apply_precision_flags(t, new_config(t), compat.detect(t), TrtBuildConfig(fp16=True))
    text = str(info.value)
    assert "TensorRT 11" in text and "strongly typed" in text and "precision tools" in text
    assert info.value.exit_code == 2


def test_fp16_with_strongly_typed_is_refused():
    t = trt10()
    with pytest.raises(UsageError, match="strongly typed"):
        compat.apply_precision_flags(t, new_config(t), compat.detect(t), TrtBuildConfig(fp16=True, strongly_typed=True))


def test_precision_constraint_flag_preference():
    t = trt86()
    assert compat.precision_constraint_flag(t, compat.detect(t)).name == "OBEY_PRECISION_CONSTRAINTS"
    for newer in ("OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS"):  # a TensorRT before 8.2
        delattr(t.BuilderFlag, newer)
    assert compat.precision_constraint_flag(t, compat.detect(t)).name == "STRICT_TYPES"
    t = trt11()
    assert compat.precision_constraint_flag(t, compat.detect(t)) is None


def test_workspace_and_optimization_level():
    t = trt86()
    f = compat.detect(t)
    cfg = new_config(t)
    assert compat.set_workspace(t, cfg, f, 1 << 30) is None and cfg._p["pools"] == {"WORKSPACE": 1 << 30}
    compat.set_optimization_level(cfg, f, 1)
    assert cfg.builder_optimization_level == 1
    with pytest.raises(UsageError):
        compat.set_optimization_level(cfg, f, 9)
    old = trt86()  # a TensorRT before 8.4 (workspace) and 8.6 (optimization level)
    delattr(old.IBuilderConfig, "set_memory_pool_limit")
    delattr(old.IBuilderConfig, "builder_optimization_level")
    fo = compat.detect(old)
    cfg = new_config(old)
    assert compat.set_workspace(old, cfg, fo, 123) is None and cfg.max_workspace_size == 123
    assert "8.6" in compat.set_optimization_level(cfg, fo, 1)


def test_detailed_profiling():
    t = trt86()
    cfg = new_config(t)
    assert compat.set_detailed_profiling(t, cfg) and cfg.profiling_verbosity.name == "DETAILED"


def test_editable_timing_cache_only_where_named():
    t = trt86()
    cfg = new_config(t)
    assert not compat.enable_editable_timing_cache(t, cfg, compat.detect(t)) and not flags_of(cfg)
    t = trt11()
    cfg = new_config(t)
    assert compat.enable_editable_timing_cache(t, cfg, compat.detect(t)) and flags_of(cfg) == {"EDITABLE_TIMING_CACHE"}


# ----------------------------------------------------------------------------------------------
# dtypes
# ----------------------------------------------------------------------------------------------

def test_dtype_mapping_by_name():
    DataType = trt10().DataType
    assert compat.numpy_dtype(DataType.FLOAT) == np.float32
    assert compat.numpy_dtype(DataType.HALF) == np.float16
    assert compat.numpy_dtype(DataType.BOOL) == np.bool_
    assert compat.numpy_dtype(DataType.BF16) == np.uint16
    with pytest.raises(BackendError, match="FP8"):
        compat.numpy_dtype(DataType.FP8)


def test_bf16_round_trip():
    x = np.array([1.0, -2.5, 3.140625, 1e-3, np.inf, 65504.0], dtype=np.float32)
    bits = compat.float32_to_bf16_bits(x)
    back = compat.bf16_bits_to_float32(bits)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, x, rtol=1 / 128)
    assert compat.bf16_bits_to_float32(np.array([0x3F80], np.uint16))[0] == 1.0
    assert np.isnan(compat.bf16_bits_to_float32(compat.float32_to_bf16_bits(np.array([np.nan], np.float32))))[0]


# ----------------------------------------------------------------------------------------------
# fake networks for marking and building
# ----------------------------------------------------------------------------------------------

def _graph_model():
    """x -> conv -> relu -> [loop body] -> add -> y, with names the fake network reuses."""
    nodes = [
        helper.make_node("Relu", ["x"], ["conv_out"], name="conv"),
        helper.make_node("Relu", ["conv_out"], ["relu_out"], name="relu"),
        helper.make_node("Shape", ["relu_out"], ["shape_out"], name="shape"),
        helper.make_node("Reshape", ["relu_out", "shape_out"], ["reshaped"], name="reshape"),
        helper.make_node("Relu", ["reshaped"], ["loop_result"], name="loop"),
        helper.make_node("Add", ["loop_result", "reshaped"], ["y"], name="add"),
    ]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    return m, ModelGraph(m)


def _fake_network(trt=None):
    """The network the parser would make of _graph_model(), with loop, shape and helper layers."""
    trt = trt or trt86()
    T, L = trt_fakes.tensor, trt_fakes.layer
    x = T(trt, "x")
    conv_out, relu_out = T(trt, "conv_out"), T(trt, "relu_out")
    helper_t = T(trt, "(Unnamed Layer* 3) [Shuffle]_output")
    shape_out = T(trt, "shape_out", "INT32", shape_tensor=True, execution=False)
    const = T(trt, "const_w")
    reshaped = T(trt, "reshaped")
    it_out, body, rec_out = T(trt, "it"), T(trt, "body_t"), T(trt, "rec")
    loop_result = T(trt, "loop_result")
    fp8 = T(trt, "relu_out_fp8", "FP8")
    y = T(trt, "y")
    layers = [
        L(trt, "conv", "CONVOLUTION", [x], [conv_out], "[ONNX Layer: conv]"),
        L(trt, "relu", "ACTIVATION", [conv_out], [relu_out], "[ONNX Layer: relu]"),
        L(trt, "relu_1", "SHUFFLE", [relu_out], [helper_t]),
        L(trt, "shape", "SHAPE", [relu_out], [shape_out]),
        L(trt, "w", "CONSTANT", [], [const]),
        L(trt, "reshape", "SHUFFLE", [relu_out, shape_out], [reshaped]),
        L(trt, "trip", "TRIP_LIMIT", [const], []),
        L(trt, "iter", "ITERATOR", [reshaped], [it_out]),
        L(trt, "body", "ACTIVATION", [it_out], [body]),
        L(trt, "rec", "RECURRENCE", [body], [rec_out]),
        L(trt, "loop_out", "LOOP_OUTPUT", [rec_out], [loop_result]),
        L(trt, "cast", "ACTIVATION", [relu_out], [fp8]),
        L(trt, "add", "ELEMENTWISE", [loop_result, reshaped], [y], "[ONNX Layer: add]"),
    ]
    return trt_fakes.network(trt, [x], layers, [y])


def test_loop_body_layers_found_by_data_flow():
    net = _fake_network()
    inside = marking.loop_body_layers(marking.layers(net))
    names = {net.get_layer(i).name for i in inside}
    assert names == {"trip", "iter", "body", "rec"}


def test_mark_all_plan_skips_what_tensorrt_forbids_and_internal_names():
    net = _fake_network()
    _, graph = _graph_model()
    plan = marking.plan_marking(net, graph, OutputSelection(mark_all=True))
    assert plan.mark == ["conv_out", "relu_out", "reshaped", "loop_result"]
    assert plan.already_outputs == ["y"]
    reasons = dict(plan.skipped)
    assert reasons["shape_out"] == "shape computation"
    assert reasons["const_w"] == "constant"
    assert reasons["(Unnamed Layer* 3) [Shuffle]_output"] == marking.REASON_NO_ONNX_NAME
    assert reasons["it"] == marking.REASON_LOOP and reasons["body_t"] == marking.REASON_LOOP
    assert "FP8" in reasons["relu_out_fp8"]
    extra = plan.as_extra()
    assert extra["marked"] == plan.mark and extra["skipped_counts"][marking.REASON_LOOP] == 3
    marking.apply_marking(net, plan)
    assert [net.get_output(i).name for i in range(net.num_outputs)] == ["y", "conv_out", "relu_out", "reshaped", "loop_result"]


def test_explicit_names_and_exclusions():
    net = _fake_network()
    _, graph = _graph_model()
    plan = marking.plan_marking(net, graph, OutputSelection(names=("relu_out", "shape_out"), exclude=("y",)))
    assert plan.mark == ["relu_out"] and plan.unmark == ["y"] and plan.outputs == ["relu_out"]
    assert dict(plan.skipped)["shape_out"] == "shape computation"
    with pytest.raises(UsageError, match="unknown tensor"):
        marking.plan_marking(net, graph, OutputSelection(names=("nope",)))
    with pytest.raises(UsageError, match="no outputs"):
        marking.plan_marking(_fake_network(), graph, OutputSelection(exclude=("y",)))
    plan = marking.plan_marking(_fake_network(), graph, OutputSelection(mark_all=True, exclude=("relu_out",)))
    assert "relu_out" not in plan.mark and dict(plan.skipped)["relu_out"] == marking.REASON_EXCLUDED


def test_requested_name_missing_from_network_is_skipped_with_reason():
    net = _fake_network()
    model, graph = _graph_model()
    net._p["layers"] = [l for l in net._p["layers"] if l.name != "conv"]  # the parser folded it
    plan = marking.plan_marking(net, graph, OutputSelection(names=("conv_out",)))
    assert dict(plan.skipped)["conv_out"] == marking.REASON_NOT_IN_NETWORK


def test_find_buildable_subset_drops_only_what_breaks_the_build():
    names = [f"t{i}" for i in range(20)]
    calls = []

    def try_build(subset):  # TensorRT-8.6-like: a region cannot have more than 3 of t10..t17 marked
        calls.append(list(subset))
        return None if sum(1 for n in subset if "t10" <= n <= "t17" and len(n) == 3) > 3 else ("engine", tuple(subset))

    kept, dropped, result, builds = marking.find_buildable_subset(names, try_build)
    assert result == ("engine", tuple(kept)) and builds == len(calls)
    assert set(kept) | set(dropped) == set(names) and not set(kept) & set(dropped)
    assert len(dropped) == 5 and all("t10" <= n <= "t17" for n in dropped)
    assert kept == [n for n in names if n not in dropped]  # order kept
    kept, dropped, result, _ = marking.find_buildable_subset(names, lambda s: ("ok", tuple(s)))
    assert kept == names and dropped == [] and result == ("ok", tuple(names))
    failing = []
    kept, dropped, result, n = marking.find_buildable_subset(names, lambda s: failing.append(s))
    assert kept == [] and dropped == names and result is None
    assert n <= 7 and failing[-1] == []  # gives up as soon as the unmarked model fails too
    kept, dropped, result, builds = marking.find_buildable_subset(names, try_build, max_builds=3)
    assert builds <= 4 and result is not None and set(kept) | set(dropped) == set(names)


def test_find_buildable_subset_drops_similar_tensors_in_one_go():
    names = [f"t{i:02d}" for i in range(40)]
    culprits = {"t07", "t19", "t28", "t35"}  # e.g. every residual add feeding a LayerNorm
    builds = []

    def try_build(subset):
        builds.append(subset)
        return None if culprits & set(subset) else "engine"

    kept, dropped, result, n = marking.find_buildable_subset(names, try_build)
    assert set(dropped) == culprits and result == "engine"
    kept2, dropped2, result2, n2 = marking.find_buildable_subset(
        names, try_build, similar=lambda a, b: a in culprits and b in culprits)
    assert set(dropped2) == culprits and result2 == "engine" and n2 < n


def test_similar_roles_from_a_network():
    roles = marking.tensor_roles(_fake_network())
    assert roles["reshaped"] == ("SHUFFLE", frozenset({"ITERATOR", "ELEMENTWISE"}))
    similar = marking.similar_roles(roles)
    assert similar("relu_out", "relu_out") and not similar("relu_out", "reshaped")


def test_layer_onnx_node_matching():
    t = trt86()

    def FakeLayer(name, kind, inputs, outputs, metadata):
        return trt_fakes.layer(t, name, kind, inputs, outputs, metadata)

    layer = FakeLayer("whatever", "ACTIVATION", [], [], "[ONNX Layer: a/b]")
    assert layer_onnx_node(layer, {"a/b"}, set()) == "a/b"
    assert layer_onnx_node(FakeLayer("conv", "ACTIVATION", [], [], ""), {"conv"}, set()) == "conv"
    assert layer_onnx_node(FakeLayer("conv_2", "ACTIVATION", [], [], ""), {"conv"}, {"conv"}) == "conv"
    assert layer_onnx_node(FakeLayer("conv_2", "ACTIVATION", [], [], ""), {"conv"}, {"conv", "conv_2"}) is None


# ----------------------------------------------------------------------------------------------
# parser errors and the builder, with a fake TensorRT
# ----------------------------------------------------------------------------------------------

def test_parse_error_message_names_node_and_op():
    model, _ = _graph_model()
    trt = trt10()  # node_name()/node_operator() exist from 10.0; 8.6's errors name a node by index only
    err = trt_fakes.parser_error
    parser = trt.OnnxParser(trt_fakes.network(trt, [], [], []), None)
    parser._p["errors"] = [err(trt, 3, "No importer registered for op: Reshape"),
                           err(trt, -1, "Assertion failed", "MODEL_DESERIALIZE_FAILED", node_name="named", node_operator="MyOp")]
    text = parse_error_message(parser, model)
    assert "node 'reshape' (Reshape): UNSUPPORTED_NODE: No importer registered for op: Reshape" in text
    assert "node 'named' (MyOp): MODEL_DESERIALIZE_FAILED: Assertion failed" in text
    assert "\n" not in text  # one line: the CLI prints the first line of an error


def _failing_build(message):
    def build(builder, network, config):
        builder._p["logger"].log(type(builder)._module.ILogger.ERROR, message)
        return None
    return build


def _builder_world(trt, network_factory, *, parse_ok=True, build_ok=True, errors=()):
    """Set what the fake parser produces and how the fake builder answers; returns the module's World."""
    world = trt._fake
    world.network_factory = lambda: network_factory(trt)
    world.parse_ok = parse_ok
    world.parser_errors = list(errors)
    if not build_ok:
        world.build = _failing_build("Could not find any implementation for node conv")
    return world


def test_engine_builder_marks_configures_and_builds():
    trt = trt86()
    model, graph = _graph_model()
    state = _builder_world(trt, _fake_network)
    cfg = TrtBuildConfig(fp16=True, workspace=1 << 20, builder_optimization_level=1, fp32_nodes=("relu", "add", "ghost"))
    eb = EngineBuilder(trt, model, graph, cfg, show_progress=False)
    result = eb.build(OutputSelection(mark_all=True))
    assert result.engine_bytes == b"ENGINE:y,conv_out,relu_out,reshaped,loop_result"
    c = state.configs[-1]
    assert {"FP16", "OBEY_PRECISION_CONSTRAINTS"} <= flags_of(c) and c._p["pools"] == {"WORKSPACE": 1 << 20}
    assert c.builder_optimization_level == 1 and c.profiling_verbosity.name == "DETAILED"
    net = state.networks[-1]
    relu, relu_1, add = net.get_layer(1), net.get_layer(2), net.get_layer(12)
    assert all(layer.precision_is_set and layer.precision == trt.DataType.FLOAT for layer in (relu, relu_1, add))
    assert not net.get_layer(0).precision_is_set and net.get_layer(0).precision == trt.DataType.FLOAT  # TensorRT's default
    assert any("FP32 forced on 2 ONNX node(s); no TensorRT layer found for ghost" in n for n in result.notes)
    assert state.network_flags[-1] == 1  # EXPLICIT_BATCH on 8.6


def test_engine_builder_derives_a_profile_from_feed_shapes():
    trt = trt86()
    model, graph = _graph_model()

    def dynamic_network(trt):
        net = _fake_network(trt)
        net.get_input(0).shape = (-1, 4)
        return net

    state = _builder_world(trt, dynamic_network)
    eb = EngineBuilder(trt, model, graph, TrtBuildConfig(), show_progress=False)
    with pytest.raises(UsageError, match="dynamic shapes"):
        eb.build()
    result = eb.build(feed_shapes={"x": (3, 4)})
    assert state.configs[-1]._p["profiles"][0]._p["shapes"] == {"x": ((3, 4), (3, 4), (3, 4))}
    assert any("min=opt=max" in n for n in result.notes)
    prof = Profile(min={"x": (1, 4)}, opt={"x": (2, 4)}, max={"x": (8, 4)})
    eb2 = EngineBuilder(trt, model, graph, TrtBuildConfig(profiles=(prof, prof)), show_progress=False)
    eb2.build()
    assert state.configs[-1].num_optimization_profiles == 2
    bad = Profile(min={"nope": (1, 4)}, opt={"nope": (1, 4)}, max={"nope": (1, 4)})
    with pytest.raises(UsageError, match="unknown input"):
        EngineBuilder(trt, model, graph, TrtBuildConfig(profiles=(bad,)), show_progress=False).build()


def test_engine_builder_parse_and_build_failures_carry_tensorrt_text():
    trt = trt86()
    model, graph = _graph_model()
    _builder_world(trt, _fake_network, parse_ok=False, errors=[trt_fakes.parser_error(trt, 4, "unsupported op")])
    with pytest.raises(ParseError) as info:
        EngineBuilder(trt, model, graph, TrtBuildConfig(), show_progress=False).build()
    assert "node 'loop' (Relu): UNSUPPORTED_NODE: unsupported op" in str(info.value) and info.value.exit_code == 3
    trt = trt86()
    _builder_world(trt, _fake_network, build_ok=False)
    with pytest.raises(BuildError, match="Could not find any implementation for node conv"):
        EngineBuilder(trt, model, graph, TrtBuildConfig(), show_progress=False).build()


def test_engine_builder_marks_fewer_tensors_when_the_build_fails_with_all():
    trt = trt86()
    model, graph = _graph_model()
    state = _builder_world(trt, _fake_network)
    fail = _failing_build("Could not find any implementation for node {ForeignNode[x]}.")

    def picky(builder, network, config):  # fails while "relu_out" and "reshaped" are both outputs
        names = {network.get_output(i).name for i in range(network.num_outputs)}
        if {"relu_out", "reshaped"} <= names:
            return fail(builder, network, config)
        return trt_fakes.engine_bytes(network)

    state.build = picky
    result = EngineBuilder(trt, model, graph, TrtBuildConfig(), show_progress=False).build(OutputSelection(mark_all=True))
    assert result.marking.mark == ["conv_out", "relu_out", "loop_result"]
    assert result.engine_bytes == b"ENGINE:y,conv_out,relu_out,loop_result"
    reason = dict(result.marking.skipped)["reshaped"]
    assert "made TensorRT's build fail" in reason and "Could not find any implementation" in reason
    assert "kept 3, dropped 1 (reshaped)" in result.notes[0]
    with pytest.raises(BuildError):
        EngineBuilder(trt, model, graph, TrtBuildConfig(reduce_marking_on_failure=False),
                      show_progress=False).build(OutputSelection(mark_all=True))
    assert state.configs


def test_engine_builder_debug_tensors_need_tensorrt_10():
    model, graph = _graph_model()
    trt = trt86()
    _builder_world(trt, _fake_network)
    with pytest.raises(UsageError, match="10.0"):
        EngineBuilder(trt, model, graph, TrtBuildConfig(), show_progress=False).build(debug_names=["relu_out"])
    trt = trt10()
    state = _builder_world(trt, _fake_network)
    result = EngineBuilder(trt, model, graph, TrtBuildConfig(), show_progress=False).build(debug_names=["relu_out", "gone"])
    assert result.debug_tensors == ["relu_out"] and state.networks[-1]._p["debug"] == ["relu_out"]
    assert state.network_flags[-1] == 0  # no EXPLICIT_BATCH on 10.x
    result = EngineBuilder(trt, model, graph, TrtBuildConfig(), show_progress=False).build(unfused_debug=True)
    assert result.unfused_debug and state.networks[-1]._p["unfused_debug"]


def test_fp16_on_fake_tensorrt_11_fails_before_building():
    trt = trt11()
    model, graph = _graph_model()
    _builder_world(trt, _fake_network)
    with pytest.raises(UsageError, match="TensorRT 11"):
        EngineBuilder(trt, model, graph, TrtBuildConfig(fp16=True), show_progress=False).build()


# ----------------------------------------------------------------------------------------------
# fused-layer boundaries
# ----------------------------------------------------------------------------------------------

def test_boundary_mode_by_features():
    assert bnd.choose_mode(compat.detect(trt86())) == bnd.MODE_OUTPUTS
    assert bnd.choose_mode(compat.detect(trt10())) == bnd.MODE_UNFUSED_DEBUG
    assert bnd.choose_mode(compat.detect(trt_fakes.fake_trt("10.8.0.43"))) == bnd.MODE_DEBUG  # before 10.12
    assert bnd.choose_mode(compat.detect(trt10()), prefer_outputs=True) == bnd.MODE_OUTPUTS


def _layer(name, outputs, kind="CaskConvolution"):
    return {"Name": name, "LayerType": kind, "Outputs": [{"Name": o} for o in outputs]}


def test_boundary_tensors_keep_onnx_names_in_topological_order():
    _, graph = _graph_model()
    layers = [_layer("conv + relu", ["relu_out"]), _layer("Reformatting CopyNode", ["relu_out copy"], "Reformat"),
              _layer("reshape", ["reshaped"]), _layer("myelin", ["__myl_internal"]), _layer("add", ["y"]),
              _layer("loop", ["loop_result"]), "a layer name only"]
    assert bnd.boundary_tensors(layers, graph) == ["relu_out", "reshaped", "loop_result"]


def test_compare_layers_detects_changed_fusion():
    before = [_layer("conv + relu", ["relu_out"]), _layer("add", ["y"])]
    same = [_layer("conv + relu", ["relu_out"]), _layer("Reformatting CopyNode for Output", ["x"], "Reformat"),
            _layer("add", ["y"])]
    check = bnd.compare_layers(before, same)
    assert check.preserved and check.reformats_added == 1
    split = [_layer("conv", ["conv_out"]), _layer("relu", ["relu_out"]), _layer("add", ["y"])]
    check = bnd.compare_layers(before, split)
    assert not check.preserved and check.removed == ["conv + relu"] and check.added == ["conv", "relu"]
    assert check.as_extra()["changed_layers"] == {"removed": ["conv + relu"], "added": ["conv", "relu"]}


def fake_cuda(trt):
    """The real Cuda wrapper over the fake cuda-python runtime, on ``trt``'s device memory."""
    from trtdebug.runners.tensorrt.cuda import Cuda

    return Cuda(trt_fakes.cuda_runtime(trt))


def test_debug_listener_copies_kept_tensors_only():
    trt = trt10()
    cuda = fake_cuda(trt)
    stream = cuda.stream_create()
    ptr = cuda.malloc(16)
    cuda.htod_async(ptr, np.arange(4, dtype=np.float32), stream)
    listener = bnd.make_debug_listener(trt, cuda, keep={"relu_out"})
    assert listener.process_debug_tensor(ptr, trt.TensorLocation.DEVICE, trt.DataType.FLOAT, (2, 2), "relu_out", stream)
    listener.process_debug_tensor(ptr, trt.TensorLocation.DEVICE, trt.DataType.FLOAT, (4,), "__myl_x", stream)
    np.testing.assert_array_equal(listener.captured["relu_out"], np.arange(4, dtype=np.float32).reshape(2, 2))
    assert listener.dropped == ["__myl_x"] and not listener.errors


# ----------------------------------------------------------------------------------------------
# CUDA wrapper, logger, progress, config parsing
# ----------------------------------------------------------------------------------------------

class CudaErr(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorMemoryAllocation = 2
    cudaErrorNoDevice = 100


def test_cuda_error_codes_become_typed_errors():
    from trtdebug.runners.tensorrt.cuda import Cuda, pointer_value

    rt = types.SimpleNamespace(
        cudaGetDeviceCount=lambda: (CudaErr.cudaErrorNoDevice, 0),
        cudaMalloc=lambda n: (CudaErr.cudaErrorMemoryAllocation, 0),
        cudaStreamCreate=lambda: (CudaErr.cudaSuccess, 42),
    )
    cuda = Cuda(rt)
    with pytest.raises(BackendUnavailableError, match="cudaErrorNoDevice"):
        cuda.require_device()
    with pytest.raises(BackendError, match="cudaErrorMemoryAllocation") as info:
        cuda.malloc(10)
    assert not isinstance(info.value, BackendUnavailableError)
    assert cuda.stream_create() == 42
    assert pointer_value(1234) == 1234


def test_logger_captures_errors_in_windows():
    from trtdebug.runners.tensorrt.logger import make_logger

    trt = trt86()
    logger = make_logger(trt)
    sev = types.SimpleNamespace
    logger.log(sev(name="ERROR"), "old failure")
    logger.messages.mark()
    logger.log(sev(name="WARNING"), "a warning")
    logger.log(sev(name="ERROR"), "Parameter check failed")
    logger.log(sev(name="ERROR"), "Parameter check failed")
    logger.log(sev(name="VERBOSE"), "noise")
    assert logger.messages.error_text() == "Parameter check failed"
    assert ("VERBOSE", "noise") not in logger.messages.messages


def test_build_progress_tracks_phases_without_a_terminal():
    from trtdebug.runners.tensorrt.progress import BuildProgress

    p = BuildProgress(enabled=False)
    with p:
        p.phase_start("Building engine", 3)
        assert p.step("Building engine", 0)
        assert "Building engine 1/3" in p.text()
        p.phase_finish("Building engine")
    assert p.events == 3


def test_build_progress_renders_with_rich():
    import io

    from rich.console import Console

    from trtdebug.runners.tensorrt.progress import BuildProgress

    console = Console(file=io.StringIO(), force_terminal=True)
    with BuildProgress(enabled=True, console=console) as p:
        p.phase_start("Tactic timing", 10)
        p.step("Tactic timing", 4)
    assert p.elapsed >= 0


def test_parse_size():
    assert parse_size("4G") == 4 << 30
    assert parse_size("512M") == 512 << 20
    assert parse_size("1.5GiB") == int(1.5 * (1 << 30))
    assert parse_size("1048576") == 1 << 20
    for bad in ("four", "4X", "0", "-1G"):
        with pytest.raises(UsageError):
            parse_size(bad)


def test_profiles_from_args():
    profs = profiles_from_args([["x:[1,4,64]"], ["x:[1,1,64]"]], [["x:[2,8,64]"], ["x:[1,2,64]"]],
                               [["x:[4,16,64]"], ["x:[1,4,64]"]])
    assert len(profs) == 2 and profs[0].opt["x"] == (2, 8, 64) and profs[1].max["x"] == (1, 4, 64)
    assert profiles_from_args([], [], []) == []
    assert profiles_from_args(["x:[1,2]"], [], ["x:[3,4]"])[0].opt == {"x": (3, 4)}
    with pytest.raises(UsageError, match="same number"):
        profiles_from_args([["x:[1,2]"]], [], [])
    with pytest.raises(UsageError, match="min <= opt <= max"):
        profiles_from_args([["x:[4,2]"]], [], [["x:[3,4]"]])
    with pytest.raises(UsageError, match="same inputs"):
        profiles_from_args([["x:[1,2]"]], [], [["y:[3,4]"]])


# ----------------------------------------------------------------------------------------------
# the runner's I/O loop with a fake engine
# ----------------------------------------------------------------------------------------------

FAMILIES = (V86, V10, V11)  # the runner's paths on each release family
IDS_TENSORS = {"ids": ("INPUT", "INT32", (-1, 3)), "double": ("OUTPUT", "FLOAT", (-1, 3)),
               "mask": ("OUTPUT", "BOOL", (-1, 3))}


def _ids_engine(trt, batches=((1, 4),)):
    """Input ``ids`` (INT32, dynamic batch within each profile's range), outputs ``double`` and ``mask``."""
    profiles = [{"ids": ((lo, 3), (lo, 3), (hi, 3))} for lo, hi in batches]
    return trt_fakes.engine(trt, IDS_TENSORS, profiles, run=lambda f: {"double": f["ids"] * 2, "mask": f["ids"] > 1})


def _fake_gpu(monkeypatch, tmp_path, trt, engine):
    """TensorRT and cuda-python faked; ``engine`` is what the file it returns deserializes to."""
    from trtdebug.runners.tensorrt import cuda as cuda_mod

    runtime = trt_fakes.cuda_runtime(trt)
    monkeypatch.setattr(compat, "import_tensorrt", lambda module="tensorrt": trt)
    monkeypatch.setattr(cuda_mod, "_import_runtime", lambda: runtime)
    monkeypatch.setattr(cuda_mod, "_CUDA", None)
    trt._fake.deserialize = lambda data: engine if data == b"ENGINE" else None
    trt._fake.engine_json = {"Layers": [{"Name": "fake"}]}
    path = tmp_path / "model.engine"
    path.write_bytes(b"ENGINE")
    return path, runtime


@pytest.mark.parametrize("version", FAMILIES)
def test_runner_io_loop_casts_int64_and_reads_outputs(monkeypatch, tmp_path, version):
    from trtdebug.runners.tensorrt.runner import TrtRunner

    trt = trt_fakes.fake_trt(version)
    path, cuda = _fake_gpu(monkeypatch, tmp_path, trt, _ids_engine(trt))
    runner = TrtRunner(str(path))
    with runner:
        meta = runner.input_metadata()
        assert meta["ids"].dtype is None and meta["ids"].shape == (None, 3)
        out = runner.infer({"ids": np.array([[1, 2, 3], [4, 5, 6]], np.int64)})
        np.testing.assert_array_equal(out["double"], [[2, 4, 6], [8, 10, 12]])
        assert out["double"].dtype == np.float32 and out["mask"].dtype == np.bool_
        assert out["mask"].tolist() == [[False, True, True], [True, True, True]]
        assert any("cast from int64 to int32" in n for n in runner.extra["notes"])
        assert runner.extra["marked"] == ["double", "mask"] and runner.extra["layers"] == [{"Name": "fake"}]
        assert runner.extra["tensorrt_version"] == trt.__version__
        bigger = runner.infer({"ids": np.ones((4, 3), np.int64)})  # buffers grow
        np.testing.assert_array_equal(bigger["double"], np.full((4, 3), 2.0))
        with pytest.raises(FeedError, match="does not accept"):
            runner.infer({"ids": np.ones((5, 3), np.int64)})
        with pytest.raises(FeedError, match="outside the range"):
            runner.infer({"ids": np.full((1, 3), 2**40, np.int64)})
    assert not trt._fake.device.allocations and not cuda.streams  # buffers and stream released on deactivate
    assert {"IExecutionContext.set_input_shape", "IExecutionContext.set_tensor_address",
            "IExecutionContext.execute_async_v3"} <= trt._fake.reads


@pytest.mark.parametrize("version", FAMILIES)
def test_runner_selects_the_profile_that_fits(monkeypatch, tmp_path, version):
    from trtdebug.runners.tensorrt.runner import TrtRunner

    trt = trt_fakes.fake_trt(version)
    path, _ = _fake_gpu(monkeypatch, tmp_path, trt, _ids_engine(trt, batches=((1, 2), (3, 8))))
    with TrtRunner(str(path)) as runner:
        assert runner.infer({"ids": np.ones((2, 3), np.int32)})["double"].shape == (2, 3)
        np.testing.assert_array_equal(runner.infer({"ids": np.full((6, 3), 3, np.int32)})["double"], np.full((6, 3), 6.0))
        assert runner._profile == 1 and runner._context.active_optimization_profile == 1
        with pytest.raises(FeedError, match="no optimization profile") as info:
            runner.infer({"ids": np.ones((9, 3), np.int32)})
        assert "profile 1: [3, 3] to [8, 3]" in str(info.value)


@pytest.mark.parametrize("version", FAMILIES)
def test_runner_data_dependent_output_goes_through_the_output_allocator(monkeypatch, tmp_path, version):
    from trtdebug.runners.tensorrt.runner import TrtRunner

    trt = trt_fakes.fake_trt(version)
    engine = trt_fakes.engine(trt, {"x": ("INPUT", "FLOAT", (6,)), "positive": ("OUTPUT", "INT32", (-1,))},
                              run=lambda f: {"positive": np.nonzero(f["x"] > 0)[0]},
                              output_shapes=lambda shapes: {"positive": (-1,)})
    path, _ = _fake_gpu(monkeypatch, tmp_path, trt, engine)
    with TrtRunner(str(path)) as runner:
        x = np.array([1, -1, 2, -2, 3, -3], np.float32)
        np.testing.assert_array_equal(runner.infer({"x": x})["positive"], [0, 2, 4])
        np.testing.assert_array_equal(runner.infer({"x": np.abs(x)})["positive"], np.arange(6))  # the buffer grows
        assert not runner._allocator.errors
    assert not trt._fake.device.allocations


def test_runner_reports_an_engine_tensorrt_cannot_load(monkeypatch, tmp_path):
    from trtdebug.runners.tensorrt.runner import TrtRunner

    trt = trt10()
    path, cuda = _fake_gpu(monkeypatch, tmp_path, trt, _ids_engine(trt))
    path.write_bytes(b"an engine of another TensorRT")
    with pytest.raises(BackendError, match="could not load the engine"):
        TrtRunner(str(path)).activate()
    assert not cuda.streams


def test_missing_tensorrt_is_backend_unavailable(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def blocked(name, *args, **kwargs):
        if name.split(".")[0] == "tensorrt":
            raise ImportError("No module named 'tensorrt'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", blocked)
    with pytest.raises(BackendUnavailableError, match="pip install 'trtdebug\\[trt\\]'"):
        compat.import_tensorrt()


def test_factory_is_import_safe_and_lazy():
    import sys

    from trtdebug.runners.tensorrt import make_trt_runner

    model = zoo.conv_net(batch=1)
    runner = make_trt_runner(model, config=TrtBuildConfig(), outputs=OutputSelection(mark_all=True))
    assert runner.name == "tensorrt" and not runner.is_active
    assert "tensorrt" not in sys.modules or hasattr(sys.modules["tensorrt"], "Builder")
    with pytest.raises(UsageError):
        make_trt_runner("x.engine", config=TrtBuildConfig(fp16=True))


@pytest.mark.parametrize("version", trt_fakes.releases())
def test_engine_builder_path_on_every_release(version):
    """Parse, mark all, configure (precision, workspace, level, profiling, timing cache, FP32 nodes, debug
    tensors) and build on each release's fake: a name the release lacks would raise AttributeError."""
    trt = trt_fakes.fake_trt(version)
    f = compat.detect(trt)
    model, graph = _graph_model()
    world = _builder_world(trt, _fake_network)
    cfg = TrtBuildConfig(fp16=f.fp16_flag, workspace=1 << 20, builder_optimization_level=1,
                         fp32_nodes=("relu",) if f.layer_precision else ())
    debug = ["relu_out"] if f.mark_debug else []
    result = EngineBuilder(trt, model, graph, cfg, show_progress=False).build(OutputSelection(mark_all=True),
                                                                              debug_names=debug)
    marked = ["conv_out", "relu_out", "reshaped", "loop_result"]
    if f.fp16_flag and f.mark_debug:  # FP16 on 10.x: marked tensors become debug tensors, keeping their precision
        assert result.engine_bytes == b"ENGINE:y" and result.marking.as_debug == marked
        assert result.debug_tensors == debug + [n for n in marked if n not in debug]
    else:
        assert result.engine_bytes == b"ENGINE:" + ",".join(["y"] + marked).encode() and result.debug_tensors == debug
    assert ("ILayer.precision" in world.reads) == f.layer_precision
    assert world.network_flags[-1] == (1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
                                       if f.strong_typing_required else int(f.explicit_batch_flag))
    if not f.layer_precision:  # 11.x: FP32 layers are the ONNX graph's business (strongly typed)
        with pytest.raises(UsageError, match="Cast nodes") as info:
            EngineBuilder(trt, model, graph, TrtBuildConfig(fp32_nodes=("relu",)), show_progress=False).build()
        assert "\n" not in str(info.value) and info.value.exit_code == 2
