"""``trtdebug inspect model``: API and CLI on the zoo models and small inline models (no backend needed)."""
import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from typer.testing import CliRunner

from trtdebug import zoo
from trtdebug.cli.inspect import inspect_app
from trtdebug.errors import ModelLoadError, UsageError
from trtdebug.inspect import inspect_model, render_model_summary, summarize_model

WIDE = {"COLUMNS": "200"}


def _save(model, path):
    onnx.save(model, str(path))
    return path


def test_conv_net_summary(tmp_path):
    model = zoo.conv_net()
    s = inspect_model(_save(model, tmp_path / "conv.onnx"))
    assert s.opset == 17 and s.opsets == {"ai.onnx": 17} and s.ir_version == 8 and s.producer == "trtdebug.zoo"
    assert [(t.name, t.dtype, t.shape) for t in s.inputs] == [("image", "float32", ("N", 3, 32, 32))]
    assert [(t.name, t.dtype, t.shape) for t in s.outputs] == [("probs", "float32", ("N", 10))]
    assert s.dynamic_dim_names == ["N"]
    assert s.dynamic_dims == [{"tensor": "image", "kind": "input", "axis": 0, "dim": "N"},
                              {"tensor": "probs", "kind": "output", "axis": 0, "dim": "N"}]
    assert s.num_nodes == 16 and s.num_initializers == len(model.graph.initializer)
    assert s.op_histogram == {"BatchNormalization": 3, "Conv": 3, "MaxPool": 3, "Relu": 3, "Flatten": 1,
                              "Gemm": 1, "GlobalAveragePool": 1, "Softmax": 1}
    expected = sum(numpy_helper.to_array(t).size for t in model.graph.initializer)
    assert s.num_parameters == expected and s.weight_bytes == 4 * expected
    assert s.file_size == (tmp_path / "conv.onnx").stat().st_size


def test_static_conv_net_has_no_dynamic_dims(tmp_path):
    s = inspect_model(_save(zoo.conv_net(batch=2), tmp_path / "conv.onnx"))
    assert s.dynamic_dims == [] and s.inputs[0].shape == (2, 3, 32, 32)


def test_transformer_summary(tmp_path):
    s = inspect_model(_save(zoo.transformer(blocks=2), tmp_path / "t.onnx"))
    assert s.inputs[0].shape == ("B", "S", 64) and s.dynamic_dim_names == ["B", "S"]
    assert s.op_histogram["MatMul"] == 16 and s.op_histogram["LayerNormalization"] == 5
    assert list(s.op_histogram)[0] == "Add"  # most frequent first


def test_unusual_types_custom_domains_and_unknown_dims():
    nodes = [helper.make_node("Cast", ["x"], ["xb"], to=TensorProto.BFLOAT16, name="cast"),
             helper.make_node("MyOp", ["xb", "w"], ["y"], domain="com.example", name="custom"),
             helper.make_node("Identity", ["ids"], ["ids_out"], name="ident")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", None]),
              helper.make_tensor_value_info("ids", TensorProto.INT64, None)]
    outputs = [helper.make_tensor_value_info("y", TensorProto.BFLOAT16, None),
               helper.make_tensor_value_info("ids_out", TensorProto.INT64, None)]
    w = numpy_helper.from_array(np.zeros((3, 4), np.float16), "w")
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, initializer=[w]),
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 2)])
    s = summarize_model(model)
    assert s.opsets == {"ai.onnx": 17, "com.example": 2}
    assert s.op_histogram["com.example::MyOp"] == 1
    assert s.inputs[0].shape == ("batch", None) and s.inputs[0].shape_text() == "[batch, ?]"
    assert s.inputs[1].shape is None and s.inputs[1].shape_text() == "unknown rank"
    assert s.outputs[0].dtype == "bfloat16"
    assert s.num_parameters == 12 and s.weight_bytes == 24
    kinds = [(d["tensor"], d["axis"], d["dim"]) for d in s.dynamic_dims]
    assert ("x", 0, "batch") in kinds and ("x", 1, None) in kinds and ("ids", None, None) in kinds
    json.dumps(s.to_dict())


def _constant_weight_model():
    """A conv block the way torch.onnx.export often writes it: every weight in a Constant node."""
    w = np.random.default_rng(0).standard_normal((8, 3, 3, 3)).astype(np.float32)
    sparse = helper.make_sparse_tensor(numpy_helper.from_array(np.array([1.0, 2.0], np.float32), "v"),
                                       numpy_helper.from_array(np.array([3, 40], np.int64), "i"), [8, 8])
    nodes = [helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w), name="/conv/Constant"),
             helper.make_node("Constant", [], ["b"], value_floats=[0.1] * 8, name="/conv/Constant_1"),
             helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="/conv/Conv"),
             helper.make_node("Constant", [], ["shape"], value_ints=[1, -1], name="/Constant_2"),
             helper.make_node("Reshape", ["c", "shape"], ["flat"], name="/Reshape"),
             helper.make_node("Constant", [], ["scale"], value_float=0.5, name="/Constant_3"),
             helper.make_node("Mul", ["flat", "scale"], ["y"], name="/Mul"),
             helper.make_node("Constant", [], ["mask"], sparse_value=sparse, name="/Constant_4"),
             helper.make_node("Identity", ["mask"], ["mask_out"], name="/Identity")]
    graph = helper.make_graph(nodes, "torch_jit", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 512]),
                               helper.make_tensor_value_info("mask_out", TensorProto.FLOAT, [8, 8])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_weights_in_constant_nodes_are_counted():
    s = summarize_model(_constant_weight_model())
    assert s.num_initializers == 0 and s.num_constant_nodes == 5
    # conv weight 216 + bias 8 + shape 2 + scale 1 + sparse 64 (dense size; 2 stored values)
    assert s.constant_parameters == s.num_parameters == 216 + 8 + 2 + 1 + 64
    assert s.constant_weight_bytes == s.weight_bytes == 4 * 216 + 4 * 8 + 8 * 2 + 4 + 4 * 2
    from rich.console import Console

    console = Console(record=True, width=160)
    render_model_summary(s, console)
    assert "291 parameters (924 B of weights, 100% in 5 Constant nodes)" in console.export_text()
    assert s.to_dict()["constant_weight_bytes"] == 924


def test_share_of_weights_in_constants():
    model = _constant_weight_model()
    model.graph.initializer.append(numpy_helper.from_array(np.zeros(2 * 924 // 4, np.float32), "unused"))
    s = summarize_model(model)
    assert s.weight_bytes == 3 * 924 and s.constant_weight_bytes == 924
    from rich.console import Console

    console = Console(record=True, width=160)
    render_model_summary(s, console)
    assert "33% in 5 Constant nodes" in console.export_text()
    plain = Console(record=True, width=160)
    render_model_summary(summarize_model(zoo.conv_net()), plain)
    assert "Constant node" not in plain.export_text()


def test_render_to_a_console():
    from rich.console import Console

    console = Console(record=True, width=160)
    render_model_summary(summarize_model(zoo.conv_net()), console)
    text = console.export_text()
    assert "image" in text and "float32" in text and "[N, 3, 32, 32]" in text and "GlobalAveragePool" in text
    assert "dynamic dims: image[0]=N" in text


# -- CLI ------------------------------------------------------------------------------------------------
def test_cli_model_prints_and_writes_json(tmp_path):
    path = _save(zoo.transformer(), tmp_path / "t.onnx")
    out = tmp_path / "reports" / "t.json"
    result = CliRunner().invoke(inspect_app, ["model", str(path), "--json", str(out)], env=WIDE, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "LayerNormalization" in result.output and "[B, S, 64]" in result.output and "opset ai.onnx 17" in result.output
    data = json.loads(out.read_text())
    assert data["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["B", "S", 64]}]
    assert data["op_histogram"]["MatMul"] == 8 and data["num_nodes"] == 34
    assert not [p for p in out.parent.iterdir() if p.name != "t.json"]  # no temporary files left behind


def test_cli_missing_file_raises_model_load_error(tmp_path):
    result = CliRunner().invoke(inspect_app, ["model", str(tmp_path / "nope.onnx")])
    assert isinstance(result.exception, ModelLoadError) and "not found" in str(result.exception)


def test_cli_not_onnx_raises_model_load_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\xff\xfe definitely not protobuf \x00\x01")
    result = CliRunner().invoke(inspect_app, ["model", str(bad)])
    assert isinstance(result.exception, ModelLoadError)


def test_cli_refuses_to_write_json_over_the_model(tmp_path):
    path = _save(zoo.conv_net(), tmp_path / "m.onnx")
    before = path.read_bytes()
    result = CliRunner().invoke(inspect_app, ["model", str(path), "--json", str(path)])
    assert isinstance(result.exception, UsageError)
    assert path.read_bytes() == before


def test_cli_help_lists_the_three_commands():
    result = CliRunner().invoke(inspect_app, ["--help"], env=WIDE)
    assert result.exit_code == 0
    for cmd in ("model", "engine", "capability"):
        assert cmd in result.output


def test_inspect_modules_import_without_backends():
    import subprocess
    import sys

    code = (
        "import importlib.abc, sys\n"
        "class B(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('tensorrt', 'onnxruntime'):\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, B())\n"
        "import trtdebug.inspect, trtdebug.cli.inspect, trtdebug.runners.tensorrt.inspector, trtdebug.runners.tensorrt.capability\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('tensorrt', 'onnxruntime')]\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
