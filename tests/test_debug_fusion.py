"""``debug fusion`` logic on a fake TensorRT whose builder fuses every chain of layers that no
marked output interrupts, with a scripted "bad fusion": the engine fails whenever ONNX nodes
``conv2`` and ``relu2`` end up in one engine layer."""
from __future__ import annotations

import json
import math

import onnx
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


def mark_model_outputs(network, model_bytes):
    """What the real parser does with the ONNX graph outputs: mark them as network outputs."""
    wanted = {o.name for o in onnx.load_from_string(model_bytes).graph.output}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        for j in range(layer.num_outputs):
            t = layer.get_output(j)
            if t.name in wanted and not t.is_network_output:
                network.mark_output(t)


def layers_of(graph):
    """The fake engine's layers: one per group, named by its nodes."""
    return lambda b: parse_engine_info({"Layers": [{"Name": " + ".join(g)} for g in json.loads(b)]}, graph)


def install(trt):
    trt._fake.network_factory = lambda: _network(trt)
    trt._fake.build = fusing_build
    trt._fake.on_parse = mark_model_outputs


def _setup(version, judge, keep_dir):
    trt = trt_fakes.fake_trt(version)
    install(trt)
    model = chain_model()
    graph = ModelGraph(model)
    builder = EngineBuilder(trt, model, graph, TrtBuildConfig(persistent_cache=False), show_progress=False)
    return fusion.FusionSession(NetworkVariants(builder), judge, layers_of(graph), keep_dir), graph


@pytest.mark.parametrize("version", ["8.6.1", "10.8.0.43", "11.0.0.114"])
def test_the_planted_bad_fusion_is_named_with_its_workaround(tmp_path, version):
    calls = []
    session, graph = _setup(version, bad_when_fused("conv2", "relu2", calls), tmp_path / "keep")
    model = chain_model()
    result = fusion.search_fusion(session, graph, tmp_path, model=model)
    r = result.report
    assert result.tensors == ["conv2_out"]  # marking the tensor between them splits the fusion
    assert result.layers == [" + ".join(NODES)] and result.nodes == NODES  # the unmodified engine fused them all
    assert r["workaround"]["trt_outputs"] == ["conv2_out"] and r["workaround"]["verdict"] == "good"
    assert r["candidates"] == len(NODES) - 1  # every tensor inside the fused layer (not the model output)
    assert r["search_builds"] <= 2 * math.ceil(math.log2(r["candidates"])) + 1
    assert r["search_builds"] + 2 <= r["build_bound"]
    assert session.variants.builds == r["builds"] - 1  # one parse for the search; the workaround is a file, parsed anew
    # the workaround: the model's own output first, the barrier after it; its build (a new parse) passes
    saved = onnx.load(tmp_path / "workaround.onnx")
    assert [o.name for o in saved.graph.output] == ["logits", "conv2_out"]
    assert saved.graph.output[1].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert [o.name for o in model.graph.output] == ["logits"]  # the caller's model is left as it was
    assert json.loads(calls[-1]) == [NODES[:3], NODES[3:]]  # that engine was split at conv2_out
    assert r["workaround"]["onnx"] == str(tmp_path / "workaround.onnx")
    from trtdebug.render.debug_html import render_debug_html

    page = render_debug_html(r)  # --html: the fused layer, its nodes and the workaround on the page
    assert "Miscompiled fusion" in page and "conv2_out" in page and "Workaround" in page
    assert "workaround.onnx" in page


def test_not_a_fusion_problem_and_nothing_failing_are_clear_errors(tmp_path):
    session, graph = _setup("8.6.1", bad_when_fused("conv2", "ghost", []), tmp_path / "keep")
    with pytest.raises(NotFailing):
        fusion.search_fusion(session, graph, tmp_path / "a")
    session.judge = lambda engine: Judgement(Verdict.BAD, "wrong")
    with pytest.raises(UsageError, match="not a fusion"):
        fusion.search_fusion(session, graph, tmp_path / "b")
