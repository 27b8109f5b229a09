"""Engine building a search can drive: parse-error text, the process-wide timing cache, build
progress from TensorRT 8.6's log, and variants of one parsed network - on fakes, without TensorRT.

The fakes are the shared release fakes (tests/trt_fakes.py): a name a release lacks is missing from its
fake too (``ErrorCode.name`` is a method on 8.6's parser errors; 11.x and TensorRT-RTX have no
``ILayer.precision``; RTX's timing cache is never attached).  Tests of a path that differs by release run
on each family that takes it: 8.6, 10.x, 11.x and TensorRT-RTX.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import time
from pathlib import Path

import pytest
from onnx import TensorProto, helper

import trt_fakes
from trtdebug.errors import ParseError, UsageError
from trtdebug.model import ModelGraph, OutputSelection
from trtdebug.runners.tensorrt import TrtBuildConfig
from trtdebug.runners.tensorrt import timing_cache as tc
from trtdebug.runners.tensorrt.builder import EngineBuilder
from trtdebug.runners.tensorrt.parser_errors import ParserIssue, parse_failure, parser_issue, resolve_issue
from trtdebug.runners.tensorrt.progress import (PHASE_DONE, PHASE_ENGINE, PHASE_GRAPH, PHASE_TACTICS, BuildProgress,
                                                LogPhases, phase_from_log)
from trtdebug.runners.tensorrt.variants import NetworkVariants

V86, V10, V11, VRTX = "8.6.1", "10.13.3.9", "11.0.0.114", "rtx-1.7.1.116"
FAMILIES = (V86, V10, V11, VRTX)
TIMING_CACHE_FAMILIES = (V86, V10, V11)  # where a timing cache is attached (RTX compiles kernels at run time)
LAYER_PRECISION_FAMILIES = (V86, V10)  # ILayer.precision / set_output_type (gone in 11.x and RTX)


# ----------------------------------------------------------------------------------------------
# parse failures keep the cause
# ----------------------------------------------------------------------------------------------

IF_DESC = ("Invalid Node - If_0\n"
           "If_0_OutputLayer: IIfConditionalOutputLayer inputs must have the same shape. Shapes are [2] and [3].")


def _if_model():
    then_g = helper.make_graph([helper.make_node("Constant", [], ["a"], name="c_then",
                                                 value=helper.make_tensor("v", TensorProto.FLOAT, [2], [1, 2]))],
                               "then", [], [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2])])
    else_g = helper.make_graph([helper.make_node("Constant", [], ["b"], name="c_else",
                                                 value=helper.make_tensor("w", TensorProto.FLOAT, [3], [1, 2, 3]))],
                               "else", [], [helper.make_tensor_value_info("b", TensorProto.FLOAT, [3])])
    node = helper.make_node("If", ["cond"], ["y"], name="If_0", then_branch=then_g, else_branch=else_g)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("cond", TensorProto.BOOL, [])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _if_error(trt):
    """The If node's error as the release's parser reports it (``node_name``/``node_operator`` from 10.0)."""
    return trt_fakes.parser_error(trt, 0, IF_DESC, "INVALID_NODE", func="parseGraph")


@pytest.mark.parametrize("version", FAMILIES)
def test_multi_line_parser_error_becomes_one_line_with_its_cause(version):
    issue = resolve_issue(parser_issue(_if_error(trt_fakes.fake_trt(version))), _if_model())
    assert issue.code == "INVALID_NODE" and issue.node_name == "If_0" and issue.op == "If"
    one, full = parse_failure([issue])
    assert one == ("node 'If_0' (If): INVALID_NODE: If_0_OutputLayer: IIfConditionalOutputLayer inputs must "
                   "have the same shape. Shapes are [2] and [3].")
    assert "\n" not in one
    assert full.splitlines()[:2] == ["node 'If_0' (If): INVALID_NODE: Invalid Node - If_0",
                                     "If_0_OutputLayer: IIfConditionalOutputLayer inputs must have the same shape. "
                                     "Shapes are [2] and [3]."]


def test_several_errors_are_all_named_and_logged_causes_fill_a_bare_header():
    issues = [ParserIssue("Invalid Node - If_0", code="INVALID_NODE", node_name="If_0", op="If"),
              ParserIssue("No importer registered for op: MyOp\nsee the plugin docs", code="UNSUPPORTED_NODE",
                          node_name="custom", op="com.example::MyOp")]
    logged = ["ModelImporter.cpp:771: While parsing node number 0 [If -> \"y\"]:",
              "[graphShapeAnalyzer.cpp::analyzeShapes::1872] Error Code 4: Internal Error (If_0_OutputLayer: "
              "IIfConditionalOutputLayer inputs must have the same shape.)"]
    one, full = parse_failure(issues, logged)
    parts = one.split("; ")
    assert parts[0] == "node 'If_0' (If): INVALID_NODE: Invalid Node - If_0"
    assert parts[1] == "node 'custom' (com.example::MyOp): UNSUPPORTED_NODE: No importer registered for op: MyOp - see the plugin docs"
    # the first node's header carried no cause: TensorRT's own error line supplies it, the parser's echo does not
    assert "IIfConditionalOutputLayer inputs must have the same shape" in parts[2] and len(parts) == 3
    assert "While parsing node number 0" in full and "see the plugin docs" in full
    # a parser error that carries its own cause is not padded with log lines
    one, _ = parse_failure([issues[1]], logged)
    assert "Error Code 4" not in one
    assert parse_failure([], ["[x.cpp::f::1] Error Code 2: boom"])[0] == "[x.cpp::f::1] Error Code 2: boom"
    assert parse_failure([], [])[0] == "no details given"


@pytest.mark.parametrize("version", FAMILIES)
def test_engine_builder_parse_error_is_one_line_with_full_details_kept(version):
    model = _if_model()
    trt = trt_fakes.fake_trt(version)
    trt._fake.network_factory = lambda: conv_net(trt)
    trt._fake.parse_ok, trt._fake.parser_errors = False, [_if_error(trt)]
    eb = EngineBuilder(trt, model, ModelGraph(model), TrtBuildConfig(persistent_cache=False), show_progress=False)
    with pytest.raises(ParseError) as info:
        eb.parse()
    msg = str(info.value)
    assert "\n" not in msg and info.value.exit_code == 3
    assert msg.startswith(f"{eb.features.label}'s ONNX parser rejected the model: ")
    assert msg.endswith("node 'If_0' (If): INVALID_NODE: If_0_OutputLayer: IIfConditionalOutputLayer inputs must "
                        "have the same shape. Shapes are [2] and [3].")
    assert "Invalid Node - If_0\nIf_0_OutputLayer" in info.value.details


# ----------------------------------------------------------------------------------------------
# the timing cache: where it lives, one per process, merged under a lock, corruption ignored
# ----------------------------------------------------------------------------------------------

def test_default_cache_path_per_module_version_and_gpu(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    p = tc.default_cache_path(trt_fakes.fake_trt(V86), gpu="NVIDIA H200-sm90")
    assert p == tmp_path / "xdg" / "trtdebug" / "timing-tensorrt-8.6.1-NVIDIA-H200-sm90.cache"
    assert tc.default_cache_path(trt_fakes.fake_trt(VRTX), gpu="x").name == "timing-tensorrt_rtx-1.7.1.116-x.cache"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # the XDG spec says: ignore relative paths
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert tc.cache_dir() == tmp_path / "home" / ".cache" / "trtdebug"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert tc.cache_dir() == tmp_path / "home" / ".cache" / "trtdebug"


def test_which_file_a_build_uses(monkeypatch, tmp_path):
    monkeypatch.setattr(tc, "gpu_identity", lambda: "GPU-sm90")
    trt = trt_fakes.fake_trt(V86)
    assert tc.cache_path_for(trt, TrtBuildConfig()).name == "timing-tensorrt-8.6.1-GPU-sm90.cache"
    assert tc.cache_path_for(trt, TrtBuildConfig(timing_cache=tmp_path / "mine.cache")) == tmp_path / "mine.cache"
    assert tc.cache_path_for(trt, TrtBuildConfig(persistent_cache=False)) is None
    # one cache object per module and file, shared by every builder of the process
    a, b = tc.shared_cache(trt, TrtBuildConfig()), tc.shared_cache(trt, TrtBuildConfig(fp16=True))
    assert a is b and a.default
    assert tc.shared_cache(trt, TrtBuildConfig(timing_cache=tmp_path / "mine.cache")) is not a
    assert tc.shared_cache(trt_fakes.fake_trt(V86), TrtBuildConfig()) is not a


def new_config(trt):
    """An IBuilderConfig as the fake builder makes it."""
    return trt.Builder(None).create_builder_config()


def entries(config):
    """The live entries of the timing cache attached to ``config``: a test adds to them what a build would."""
    return trt_fakes.timing_entries(config.get_timing_cache())


def file_entries(path):
    return trt_fakes.timing_cache_entries(path.read_bytes())


@pytest.mark.parametrize("version", TIMING_CACHE_FAMILIES)
def test_every_build_shares_one_cache_object_and_the_file_is_merged(tmp_path, version):
    trt = trt_fakes.fake_trt(version)
    path = tmp_path / "t.cache"
    cache = tc.TimingCache(path, default=True)
    assert not cache.loaded
    c1, c2 = new_config(trt), new_config(trt)
    assert cache.attach(c1) and not cache.loaded
    entries(c1).add(b"conv1")  # what a build adds
    cache.attach(c2)
    assert c2.get_timing_cache() is c1.get_timing_cache() and cache.loaded  # the second build starts with the first's
    assert cache.save() and file_entries(path) == {b"conv1"}
    assert not cache.save()  # nothing new: the file is not rewritten
    # another process saved meanwhile: its entries are merged, not overwritten
    path.write_bytes(trt_fakes.timing_cache_blob([b"conv1", b"gemm7"]))
    entries(c2).add(b"relu2")
    assert cache.save()
    assert file_entries(path) == {b"conv1", b"gemm7", b"relu2"}
    reread = tc.TimingCache(path)
    assert reread.loaded
    cfg = new_config(trt)
    reread.attach(cfg)
    assert entries(cfg) == {b"conv1", b"gemm7", b"relu2"}


@pytest.mark.parametrize("version", TIMING_CACHE_FAMILIES)
def test_memory_only_cache_is_never_written(tmp_path, version):
    cache = tc.TimingCache(None)
    cfg = new_config(trt_fakes.fake_trt(version))
    assert cache.attach(cfg) and cfg.get_timing_cache() is not None
    entries(cfg).add(b"conv1")
    assert not cache.save() and not list(tmp_path.iterdir())


# how TensorRT may answer bytes it cannot read: 8.6 gave an empty cache on the H200; None and an exception
# are what the bindings' signature and other releases allow
UNREADABLE = {"empty": "TensorRT read nothing from it", "none": "TensorRT could not deserialize it",
              "raise": "Error Code 1: Serialization"}


@pytest.mark.parametrize("answer", sorted(UNREADABLE))
@pytest.mark.parametrize("version", TIMING_CACHE_FAMILIES)
def test_corrupt_default_cache_is_a_warning_and_replaced(tmp_path, caplog, version, answer):
    trt = trt_fakes.fake_trt(version)
    trt._fake.unreadable_timing_cache = answer
    path = tmp_path / "t.cache"
    path.write_bytes(b"\x00garbage from a crash")
    cache = tc.TimingCache(path, default=True)
    cfg = new_config(trt)
    with caplog.at_level(logging.WARNING):
        cache.attach(cfg)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "could not be read" in warnings[0] and "\n" not in warnings[0]
    assert UNREADABLE[answer] in warnings[0] and "it will be replaced" in warnings[0]
    assert entries(cfg) == set() and not cache.loaded
    entries(cfg).add(b"conv1")
    assert cache.save() and file_entries(path) == {b"conv1"}


@pytest.mark.parametrize("version", TIMING_CACHE_FAMILIES)
def test_unreadable_user_cache_is_ignored_and_left_unchanged(tmp_path, caplog, version):
    path = tmp_path / "user.cache"
    path.write_bytes(b"not a timing cache")
    cache = tc.TimingCache(path, default=False)
    cfg = new_config(trt_fakes.fake_trt(version))
    with caplog.at_level(logging.WARNING):
        cache.attach(cfg)
    entries(cfg).add(b"conv1")
    assert not cache.save()
    assert path.read_bytes() == b"not a timing cache"
    assert any("left unchanged" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("version", TIMING_CACHE_FAMILIES)
def test_cache_for_another_gpu_is_replaced_by_a_fresh_one(tmp_path, caplog, version):
    path = tmp_path / "t.cache"
    path.write_bytes(trt_fakes.timing_cache_blob([b"other-gpu"], gpu="other-GPU-sm80"))
    cache = tc.TimingCache(path, default=True)
    cfg = new_config(trt_fakes.fake_trt(version))  # set_timing_cache(cache, ignore_mismatch=False) says no
    with caplog.at_level(logging.WARNING):
        cache.attach(cfg)
    assert cfg.get_timing_cache() is cache.cache and entries(cfg) == set() and not cache.loaded
    assert any("does not match" in r.getMessage() for r in caplog.records)


def _save_concurrently(path, entry, start_at, xdg):
    """One process's end of a search: attach, add an entry, save at ``start_at`` (all at once)."""
    os.environ["XDG_CACHE_HOME"] = xdg
    trt = trt_fakes.fake_trt(V86)
    serialize = trt.ITimingCache.serialize

    def slow_serialize(self):  # widens the read-merge-write window
        time.sleep(0.3)
        return serialize(self)

    trt.ITimingCache.serialize = slow_serialize
    cache = tc.TimingCache(Path(path), default=True)
    cfg = new_config(trt)
    cache.attach(cfg)
    entries(cfg).add(entry.encode())
    time.sleep(max(0.0, start_at - time.time()))
    return cache.save()


def test_processes_saving_at_once_lose_no_entries(tmp_path):
    path = tmp_path / "shared.cache"
    names = [f"layer{i}" for i in range(4)]
    start_at = time.time() + 3.0
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(len(names)) as pool:
        saved = pool.starmap(_save_concurrently, [(str(path), n, start_at, os.environ["XDG_CACHE_HOME"]) for n in names])
    assert all(saved)
    assert file_entries(path) == {n.encode() for n in names}
    assert [p.name for p in tmp_path.iterdir()] == ["shared.cache"]  # no temporary or lock file beside it


# ----------------------------------------------------------------------------------------------
# build progress from TensorRT 8.6's log
# ----------------------------------------------------------------------------------------------

# Lines as TensorRT 8.6 logs them while building a small conv net (INFO and VERBOSE mixed).
LOG_86 = """\
[MemUsageChange] Init CUDA: CPU +2, GPU +0, now: CPU 312, GPU 1034 (MiB)
[MemUsageChange] Init builder kernel library: CPU +1450, GPU +266, now: CPU 1838, GPU 1300 (MiB)
Original: 9 layers
After dead-layer removal: 9 layers
Graph construction completed in 0.000403691 seconds.
Running: ConstShuffleFusion on onnx::Conv_1
After Myelin optimization: 9 layers
Applying ScaleNodes fusions.
After scale fusion: 9 layers
Running: ConvReluFusion on /conv1/Conv
ConvReluFusion: Fusing /conv1/Conv with /relu1/Relu
After dupe layer removal: 5 layers
After final dead-layer removal: 5 layers
After tensor merging: 5 layers
After vertical fusions: 5 layers
After concat removal: 4 layers
Graph optimization time: 0.00213 seconds.
Local timing cache in use. Profiling results in this builder pass will not be stored.
Constructing optimization profile number 0 [1/1].
Reserving memory for host IO tensors. Host: 0 bytes
=============== Computing reformatting costs
*************** Autotuning Reformat: Float(3072,1024,32,1) -> Float(3072,1,96,3) ***************
--------------- Timing Runner: Optimizer Reformat(image -> <out>) (Reformat)
Tactic: 0x00000000000003e8 Time: 0.00512
=============== Computing costs for /conv1/Conv + /relu1/Relu
*************** Autotuning format combination: Float(3072,1024,32,1) -> Float(16384,1024,32,1) ***************
--------------- Timing Runner: /conv1/Conv + /relu1/Relu (CaskConvolution)
/conv1/Conv + /relu1/Relu Set Tactic Name: sm80_xmma_fprop_implicit_gemm_f32f32_tf32f32_f32_nchwkcrs_nchw Tactic: 0x1
Tactic: 0x0000000000000001 Time: 0.0123
>>>>>>>>>>>>>>> Chose Runner Type: CaskConvolution Tactic: 0x0000000000000001
=============== Computing costs for /conv2/Conv + /relu2/Relu
--------------- Timing Runner: /conv2/Conv + /relu2/Relu (CaskConvolution)
=============== Computing costs for /pool/GlobalAveragePool
Formats and tactics selection completed in 1.92 seconds.
After reformat layers: 5 layers
Detected 1 inputs and 1 output network tensors.
Layer: /conv1/Conv + /relu1/Relu Host Persistent: 3200 Device Persistent: 0 Scratch Memory: 0
Total Host Persistent Memory: 5184
[BlockAssignment] Started assigning block shifts. This will take 5 steps to complete.
Total Activation Memory: 94208
Engine generation completed in 1.95 seconds.
Deleting timing cache: 8 entries, 0 hits
""".splitlines()


def test_phase_extraction_from_tensorrt_8_6_log_lines():
    assert phase_from_log("Original: 9 layers") == (PHASE_GRAPH, None)
    assert phase_from_log("=============== Computing costs for /conv1/Conv + /relu1/Relu") == \
        (PHASE_TACTICS, "/conv1/Conv + /relu1/Relu")
    assert phase_from_log("--------------- Timing Runner: {ForeignNode[/attn/MatMul.../Add]} (Myelin)") == \
        (PHASE_TACTICS, "{ForeignNode[/attn/MatMul.../Add]}")
    assert phase_from_log("Tactic: 0x0000000000000001 Time: 0.0123") is None
    assert phase_from_log("[BlockAssignment] Started assigning block shifts.")[0] == PHASE_ENGINE
    assert phase_from_log("Engine generation completed in 1.95 seconds.")[0] == PHASE_DONE

    phases = LogPhases()
    seen = []
    for line in LOG_86:
        if phases.feed(line):
            seen.append(phases.text())
        if line.startswith("=============== Computing costs for /conv2"):
            assert phases.text() == f"{PHASE_TACTICS}: /conv2/Conv + /relu2/Relu (2 of ~4 layers)"
    assert [p for p, _ in phases.timeline] == ["starting the builder", PHASE_GRAPH, PHASE_TACTICS, PHASE_ENGINE, PHASE_DONE]
    assert f"{PHASE_TACTICS}: 1/1" in seen  # the optimization profile being built
    assert f"{PHASE_TACTICS}: Optimizer Reformat(image -> <out>)" in seen
    assert phases.layers_costed == 3 and phases.text() == PHASE_DONE


def test_status_line_uses_the_log_where_there_is_no_monitor():
    p = BuildProgress(enabled=False)
    with p:
        assert p.text().startswith("Building TensorRT engine (0s)") and " - " not in p.text()
        for line in LOG_86[:30]:
            p.on_log("VERBOSE", line)
        assert p.text().endswith(f" - {PHASE_TACTICS}: /conv1/Conv + /relu1/Relu (1 of ~4 layers)")
        p.phase_start("Building engine", 3)  # a monitor's phases win where there is one
        assert p.text().endswith(" - Building engine 0/3")


def test_logger_feeds_listeners_every_line_verbose_included():
    from trtdebug.runners.tensorrt.logger import make_logger

    trt = trt_fakes.fake_trt(V86)
    logger = make_logger(trt, verbose=False)
    heard = []
    with logger.listen(lambda sev, msg: heard.append((sev, msg))):
        logger.log(trt.ILogger.VERBOSE, "=============== Computing costs for conv1")
        logger.log(trt.ILogger.INFO, "Engine generation completed in 1.95 seconds.")
    logger.log(trt.ILogger.INFO, "after the build")
    assert heard == [("VERBOSE", "=============== Computing costs for conv1"),
                     ("INFO", "Engine generation completed in 1.95 seconds.")]
    assert ("VERBOSE", "=============== Computing costs for conv1") not in logger.messages.messages  # still filtered


# ----------------------------------------------------------------------------------------------
# EngineBuilder on the release fakes: a conv net as the ONNX parser gives it
# ----------------------------------------------------------------------------------------------

def conv_net(trt):
    """image -> conv1 -> relu1 -> conv2 -> relu2 -> pool -> logits, as the ONNX parser names them."""
    image = trt_fakes.tensor(trt, "image", shape=(1, 8, 16, 16))
    kinds = [("conv1", "CONVOLUTION", "conv1_out"), ("relu1", "ACTIVATION", "relu1_out"),
             ("conv2", "CONVOLUTION", "conv2_out"), ("relu2", "ACTIVATION", "relu2_out"), ("pool", "POOLING", "logits")]
    layers, prev = [], image
    for name, kind, out_name in kinds:
        out = trt_fakes.tensor(trt, out_name, shape=(1, 8, 16, 16))
        layers.append(trt_fakes.layer(trt, name, kind, [prev], [out], f"[ONNX Layer: {name}]"))
        prev = out
    return trt_fakes.network(trt, [image], layers, [prev])


def describe(trt, network):
    """What an engine built now would have: outputs, and layers with a precision constraint (8.6/10.x)."""
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    precision = trt_fakes.has_member(trt._fake.version, "ILayer", "precision_is_set")
    return {"outputs": [network.get_output(i).name for i in range(network.num_outputs)],
            "fp32": sorted(layer.name for layer in layers if precision and layer.precision_is_set)}


def conv_world(trt, build_log=()):
    """The parser yields :func:`conv_net`; each build logs ``build_log`` and is recorded (returned list)."""
    builds = []
    trt._fake.network_factory = lambda: conv_net(trt)

    def build(builder, network, config):
        for line in build_log:
            builder._p["logger"].log(trt.ILogger.VERBOSE, line)
        builds.append(describe(trt, network))
        return trt_fakes.engine_bytes(network)

    trt._fake.build = build
    return builds


def conv_model():
    nodes, prev = [], "image"
    for name, op, out in [("conv1", "Relu", "conv1_out"), ("relu1", "Relu", "relu1_out"), ("conv2", "Relu", "conv2_out"),
                          ("relu2", "Relu", "relu2_out"), ("pool", "Relu", "logits")]:
        nodes.append(helper.make_node(op, [prev], [out], name=name))
        prev = out
    g = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 8, 16, 16])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 8, 16, 16])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("version", FAMILIES)
def test_builds_of_one_process_share_the_cache_and_save_it_to_the_default_file(monkeypatch, tmp_path, version):
    monkeypatch.setattr(tc, "gpu_identity", lambda: "GPU-sm90")
    trt = trt_fakes.fake_trt(version)
    conv_world(trt, build_log=LOG_86)
    model = conv_model()
    cfg = TrtBuildConfig()
    first = EngineBuilder(trt, model, ModelGraph(model), cfg, show_progress=False)
    first.build()
    # progress comes from the log where there is no IProgressMonitor (8.6), from the monitor elsewhere
    assert bool(first.last_phases and first.last_phases[-1][0] == PHASE_DONE) == (version == V86)
    second = EngineBuilder(trt, model, ModelGraph(model), cfg, show_progress=False)
    second.build()
    path = tc.default_cache_path(trt, gpu="GPU-sm90")
    if version == VRTX:  # kernels are compiled at run time: a timing cache would do nothing, none is attached
        assert "ITimingCache" not in trt._fake.reads  # no timing cache was ever created
        assert all(c.get_timing_cache() is None for c in trt._fake.configs) and len(trt._fake.configs) == 2
        assert not second.save_timing_cache() and not path.exists() and not tc.cache_dir().exists()
        return
    c1, c2 = trt._fake.configs
    assert c1.get_timing_cache() is c2.get_timing_cache() and entries(c2) == {b"build0", b"build1"}
    assert second.save_timing_cache()
    assert file_entries(path) == {b"build0", b"build1"}
    assert not EngineBuilder(trt, model, ModelGraph(model), TrtBuildConfig(persistent_cache=False),
                             show_progress=False).save_timing_cache()


# ----------------------------------------------------------------------------------------------
# variants of one parsed network
# ----------------------------------------------------------------------------------------------

def _variants(trt, cfg=None, model=None):
    model = model or conv_model()
    eb = EngineBuilder(trt, model, ModelGraph(model), cfg or TrtBuildConfig(persistent_cache=False), show_progress=False)
    return NetworkVariants(eb)


@pytest.mark.parametrize("version", LAYER_PRECISION_FAMILIES)
def test_variants_parse_once_and_restore_the_network_after_each_build(version):
    trt = trt_fakes.fake_trt(version)
    builds = conv_world(trt)
    with _variants(trt, TrtBuildConfig(fp16=True, persistent_cache=False)) as v:
        net = v.parsed.network
        plain = v.build()
        marked = v.build(["relu1_out", "conv2_out"])
        fp32 = v.build(fp32_nodes=["conv2", "ghost"])
        v.build(OutputSelection(names=("relu2_out",), exclude=("logits",)))
        v.build()
        assert len(trt._fake.networks) == 1 and v.builds == 5  # one network: parsed once
        assert describe(trt, net) == {"outputs": ["logits"], "fp32": []}  # clean for the next variant
    first, second, third, fourth, fifth = builds
    assert first == fifth == {"outputs": ["logits"], "fp32": []}
    assert second == {"outputs": ["logits", "relu1_out", "conv2_out"], "fp32": []}
    assert marked.marking.mark == ["relu1_out", "conv2_out"] and plain.marking.mark == []
    assert third == {"outputs": ["logits"], "fp32": ["conv2"]}
    assert fourth == {"outputs": ["relu2_out"], "fp32": []}
    assert any("FP32 kept on 1 ONNX node(s); no TensorRT layer found for ghost" in n for n in fp32.notes)
    configs = trt._fake.configs
    flags = [c._p.get("flags", set()) for c in configs]
    assert "OBEY_PRECISION_CONSTRAINTS" in flags[2] and "OBEY_PRECISION_CONSTRAINTS" not in flags[3]
    assert all("FP16" in f for f in flags)
    assert all(c.get_timing_cache() is configs[0].get_timing_cache() for c in configs)  # one cache across variants
    assert entries(configs[0]) == {f"build{i}".encode() for i in range(5)}


@pytest.mark.parametrize("version", LAYER_PRECISION_FAMILIES)
def test_variant_restores_precision_that_was_set_before_and_after_a_failed_build(version):
    trt = trt_fakes.fake_trt(version)
    conv_world(trt)
    with _variants(trt) as v:
        conv1 = v.parsed.network.get_layer(0)
        conv1.precision = trt.DataType.HALF  # set by someone before (e.g. the base configuration)
        conv1.set_output_type(0, trt.DataType.HALF)

        def fail(builder, network, config):
            assert conv1.precision == trt.DataType.FLOAT and conv1.get_output_type(0) == trt.DataType.FLOAT
            raise RuntimeError("Internal error: could not find any implementation")

        trt._fake.build = fail
        with pytest.raises(Exception, match="could not find any implementation"):
            v.build(["relu2_out"], fp32_nodes=["conv1", "relu1"])
        net = v.parsed.network
        assert [net.get_output(i).name for i in range(net.num_outputs)] == ["logits"]
        assert conv1.precision == trt.DataType.HALF and conv1.get_output_type(0) == trt.DataType.HALF
        assert conv1.precision_is_set and conv1.output_type_is_set(0)
        relu1 = net.get_layer(1)
        assert not relu1.precision_is_set and not relu1.output_type_is_set(0)


@pytest.mark.parametrize("version,strongly_typed,why", [
    (V11, False, "has no per-layer precision"), (VRTX, False, "has no per-layer precision"),
    (V10, True, "builds strongly typed networks")])
def test_fp32_variant_without_layer_precision_is_a_usage_error(version, strongly_typed, why):
    trt = trt_fakes.fake_trt(version)
    conv_world(trt)
    with _variants(trt, TrtBuildConfig(strongly_typed=strongly_typed, persistent_cache=False)) as v:
        assert v.build(["relu1_out"]).marking.mark == ["relu1_out"]  # outputs still vary without a re-parse
        with pytest.raises(UsageError) as info:
            v.build(fp32_nodes=["conv1"])
    msg = str(info.value)
    assert "\n" not in msg and v.builder.features.label in msg and why in msg and "in the ONNX graph" in msg
    assert describe(trt, trt._fake.networks[0])["fp32"] == []  # no layer was touched
