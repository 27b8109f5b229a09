"""``inspect engine`` and ``inspect capability`` with a real TensorRT (device machine: ``pytest -m gpu tests/test_inspect_gpu.py``).

Skipped cleanly where TensorRT or a GPU is missing (conftest.py).  Engines are built with the
project's EngineBuilder (DETAILED profiling verbosity, optimization level 0 to stay fast).
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from trtdebug import zoo
from trtdebug.model import ModelGraph, load_model

pytestmark = pytest.mark.gpu
trt = pytest.importorskip("tensorrt")

WIDE = {"COLUMNS": "240"}


def _save(model, path):
    onnx.save(model, str(path))
    return path


def _build(onnx_path, engine_path, *, profiles=(), fp16=False):
    """Build ``onnx_path`` into ``engine_path`` with DETAILED profiling verbosity."""
    from trtdebug.runners.tensorrt.builder import EngineBuilder
    from trtdebug.runners.tensorrt.config import TrtBuildConfig

    model = load_model(onnx_path)
    config = TrtBuildConfig(builder_optimization_level=0, profiles=tuple(profiles), fp16=fp16)
    result = EngineBuilder(trt, model, ModelGraph(model), config, show_progress=False).build()
    engine_path.write_bytes(result.engine_bytes)
    return engine_path


def _profile(mn, opt, mx, name="x"):
    from trtdebug.runners.tensorrt.config import Profile

    return Profile(min={name: mn}, opt={name: opt}, max={name: mx})


@pytest.fixture(scope="module")
def transformer_engine(tmp_path_factory):
    d = tmp_path_factory.mktemp("tengine")
    onnx_path = _save(zoo.transformer(blocks=2), d / "transformer.onnx")
    engine = _build(onnx_path, d / "transformer.engine", profiles=[_profile((1, 1, 64), (2, 8, 64), (4, 32, 64))])
    return onnx_path, engine


# -- inspect engine -------------------------------------------------------------------------------------
def test_inspect_engine_lists_layers_with_onnx_node_names(transformer_engine):
    from trtdebug.inspect import inspect_engine

    onnx_path, engine = transformer_engine
    s = inspect_engine(engine, model=onnx_path)
    print(json.dumps(s.to_dict(), indent=1)[:6000])
    assert s.tensorrt_version == trt.__version__ and s.num_profiles == 1
    x = next(t for t in s.io if t.name == "x")
    y = next(t for t in s.io if t.name == "y")
    assert (x.mode, x.dtype, x.shape) == ("input", "float32", (-1, -1, 64))
    assert x.profiles[0] == {"min": [1, 1, 64], "opt": [2, 8, 64], "max": [4, 32, 64]}
    assert (y.mode, y.dtype) == ("output", "float32")
    assert s.device_memory_size is not None and s.device_memory_size >= 0
    info = s.layer_info
    assert info is not None and info.detailed, s.notes
    assert info.layers and all(layer.type for layer in info.layers)
    graph = ModelGraph(load_model(onnx_path))
    mapped = {n for layer in info.layers for n in layer.onnx_nodes}
    assert mapped <= set(graph.node_names)
    # the compute nodes of the model are all found inside some layer (constants may be folded away)
    compute = [n for n in graph.node_names if graph.node(n).op_type in ("MatMul", "Softmax", "LayerNormalization", "Erf")]
    missing = [n for n in compute if n not in info.node_to_layers]
    assert len(missing) <= len(compute) // 10, (missing, [(layer.name, layer.mapping, layer.onnx_nodes) for layer in info.layers])
    assert "final_ln" in info.node_to_layers
    # TensorRT 8.6 compiles the attention blocks into Myelin layers, which report no precision
    assert all(layer.precision for layer in info.layers if layer.type != "Myelin")
    assert "y" in info.boundary_tensors


def test_inspect_engine_cli_prints_layers_and_writes_json(transformer_engine, tmp_path):
    from trtdebug.cli.inspect import inspect_app

    onnx_path, engine = transformer_engine
    out = tmp_path / "engine.json"
    result = CliRunner().invoke(inspect_app, ["engine", str(engine), "--model", str(onnx_path), "--json", str(out)],
                                env=WIDE, catch_exceptions=False)
    print(result.output)
    assert result.exit_code == 0, result.output
    assert "Layers (profile 0)" in result.output and "block0/ln1" in result.output
    data = json.loads(out.read_text())
    assert data["layer_info"]["node_to_layers"]["final_ln"]
    assert data["io"][0]["profiles"]


def test_inspect_engine_without_the_model_still_names_nodes(tmp_path):
    """Layer names and metadata carry node names; without the model, Myelin ranges cannot be expanded,
    so this uses the conv net, whose layers TensorRT 8.6 keeps apart."""
    from trtdebug.inspect import inspect_engine

    onnx_path = _save(zoo.conv_net(batch=2), tmp_path / "conv.onnx")
    engine = _build(onnx_path, tmp_path / "conv.engine")
    info = inspect_engine(engine).layer_info
    names = set(ModelGraph(load_model(onnx_path)).node_names)
    assert names & {n for layer in info.layers for n in layer.onnx_nodes}


def test_fp16_engine_reports_fp16_layers(tmp_path):
    from trtdebug.inspect import inspect_engine

    onnx_path = _save(zoo.conv_net(batch=2), tmp_path / "conv.onnx")
    engine = _build(onnx_path, tmp_path / "conv.engine", fp16=True)
    s = inspect_engine(engine, model=onnx_path)
    print([(layer.name, layer.precision, layer.tactic, layer.onnx_nodes) for layer in s.layer_info.layers])
    layers = s.layer_info.layers
    assert any(layer.precision for layer in layers) and any(layer.tactic for layer in layers)
    # TensorRT picks per layer what is fastest (on the H200 at level 0 that was FP32 throughout for this
    # small net), so check that every layer's precision and tensor types were read, not which won
    assert all(layer.precision in ("FP32", "FP16") for layer in layers if not layer.is_reformat)
    assert all(any(layer.output_dtypes) for layer in layers)
    assert "stage0/Conv" in s.layer_info.node_to_layers
    assert s.io[0].shape == (2, 3, 32, 32)


def test_two_profiles(tmp_path):
    from trtdebug.inspect import inspect_engine

    onnx_path = _save(zoo.transformer(blocks=1), tmp_path / "t.onnx")
    engine = _build(onnx_path, tmp_path / "t.engine", profiles=[
        _profile((1, 1, 64), (1, 4, 64), (2, 8, 64)), _profile((2, 8, 64), (4, 16, 64), (8, 32, 64))])
    s0 = inspect_engine(engine, model=onnx_path)
    s1 = inspect_engine(engine, model=onnx_path, profile=1)
    assert s0.num_profiles == 2
    x = next(t for t in s0.io if t.name == "x")
    assert [p["max"] for p in x.profiles] == [[2, 8, 64], [8, 32, 64]]
    assert s1.layer_info.layers and "final_ln" in s1.layer_info.node_to_layers
    assert all("[profile" not in layer.name for layer in s1.layer_info.layers)


def test_engine_that_does_not_deserialize_is_a_clear_error(tmp_path):
    from trtdebug.errors import TrtDebugError
    from trtdebug.inspect import inspect_engine

    bad = tmp_path / "bad.engine"
    bad.write_bytes(b"this is not a TensorRT plan" * 10)
    with pytest.raises(TrtDebugError) as err:
        inspect_engine(bad)
    assert "bad.engine" in str(err.value)


# -- inspect capability ------------------------------------------------------------------------------------
def _sandwich(op: str):
    """x -> Relu -> <op> -> Neg -> y, with an op ONNX Runtime runs and TensorRT may not parse."""
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="pre/relu")]
    inits = []
    if op == "Det":
        x_shape = [2, 4, 4]
        nodes.append(helper.make_node("Det", ["r"], ["m"], name="mid/det"))
    elif op == "Unique":
        x_shape = [8]
        nodes.append(helper.make_node("Unique", ["r"], ["m"], name="mid/unique", sorted=1))
    elif op == "Compress":
        x_shape = [6]
        inits.append(numpy_helper.from_array(np.array([1, 0, 1, 1, 0, 1], dtype=bool), "keep"))
        nodes.append(helper.make_node("Compress", ["r", "keep"], ["m"], name="mid/compress", axis=0))
    elif op == "Hardmax":
        x_shape = [2, 5]
        nodes.append(helper.make_node("Hardmax", ["r"], ["m"], name="mid/hardmax", axis=-1))
    else:
        raise ValueError(op)
    nodes.append(helper.make_node("Neg", ["m"], ["y"], name="post/neg"))
    graph = helper.make_graph(nodes, f"sandwich_{op}", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


CANDIDATES = ("Det", "Unique", "Compress", "Hardmax")


def _run_with_ort(path):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {i.name: rng.standard_normal([d if isinstance(d, int) and d > 0 else 2 for d in i.shape]).astype(np.float32)
             for i in sess.get_inputs()}
    return sess.run(None, feeds)


def test_capability_of_a_supported_model(tmp_path):
    from trtdebug.inspect import inspect_capability

    path = _save(zoo.conv_net(), tmp_path / "conv.onnx")
    report = inspect_capability(path, tmp_path / "cap")
    assert report.fully_supported and report.rows == []
    assert (tmp_path / "cap" / "capability.json").exists()


def test_capability_saves_an_unsupported_subgraph_onnxruntime_can_run(tmp_path):
    from trtdebug.inspect import inspect_capability

    tried = {}
    for op in CANDIDATES:
        path = _save(_sandwich(op), tmp_path / f"{op}.onnx")
        out = tmp_path / f"cap_{op}"
        report = inspect_capability(path, out)
        tried[op] = report
        if report.fully_supported:
            continue
        print(op, json.dumps(report.to_dict(), indent=1))
        assert [s.nodes for s in report.unsupported] == [[n for n in report.unsupported_nodes]]
        mid = report.unsupported[0]
        assert mid.nodes == [f"mid/{op.lower()}"] and report.rows[0].operator == op
        assert report.rows[0].count == 1 and report.rows[0].reason
        assert mid.file == "unsupported_0.onnx"
        outs = _run_with_ort(out / mid.file)
        assert outs and outs[0].size > 0
        saved = [s for s in report.supported if s.file]
        assert saved and saved[0].nodes == ["pre/relu"]
        for sg in saved:
            _run_with_ort(out / sg.file)
        data = json.loads((out / "capability.json").read_text())
        assert data["summary"][0]["operator"] == op and data["api"] in ("supports_model", "supports_model_v2")
        return
    pytest.fail(f"TensorRT {trt.__version__} parsed every candidate op {CANDIDATES}: pick another unsupported op")


def _custom_op_model():
    """relu -> MyOp (a custom domain: no TensorRT importer, on any release) -> sigmoid."""
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("MyOp", ["a"], ["b"], name="custom", domain="com.example"),
             helper.make_node("Sigmoid", ["b"], ["y"], name="sigmoid")]
    model = helper.make_model(helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    model.ir_version = 8
    return model


def test_capability_of_a_custom_domain_op(tmp_path):
    from trtdebug.inspect import inspect_capability

    path = _save(_custom_op_model(), tmp_path / "custom.onnx")
    report = inspect_capability(path, tmp_path / "cap")
    print(json.dumps(report.to_dict(), indent=1))
    assert not report.fully_supported
    assert report.unsupported_nodes == ["custom"] and report.rows[0].operator == "com.example::MyOp"
    assert report.rows[0].reason
    assert report.supported[0].nodes == ["relu"] and report.supported[0].file == "supported_0.onnx"
    _run_with_ort(tmp_path / "cap" / "supported_0.onnx")


def test_capability_cli(tmp_path):
    from trtdebug.cli.inspect import inspect_app

    path = _save(_custom_op_model(), tmp_path / "custom.onnx")  # unsupported everywhere: the CLI must say so
    result = CliRunner().invoke(inspect_app, ["capability", str(path), "--out", str(tmp_path / "cap"),
                                              "--json", str(tmp_path / "cap.json")], env=WIDE, catch_exceptions=False)
    print(result.output)
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "cap.json").read_text())
    assert data["tensorrt_version"] == trt.__version__ and data["fully_supported"] is False
    assert data["summary"][0]["operator"] == "com.example::MyOp" and data["summary"][0]["nodes"] == ["custom"]
    assert "Summary" in result.output and "MyOp" in result.output
    assert (tmp_path / "cap" / "supported_0.onnx").exists()
