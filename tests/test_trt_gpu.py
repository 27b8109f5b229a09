"""TensorRT runner on a real GPU (run on the device machine: ``pytest -m gpu tests/test_trt_gpu.py``).

Skipped cleanly wherever TensorRT or a CUDA device is missing (see conftest.py).  Models are
the zoo's conv net and transformer block, small, built in code; builds use a low builder
optimization level to stay fast.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from trtdebug import zoo
from trtdebug.errors import FeedError, ParseError
from trtdebug.model import ModelGraph, OutputSelection
from trtdebug.runners.tensorrt import Profile, TrtBuildConfig, make_trt_runner

pytestmark = pytest.mark.gpu

FAST = dict(builder_optimization_level=0)
EXACT = dict(FAST, tf32=False)  # FP32 comparisons: TF32 (on by default) alone gives ~1e-3 errors in matmuls
MARK_ALL = OutputSelection(mark_all=True)


def _shaped(model):
    return onnx.shape_inference.infer_shapes(model)


@pytest.fixture(scope="module")
def conv():
    model = _shaped(zoo.conv_net(batch=2))
    return model, ModelGraph(model)


@pytest.fixture(scope="module")
def transformer():
    model = _shaped(zoo.transformer())
    return model, ModelGraph(model)


def _image(seed=0, batch=2):
    return {"image": np.random.default_rng(seed).standard_normal((batch, 3, 32, 32)).astype(np.float32)}


def _tokens(shape=(2, 8, 64), seed=0):
    return {"x": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


def _onnxruntime(model, graph, feeds, selection=MARK_ALL):
    """Reference tensors from ONNX Runtime (the project's runner where present, else ORT directly)."""
    try:
        from trtdebug.runners.onnxruntime import OnnxRuntimeRunner
    except ImportError:
        OnnxRuntimeRunner = None
    if OnnxRuntimeRunner is not None:
        with OnnxRuntimeRunner(model, outputs=selection, graph=graph) as r:
            return r.infer(feeds)
    import onnxruntime as ort

    from trtdebug.model.surgery import mark_outputs

    marked = mark_outputs(model, selection, graph)
    sess = ort.InferenceSession(marked.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def _failures(ref, test, graph, *, atol, rtol):
    """Names (topological order) of common tensors outside tolerance."""
    bad = []
    for name in sorted(set(ref) & set(test), key=graph.topo_index):
        r = np.asarray(ref[name], dtype=np.float64)
        t = np.asarray(test[name], dtype=np.float64)
        assert r.shape == t.shape, (name, r.shape, t.shape)
        if not np.allclose(t, r, atol=atol, rtol=rtol):
            bad.append(name)
    return bad


def _max_err(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


# -- feature detection against the real module --------------------------------------------------

def test_features_of_installed_tensorrt():
    import tensorrt as trt

    from trtdebug.runners.tensorrt import compat

    f = compat.detect(trt)
    print("TensorRT features:", f.as_dict())
    assert f.name_based_io and f.output_allocator and f.engine_inspector and f.timing_cache
    if f.version.startswith("8."):
        assert f.explicit_batch_flag and f.fp16_flag and f.weak_typing and not f.strong_typing_required


# -- conv net ----------------------------------------------------------------------------------

def test_conv_fp32_mark_all_matches_onnxruntime(conv):
    model, graph = conv
    feeds = _image()
    with make_trt_runner(model, config=TrtBuildConfig(**EXACT), outputs=MARK_ALL, graph=graph, model=model) as r:
        out = r.infer(feeds)
        extra = dict(r.extra)
    ref = _onnxruntime(model, graph, feeds)
    assert list(out) == sorted(out, key=graph.topo_index)  # topological order
    assert all(n in graph for n in out)  # ONNX names only
    assert "probs" in out and "stage0/relu_out" in out and "stage2/pool_out" in out
    assert set(extra["marked"]) <= set(out)
    assert extra["tensorrt_version"] and extra["layers"] and isinstance(extra["layers"][0], dict)
    assert _failures(ref, out, graph, atol=1e-3, rtol=1e-3) == []
    assert len(set(ref) & set(out)) >= 15


def test_conv_fp16_first_failing_tensor_is_an_onnx_name(conv):
    model, graph = conv
    feeds = _image(1)
    with make_trt_runner(model, config=TrtBuildConfig(fp16=True, **FAST), outputs=MARK_ALL, graph=graph, model=model) as r:
        out = r.infer(feeds)
    ref = _onnxruntime(model, graph, feeds)
    assert _failures(ref, {"probs": out["probs"]}, graph, atol=2e-2, rtol=5e-2) == []  # FP16 is close enough
    tight = _failures(ref, out, graph, atol=1e-6, rtol=1e-6)  # ...but not bit-exact
    assert tight, "FP16 run unexpectedly matched FP32 to 1e-6"
    first = tight[0]
    assert first in graph and graph.tensor(first).producer is not None
    print("first failing tensor (fp16, tight tolerances):", first, graph.tensor(first).producer_op)
    from trtdebug.comparison.comparator import compare_runs  # the project's comparator must see the divergence too
    from trtdebug.comparison.tolerances import Tolerances
    from trtdebug.results import RunResult, TensorSet, topology_of

    comparison = compare_runs(RunResult("onnxrt", [TensorSet(ref)]), RunResult("tensorrt", [TensorSet(out)]),
                              tolerances=Tolerances(atol=1e-6, rtol=1e-6), topology=topology_of(graph))
    assert not comparison.passed and comparison.first_failing is not None
    assert comparison.first_failing.name in tight  # a tensor that numpy's allclose also finds off
    print("comparator first failing:", comparison.first_failing.name, comparison.first_failing.producer)


def test_fp32_nodes_are_honoured(conv):
    model, graph = conv
    feeds = _image(2)
    ref = _onnxruntime(model, graph, feeds, OutputSelection())
    cfg16 = TrtBuildConfig(fp16=True, **FAST)
    with make_trt_runner(model, config=cfg16, graph=graph, model=model) as r:
        plain = r.infer(feeds)["probs"]
    all_nodes = tuple(graph.node_names)
    cfg = TrtBuildConfig(fp16=True, fp32_nodes=all_nodes, **EXACT)
    with make_trt_runner(model, config=cfg, graph=graph, model=model) as r:
        forced = r.infer(feeds)["probs"]
        notes = r.extra["notes"]
    assert any(f"FP32 forced on {len(all_nodes)} ONNX node(s)" in n for n in notes), notes
    assert _max_err(forced, ref["probs"]) < 1e-4
    assert _max_err(forced, ref["probs"]) <= _max_err(plain, ref["probs"])


def test_fused_boundaries_keep_fusion_and_compare_fewer_tensors(conv):
    model, graph = conv
    feeds = _image(3)
    with make_trt_runner(model, config=TrtBuildConfig(**FAST), outputs=MARK_ALL, graph=graph, model=model) as r:
        every = r.infer(feeds)
    with make_trt_runner(model, config=TrtBuildConfig(**EXACT), graph=graph, model=model, boundaries=True) as r:
        out = r.infer(feeds)
        extra = dict(r.extra)
    print("boundary tensors:", extra["boundary_tensors"], "mode:", extra["boundary_mode"],
          "changed:", extra["changed_layers"])
    assert extra["fused_boundaries"] is True and extra["boundary_mode"] == "outputs"
    assert extra["fusion_preserved"] is True, extra["changed_layers"]
    assert 0 < len(out) < len(every)
    assert "probs" in out and all(n in graph for n in out)
    assert _failures(_onnxruntime(model, graph, feeds), out, graph, atol=1e-3, rtol=1e-3) == []


def test_engine_save_load_and_timing_cache(conv, tmp_path):
    model, graph = conv
    feeds = _image(4)
    engine_path = tmp_path / "conv.engine"
    cache = tmp_path / "conv.cache"
    cfg = TrtBuildConfig(save_engine=engine_path, timing_cache=cache, **FAST)
    with make_trt_runner(model, config=cfg, graph=graph, model=model) as r:
        built = r.infer(feeds)
        assert r.extra["timing_cache"] == {"path": str(cache), "loaded": False, "saved": True}
    assert engine_path.stat().st_size > 0 and cache.stat().st_size > 0
    with make_trt_runner(str(engine_path), graph=graph) as r:
        loaded = r.infer(feeds)
        assert r.extra["engine_path"] == str(engine_path)
    assert list(loaded) == list(built)
    np.testing.assert_array_equal(loaded["probs"], built["probs"])
    with make_trt_runner(model, config=TrtBuildConfig(timing_cache=cache, **FAST), graph=graph, model=model) as r:
        r.infer(feeds)
        assert r.extra["timing_cache"]["loaded"] is True


def test_build_progress_does_not_crash(conv):
    model, graph = conv
    cfg = TrtBuildConfig(show_progress=True, **FAST)
    with make_trt_runner(model, config=cfg, graph=graph, model=model) as r:
        r.infer(_image())
        events = r.extra["build_progress_events"]
    import tensorrt as trt

    from trtdebug.runners.tensorrt import compat

    if compat.detect(trt).progress_monitor:
        assert events > 0


# -- transformer -------------------------------------------------------------------------------

def _transformer_profile():
    return Profile(min={"x": (1, 4, 64)}, opt={"x": (2, 8, 64)}, max={"x": (4, 16, 64)})


def test_transformer_dynamic_fp32_two_shapes_one_runner(transformer):
    model, graph = transformer
    cfg = TrtBuildConfig(profiles=(_transformer_profile(),), **EXACT)
    with make_trt_runner(model, config=cfg, outputs=MARK_ALL, graph=graph, model=model) as r:
        a = r.infer(_tokens((2, 8, 64)))
        b = r.infer(_tokens((3, 13, 64), seed=1))
        with pytest.raises(FeedError):
            r.infer(_tokens((8, 8, 64)))
    assert a["y"].shape == (2, 8, 64) and b["y"].shape == (3, 13, 64)
    for feeds, out in ((_tokens((2, 8, 64)), a), (_tokens((3, 13, 64), seed=1), b)):
        ref = _onnxruntime(model, graph, feeds)
        assert _failures(ref, out, graph, atol=1e-3, rtol=1e-3) == []
        assert len(set(ref) & set(out)) >= 30


def test_transformer_fp16_mark_all_builds_and_runs(transformer):
    model, graph = transformer
    cfg = TrtBuildConfig(fp16=True, profiles=(_transformer_profile(),), **FAST)
    feeds = _tokens()
    with make_trt_runner(model, config=cfg, outputs=MARK_ALL, graph=graph, model=model) as r:
        out = r.infer(feeds)
        extra = dict(r.extra)
    print("fp16 mark-all: marked", len(extra["marked"]), "skipped", extra["skipped_counts"], "notes", extra["notes"],
          "build", extra["build_time_s"], "s")
    ref = _onnxruntime(model, graph, feeds)
    assert len(out) >= 20 and all(n in graph for n in out)
    dropped = [s for s in extra["skipped"] if "made TensorRT's build fail" in s["reason"]]
    assert len(dropped) <= 10  # TensorRT 8.6 cannot build this with every tensor marked; most are kept
    assert all(s["name"] not in out for s in dropped)
    assert _max_err(out["y"], ref["y"]) < 5e-2
    assert _failures(ref, out, graph, atol=1e-6, rtol=1e-6)  # FP16 differs somewhere, by ONNX name


def test_fused_boundaries_on_fp16_transformer(transformer):
    model, graph = transformer
    cfg = TrtBuildConfig(fp16=True, profiles=(_transformer_profile(),), **FAST)
    feeds = _tokens()
    with make_trt_runner(model, config=cfg, graph=graph, model=model, boundaries=True) as r:
        out = r.infer(feeds)
        extra = dict(r.extra)
    print("fp16 transformer boundaries:", extra["boundary_tensors"], "preserved:", extra["fusion_preserved"],
          "layers:", extra["layers_before"], "->", extra["layers_after"])
    assert "y" in out and all(n in graph for n in out)
    assert set(out) <= set(extra["boundary_tensors"]) | {"y"}
    assert _max_err(out["y"], _onnxruntime(model, graph, feeds, OutputSelection())["y"]) < 5e-2


def test_transformer_static_and_derived_profile(transformer):
    model, graph = transformer
    static = _shaped(zoo.transformer(batch=2, seq=8))
    sgraph = ModelGraph(static)
    feeds = _tokens()
    with make_trt_runner(static, config=TrtBuildConfig(**EXACT), graph=sgraph, model=static) as r:
        out = r.infer(feeds)
    assert list(out) == ["y"]
    assert _max_err(out["y"], _onnxruntime(static, sgraph, feeds, OutputSelection())["y"]) < 1e-3
    # dynamic model, no profile: built for the first feed, rebuilt when the shape changes
    with make_trt_runner(model, config=TrtBuildConfig(**FAST), graph=graph, model=model) as r:
        r.infer(feeds)
        other = r.infer(_tokens((1, 5, 64)))
        notes = r.extra["notes"]
    assert other["y"].shape == (1, 5, 64)
    assert any("no optimization profile given" in n for n in notes)
    assert any("rebuilding" in n for n in notes)


# -- dtypes, data-dependent shapes, failures -----------------------------------------------------

def _embedding_model():
    """int64 ids -> Gather embedding -> mean; plus a bool output and a data-dependent NonZero."""
    rng = np.random.default_rng(0)
    table = helper.make_tensor("table", TensorProto.FLOAT, [50, 16], rng.standard_normal((50, 16)).astype(np.float32).ravel())
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["emb"], name="embed"),
        helper.make_node("ReduceMean", ["emb"], ["pooled"], name="pool", axes=[1], keepdims=0),
        helper.make_node("Greater", ["pooled", "zero"], ["positive"], name="gt"),
        helper.make_node("NonZero", ["positive"], ["where"], name="nonzero"),
    ]
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    graph = helper.make_graph(
        nodes, "embedding",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [2, 7])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, [2, 16]),
         helper.make_tensor_value_info("positive", TensorProto.BOOL, [2, 16]),
         helper.make_tensor_value_info("where", TensorProto.INT64, [2, None])],
        initializer=[table, zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return _shaped(model)


def test_int64_input_bool_output_and_data_dependent_shape():
    model = _embedding_model()
    graph = ModelGraph(model)
    feeds = {"ids": np.random.default_rng(1).integers(0, 50, (2, 7)).astype(np.int64)}
    with make_trt_runner(model, config=TrtBuildConfig(**FAST), graph=graph, model=model) as r:
        out = r.infer(feeds)
        notes = r.extra["notes"]
    ref = _onnxruntime(model, graph, feeds, OutputSelection())
    np.testing.assert_allclose(out["pooled"], ref["pooled"], atol=1e-5, rtol=1e-5)
    assert out["positive"].dtype == np.bool_
    np.testing.assert_array_equal(out["positive"], ref["positive"])
    np.testing.assert_array_equal(out["where"].astype(np.int64), ref["where"])
    if any("cast from int64 to int32" in n for n in notes):  # TensorRT 8.6: no int64 I/O
        print("notes:", notes)


def test_unparseable_op_is_a_parse_error_naming_the_node():
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="first_relu"),
             helper.make_node("FancyUnknownOp", ["r"], ["y"], name="my_custom_node", domain="com.example")]
    graph = helper.make_graph(nodes, "custom", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    model.ir_version = 8
    runner = make_trt_runner(model, config=TrtBuildConfig(**FAST), graph=ModelGraph(model), model=model)
    with pytest.raises(ParseError) as info:
        runner.activate()
    text = str(info.value)
    print(text)
    assert "my_custom_node" in text and "FancyUnknownOp" in text
    assert info.value.exit_code == 3
