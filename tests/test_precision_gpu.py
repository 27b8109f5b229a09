"""Reduced precision on a real GPU (TensorRT 8.6 on the H200: ``pytest -m gpu tests/test_precision_gpu.py``).

* an FP16 ``--mark-all`` engine really runs in FP16: most compute layers FP16, close to the unmodified
  engine's count (before issue 10 item 0, marked outputs forced most layers to FP32);
* a model converted to FP16 at the ONNX level builds and runs, FP16-accurate.
Cheap: zoo models, builder optimization level 0.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from trtdebug import zoo
from trtdebug.model import ModelGraph, OutputSelection
from trtdebug.runners.tensorrt import Profile, TrtBuildConfig, make_trt_runner

pytestmark = pytest.mark.gpu
FAST = dict(builder_optimization_level=0)
MARK_ALL = OutputSelection(mark_all=True)


def _cases():
    conv = onnx.shape_inference.infer_shapes(zoo.conv_net(batch=2))
    tr = onnx.shape_inference.infer_shapes(zoo.transformer())
    rng = np.random.default_rng(0)
    return {
        "conv_net": (conv, {}, {"image": rng.standard_normal((2, 3, 32, 32)).astype(np.float32)}),
        "transformer": (tr, {"profiles": (Profile(min={"x": (1, 4, 64)}, opt={"x": (2, 8, 64)}, max={"x": (4, 16, 64)}),)},
                        {"x": rng.standard_normal((2, 8, 64)).astype(np.float32)}),
    }


@pytest.mark.parametrize("name", ["conv_net", "transformer"])
def test_fp16_mark_all_engine_runs_mostly_in_fp16(name):
    model, cfg, feeds = _cases()[name]
    graph = ModelGraph(model)
    with make_trt_runner(model, config=TrtBuildConfig(fp16=True, **cfg, **FAST), outputs=MARK_ALL, graph=graph,
                         model=model) as r:
        out = r.infer(feeds)
        extra = dict(r.extra)
    compared, before = extra["layer_precisions"], extra["layer_precisions_unmodified"]
    line = next(n for n in extra["notes"] if n.startswith("layer precisions:"))
    print(name, "route:", extra["precision_route"], "|", line, "| reduced outputs", len(extra["reduced_precision_outputs"]),
          "debug", len(extra["marked_as_debug"]))
    assert extra["precision_route"] in ("reduced-precision output types", "debug tensors")
    assert len(extra["reduced_precision_outputs"]) + len(extra["marked_as_debug"]) >= 10
    if set(compared) == {"unknown"}:
        # seen on the H200 (8.6): the transformer compiles to one Myelin layer whose precision the
        # inspector does not report; the count is then only said, not checked
        assert name == "transformer" and "unknown" in line
        return
    total = sum(compared.values())
    assert compared.get("FP16", 0) > total / 2  # most layers in FP16 (before: most FP32)
    assert compared.get("FP32", 0) <= before.get("FP32", 0) + max(2, total // 5)  # close to the unmodified engine
    assert len(out) >= 10 and all(v.dtype != np.float16 for v in out.values())  # widened on the host


def test_onnx_level_fp16_model_builds_and_is_fp16_accurate():
    from trtdebug.precision.attribution import run_all_tensors
    from trtdebug.precision.convert import convert

    model, cfg, feeds = _cases()["transformer"]
    fp16 = convert(model, "fp16", ["Softmax"]).model
    graph = ModelGraph(fp16)
    with make_trt_runner(fp16, config=TrtBuildConfig(fp16=True, **cfg, **FAST), graph=graph, model=fp16) as r:
        y = r.infer(feeds)["y"]
        extra = dict(r.extra)
    ref = run_all_tensors(model, feeds)["y"]
    err = float(np.abs(y - ref).max())
    print("ONNX-level FP16 transformer on TensorRT:", err, extra.get("layer_precisions"))
    assert 0 < err < 5e-2


# -- debug precision --backend trt (issue 10 item 3): both routes on a planted overflow, one build when FP16 passes --
def _planted_encoder():
    return zoo.with_fp16_overflow(zoo.transformer(blocks=2, batch=1, seq=16), block=1)


@pytest.mark.parametrize("route", ["onnx", "builder"])
def test_debug_precision_trt_fixes_a_planted_overflow(tmp_path, route):
    from trtdebug.precision.debug import debug_precision

    result = debug_precision(_planted_encoder(), tmp_path / "out", backend="trt", route=route,
                             build_options={"tf32": False, **FAST}, html=tmp_path / "p.html", timeout=300)
    data = result.as_dict()
    print(route, "keep", result.keep_fp32, "builds", result.builds, "latency", data["latency_ms"],
          "layers", data["layer_precisions"], "before", result.before.get("outputs"))
    assert result.route == route and result.backend == "trt"
    assert not result.before["passed"] and result.passed  # the all-FP16 engine fails, the fixed one passes
    assert "planted/up" in result.keep_fp32 and len(result.keep_fp32) <= 6
    assert data["latency_ms"]["unfixed"] > 0 and data["latency_ms"]["fixed"] > 0  # the cost of the fix, measured
    assert (tmp_path / "out" / "model_fp16.onnx").exists() == (route == "onnx")
    assert "planted/up" in (tmp_path / "p.html").read_text()


def test_debug_precision_trt_takes_one_build_when_all_fp16_passes(tmp_path):
    from trtdebug.precision.debug import debug_precision

    result = debug_precision(zoo.transformer(blocks=2, batch=1, seq=16), tmp_path / "out", backend="trt",
                             atol=3e-2, rtol=3e-2, build_options={"tf32": False, **FAST}, timeout=300)
    assert result.passed and result.builds == 1 and result.keep_fp32 == [] and result.attribution is None
    assert result.before["latency_ms"] > 0 and result.before["layer_precisions"]
