"""``debug tactics`` logic on fakes of real TensorRT releases.

The fake builder below behaves as TensorRT does towards the two mechanisms: it offers each layer
its algorithms through the algorithm selector (FP16 ones only with the FP16 flag) and picks the
fastest allowed one, reporting the final choices; with ``EDITABLE_TIMING_CACHE`` it takes a
layer's tactic from the cache entry of its key when there is one, else times (picks) and writes
the entry.  "Timing noise" is scripted per build.  The engine it returns lists the choices, and
a scripted judge fails any engine where layer ``relu2`` runs a given tactic.
"""
from __future__ import annotations

import hashlib
import json
import math

import pytest
from onnx import TensorProto, helper

import trt_fakes
from trtdebug.debug import tactics as dt
from trtdebug.debug.search import Judgement, NotFailing, Verdict
from trtdebug.errors import UsageError
from trtdebug.model import ModelGraph
from trtdebug.runners.tensorrt import TrtBuildConfig, compat
from trtdebug.runners.tensorrt import tactics as tt

NODES = ["conv1", "relu1", "conv2", "relu2", "conv3", "relu3", "conv4", "pool"]
SELECTOR_RELEASES = ["8.6.1", "10.0.1", "10.8.0.43", "10.16.1.11"]
CACHE_RELEASES = ["11.0.0.114", "11.4.0.106"]


def chain_model():
    nodes, prev = [], "image"
    for i, name in enumerate(NODES):
        out = "logits" if i == len(NODES) - 1 else f"{name}_out"
        nodes.append(helper.make_node("Relu", [prev], [out], name=name))
        prev = out
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 8, 16, 16])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 8, 16, 16])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _network(trt):
    image = trt_fakes.tensor(trt, "image", shape=(1, 8, 16, 16))
    layers, prev = [], image
    for i, name in enumerate(NODES):
        out = trt_fakes.tensor(trt, "logits" if i == len(NODES) - 1 else f"{name}_out", shape=(1, 8, 16, 16))
        layers.append(trt_fakes.layer(trt, name, "ACTIVATION", [prev], [out], f"[ONNX Layer: {name}]"))
        prev = out
    return trt_fakes.network(trt, [image], layers, [prev])


def _key(layer):
    return "0x" + hashlib.md5(layer.encode()).hexdigest()


class FakeBuilds:
    """What TensorRT does with our selector / editable cache, per build; ``noisy`` layers alternate
    their fastest tactic from build to build (timing noise)."""

    def __init__(self, trt, *, noisy=("relu2",)):
        self.trt, self.noisy, self.n = trt, set(noisy), 0
        trt._fake.network_factory = lambda: _network(trt)
        trt._fake.build = self

    def offered(self, config):
        """(implementation, tactic, I/O types) of each algorithm of a layer; FP16 ones with the FP16 flag."""
        trt = self.trt
        algs = [(1, 100, ("FLOAT", "FLOAT")), (1, 101, ("FLOAT", "FLOAT"))]
        if compat.detect(trt).fp16_flag and config.get_flag(trt.BuilderFlag.FP16):
            algs.append((2, 200, ("HALF", "HALF")))
        return algs

    def fastest(self, name, algs):
        fp32 = [a for a in algs if a[2] == ("FLOAT", "FLOAT")]
        if name in self.noisy and len(fp32) == 2 and len(algs) == 2:  # the two FP32 tactics swap places per build
            return algs[self.n % 2]
        return algs[-1]

    def __call__(self, builder, network, config):
        trt, f = self.trt, compat.detect(self.trt)
        self.n += 1
        selector = config.algorithm_selector if f.algorithm_selector else None
        editable = f.editable_timing_cache and config.get_flag(trt.BuilderFlag.EDITABLE_TIMING_CACHE)
        chosen, contexts, picks = {}, [], []
        for i in range(network.num_layers):
            name = network.get_layer(i).name
            algs = self.offered(config)
            if selector is not None:
                objects = [trt_fakes.algorithm(trt, *a) for a in algs]
                ctx = trt_fakes.algorithm_context(trt, name)
                allowed = [algs[j] for j in selector.select_algorithms(ctx, objects)]
                pick = self.fastest(name, allowed)
                contexts.append(ctx)
                picks.append(objects[algs.index(pick)])
            elif editable:
                cache = config.get_timing_cache()
                key = trt.TimingCacheKey.parse(_key(name))
                cached = {a[1]: a for a in algs}.get(cache.query(key).tacticHash)
                pick = cached or self.fastest(name, algs)
                if cached is None:
                    cache.update(key, trt.TimingCacheValue(pick[1], 0.5))
            else:
                pick = self.fastest(name, algs)
            chosen[name] = pick[1]
        if selector is not None:
            selector.report_algorithms(contexts, picks)
        return json.dumps(chosen).encode()


def judge_fails_on(layer, tactics):
    calls = []

    def judge(engine):
        chosen = json.loads(engine)
        calls.append(chosen)
        bad = chosen[layer] in tactics
        return Judgement(Verdict.BAD if bad else Verdict.GOOD, f"{layer} ran tactic {chosen[layer]}")
    judge.calls = calls
    return judge


GRAPH = ModelGraph(chain_model())


def _session(trt, judge, keep_dir, *, fp16=False, good_fp32=False):
    """The session a build worker serves, here in this process."""
    model = chain_model()
    cfg = TrtBuildConfig(fp16=fp16, persistent_cache=False)
    good = TrtBuildConfig(persistent_cache=False) if good_fp32 else None
    return dt.TacticSession(dt.TacticBuilds(trt, model, ModelGraph(model), cfg, good_config=good), judge, keep_dir)


# -- the selector (8.6 - 10.x) ------------------------------------------------------------------------

@pytest.mark.parametrize("version", SELECTOR_RELEASES)
def test_fp16_tactic_on_one_layer_is_found_and_the_replay_pins_fp32(tmp_path, version):
    trt = trt_fakes.fake_trt(version)
    FakeBuilds(trt, noisy=())
    judge = judge_fails_on("relu2", {200})  # relu2's FP16 kernel overflows; FP16 everywhere else is fine
    session = _session(trt, judge, tmp_path, fp16=True, good_fp32=True)
    result = dt.search_tactics(session, GRAPH, tmp_path, good="fp32")
    r = result.report
    assert r["mechanism"] == tt.SELECTOR
    assert result.culprit_layers == ["relu2"] and result.culprit_nodes == ["relu2"]
    assert r["culprit_tactics"][0]["bad_choice"] == {"implementation": 2, "tactic": 200, "io": ["HALF", "HALF"]}
    assert r["culprit_tactics"][0]["good_choice"]["io"] == ["FLOAT", "FLOAT"]
    assert r["candidates"] == len(NODES)  # every layer took FP16 where FP32 was good
    # two recordings + a bisection of 8 candidates + the replay check
    assert r["builds"] - r["search_builds"] == 3
    assert r["oracle_calls"] == r["search_builds"] <= 2 * math.ceil(math.log2(len(NODES))) + 1
    assert r["search_builds"] + 2 <= r["build_bound"]
    assert r["replay_verdict"] == "good"
    assert "IAlgorithmSelector" in trt._fake.reads and "IBuilderConfig.algorithm_selector" in trt._fake.reads
    from trtdebug.render.debug_html import render_debug_html

    page = render_debug_html(r)  # --html: the culprit, both choices and the replay file on the page
    assert "Culprit tactics" in page and "relu2" in page and r["culprit_tactics"][0]["bad"] in page
    assert str(result.replay) in page

    # the replay file pins every layer: a build through --load-tactics takes exactly those choices
    replay = tt.load_replay(result.replay)
    assert replay.chosen["relu2"].io == ("FLOAT", "FLOAT")
    from trtdebug.runners.tensorrt.builder import EngineBuilder

    model = chain_model()
    eb = EngineBuilder(trt, model, ModelGraph(model), TrtBuildConfig(fp16=True, persistent_cache=False,
                                                                      load_tactics=result.replay), show_progress=False)
    assert judge(eb.build().engine_bytes).verdict is Verdict.GOOD
    bad = EngineBuilder(trt, model, ModelGraph(model), TrtBuildConfig(fp16=True, persistent_cache=False,
                                                                       load_tactics=tmp_path / "bad-tactics.json"),
                        show_progress=False)
    assert judge(bad.build().engine_bytes).verdict is Verdict.BAD


def test_rebuilds_until_a_good_and_a_bad_build_are_seen_then_resume_reasks_nothing(tmp_path):
    trt = trt_fakes.fake_trt("8.6.1")
    FakeBuilds(trt, noisy=("relu2",))  # relu2's fastest FP32 tactic flips between builds; 101 is wrong
    judge = judge_fails_on("relu2", {101})
    result = dt.search_tactics(_session(trt, judge, tmp_path), GRAPH, tmp_path, good="rebuild", context={"model": "m"})
    assert result.culprit_layers == ["relu2"]
    assert result.report["candidates"] == 1 and result.report["replay_verdict"] == "good"
    first_calls = result.report["oracle_calls"]
    assert first_calls >= 1
    # the same search again: recordings and verdicts come back from OUT, no oracle call is repeated
    again = dt.search_tactics(_session(trt, judge, tmp_path), GRAPH, tmp_path, good="rebuild", context={"model": "m"})
    assert again.culprit_layers == ["relu2"] and again.report["oracle_calls"] == 0
    assert again.report["reused_verdicts"] >= 1


def test_a_passing_build_is_nothing_to_search_and_an_fp32_failure_is_not_a_tactic_problem(tmp_path):
    trt = trt_fakes.fake_trt("10.0.1")
    FakeBuilds(trt, noisy=())
    with pytest.raises(NotFailing):
        dt.search_tactics(_session(trt, judge_fails_on("relu2", {999}), tmp_path, fp16=True, good_fp32=True), GRAPH,
                          tmp_path / "a")
    with pytest.raises(UsageError, match="without reduced precision fails too"):
        dt.search_tactics(_session(trt, judge_fails_on("relu2", {101, 200}), tmp_path, fp16=True, good_fp32=True),
                          GRAPH, tmp_path / "b")


def test_selector_records_options_and_forces_only_what_is_offered():
    trt = trt_fakes.fake_trt("8.6.1")
    record, misses = tt.TacticRecord(tt.SELECTOR), []
    want = tt.Choice(1, 101, ("FLOAT", "FLOAT"))
    sel = tt.make_selector(trt, record=record, force={"a": want, "b": tt.Choice(9, 9, ())}, misses=misses)
    assert isinstance(sel, trt.IAlgorithmSelector)
    algs = [trt_fakes.algorithm(trt, 1, 100), trt_fakes.algorithm(trt, 1, 101), trt_fakes.algorithm(trt, 2, 200, ("HALF", "HALF"))]
    assert sel.select_algorithms(trt_fakes.algorithm_context(trt, "a"), algs) == [1]
    assert sel.select_algorithms(trt_fakes.algorithm_context(trt, "b"), algs) == [0, 1, 2] and misses == ["b"]
    assert sel.select_algorithms(trt_fakes.algorithm_context(trt, "free"), algs) == [0, 1, 2]
    sel.report_algorithms([trt_fakes.algorithm_context(trt, "a")], [algs[2]])
    assert record.chosen == {"a": tt.Choice(2, 200, ("HALF", "HALF"))} and len(record.options["a"]) == 3
    # the good choice on a bad build: same algorithm, else same I/O types, else any all-FP32 one
    good = tt.TacticRecord(tt.SELECTOR, chosen={"a": tt.Choice(7, 7, ("FLOAT", "FLOAT"))})
    assert tt.good_choice_for("a", record.options["a"], good) == tt.Choice(1, 100, ("FLOAT", "FLOAT"))
    assert tt.good_choice_for("a", record.options["a"][2:], good) is None


def test_tensorrt_is_imported_only_when_a_selector_is_made():
    import subprocess
    import sys

    code = ("import sys; import trtdebug.debug.tactics, trtdebug.runners.tensorrt.tactics; "
            "assert 'tensorrt' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the editable timing cache (10.8+/11; fakes only) -------------------------------------------------

@pytest.mark.parametrize("version", CACHE_RELEASES)
def test_editable_timing_cache_path_on_tensorrt_11(tmp_path, version):
    trt = trt_fakes.fake_trt(version)
    assert tt.mechanism(compat.detect(trt)) == tt.TIMING_CACHE  # 11 has no IAlgorithmSelector
    FakeBuilds(trt, noisy=("relu2", "conv3"))
    judge = judge_fails_on("relu2", {101})
    result = dt.search_tactics(_session(trt, judge, tmp_path), GRAPH, tmp_path, good="rebuild")
    r = result.report
    assert r["mechanism"] == tt.TIMING_CACHE and r["candidates"] == 2  # relu2's and conv3's keys differ
    assert [t["timing_cache_key"] for t in r["culprit_tactics"]] == [_key("relu2")]
    assert r["replay_verdict"] == "good"
    for name in ("BuilderFlag.EDITABLE_TIMING_CACHE", "ITimingCache.queryKeys", "ITimingCache.query",
                 "ITimingCache.update", "TimingCacheKey.parse"):
        assert name in trt._fake.reads, name
    # the replay file holds cache entries and rebuilds the passing engine
    replay = tt.load_replay(result.replay)
    assert replay.mechanism == tt.TIMING_CACHE and replay.entries[_key("relu2")][0] == 100
    from trtdebug.runners.tensorrt.builder import EngineBuilder

    model = chain_model()
    eb = EngineBuilder(trt, model, ModelGraph(model), TrtBuildConfig(persistent_cache=False, load_tactics=result.replay),
                       show_progress=False)
    assert judge(eb.build().engine_bytes).verdict is Verdict.GOOD


def test_replay_files_refuse_the_wrong_tensorrt_and_bad_files(tmp_path):
    selector_file = tmp_path / "t.json"
    tt.save_replay(selector_file, tt.TacticRecord(tt.SELECTOR, chosen={"a": tt.Choice(1, 2, ("FLOAT",))}),
                   features=compat.detect(trt_fakes.fake_trt("8.6.1")))
    trt11 = trt_fakes.fake_trt("11.0.0.114")
    with pytest.raises(UsageError, match="IAlgorithmSelector"):
        tt.apply_replay(trt11, None, compat.detect(trt11), tt.load_replay(selector_file))
    cache = tt.TacticRecord(tt.TIMING_CACHE, entries={_key("a"): (5, 0.1)})
    trt86 = trt_fakes.fake_trt("8.6.1")
    with pytest.raises(UsageError, match="no editable timing cache"):
        tt.apply_replay(trt86, trt86.Builder(None).create_builder_config(), compat.detect(trt86), cache)
    (tmp_path / "junk.json").write_text("{}")
    for path, msg in ((tmp_path / "junk.json", "not a trtdebug tactics file"), (tmp_path / "none.json", "does not exist")):
        with pytest.raises(UsageError, match=msg):
            tt.load_replay(path)
    with pytest.raises(UsageError, match="neither record nor pin"):
        tt.mechanism(compat.detect(trt_fakes.fake_trt("rtx-1.7.1.116")))


def test_cli_build_flags_keep_false_and_zero():
    """--no-tf32 and --builder-optimization-level 0 reach the search (0 == False once dropped them)."""
    from trtdebug.cli.debug import _search_build_options, _trt_options

    flags = _trt_options(trt_rtx=False, fp16=True, bf16=False, int8=False, tf32=False, builder_optimization_level=0)
    assert _search_build_options(flags, verbose=False) == {"fp16": True, "tf32": False, "builder_optimization_level": 0}
    assert _search_build_options(flags, verbose=True)["verbose"] is True
