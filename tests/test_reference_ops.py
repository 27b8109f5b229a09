"""The corrected onnx.reference ops, and what the reference runner records.

Each override is checked against ONNX Runtime on a small model at the opsets where upstream is
wrong, and each test also shows upstream's error, so it fails if the override stops applying.
"""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from trtdebug import zoo
from trtdebug.model import ModelGraph, OutputSelection
from trtdebug.runners.onnxruntime import OnnxRuntimeRunner
from trtdebug.runners.reference import ReferenceRunner
from trtdebug.runners.reference_ops import OVERRIDES, overridden_ops


def _model(nodes, inputs, outputs, opset, inits=()):
    m = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits)),
                          opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 7
    return m


def _both(model, feeds):
    ours = ReferenceEvaluator(model, new_ops=overridden_ops()).run(None, feeds)
    try:
        with np.errstate(all="ignore"):
            upstream = ReferenceEvaluator(model).run(None, feeds)
    except TypeError:  # upstream BatchNormalization at opsets 7-8 returns a tuple in a tuple
        upstream = [np.full_like(o, np.nan) for o in ours]
    with OnnxRuntimeRunner(model) as ort:
        expected = list(ort.infer(feeds).values())
    return ours, upstream, expected


def _bn_model(opset, **attrs):
    c = 4
    rng = np.random.default_rng(0)
    inits = [onnx.numpy_helper.from_array(v.astype(np.float32), n) for n, v in
             [("s", 1 + rng.random(c)), ("b", rng.random(c)), ("m", rng.random(c)), ("v", 1 + rng.random(c))]]
    node = helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], **attrs)
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, c, 5, 5]) for n in ("x", "y")]
    return _model([node], vi[:1], vi[1:], opset, inits)


@pytest.mark.parametrize("opset", [7, 9, 11, 13, 14, 15])
def test_batchnorm_inference_at_every_opset(opset):
    x = np.random.default_rng(1).standard_normal((2, 4, 5, 5)).astype(np.float32)
    (ours,), (upstream,), (expected,) = _both(_bn_model(opset, epsilon=1e-5, momentum=0.9), {"x": x})
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    if opset < 14:  # upstream normalizes with batch statistics
        assert not np.allclose(upstream, expected, atol=1e-2)


def test_batchnorm_training_outputs_use_batch_statistics():
    model = _bn_model(14, training_mode=1)
    del model.graph.output[:]
    model.graph.output.extend([helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("y", "rm", "rv")])
    model.graph.node[0].output.extend(["rm", "rv"])
    x = np.random.default_rng(2).standard_normal((3, 4, 5, 5)).astype(np.float32)
    y, rm, _ = ReferenceEvaluator(model, new_ops=overridden_ops()).run(None, {"x": x})
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), onnx.numpy_helper.to_array(model.graph.initializer[1]), atol=1e-5)
    assert rm.shape == (4,)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
@pytest.mark.parametrize("opset, axis", [(11, None), (11, 1), (11, -2), (13, None), (13, 1)])
def test_softmax_family_follows_its_opset(op, opset, axis):
    attrs = {} if axis is None else {"axis": axis}
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 3, 4, 1]) for n in ("x", "y")]
    x = np.random.default_rng(3).standard_normal((2, 3, 4, 1)).astype(np.float32) * 5
    (ours,), _, (expected,) = _both(_model([helper.make_node(op, ["x"], ["y"], **attrs)], vi[:1], vi[1:], opset), {"x": x})
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_logsoftmax_stays_finite_where_softmax_underflows():
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3]) for n in ("x", "y")]
    x = np.array([[0.0, -200.0, -1000.0]], np.float32)
    (ours,), _, (expected,) = _both(_model([helper.make_node("LogSoftmax", ["x"], ["y"])], vi[:1], vi[1:], 13), {"x": x})
    assert np.isfinite(ours).all()
    np.testing.assert_allclose(ours, expected, atol=1e-4)


def _lrn_spec(x, size, alpha, beta, bias):
    """The ONNX spec's formula, channel by channel."""
    c_count = x.shape[1]
    y = np.empty_like(x)
    for c in range(c_count):
        lo, hi = max(0, c - (size - 1) // 2), min(c_count - 1, c + -(-(size - 1) // 2))
        y[:, c] = x[:, c] / (bias + alpha / size * (x[:, lo:hi + 1] ** 2).sum(axis=1)) ** beta
    return y


def test_lrn_even_size_follows_the_spec():  # ONNX Runtime accepts odd sizes only
    x = np.random.default_rng(5).standard_normal((2, 6, 3)).astype(np.float32)
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 6, 3]) for n in ("x", "y")]
    model = _model([helper.make_node("LRN", ["x"], ["y"], size=4, alpha=0.5)], vi[:1], vi[1:], 13)
    (ours,) = ReferenceEvaluator(model, new_ops=overridden_ops()).run(None, {"x": x})
    np.testing.assert_allclose(ours, _lrn_spec(x, 4, 0.5, 0.75, 1.0), rtol=1e-5)


@pytest.mark.parametrize("size", [3, 5])
def test_lrn_normalizes_every_channel(size):
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 6, 3, 3]) for n in ("x", "y")]
    node = helper.make_node("LRN", ["x"], ["y"], size=size, alpha=0.5, beta=0.75, bias=1.0)
    x = np.random.default_rng(4).standard_normal((1, 6, 3, 3)).astype(np.float32)
    (ours,), (upstream,), (expected,) = _both(_model([node], vi[:1], vi[1:], 13), {"x": x})
    np.testing.assert_allclose(ours, expected, atol=1e-5)
    assert np.abs(upstream - expected).max() > 1e-2


def _gather_elements_model(data_shape, index_shape, axis, dtype=TensorProto.FLOAT):
    vi = [helper.make_tensor_value_info("data", dtype, data_shape),
          helper.make_tensor_value_info("index", TensorProto.INT64, index_shape),
          helper.make_tensor_value_info("y", dtype, index_shape)]
    return _model([helper.make_node("GatherElements", ["data", "index"], ["y"], axis=axis)], vi[:2], vi[2:], 13)


def test_gather_elements_along_an_axis_longer_than_64_as_exporters_write_it():
    """BERT's position ids, as torch.onnx (dynamo) exports them: a [1, 16] slice gathered from a [1, 512] buffer."""
    model = _gather_elements_model([1, 512], [1, 16], axis=1, dtype=TensorProto.INT64)
    feeds = {"data": np.arange(512, dtype=np.int64)[None] * 3, "index": np.arange(16, dtype=np.int64)[None] + 100}
    (ours,), _, (expected,) = _both_or_upstream_fails(model, feeds)
    np.testing.assert_array_equal(ours, expected)
    np.testing.assert_array_equal(ours, feeds["data"][:, 100:116])


@pytest.mark.parametrize("data_shape,index_shape,axis", [([3, 100, 4], [3, 7, 4], 1), ([2, 5, 70], [2, 5, 9], -1),
                                                         ([4, 6], [2, 3], 0)])  # the last: indices smaller than data
def test_gather_elements_matches_onnxruntime(data_shape, index_shape, axis):
    rng = np.random.default_rng(6)
    size = data_shape[axis]
    feeds = {"data": rng.standard_normal(data_shape).astype(np.float32),
             "index": rng.integers(-size, size, size=index_shape).astype(np.int64)}  # negative ones too
    (ours,), _, (expected,) = _both_or_upstream_fails(_gather_elements_model(data_shape, index_shape, axis), feeds)
    np.testing.assert_array_equal(ours, expected)


def test_gather_elements_refuses_an_index_out_of_range():
    model = _gather_elements_model([2, 3], [2, 3], axis=1)
    feeds = {"data": np.zeros((2, 3), np.float32), "index": np.full((2, 3), 3, np.int64)}
    with pytest.raises(ValueError, match="out of range"):
        ReferenceEvaluator(model, new_ops=overridden_ops()).run(None, feeds)


def _both_or_upstream_fails(model, feeds):
    """Like _both, but upstream may raise (that is the bug being replaced)."""
    ours = ReferenceEvaluator(model, new_ops=overridden_ops()).run(None, feeds)
    try:
        upstream = ReferenceEvaluator(model).run(None, feeds)
    except ValueError:
        upstream = None
    with OnnxRuntimeRunner(model) as ort:
        expected = list(ort.infer(feeds).values())
    return ours, upstream, expected


def test_runner_records_overrides_the_model_uses():
    with ReferenceRunner(zoo.paddle_conv_net()) as runner:
        assert set(runner.extra["overrides"]) == {"BatchNormalization", "Softmax"}
        assert runner.extra["overrides"]["BatchNormalization"] == OVERRIDES["BatchNormalization"]


def test_runtime_warnings_are_counted_not_printed(recwarn):
    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [3]) for n in ("x", "y")]
    model = _model([helper.make_node("Exp", ["x"], ["y"])], vi[:1], vi[1:], 13)
    with ReferenceRunner(model) as runner:
        out = runner.infer({"x": np.array([1.0, 1000.0, 2.0], np.float32)})
        runner.infer({"x": np.array([1000.0, 1.0, 2.0], np.float32)})
    assert np.isinf(out["y"][1])
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
    assert sum(runner.extra["numpy_warnings"].values()) == 2 and "overflow" in next(iter(runner.extra["numpy_warnings"]))


def _sequence_model():
    """Split x into a sequence, concatenate it back, add 1: a typed sequence in the middle."""
    nodes = [helper.make_node("SplitToSequence", ["x"], ["seq"], name="split", axis=0),
             helper.make_node("ConcatFromSequence", ["seq"], ["cat"], name="concat", axis=0),
             helper.make_node("Add", ["cat", "one"], ["y"], name="add")]
    one = onnx.numpy_helper.from_array(np.ones(1, np.float32), "one")
    return onnx.shape_inference.infer_shapes(_model(
        nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 2])], 13, [one]))


@pytest.mark.parametrize("runner_cls", [ReferenceRunner, OnnxRuntimeRunner])
def test_mark_all_skips_sequences_with_a_reason(runner_cls):
    x = np.arange(8, dtype=np.float32).reshape(4, 2)
    with runner_cls(_sequence_model(), outputs=OutputSelection(mark_all=True)) as runner:
        out = runner.infer({"x": x})
    assert list(out) == ["cat", "y"]
    np.testing.assert_array_equal(out["y"], x + 1)
    assert runner.extra["skipped"] == [{"name": "seq", "reason": "sequence value, not a tensor (not compared)"}]


def test_untyped_sequence_is_dropped_at_run_time():
    model = _sequence_model()
    del model.graph.value_info[:]  # shape inference results gone: only the run shows it is a list
    assert ModelGraph(model).tensor("seq").kind is None
    with OnnxRuntimeRunner(model, outputs=OutputSelection(mark_all=True)) as runner:
        out = runner.infer({"x": np.zeros((4, 2), np.float32)})
    assert "seq" not in out and runner.extra["skipped"][0]["name"] == "seq"


def _if_model():
    """y = If(x.sum() > 0) then x * 2 else x - 1, each branch with two tensors."""
    def branch(name, op, const):
        c = onnx.numpy_helper.from_array(np.array(const, np.float32), f"{name}_c")
        n1 = helper.make_node(op, ["x", f"{name}_c"], [f"{name}_t"], name=f"{name}_op")
        n2 = helper.make_node("Identity", [f"{name}_t"], [f"{name}_out"], name=f"{name}_id")
        return helper.make_graph([n1, n2], name, [], [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, [3])],
                                 initializer=[c])
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], name="sum", keepdims=0),
             helper.make_node("Greater", ["s", "zero"], ["cond"], name="gt"),
             helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=branch("then", "Mul", 2.0),
                              else_branch=branch("else", "Sub", 1.0))]
    zero = onnx.numpy_helper.from_array(np.array(0, np.float32), "zero")
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])], 13, [zero])


def test_subgraph_tensors_are_counted_and_recorded():
    model = _if_model()
    assert ModelGraph(model).subgraph_tensors() == {"branch": 4}
    for runner_cls in (ReferenceRunner, OnnxRuntimeRunner):
        with runner_cls(model, outputs=OutputSelection(mark_all=True)) as runner:
            out = runner.infer({"x": np.ones(3, np.float32)})
        np.testing.assert_array_equal(out["y"], np.full(3, 2.0, np.float32))
        assert runner.extra["not_compared"] == {"subgraph_tensors": 4, "nodes": ["branch"], "per_node": {"branch": 4}}
    with ReferenceRunner(model) as runner:  # without mark_all nothing inside was asked for
        assert "not_compared" not in runner.extra
