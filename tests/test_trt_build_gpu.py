"""Engine building for searches, on a real GPU (``pytest -m gpu tests/test_trt_build_gpu.py``).

The persistent timing cache, one-line parse errors with their cause, build progress from
TensorRT 8.6's log, variants of one parsed network, and a build inside an isolated child.
Small models; the builder optimization level stays low except where timing is the point.
"""
from __future__ import annotations

import logging
import re
import time

import onnx
import pytest

from trtdebug import zoo
from trtdebug.errors import ParseError
from trtdebug.isolation import run_isolated
from trtdebug.model import ModelGraph
from trtdebug.runners.tensorrt import TrtBuildConfig
from trtdebug.runners.tensorrt import timing_cache as tc

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def conv():
    model = onnx.shape_inference.infer_shapes(zoo.conv_net(batch=2))
    return model, ModelGraph(model)


def _builder(model, graph, cfg):
    import tensorrt as trt

    from trtdebug.runners.tensorrt.builder import EngineBuilder

    return EngineBuilder(trt, model, graph, cfg, show_progress=False)


def _build_timed(model, graph, cfg):
    """(seconds, cache hits TensorRT reports, the builder) for one build whose cache is then saved."""
    eb = _builder(model, graph, cfg)
    lines = []
    start = time.perf_counter()
    with eb.logger.listen(lambda sev, msg: lines.append(msg)):
        eb.build()
    seconds = time.perf_counter() - start
    eb.save_timing_cache()
    hits = [int(m.group(1)) for line in lines for m in [re.search(r"timing cache: \d+ entries, (\d+) hits", line)] if m]
    return seconds, hits, eb


def test_second_build_reuses_the_persistent_cache_and_8_6_progress_comes_from_the_log(conv):
    import tensorrt as trt

    from trtdebug.runners.tensorrt.compat import detect
    from trtdebug.runners.tensorrt.progress import PHASE_DONE, PHASE_TACTICS

    model, graph = conv
    cfg = TrtBuildConfig(tf32=False)  # the default optimization level: timing is what a cache saves
    first_s, first_hits, first = _build_timed(model, graph, cfg)
    path = tc.default_cache_path(trt)
    assert not first.cache_loaded and path.is_file() and path.stat().st_size > 0
    print("cache file:", path, path.stat().st_size, "bytes; first build", round(first_s, 2), "s, hits", first_hits)
    if not detect(trt).progress_monitor:  # 8.6: the phases came from the log
        phases = [p for p, _ in first.last_phases]
        print("8.6 build timeline:", first.last_phases)
        assert PHASE_TACTICS in phases and phases[-1] == PHASE_DONE

    tc._PROCESS_CACHES.clear()  # as if in a new process: the cache now comes from the file
    second_s, second_hits, second = _build_timed(model, graph, cfg)
    # the same build without a cache, in the same (now warmed-up) process, is the fair comparison
    cold_s, cold_hits, _ = _build_timed(model, graph, TrtBuildConfig(tf32=False, persistent_cache=False))
    print("second build (file cache)", round(second_s, 2), "s, hits", second_hits,
          "| without a cache", round(cold_s, 2), "s, hits", cold_hits)
    assert second.cache_loaded
    assert second_s < cold_s or any(h > 0 for h in second_hits)


def _build_with_corrupt_cache(model_bytes: bytes, cache_home: str) -> dict:
    """In a spawned child: a garbage default cache file must cost a warning, not the build."""
    import os

    import tensorrt as trt

    os.environ["XDG_CACHE_HOME"] = cache_home
    model = onnx.load_from_string(model_bytes)
    path = tc.default_cache_path(trt)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00\x01 this is not a timing cache")
    warnings = []
    handler = logging.Handler()
    handler.emit = lambda record: warnings.append(record.getMessage())
    logging.getLogger(tc.__name__).addHandler(handler)
    eb = _builder(model, ModelGraph(model), TrtBuildConfig(builder_optimization_level=0))
    engine = eb.build().engine_bytes
    saved = eb.save_timing_cache()
    return {"engine": len(engine), "warnings": warnings, "saved": saved,
            "replaced": not path.read_bytes().startswith(b"\x00\x01 this")}


def test_corrupt_cache_is_a_warning_in_an_isolated_build(conv, tmp_path):
    model, _ = conv
    out = run_isolated(_build_with_corrupt_cache, model.SerializeToString(), str(tmp_path / "xdg"), timeout=300)
    assert out.ok, out.describe() + "\n" + out.stderr_tail
    print("corrupt-cache build:", out.value["warnings"], "in", round(out.seconds, 1), "s")
    assert out.value["engine"] > 0 and out.value["saved"] and out.value["replaced"]
    assert len(out.value["warnings"]) == 1 and "could not be read" in out.value["warnings"][0]


def test_if_with_branches_of_different_shapes_fails_with_the_cause_on_one_line():
    from test_trt_build import _if_model

    model = _if_model()
    eb = _builder(model, ModelGraph(model), TrtBuildConfig(persistent_cache=False))
    with pytest.raises(ParseError) as info:
        eb.parse()
    msg = str(info.value)
    print("parse error:", msg)
    print("details:", info.value.details)
    assert "\n" not in msg and "If_0" in msg
    assert "shape" in msg.lower(), "the cause after the 'Invalid Node' header was dropped"


def test_three_variants_of_one_parsed_conv_net(conv):
    import tensorrt as trt

    from trtdebug.runners.tensorrt.engine import deserialize, describe_io
    from trtdebug.runners.tensorrt.inspector import inspect_engine_layers
    from trtdebug.runners.tensorrt.builder import layers_of_nodes
    from trtdebug.runners.tensorrt.variants import NetworkVariants

    model, graph = conv
    eb = _builder(model, graph, TrtBuildConfig(fp16=True, builder_optimization_level=0, persistent_cache=False))

    def engine_of(result):
        runtime, engine = deserialize(trt, eb.logger, result.engine_bytes)
        outputs = sorted(t.name for t in describe_io(trt, engine) if not t.is_input)
        info = inspect_engine_layers(engine, graph)
        conv1 = {layer.precision for layer in info.layers_for_node("stage1/Conv")}
        return outputs, conv1, {layer.precision for layer in info.compute_layers}

    parses = []
    parse = eb.parse
    eb.parse = lambda: parses.append(1) or parse()
    with NetworkVariants(eb) as v:
        plain = engine_of(v.build())
        marked = engine_of(v.build(["stage0/relu_out", "stage1/pool_out"]))
        fp32 = engine_of(v.build(fp32_nodes=["stage1/Conv"]))
        kept = layers_of_nodes(v.parsed.network, graph, ["stage1/Conv"])["stage1/Conv"]
        restored = [(layer.precision_is_set, layer.output_type_is_set(0)) for layer in kept]
    print("variants (outputs, stage1/Conv precisions, all precisions):", plain, marked, fp32, sep="\n  ")
    assert len(parses) == 1
    assert plain[0] == ["probs"]  # (TensorRT may pick FP32 kernels for so small a net: not asserted)
    assert marked[0] == ["probs", "stage0/relu_out", "stage1/pool_out"]
    assert fp32[0] == ["probs"]  # the previous variant's extra outputs were unmarked
    assert fp32[1] == {"FP32"}
    assert kept and restored == [(False, False)] * len(kept)  # the FP32 request was undone on the parsed network
