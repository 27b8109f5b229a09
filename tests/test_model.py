"""Model loading, topological view and surgery on real models built in code."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from trtdebug import zoo
from trtdebug.errors import ModelLoadError, UsageError
from trtdebug.model import ModelGraph, OutputSelection, extract_subgraph, load_model, mark_outputs, save_model
from trtdebug.model.surgery import REASON_CONSTANT, plan_outputs


def _save(model, path):
    onnx.save(model, str(path))
    return path


def test_load_names_unnamed_nodes_and_infers_shapes(tmp_path):
    m = onnx.parser.parse_model(
        """<ir_version: 8, opset_import: ["" : 17]>
        g (float[N,4] x) => (float[N,4] y) { a = Relu(x)  b = Sigmoid(a)  y = Add(a, b) }"""
    )
    model = load_model(_save(m, tmp_path / "m.onnx"))
    graph = ModelGraph(model)
    assert graph.node_names == ["Relu_0", "Sigmoid_1", "Add_2"]
    info = graph.tensor("b")
    assert info.dtype == np.float32 and info.shape == ("N", 4)
    assert info.producer == "Sigmoid_1" and info.topo_index == 2 and not info.is_graph_output
    assert graph.tensor("y").is_graph_output and graph.tensor("x").is_graph_input


def test_topological_order_repairs_unsorted_nodes():
    nodes = [helper.make_node("Add", ["a", "b"], ["y"], name="last"),
             helper.make_node("Relu", ["x"], ["a"], name="first"),
             helper.make_node("Neg", ["a"], ["b"], name="second")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    graph = ModelGraph(helper.make_model(g))
    assert graph.node_names == ["first", "second", "last"]
    assert graph.tensor_order == ["x", "a", "b", "y"]
    assert [n.name for n in graph.consumers["a"]] == ["second", "last"]


@pytest.mark.parametrize("content", [b"", b"not a model at all \x00\x01", b"\x08\x07"])
def test_garbage_is_a_model_load_error(tmp_path, content):
    p = tmp_path / "bad.onnx"
    p.write_bytes(content)
    with pytest.raises(ModelLoadError):
        load_model(p)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(tmp_path / "nope.onnx")
    with pytest.raises(ModelLoadError, match="directory"):
        load_model(tmp_path)


def test_external_data_round_trip(tmp_path):
    model = zoo.conv_net(batch=1)
    path = tmp_path / "ext.onnx"
    save_model(model, path, external_data=True)
    assert (tmp_path / "ext.onnx.data").exists()
    loaded = load_model(path)
    assert len(loaded.graph.initializer) == len(model.graph.initializer)
    assert not list(tmp_path.glob(".*tmp"))


def test_mark_all_skips_inputs_and_constants_and_keeps_types():
    m = onnx.parser.parse_model(
        """<ir_version: 8, opset_import: ["" : 17]>
        g (float[2,4] x) => (float[2,4] y) { c = Constant<value = float[1] {2.0}>()  a = Mul(x, c)  y = Relu(a) }"""
    )
    m = onnx.shape_inference.infer_shapes(m)
    marked = mark_outputs(m, OutputSelection(mark_all=True))
    outs = {o.name: o for o in marked.graph.output}
    assert list(outs) == ["a", "y"]
    assert outs["a"].type.tensor_type.elem_type == TensorProto.FLOAT
    assert mark_outputs(m, OutputSelection()) is m


def test_mark_all_leaves_out_tensors_computed_from_weights_alone():
    """TorchScript exports an Identity per shared weight; weights are reshaped/transposed; a random op is no constant."""
    m = onnx.parser.parse_model(
        """<ir_version: 8, opset_import: ["" : 17]>
        g (float[2,4] x) => (float[2,4] y, float[4,4] wt) <float[4,4] w = {1.0,0.0,0.0,0.0, 0.0,1.0,0.0,0.0,
                                                                      0.0,0.0,1.0,0.0, 0.0,0.0,0.0,1.0}> {
            wi = Identity(w)  wt = Transpose(wi)  h = MatMul(x, wt)  noise = RandomNormalLike(wi)  z = Add(h, noise)
            y = Relu(h) }"""
    )
    graph = ModelGraph(m)
    assert graph.constant_tensors == {"wi", "wt"}
    wanted, skipped = plan_outputs(graph, OutputSelection(mark_all=True))
    assert wanted == ["wt", "h", "noise", "z", "y"]  # wt is a graph output: kept
    assert skipped == [("wi", REASON_CONSTANT)]
    wanted, skipped = plan_outputs(graph, OutputSelection(mark_all=True, names=("wi",)))
    assert "wi" in wanted and not skipped  # asked for by name


def test_mark_selection_names_exclusions_and_unknown():
    model = onnx.shape_inference.infer_shapes(zoo.transformer())
    graph = ModelGraph(model)
    marked = mark_outputs(model, OutputSelection(names=("block0/softmax_out",)), graph)
    assert [o.name for o in marked.graph.output] == ["block0/softmax_out", "y"]
    allm = mark_outputs(model, OutputSelection(mark_all=True, exclude=("block0/softmax_out",)), graph)
    names = [o.name for o in allm.graph.output]
    assert "block0/softmax_out" not in names and len(names) == len(graph.tensor_order) - 1 - 1
    assert names == sorted(names, key=graph.topo_index)
    with pytest.raises(UsageError):
        mark_outputs(model, OutputSelection(names=("nope",)), graph)


def test_extract_subgraph_runs_in_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    model = onnx.shape_inference.infer_shapes(zoo.transformer(batch=2, seq=8))
    sub = extract_subgraph(model, ["block0/ln2_out"], ["block0/gelu_out"])
    onnx.checker.check_model(sub)
    assert {n.op_type for n in sub.graph.node} == {"MatMul", "Add", "Div", "Erf", "Mul"}
    sess = ort.InferenceSession(sub.SerializeToString(), providers=["CPUExecutionProvider"])
    (out,) = sess.run(None, {"block0/ln2_out": np.ones((2, 8, 64), np.float32)})
    assert out.shape == (2, 8, 256)
    with pytest.raises(UsageError):
        extract_subgraph(model, ["nope"], ["y"])
