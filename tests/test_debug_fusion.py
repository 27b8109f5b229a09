"""``debug fusion`` logic on a fake TensorRT whose builder fuses every chain of layers that no
marked output interrupts, with a scripted "bad fusion": the engine fails whenever ONNX nodes
``conv2`` and ``relu2`` end up in one engine layer."""
from __future__ import annotations

import json
import math

import pytest

import trt_fakes
from test_debug_tactics import NODES, _network, chain_model
from trtdebug.debug import fusion
from trtdebug.debug.search import Judgement, NotFailing, Verdict
from trtdebug.errors import UsageError
from trtdebug.model import ModelGraph
from trtdebug.runners.tensorrt import TrtBuildConfig
from trtdebug.runners.tensorrt.builder import EngineBuilder
from trtdebug.runners.tensorrt.inspector import parse_engine_info
from trtdebug.runners.tensorrt.variants import NetworkVariants


def fusing_build(builder, network, config):
    """Engine = the layer groups: a layer joins the previous group unless its input is a network output."""
    groups = []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if groups and not layer.get_input(0).is_network_output:
            groups[-1].append(layer.name)
        else:
            groups.append([layer.name])
    return json.dumps(groups).encode()


def bad_when_fused(a, b, calls):
    def judge(engine):
        calls.append(engine)
        together = any(a in g and b in g for g in json.loads(engine))
        return Judgement(Verdict.BAD if together else Verdict.GOOD, f"{a}+{b} fused: {together}")
    return judge


def _setup(version):
    trt = trt_fakes.fake_trt(version)
    trt._fake.network_factory = lambda: _network(trt)
    trt._fake.build = fusing_build
    model = chain_model()
    graph = ModelGraph(model)
    builder = EngineBuilder(trt, model, graph, TrtBuildConfig(persistent_cache=False), show_progress=False)
    layers_of = lambda b: parse_engine_info({"Layers": [{"Name": " + ".join(g)} for g in json.loads(b)]}, graph)  # noqa: E731
    return NetworkVariants(builder), graph, layers_of


@pytest.mark.parametrize("version", ["8.6.1", "10.8.0.43", "11.0.0.114"])
def test_the_planted_bad_fusion_is_named_with_its_workaround(tmp_path, version):
    variants, graph, layers_of = _setup(version)
    calls = []
    result = fusion.search_fusion(variants, bad_when_fused("conv2", "relu2", calls), layers_of, graph, tmp_path)
    r = result.report
    assert result.tensors == ["conv2_out"]  # marking the tensor between them splits the fusion
    assert result.layers == [" + ".join(NODES)] and result.nodes == NODES  # the unmodified engine fused them all
    assert r["workaround"]["trt_outputs"] == ["conv2_out"] and r["workaround"]["verdict"] == "good"
    assert r["candidates"] == len(NODES) - 1  # every tensor inside the fused layer (not the model output)
    assert r["search_builds"] <= 2 * math.ceil(math.log2(r["candidates"])) + 1
    assert r["search_builds"] + 2 <= r["build_bound"]
    assert variants.builds == r["builds"]  # one parse, every build a variant of it
    from trtdebug.render.debug_html import render_debug_html

    page = render_debug_html(r)  # --html: the fused layer, its nodes and the workaround on the page
    assert "Miscompiled fusion" in page and "conv2_out" in page and "Workaround" in page


def test_not_a_fusion_problem_and_nothing_failing_are_clear_errors(tmp_path):
    variants, graph, layers_of = _setup("8.6.1")
    with pytest.raises(NotFailing):
        fusion.search_fusion(variants, bad_when_fused("conv2", "ghost", []), layers_of, graph, tmp_path / "a")
    always_bad = lambda engine: Judgement(Verdict.BAD, "wrong")  # noqa: E731
    with pytest.raises(UsageError, match="not a fusion"):
        fusion.search_fusion(variants, always_bad, layers_of, graph, tmp_path / "b")
