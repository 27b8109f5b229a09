"""``debug precision --backend trt`` on the CPU: route selection on the release fakes (8.6, 10.x, 11.x),
the whole search driven through fake TensorRT builds (the flags and layer precisions each route sets are
checked on the network and config the fake builder receives; the engine's numbers are those of the
candidate emulated on ONNX Runtime), and the real TensorRT-RTX builder building the ONNX route's
converted candidates strongly typed - running them needs a GPU, so the command stops with exit 3."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import trt_fakes
from test_precision_attribution import feeds, planted
from trtdebug.errors import UsageError
from trtdebug.model import ModelGraph
from trtdebug.precision import engines
from trtdebug.precision.attribution import run_all_tensors
from trtdebug.precision.convert import convert, emulate
from trtdebug.precision.search import find_keep_set
from trtdebug.runners.tensorrt import TrtBuildConfig, compat, marking
from trtdebug.runners.tensorrt.builder import EngineBuilder

SCRIPT = Path(sys.executable).with_name("trtdebug")


def _features(version):
    return compat.detect(trt_fakes.fake_trt(version))


@pytest.mark.parametrize("version, auto, onnx_strong", [("8.6.1", "builder", False), ("10.8.0.43", "onnx", True),
                                                        ("10.16.1.11", "onnx", True), ("11.0.0.114", "onnx", True)])
def test_route_is_chosen_by_what_the_release_has(version, auto, onnx_strong):
    f = _features(version)
    assert engines.plan_route(f, "fp16", "auto").route == auto
    onnx_plan = engines.plan_route(f, "fp16", "onnx")
    assert onnx_plan.route == "onnx" and onnx_plan.strongly_typed is onnx_strong
    model = planted()
    _, fields = engines.candidate_build(onnx_plan, model, "fp16", ["planted/up", "planted/down"])
    if onnx_strong:
        assert fields == {"strongly_typed": True}
    else:  # 8.6: weak typing, so the FP16 flag builds it and the kept nodes are pinned too
        assert fields["fp16"] and set(fields["fp32_nodes"]) >= {"planted/up", "planted/down"}


def test_builder_route_is_refused_on_11_in_one_line():
    with pytest.raises(UsageError) as info:
        engines.plan_route(_features("11.0.0.114"), "fp16", "builder")
    message = str(info.value)
    assert "\n" not in message and "--route builder is not available" in message and "--route onnx" in message
    plan = engines.plan_route(_features("10.8.0.43"), "fp16", "builder")
    assert plan.route == "builder" and "precision constraints" in plan.why
    with pytest.raises(UsageError, match="BF16"):  # 8.6 has neither BF16 flag nor strong typing
        engines.plan_route(_features("8.6.1"), "bf16", "auto")


def _network_of(trt, model):
    """The fake parser's network for ``model``: one layer per ONNX node, named and tagged as the parser does."""
    tensors = {}

    def t(name):
        return tensors.setdefault(name, trt_fakes.tensor(trt, name, shape=(1, 8, 64)))
    inits = {i.name for i in model.graph.initializer}
    inputs = [t(i.name) for i in model.graph.input]
    layers = [trt_fakes.layer(trt, n.name, "ELEMENTWISE", [t(x) for x in n.input if x and x not in inits],
                              [t(o) for o in n.output], f"[ONNX Layer: {n.name}]") for n in model.graph.node]
    return trt_fakes.network(trt, inputs, layers, [t(o.name) for o in model.graph.output])


class FakeEngines:
    """The evaluator's ``run``: build on the fake with the candidate's config, record what TensorRT was told,
    and compute what such an engine would: the candidate's FP16 storage, emulated on ONNX Runtime."""

    def __init__(self, trt):
        self.trt, self.builds, self.current = trt, [], None
        trt._fake.network_factory = lambda: _network_of(trt, self.current)

    def __call__(self, model_bytes, config, feeds_):
        trt = self.trt
        model = onnx.load_from_string(model_bytes)
        self.current = model
        fields = {k: v for k, v in config.items() if k != "timing_cache"}
        result = EngineBuilder(trt, model, ModelGraph(model), TrtBuildConfig(show_progress=False, **fields)).build()
        cfg, net = trt._fake.configs[-1], trt._fake.networks[-1]
        flags = trt._fake.network_flags[-1]
        ncf = trt.NetworkDefinitionCreationFlag
        fp32 = [layer.name for layer in marking.layers(net)  # 11.x has no per-layer precision at all
                if trt_fakes.has_member(trt._fake.version, "ILayer", "precision_is_set") and layer.precision_is_set]
        self.builds.append({
            "strongly_typed": compat.detect(trt).strongly_typed and bool(flags & (1 << int(ncf.STRONGLY_TYPED))),
            "fp16_flag": hasattr(trt.BuilderFlag, "FP16") and cfg.get_flag(trt.BuilderFlag.FP16),
            "obey": hasattr(trt.BuilderFlag, "OBEY_PRECISION_CONSTRAINTS")
            and cfg.get_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS),
            "fp32_layers": fp32, "converted": any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer),
            "engine": bool(result.engine_bytes)})
        emulated = emulate(model if self.builds[-1]["converted"] else convert(model, "fp16", fp32).model, "fp16")
        values = run_all_tensors(emulated, feeds_)
        casts = sum(n.name.startswith("trtdebug_cast/") and n.name.endswith("/to_fp32") for n in model.graph.node)
        slower = len(fp32) or casts  # stand-in cost of the fix: FP32 layers, or Casts back to float32
        return {"outputs": {o.name: values[o.name] for o in model.graph.output}, "latency_ms": 1.0 + 0.1 * slower,
                "layer_precisions": {"FP16": len(model.graph.node) - slower, "FP32": slower}, "build_s": 0.0,
                "notes": result.notes}


@pytest.mark.parametrize("version, route", [("8.6.1", "auto"), ("8.6.1", "onnx"), ("10.8.0.43", "builder"),
                                            ("10.8.0.43", "auto"), ("11.0.0.114", "auto")])
def test_search_through_fake_builds_sets_what_each_route_needs(version, route):
    trt = trt_fakes.fake_trt(version)
    fake = FakeEngines(trt)
    evaluators = []

    def make(model):
        evaluators.append(engines.TrtEvaluator(model, feeds(), "fp16", route=route, isolate=False, trt=trt, run=fake))
        return evaluators[-1]

    result = find_keep_set(planted(), feeds(), evaluator=make)
    evaluators[0].close()
    taken = evaluators[0].route
    assert result.passed and result.route == taken and result.backend == "trt"
    assert {"planted/up", "planted/down"} <= set(result.keep_fp32) and result.builds == len(fake.builds) == 2
    first, fixed = fake.builds
    assert first["engine"] and fixed["engine"]
    if taken == "builder":  # FP32 model, FP16 flag, the kept nodes' layers FP32 and binding
        assert not fixed["converted"] and fixed["fp16_flag"] and fixed["obey"]
        assert set(fixed["fp32_layers"]) == set(result.keep_fp32) and result.model is None
    elif fixed["strongly_typed"]:  # the converted model as typed: no flags, no layer precisions
        assert fixed["converted"] and not fixed["fp16_flag"] and not fixed["fp32_layers"]
        assert version != "8.6.1" and result.model is not None
    else:  # 8.6's ONNX route: the converted model, FP16 flag, kept nodes pinned
        assert version == "8.6.1" and fixed["converted"] and fixed["fp16_flag"] and fixed["obey"]
        assert set(result.keep_fp32) <= set(fixed["fp32_layers"])
    data = result.as_dict()
    assert data["latency_ms"]["unfixed"] == 1.0 and data["latency_ms"]["fixed"] > 1.0  # the cost of the fix
    counts = data["layer_precisions"]
    assert counts["fixed"]["FP32"] > counts["unfixed"]["FP32"] == 0 and data["route_reason"]
    assert data["ranking_source"].startswith("ONNX Runtime")


def _segfaults(model_bytes, config, feeds_):
    import os
    import signal

    os.kill(os.getpid(), signal.SIGSEGV)


def _no_gpu(model_bytes, config, feeds_):
    from trtdebug.errors import BackendUnavailableError

    raise BackendUnavailableError("TensorRT 10.8.0.43 cannot run the engine here: no usable CUDA device")


def test_a_crashing_candidate_is_a_verdict_and_a_missing_gpu_ends_the_search():
    trt = trt_fakes.fake_trt("10.8.0.43")  # the parent's feature detection; the child runs the function given
    crashing = engines.TrtEvaluator(planted(), feeds(), "fp16", trt=trt, run=_segfaults, timeout=120)
    trial = crashing([])
    assert trial.outputs is None and trial.failure.startswith("candidate crashed (signal SIGSEGV")
    from trtdebug.errors import BackendUnavailableError

    no_gpu = engines.TrtEvaluator(planted(), feeds(), "fp16", trt=trt, run=_no_gpu, timeout=120)
    with pytest.raises(BackendUnavailableError, match="^TensorRT 10.8.0.43 cannot run the engine here") as info:
        find_keep_set(planted(), feeds(), evaluator=lambda model: no_gpu)
    assert info.value.exit_code == 3


# -- the real TensorRT-RTX builder (CPU): the ONNX route's candidates build strongly typed ------------------------
def test_rtx_builds_the_onnx_route_candidates_strongly_typed():
    trt = pytest.importorskip("tensorrt_rtx")
    model = planted()
    evaluator = engines.TrtEvaluator(model, feeds(), "fp16", build_options={"module": "tensorrt_rtx",
                                                                           "builder_optimization_level": 0})
    assert evaluator.route == "onnx" and evaluator.plan.strongly_typed
    assert not evaluator.extra["builder_route_available"]
    for keep in ([], ["planted/up", "planted/down"]):
        candidate, fields = evaluator.config_for(keep)
        builder = EngineBuilder(trt, candidate, ModelGraph(candidate), TrtBuildConfig(show_progress=False, **fields))
        network = builder.parse().network
        types = {t.name: compat.dtype_name(t.dtype) for layer in marking.layers(network)
                 for t in (layer.get_output(j) for j in range(layer.num_outputs))}
        assert types["block0/fc1_out"] == "HALF" and types["y"] == "FLOAT"  # the model's types, as written
        assert types["planted/up_out"] == ("FLOAT" if keep else "HALF")
        assert len(builder.build().engine_bytes) > 1000
    evaluator.close()


def test_cli_rtx_builds_then_stops_with_exit_3_in_one_line(tmp_path):
    pytest.importorskip("tensorrt_rtx")
    src = tmp_path / "planted.onnx"
    onnx.save(planted(), str(src))
    done = subprocess.run([str(SCRIPT), "debug", "precision", str(src), "--out", str(tmp_path / "o"), "--backend", "trt",
                           "--trt-rtx", "--builder-optimization-level", "0", "--timeout", "300"],
                          capture_output=True, text=True)
    if done.returncode == 0:
        pytest.skip("this machine has a GPU TensorRT-RTX runs on")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 3 and len(lines) == 1, done.stderr
    assert lines[0].startswith("trtdebug: error: TensorRT-RTX ") and "the engine was built" in lines[0]
    assert "no usable CUDA device" in lines[0] or "compute capability" in lines[0]
    assert not (tmp_path / "o").exists()  # nothing half-written
    refused = subprocess.run([str(SCRIPT), "debug", "precision", str(src), "--out", str(tmp_path / "o"), "--backend",
                              "trt", "--trt-rtx", "--route", "builder"], capture_output=True, text=True)
    assert refused.returncode == 2 and "--route builder is not available" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
