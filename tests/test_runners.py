"""ONNX Runtime and reference runners on real models: every layer, names, order, errors."""
import numpy as np
import onnx
import pytest

from trtdebug import zoo
from trtdebug.errors import BackendError, FeedError, TrtDebugError, UsageError
from trtdebug.model import ModelGraph, OutputSelection
from trtdebug.runners.onnxruntime import OnnxRuntimeRunner, resolve_providers
from trtdebug.runners.reference import ReferenceRunner


@pytest.fixture(scope="module")
def transformer():
    return onnx.shape_inference.infer_shapes(zoo.transformer())


def _feed(seed=0, shape=(2, 8, 64)):
    return {"x": np.random.default_rng(seed).random(shape, dtype=np.float32)}


def test_mark_all_agrees_between_onnxruntime_and_reference(transformer):
    graph = ModelGraph(transformer)
    sel = OutputSelection(mark_all=True)
    with OnnxRuntimeRunner(transformer, outputs=sel, graph=graph) as ort_runner:
        a = ort_runner.infer(_feed())
        assert ort_runner.last_inference_time > 0
    with ReferenceRunner(transformer, outputs=sel, graph=graph) as ref_runner:
        b = ref_runner.infer(_feed())
    assert list(a) == list(b) == [n for n in graph.tensor_order if n != "x"]
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-4, err_msg=name)


def test_default_returns_only_model_outputs_and_dynamic_shapes_work(transformer):
    with OnnxRuntimeRunner(transformer) as r:
        out1 = r.infer(_feed(shape=(1, 5, 64)))
        out2 = r.infer(_feed(shape=(3, 11, 64)))
    assert list(out1) == ["y"] and out1["y"].shape == (1, 5, 64) and out2["y"].shape == (3, 11, 64)


def test_feeds_are_checked_before_running(transformer):
    with OnnxRuntimeRunner(transformer) as r:
        with pytest.raises(FeedError, match="unknown input"):
            r.infer({"x": np.zeros((1, 2, 64), np.float32), "z": np.zeros(1)})
        with pytest.raises(FeedError, match="missing"):
            r.infer({})
        with pytest.raises(FeedError, match="dtype"):
            r.infer({"x": np.zeros((1, 2, 64), np.float64)})
        with pytest.raises(FeedError, match="shape"):
            r.infer({"x": np.zeros((1, 2, 32), np.float32)})


def test_runner_must_be_active():
    r = OnnxRuntimeRunner(zoo.conv_net(batch=1))
    with pytest.raises(TrtDebugError):
        r.infer({})


def test_unknown_provider_is_a_usage_error():
    with pytest.raises(UsageError, match="not available"):
        resolve_providers(["NoSuchExecutionProvider"])
    assert resolve_providers(["cpu"]) == ["CPUExecutionProvider"]


def test_model_onnxruntime_cannot_load_is_a_backend_error():
    m = onnx.parser.parse_model(
        """<ir_version: 8, opset_import: ["" : 17, "com.example" : 1]>
        g (float[2] x) => (float[2] y) { y = com.example.Mystery(x) }"""
    )
    with pytest.raises(BackendError, match="ONNX Runtime could not load"):
        OnnxRuntimeRunner(m).activate()


def test_conv_net_reference_matches_onnxruntime():
    model = onnx.shape_inference.infer_shapes(zoo.conv_net(batch=2))
    feed = {"image": np.random.default_rng(1).random((2, 3, 32, 32), dtype=np.float32)}
    sel = OutputSelection(mark_all=True)
    with OnnxRuntimeRunner(model, outputs=sel) as r:
        a = r.infer(feed)
    with ReferenceRunner(model, outputs=sel) as r:
        b = r.infer(feed)
    assert "stage1/bn_out" in a and list(a) == list(b)
    np.testing.assert_allclose(a["probs"], b["probs"], rtol=1e-4, atol=1e-5)


def test_prepare_work_is_not_inference_time():
    """A runner that builds for the feed shapes (TensorRT without profiles) does it in _prepare, untimed."""
    import time

    from trtdebug.runners.base import Runner, TensorMeta

    class SlowBuild(Runner):
        def _activate(self):
            self.built_for = None

        def _input_metadata(self):
            return {"x": TensorMeta(np.dtype(np.float32), ("N",))}

        def _prepare(self, feeds):
            time.sleep(0.2)
            self.built_for = feeds["x"].shape

        def _infer(self, feeds):
            assert self.built_for == feeds["x"].shape
            return {"y": feeds["x"] * 2}

    with SlowBuild("slow") as r:
        out = r.infer({"x": np.ones(3, np.float32)})
    assert out["y"].tolist() == [2, 2, 2] and r.last_inference_time < 0.1
