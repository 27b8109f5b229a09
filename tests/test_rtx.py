"""The TensorRT layer against the real TensorRT-RTX library (``tensorrt_rtx``), on CPU.

TensorRT-RTX's ONNX parser and builder work without a GPU, so these tests drive the real library
- parse errors, capability, output marking, debug tensors, strongly typed FP32/FP16 builds - where
every other TensorRT test needs the device machine.  Running an engine needs a GPU RTX supports
(compute capability 8.0/8.6/8.9/12.x); without one, ``trtdebug run`` must stop after the build
with one line and exit code 3.

They skip where the ``tensorrt-rtx`` package is not installed (``pip install -e '.[test,rtx]'``, as CI
does); installed but failing to import is a failure, not a skip, so CI cannot pass by skipping them.
Builds use optimization level 0 and tiny models (each well under a second).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

try:
    import tensorrt_rtx  # noqa: F401
except ImportError:
    from importlib.metadata import PackageNotFoundError, version

    try:
        version("tensorrt-rtx")
    except PackageNotFoundError:
        pytest.skip("tensorrt-rtx is not installed (pip install -e '.[test,rtx]')", allow_module_level=True)
    raise  # installed but broken: fail, don't skip

from trtdebug.errors import BackendUnavailableError, BuildError, ParseError, UsageError  # noqa: E402
from trtdebug.model.graph import ModelGraph  # noqa: E402
from trtdebug.model.surgery import OutputSelection  # noqa: E402
from trtdebug.runners.tensorrt import compat, marking  # noqa: E402
from trtdebug.runners.tensorrt.builder import EngineBuilder  # noqa: E402
from trtdebug.runners.tensorrt.config import TrtBuildConfig  # noqa: E402

pytestmark = pytest.mark.rtx
RTX = "tensorrt_rtx"
FAST = dict(module=RTX, builder_optimization_level=0)
SCRIPT = Path(sys.executable).with_name("trtdebug")


# -- models, built in code ---------------------------------------------------------------------------
def _weights(name, *shape, dtype=np.float32, seed=0):
    rng = np.random.default_rng(abs(hash(name)) % 1000 + seed)
    return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(dtype), name)


def conv_net(custom_op: bool = True) -> onnx.ModelProto:
    """conv-relu -> [a custom-domain normalization, as exporters write plugins] -> conv-relu -> pool -> fc."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])
    middle = (helper.make_node("MyNorm", ["r1"], ["n1"], name="my_norm", domain="com.example") if custom_op
              else helper.make_node("Identity", ["r1"], ["n1"], name="my_norm"))
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu1"), middle,
             helper.make_node("Conv", ["n1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("GlobalAveragePool", ["r2"], ["p"], name="gap"),
             helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], name="fc", transB=1)]
    inits = [_weights("w1", 8, 3, 3, 3), _weights("b1", 8), _weights("w2", 8, 8, 3, 3), _weights("b2", 8),
             _weights("wf", 10, 8), _weights("bf", 10)]
    typed = [helper.make_tensor_value_info("n1", TensorProto.FLOAT, [1, 8, 16, 16])]  # exporters type plugin outputs
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("com.example", 1)] if custom_op else [])
    return helper.make_model(helper.make_graph(nodes, "convnet", [x], [y], inits, value_info=typed),
                             opset_imports=opsets)


def attention_block(fp16: bool = False) -> onnx.ModelProto:
    """Layer norm -> Q/K/V -> softmax attention -> Shape/Reshape -> residual; FP16 inside Casts with FP16 weights."""
    d, ft = 16, TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
    dt = np.float16 if fp16 else np.float32
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, d])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, d])
    src, nodes = "x", []
    if fp16:
        nodes.append(helper.make_node("Cast", ["x"], ["xh"], name="to_fp16", to=ft))
        src = "xh"
    nodes += [helper.make_node("ReduceMean", [src], ["mu"], name="ln_mean", axes=[-1]),
              helper.make_node("Sub", [src, "mu"], ["xc"], name="ln_sub"),
              helper.make_node("Mul", ["xc", "xc"], ["sq"], name="ln_sq"),
              helper.make_node("ReduceMean", ["sq"], ["var"], name="ln_var", axes=[-1]),
              helper.make_node("Add", ["var", "eps"], ["ve"], name="ln_add_eps"),
              helper.make_node("Sqrt", ["ve"], ["sd"], name="ln_sqrt"),
              helper.make_node("Div", ["xc", "sd"], ["ln"], name="ln_div")]
    nodes += [helper.make_node("MatMul", ["ln", f"w{c}"], [c], name=f"{c}_proj") for c in "qkv"]
    nodes += [helper.make_node("Transpose", ["k"], ["kt"], name="k_t", perm=[0, 2, 1]),
              helper.make_node("MatMul", ["q", "kt"], ["s"], name="scores"),
              helper.make_node("Mul", ["s", "scale"], ["ss"], name="scale_mul"),
              helper.make_node("Softmax", ["ss"], ["p"], name="softmax", axis=-1),
              helper.make_node("MatMul", ["p", "v"], ["a"], name="attn"),
              helper.make_node("Shape", [src], ["shp"], name="shape_of_x"),
              helper.make_node("Reshape", ["a", "shp"], ["ar"], name="reshape_back"),
              helper.make_node("Add", [src, "ar"], ["res"], name="residual")]
    nodes.append(helper.make_node("Cast", ["res"], ["y"], name="to_fp32", to=TensorProto.FLOAT) if fp16
                 else helper.make_node("Identity", ["res"], ["y"], name="out"))
    inits = [numpy_helper.from_array(np.array(1e-5, dt), "eps"), numpy_helper.from_array(np.array(0.25, dt), "scale")]
    inits += [_weights(f"w{c}", d, d, dtype=dt) for c in "qkv"]
    return helper.make_model(helper.make_graph(nodes, "attention", [x], [y], inits),
                             opset_imports=[helper.make_opsetid("", 17)])


def if_model(custom_in_branch: bool = False) -> onnx.ModelProto:
    """add -> (sum > 0 ? relu : neg) -> scale; optionally a custom op inside the then-branch."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])
    then_node = (helper.make_node("FancyRelu", ["a"], ["t"], name="then_relu", domain="com.example") if custom_in_branch
                 else helper.make_node("Relu", ["a"], ["t"], name="then_relu"))
    then_g = helper.make_graph([then_node], "then", [], [helper.make_tensor_value_info("t", TensorProto.FLOAT, [2, 4])])
    else_g = helper.make_graph([helper.make_node("Neg", ["a"], ["e"], name="else_neg")], "else", [],
                               [helper.make_tensor_value_info("e", TensorProto.FLOAT, [2, 4])])
    nodes = [helper.make_node("Add", ["x", "one"], ["a"], name="add"),
             helper.make_node("ReduceSum", ["x"], ["s"], name="sum", keepdims=0),
             helper.make_node("Greater", ["s", "zero"], ["cond"], name="gt"),
             helper.make_node("If", ["cond"], ["o"], name="branch", then_branch=then_g, else_branch=else_g),
             helper.make_node("Mul", ["o", "two"], ["y"], name="scale")]
    inits = [numpy_helper.from_array(np.ones((2, 4), np.float32), "one"),
             numpy_helper.from_array(np.array(0, np.float32), "zero"),
             numpy_helper.from_array(np.full((2, 4), 2, np.float32), "two")]
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("com.example", 1)] if custom_in_branch else [])
    return helper.make_model(helper.make_graph(nodes, "branchy", [x], [y], inits), opset_imports=opsets)


@pytest.fixture(scope="module")
def trt():
    return compat.import_tensorrt(RTX)


def builder_for(trt, model, **config) -> EngineBuilder:
    return EngineBuilder(trt, model, ModelGraph(model), TrtBuildConfig(**{**FAST, **config}), show_progress=False)


def save(model, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def trtdebug(*args, **kwargs) -> subprocess.CompletedProcess:
    exe = str(SCRIPT) if SCRIPT.exists() else shutil.which("trtdebug")
    assert exe, "the trtdebug console script is not installed (pip install -e .)"
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=300, **kwargs)


def runs_here(trt, engine: bytes) -> bool:
    """Whether this machine has a GPU TensorRT-RTX runs on (then 'cannot run here' tests do not apply)."""
    from trtdebug.runners.tensorrt.logger import shared_logger

    validity, _ = trt.Runtime(shared_logger(trt)).get_engine_validity(engine)
    return compat.enum_name(validity) != "INVALID"


# -- what the layer detects ---------------------------------------------------------------------------
def test_rtx_is_detected_by_its_features(trt):
    f = compat.detect(trt)
    assert (f.product, f.label) == ("TensorRT-RTX", f"TensorRT-RTX {trt.__version__}")
    assert f.runtime_cache and f.engine_validity and f.builds_without_gpu
    assert f.strong_typing_required and not (f.fp16_flag or f.int8_flag or f.layer_precision)
    assert f.supports_model_v2 and not f.supports_model and not f.algorithm_selector
    assert f.timing_cache and not f.timing_cache_effective
    assert {"8.6", "8.9", "12.0"} <= set(f.compute_capabilities) and "9.0" not in f.compute_capabilities
    notes = " | ".join(compat.backend_notes(f))
    assert "just in time" in notes and "no timing cache" in notes and "8.6" in notes


def test_rtx_timing_cache_calls_are_no_ops_so_trtdebug_keeps_none(trt, tmp_path):
    """The premise (RTX says its timing cache does nothing), and what follows: no cache file is written."""
    config = trt.Builder(trt.Logger()).create_builder_config()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config.set_timing_cache(config.create_timing_cache(b""), False)
    assert any("no-op" in str(w.message) for w in caught), [str(w.message) for w in caught]
    user_cache = tmp_path / "tc.cache"
    builder = builder_for(trt, conv_net(custom_op=False), timing_cache=user_cache)
    assert builder.build().engine_bytes
    assert builder.timing_cache.cache is None and not builder.save_timing_cache()  # never attached, never saved
    assert not user_cache.exists()
    assert not list(Path(os.environ["XDG_CACHE_HOME"]).rglob("timing-*"))


def test_missing_module_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, RTX, None)  # import fails as if not installed
    with pytest.raises(BackendUnavailableError, match=r"pip install tensorrt-rtx, or pip install 'trtdebug\[rtx\]'"):
        compat.import_tensorrt(RTX)
    with pytest.raises(UsageError, match="unknown TensorRT module"):
        compat.import_tensorrt("tensorrt_lite")


# -- parsing -----------------------------------------------------------------------------------------
def test_parse_error_names_the_node_its_domain_and_the_cause(trt):
    with pytest.raises(ParseError) as info:
        builder_for(trt, conv_net()).parse()
    message = str(info.value)
    assert message.startswith(f"TensorRT-RTX {trt.__version__}'s ONNX parser rejected the model: ")
    assert "node 'my_norm' (com.example::MyNorm)" in message
    assert "Plugin not found" in message and "\n" not in message


# -- capability --------------------------------------------------------------------------------------
def test_capability_splits_a_conv_net_around_its_custom_op(trt, tmp_path):
    from trtdebug.inspect.capability import inspect_capability

    model = save(conv_net(), tmp_path / "convnet.onnx")
    report = inspect_capability(model, tmp_path / "cap", module=RTX)
    assert report.product == "TensorRT-RTX" and report.api == "supports_model_v2"
    assert [s.nodes for s in report.supported] == [["conv1", "relu1"], ["conv2", "relu2", "gap", "flatten", "fc"]]
    assert [s.nodes for s in report.unsupported] == [["my_norm"]]
    assert [(r.operator, r.nodes) for r in report.rows] == [("com.example::MyNorm", ["my_norm"])]
    assert "Plugin not found" in report.rows[0].reason
    saved = json.loads((tmp_path / "cap" / "capability.json").read_text())
    assert saved["product"] == "TensorRT-RTX" and saved["num_unsupported_nodes"] == 1
    assert any("just in time" in n for n in saved["notes"])
    # every supported piece is its own model that RTX parses whole; the unsupported one still fails
    for sg in report.supported:
        assert sg.verified, sg.note
        builder_for(trt, onnx.load(str(tmp_path / "cap" / sg.file))).parse()
    with pytest.raises(ParseError, match="my_norm"):
        builder_for(trt, onnx.load(str(tmp_path / "cap" / report.unsupported[0].file))).parse()


def test_capability_of_if_control_flow(trt, tmp_path):
    from trtdebug.inspect.capability import inspect_capability

    whole = inspect_capability(save(if_model(), tmp_path / "if.onnx"), module=RTX)
    assert whole.fully_supported and [s.nodes for s in whole.supported] == [["add", "sum", "gt", "branch", "scale"]]

    report = inspect_capability(save(if_model(custom_in_branch=True), tmp_path / "if_custom.onnx"),
                                tmp_path / "cap", module=RTX)
    assert not report.fully_supported
    assert [s.nodes for s in report.supported] == [["add", "sum", "gt"], ["scale"]]
    assert [s.nodes for s in report.unsupported] == [["branch"]]
    assert report.rows[0].operator == "If" and "Plugin not found" in report.rows[0].reason
    assert (tmp_path / "cap" / "unsupported_0.onnx").is_file()


# -- marking and builds --------------------------------------------------------------------------------
def test_mark_all_plan_builds_and_what_it_skips_the_builder_rejects(trt):
    """The marking rules agree with the real builder: what --mark-all marks builds, and a tensor skipped
    as "inside a conditional" is refused when marked anyway."""
    model = if_model()
    builder = builder_for(trt, model, reduce_marking_on_failure=False)
    result = builder.build(OutputSelection(mark_all=True))
    assert sorted(result.marking.mark) == ["a", "cond", "o", "s"]
    skipped = dict(result.marking.skipped)
    assert skipped["t"] == skipped["e"] == marking.REASON_LOOP
    assert skipped["one_output"] == "constant" and result.engine_bytes and not result.notes

    parsed = builder.parse()
    parsed.network.mark_output(marking.tensors_by_name(parsed.network)["t"])
    config, _ = builder._make_config(parsed, None, [])
    with pytest.raises(BuildError, match="Network output t is not allowed to be in a loop"):
        builder._build_serialized(parsed, config)


def test_mark_all_on_an_attention_block_marks_every_onnx_intermediate(trt):
    model = attention_block()
    result = builder_for(trt, model).build(OutputSelection(mark_all=True))
    intermediates = [n for n in ModelGraph(model).tensor_order if n not in ("x", "y", "shp")]
    assert sorted(result.marking.mark) == sorted(set(intermediates) - {"eps", "scale", "wq", "wk", "wv"})
    skipped = dict(result.marking.skipped)
    assert skipped["shp"] == marking.REASON_SHAPE_TENSOR and skipped["softmax_output"] == marking.REASON_NO_ONNX_NAME
    assert result.engine_bytes and not result.notes


def test_debug_tensors_and_unfused_debug_tensors_build(trt):
    builder = builder_for(trt, attention_block())
    named = builder.build(debug_names=["q", "p", "no_such_tensor"])
    assert named.debug_tensors == ["q", "p"] and named.engine_bytes
    unfused = builder.build(unfused_debug=True)
    assert unfused.unfused_debug and unfused.engine_bytes


@pytest.mark.parametrize("fp16", [False, True], ids=["fp32", "fp16"])
def test_strongly_typed_build_takes_types_from_the_model(trt, fp16):
    builder = builder_for(trt, attention_block(fp16=fp16))
    network = builder.parse().network
    types = {t.name: compat.dtype_name(t.dtype) for layer in marking.layers(network)
             for t in (layer.get_output(j) for j in range(layer.num_outputs))}
    inside = "HALF" if fp16 else "FLOAT"
    assert {types[n] for n in ("ln", "q", "s", "p", "a", "res")} == {inside}
    assert types["y"] == "FLOAT" and types["shp"] == "INT64"
    result = builder.build()
    assert len(result.engine_bytes) > 1000 and not result.notes


def test_precision_flags_are_a_usage_error_that_says_what_to_do(trt):
    with pytest.raises(UsageError, match=r"--fp16 is not available on TensorRT-RTX .*strongly typed networks only"):
        builder_for(trt, conv_net(custom_op=False), fp16=True).build()
    with pytest.raises(UsageError, match="per-layer precision"):
        builder_for(trt, conv_net(custom_op=False), fp32_nodes=("conv1",)).build()


# -- the run step, where no supported GPU is --------------------------------------------------------------
def test_api_run_builds_saves_then_says_why_it_cannot_run(trt, tmp_path):
    import trtdebug

    model = save(conv_net(custom_op=False), tmp_path / "convnet.onnx")
    engine = tmp_path / "convnet.engine"
    try:
        outcome = trtdebug.run(model, backends=("trt",), save_engine=engine, **FAST)
    except BackendUnavailableError as exc:
        message = str(exc)
    else:
        outcome.close()
        pytest.skip("this machine has a GPU TensorRT-RTX runs on")
    assert message.startswith(f"TensorRT-RTX {trt.__version__} cannot run the engine here: ")
    assert "no usable CUDA device" in message or "compute capability" in message
    assert message.endswith(f"the engine was built and saved to {engine}") and "\n" not in message
    assert engine.stat().st_size > 1000 and not runs_here(trt, engine.read_bytes())


def test_cli_run_with_trt_rtx_exits_3_in_one_line_and_keeps_the_engine(tmp_path):
    model = save(conv_net(custom_op=False), tmp_path / "convnet.onnx")
    engine = tmp_path / "out.engine"
    proc = trtdebug("run", model, "--trt", "--trt-rtx", "--onnxrt", "--builder-optimization-level", "0",
                    "--save-engine", engine)
    if proc.returncode != 3 and runs_here(compat.import_tensorrt(RTX), engine.read_bytes()):
        pytest.skip("this machine has a GPU TensorRT-RTX runs on")
    assert proc.returncode == 3, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trtdebug: error: TensorRT-RTX "), proc.stderr
    assert "cannot run the engine here" in lines[0] and f"saved to {engine}" in lines[0]
    assert engine.stat().st_size > 1000


def test_cli_inspect_capability_with_trt_rtx(tmp_path):
    model = save(conv_net(), tmp_path / "convnet.onnx")
    proc = trtdebug("inspect", "capability", model, "--trt-rtx", "--out", tmp_path / "cap")
    assert proc.returncode == 0, proc.stderr
    assert "TensorRT-RTX" in proc.stdout and "com.example::MyNorm" in proc.stdout
    files = sorted(p.name for p in (tmp_path / "cap").glob("*.onnx"))
    assert files == ["supported_0.onnx", "supported_1.onnx", "unsupported_0.onnx"]
