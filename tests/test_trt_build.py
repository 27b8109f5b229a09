"""Engine building a search can drive: parse-error text, the process-wide timing cache, build
progress from TensorRT 8.6's log, and variants of one parsed network - on fakes, without TensorRT.

The fakes carry the names TensorRT 8.6.1's Python API has (``ErrorCode.name`` is a method on
8.6's parser errors; ``ILayer`` has ``precision``/``reset_precision``/``output_type_is_set``...;
``ITimingCache`` has ``serialize``/``combine``), and behave just enough for the logic under test.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import time
import types
from pathlib import Path

import pytest
from onnx import TensorProto, helper

from trtdebug.errors import ParseError
from trtdebug.model import ModelGraph
from trtdebug.runners.tensorrt import TrtBuildConfig
from trtdebug.runners.tensorrt import timing_cache as tc
from trtdebug.runners.tensorrt.parser_errors import ParserIssue, parse_failure, parser_issue
from trtdebug.runners.tensorrt.progress import (PHASE_DONE, PHASE_ENGINE, PHASE_GRAPH, PHASE_TACTICS, BuildProgress,
                                                LogPhases, phase_from_log)


# ----------------------------------------------------------------------------------------------
# parse failures keep the cause
# ----------------------------------------------------------------------------------------------

class ParserError86:
    """An IParserError as TensorRT 8.6 gives it: accessors are methods, ``ErrorCode.name`` too."""

    def __init__(self, node, desc, code="INVALID_NODE"):
        self._node, self._desc, self._code = node, desc, code

    def node(self):
        return self._node

    def desc(self):
        return self._desc

    def code(self):
        code = self._code
        return types.SimpleNamespace(name=lambda: code)

    def func(self):
        return "parseGraph"


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


def test_multi_line_parser_error_becomes_one_line_with_its_cause():
    from trtdebug.runners.tensorrt.parser_errors import resolve_issue

    issue = resolve_issue(parser_issue(ParserError86(0, IF_DESC)), _if_model())
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


def test_engine_builder_parse_error_is_one_line_with_full_details_kept(monkeypatch):
    model = _if_model()
    fake = FakeTRT(parse_errors=[ParserError86(0, IF_DESC)])
    from trtdebug.runners.tensorrt.builder import EngineBuilder

    eb = EngineBuilder(fake, model, ModelGraph(model), TrtBuildConfig(persistent_cache=False), show_progress=False)
    with pytest.raises(ParseError) as info:
        eb.parse()
    msg = str(info.value)
    assert "\n" not in msg and info.value.exit_code == 3
    assert msg.endswith("node 'If_0' (If): INVALID_NODE: If_0_OutputLayer: IIfConditionalOutputLayer inputs must "
                        "have the same shape. Shapes are [2] and [3].")
    assert "Invalid Node - If_0\nIf_0_OutputLayer" in info.value.details


# ----------------------------------------------------------------------------------------------
# fakes: an ITimingCache with entries, a builder config, and a TensorRT module around them
# ----------------------------------------------------------------------------------------------

class FakeTimingCache:
    """Entries are lines; the blob is a header and the sorted lines; anything else is corrupt."""

    MAGIC = b"FAKE-TRT-TIMING-CACHE\n"
    slow_serialize = 0.0  # seconds: widens the read-merge-write window in the concurrency test

    def __init__(self, entries=()):
        self.entries = set(entries)

    @classmethod
    def from_blob(cls, data):
        data = bytes(data)
        if not data:
            return cls()
        if not data.startswith(cls.MAGIC):
            return None  # TensorRT 8.6 logs an error and returns None for a blob it cannot read
        return cls(line for line in data[len(cls.MAGIC):].split(b"\n") if line)

    def serialize(self):
        time.sleep(self.slow_serialize)
        return self.MAGIC + b"\n".join(sorted(self.entries))

    def combine(self, other, ignore_mismatch):
        self.entries |= other.entries
        return True


class FakeBuilderConfig:
    def __init__(self, accept_cache=True):
        self.cache, self.accept_cache = None, accept_cache
        self.flags = set()
        self.profiles = []
        self.profiling_verbosity = None
        self.builder_optimization_level = 3

    def create_timing_cache(self, data):
        return FakeTimingCache.from_blob(data)

    def set_timing_cache(self, cache, ignore_mismatch):
        self.cache = cache
        return self.accept_cache

    def get_timing_cache(self):
        return self.cache

    def set_flag(self, flag):
        self.flags.add(flag.name)

    def clear_flag(self, flag):
        self.flags.discard(flag.name)

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)
        return len(self.profiles) - 1


# ----------------------------------------------------------------------------------------------
# the timing cache: where it lives, one per process, merged under a lock, corruption ignored
# ----------------------------------------------------------------------------------------------

def _module(name="tensorrt", version="8.6.0"):
    m = types.ModuleType(name)
    m.__version__ = version
    return m


def test_default_cache_path_per_module_version_and_gpu(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    p = tc.default_cache_path(_module(), gpu="NVIDIA H200-sm90")
    assert p == tmp_path / "xdg" / "trtdebug" / "timing-tensorrt-8.6.0-NVIDIA-H200-sm90.cache"
    assert tc.default_cache_path(_module("tensorrt_rtx", "1.0.0.21"), gpu="x").name == "timing-tensorrt_rtx-1.0.0.21-x.cache"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # the XDG spec says: ignore relative paths
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert tc.cache_dir() == tmp_path / "home" / ".cache" / "trtdebug"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert tc.cache_dir() == tmp_path / "home" / ".cache" / "trtdebug"


def test_which_file_a_build_uses(monkeypatch, tmp_path):
    monkeypatch.setattr(tc, "gpu_identity", lambda: "GPU-sm90")
    trt = _module()
    assert tc.cache_path_for(trt, TrtBuildConfig()).name == "timing-tensorrt-8.6.0-GPU-sm90.cache"
    assert tc.cache_path_for(trt, TrtBuildConfig(timing_cache=tmp_path / "mine.cache")) == tmp_path / "mine.cache"
    assert tc.cache_path_for(trt, TrtBuildConfig(persistent_cache=False)) is None
    # one cache object per module and file, shared by every builder of the process
    a, b = tc.shared_cache(trt, TrtBuildConfig()), tc.shared_cache(trt, TrtBuildConfig(fp16=True))
    assert a is b and a.default
    assert tc.shared_cache(trt, TrtBuildConfig(timing_cache=tmp_path / "mine.cache")) is not a
    assert tc.shared_cache(_module(), TrtBuildConfig()) is not a


def test_every_build_shares_one_cache_object_and_the_file_is_merged(tmp_path):
    path = tmp_path / "t.cache"
    cache = tc.TimingCache(path, default=True)
    assert not cache.loaded
    c1, c2 = FakeBuilderConfig(), FakeBuilderConfig()
    cache.attach(c1)
    c1.cache.entries.add(b"conv1")  # what a build adds
    cache.attach(c2)
    assert c2.cache is c1.cache  # the second build starts with the first one's measurements
    assert cache.save() and FakeTimingCache.from_blob(path.read_bytes()).entries == {b"conv1"}
    assert not cache.save()  # nothing new: the file is not rewritten
    # another process saved meanwhile: its entries are merged, not overwritten
    path.write_bytes(FakeTimingCache([b"conv1", b"gemm7"]).serialize())
    c2.cache.entries.add(b"relu2")
    assert cache.save()
    assert FakeTimingCache.from_blob(path.read_bytes()).entries == {b"conv1", b"gemm7", b"relu2"}
    reread = tc.TimingCache(path)
    assert reread.loaded
    reread.attach(FakeBuilderConfig())
    assert reread.cache.entries == {b"conv1", b"gemm7", b"relu2"}


def test_memory_only_cache_is_never_written(tmp_path):
    cache = tc.TimingCache(None)
    cfg = FakeBuilderConfig()
    assert cache.attach(cfg) and cfg.cache is not None
    assert not cache.save() and not list(tmp_path.iterdir())


def test_corrupt_default_cache_is_a_warning_and_replaced(tmp_path, caplog):
    path = tmp_path / "t.cache"
    path.write_bytes(b"\x00garbage from a crash")
    cache = tc.TimingCache(path, default=True)
    cfg = FakeBuilderConfig()
    with caplog.at_level(logging.WARNING):
        cache.attach(cfg)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "could not be read" in warnings[0] and "\n" not in warnings[0]
    assert cfg.cache.entries == set() and not cache.loaded
    cfg.cache.entries.add(b"conv1")
    assert cache.save() and FakeTimingCache.from_blob(path.read_bytes()).entries == {b"conv1"}


def test_unreadable_user_cache_is_ignored_and_left_unchanged(tmp_path, caplog):
    path = tmp_path / "user.cache"
    path.write_bytes(b"not a timing cache")
    cache = tc.TimingCache(path, default=False)
    cfg = FakeBuilderConfig()
    with caplog.at_level(logging.WARNING):
        cache.attach(cfg)
    cfg.cache.entries.add(b"conv1")
    assert not cache.save()
    assert path.read_bytes() == b"not a timing cache"
    assert any("left unchanged" in r.getMessage() for r in caplog.records)


def test_cache_for_another_gpu_is_replaced_by_a_fresh_one(tmp_path, caplog):
    path = tmp_path / "t.cache"
    path.write_bytes(FakeTimingCache([b"other-gpu"]).serialize())
    cache = tc.TimingCache(path, default=True)
    cfg = FakeBuilderConfig(accept_cache=False)  # set_timing_cache(cache, ignore_mismatch=False) says no
    with caplog.at_level(logging.WARNING):
        cache.attach(cfg)
    assert cfg.cache.entries == set() and not cache.loaded
    assert any("does not match" in r.getMessage() for r in caplog.records)


def _save_concurrently(path, entry, start_at, xdg):
    """One process's end of a search: attach, add an entry, save at ``start_at`` (all at once)."""
    os.environ["XDG_CACHE_HOME"] = xdg
    FakeTimingCache.slow_serialize = 0.3
    cache = tc.TimingCache(Path(path), default=True)
    cfg = FakeBuilderConfig()
    cache.attach(cfg)
    cfg.cache.entries.add(entry.encode())
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
    assert FakeTimingCache.from_blob(path.read_bytes()).entries == {n.encode() for n in names}
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

    trt = types.ModuleType("tensorrt")
    trt.ILogger = type("ILogger", (), {"__init__": lambda self: None})
    logger = make_logger(trt, verbose=False)
    heard = []
    with logger.listen(lambda sev, msg: heard.append((sev, msg))):
        logger.log(types.SimpleNamespace(name="VERBOSE"), "=============== Computing costs for conv1")
        logger.log(types.SimpleNamespace(name="INFO"), "Engine generation completed in 1.95 seconds.")
    logger.log(types.SimpleNamespace(name="INFO"), "after the build")
    assert heard == [("VERBOSE", "=============== Computing costs for conv1"),
                     ("INFO", "Engine generation completed in 1.95 seconds.")]
    assert ("VERBOSE", "=============== Computing costs for conv1") not in logger.messages.messages  # still filtered


# ----------------------------------------------------------------------------------------------
# a fake TensorRT module for EngineBuilder (8.6's names)
# ----------------------------------------------------------------------------------------------

def FakeTRT(parse_errors=(), network_factory=None, build_log=()):
    """A module with 8.6's names: no IProgressMonitor; Builder/OnnxParser that behave."""
    import enum

    trt = types.ModuleType("tensorrt")
    trt.__version__ = "8.6.1"
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", ["FP16", "INT8", "TF32", "OBEY_PRECISION_CONSTRAINTS",
                                                   "PREFER_PRECISION_CONSTRAINTS", "STRICT_TYPES"], start=0)
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", ["EXPLICIT_BATCH"], start=0)
    trt.MemoryPoolType = enum.IntEnum("MemoryPoolType", ["WORKSPACE"], start=0)
    trt.ProfilingVerbosity = enum.IntEnum("ProfilingVerbosity", ["LAYER_NAMES_ONLY", "NONE", "DETAILED"], start=0)
    trt.DataType = DataType
    trt.float32, trt.float16 = DataType.FLOAT, DataType.HALF
    trt.IBuilderConfig = type("IBuilderConfig", (), {a: None for a in (
        "builder_optimization_level", "set_memory_pool_limit", "create_timing_cache", "set_timing_cache",
        "get_timing_cache", "profiling_verbosity")})
    trt.INetworkDefinition = type("INetworkDefinition", (), {"mark_output": None, "unmark_output": None})
    trt.ILayer = type("ILayer", (), {a: None for a in (
        "precision", "precision_is_set", "reset_precision", "set_output_type", "get_output_type",
        "output_type_is_set", "reset_output_type", "metadata")})
    trt.ILogger = type("ILogger", (), {"__init__": lambda self: None})
    state = types.SimpleNamespace(configs=[], networks=[], parses=0, builds=[])

    class Builder:
        max_batch_size = 1

        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags):
            net = (network_factory or FakeNetwork.conv_net)()
            state.networks.append(net)
            return net

        def create_builder_config(self):
            cfg = FakeBuilderConfig()
            state.configs.append(cfg)
            return cfg

        def create_optimization_profile(self):
            return types.SimpleNamespace(set_shape=lambda *a: None)

        def build_serialized_network(self, network, config):
            for line in build_log:
                self.logger.log(types.SimpleNamespace(name="VERBOSE"), line)
            if config.cache is not None:
                config.cache.entries.add(f"build{len(state.builds)}".encode())
            state.builds.append(network.describe())
            return repr(network.describe()).encode()

    class OnnxParser:
        def __init__(self, network, logger):
            self.num_errors = len(parse_errors)

        def parse(self, data):
            state.parses += 1
            return not parse_errors

        def get_error(self, i):
            return parse_errors[i]

    trt.Builder, trt.OnnxParser, trt.state = Builder, OnnxParser, state
    return trt


class DataType:
    """TensorRT's DataType members, by name (``name`` a property, like the real enum)."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return f"DataType.{self.name}"


DataType.FLOAT, DataType.HALF, DataType.INT32 = DataType("FLOAT"), DataType("HALF"), DataType("INT32")


class FakeTensor:
    def __init__(self, name, dtype=DataType.FLOAT, shape=(1, 8, 16, 16)):
        self.name, self.dtype, self.shape = name, dtype, shape
        self.is_network_output = False
        self.is_shape_tensor = False
        self.is_execution_tensor = True


class FakeLayer:
    """An ILayer with 8.6's precision API: set/reset precision and per-output types."""

    def __init__(self, name, kind, inputs, outputs, metadata=""):
        self.name, self.type, self.metadata = name, types.SimpleNamespace(name=kind), metadata
        self._inputs, self._outputs = inputs, outputs
        self._precision = DataType.FLOAT
        self.precision_is_set = False
        self._out_types = {}

    num_inputs = property(lambda self: len(self._inputs))
    num_outputs = property(lambda self: len(self._outputs))

    def get_input(self, i):
        return self._inputs[i]

    def get_output(self, i):
        return self._outputs[i]

    @property
    def precision(self):
        return self._precision

    @precision.setter
    def precision(self, dtype):
        self._precision, self.precision_is_set = dtype, True

    def reset_precision(self):
        self._precision, self.precision_is_set = DataType.FLOAT, False

    def set_output_type(self, i, dtype):
        self._out_types[i] = dtype

    def get_output_type(self, i):
        return self._out_types.get(i, self._outputs[i].dtype)

    def output_type_is_set(self, i):
        return i in self._out_types

    def reset_output_type(self, i):
        self._out_types.pop(i, None)


class FakeNetwork:
    def __init__(self, inputs, layers, outputs):
        self._inputs, self._layers, self._outputs = inputs, layers, []
        for t in outputs:
            self.mark_output(t)

    num_inputs = property(lambda self: len(self._inputs))
    num_layers = property(lambda self: len(self._layers))
    num_outputs = property(lambda self: len(self._outputs))

    def get_input(self, i):
        return self._inputs[i]

    def get_layer(self, i):
        return self._layers[i]

    def get_output(self, i):
        return self._outputs[i]

    def mark_output(self, t):
        t.is_network_output = True
        self._outputs.append(t)

    def unmark_output(self, t):
        t.is_network_output = False
        self._outputs.remove(t)

    def describe(self):
        """What an engine built now would have: outputs, and layers with a precision constraint."""
        return {"outputs": [t.name for t in self._outputs],
                "fp32": sorted(layer.name for layer in self._layers if layer.precision_is_set)}

    @classmethod
    def conv_net(cls):
        """image -> conv1 -> relu1 -> conv2 -> relu2 -> pool -> logits, as the ONNX parser names them."""
        image = FakeTensor("image")
        names = ["conv1_out", "relu1_out", "conv2_out", "relu2_out", "logits"]
        outs = [FakeTensor(n) for n in names]
        kinds = [("conv1", "CONVOLUTION"), ("relu1", "ACTIVATION"), ("conv2", "CONVOLUTION"),
                 ("relu2", "ACTIVATION"), ("pool", "POOLING")]
        layers, prev = [], image
        for (name, kind), out in zip(kinds, outs):
            layers.append(FakeLayer(name, kind, [prev], [out], f"[ONNX Layer: {name}]"))
            prev = out
        return cls([image], layers, [outs[-1]])


def conv_model():
    nodes, prev = [], "image"
    for name, op, out in [("conv1", "Relu", "conv1_out"), ("relu1", "Relu", "relu1_out"), ("conv2", "Relu", "conv2_out"),
                          ("relu2", "Relu", "relu2_out"), ("pool", "Relu", "logits")]:
        nodes.append(helper.make_node(op, [prev], [out], name=name))
        prev = out
    g = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 8, 16, 16])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 8, 16, 16])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_builds_of_one_process_share_the_cache_and_save_it_to_the_default_file(monkeypatch, tmp_path):
    from trtdebug.runners.tensorrt.builder import EngineBuilder

    monkeypatch.setattr(tc, "gpu_identity", lambda: "GPU-sm90")
    trt = FakeTRT(build_log=LOG_86)
    model = conv_model()
    cfg = TrtBuildConfig()
    first = EngineBuilder(trt, model, ModelGraph(model), cfg, show_progress=False)
    first.build()
    assert first.last_phases[-1][0] == PHASE_DONE  # progress came from the log (8.6: no monitor)
    second = EngineBuilder(trt, model, ModelGraph(model), cfg, show_progress=False)
    second.build()
    c1, c2 = trt.state.configs
    assert c1.cache is c2.cache and c2.cache.entries == {b"build0", b"build1"}
    assert second.save_timing_cache()
    path = tc.default_cache_path(trt, gpu="GPU-sm90")
    assert FakeTimingCache.from_blob(path.read_bytes()).entries == {b"build0", b"build1"}
    assert not EngineBuilder(trt, model, ModelGraph(model), TrtBuildConfig(persistent_cache=False),
                             show_progress=False).save_timing_cache()


# ----------------------------------------------------------------------------------------------
# variants of one parsed network
# ----------------------------------------------------------------------------------------------

def _variants(trt, cfg=None, model=None):
    from trtdebug.runners.tensorrt.builder import EngineBuilder
    from trtdebug.runners.tensorrt.variants import NetworkVariants

    model = model or conv_model()
    eb = EngineBuilder(trt, model, ModelGraph(model), cfg or TrtBuildConfig(persistent_cache=False), show_progress=False)
    return NetworkVariants(eb)


def test_variants_parse_once_and_restore_the_network_after_each_build():
    from trtdebug.model import OutputSelection

    trt = FakeTRT()
    with _variants(trt, TrtBuildConfig(fp16=True, persistent_cache=False)) as v:
        net = v.parsed.network
        plain = v.build()
        marked = v.build(["relu1_out", "conv2_out"])
        fp32 = v.build(fp32_nodes=["conv2", "ghost"])
        v.build(OutputSelection(names=("relu2_out",), exclude=("logits",)))
        v.build()
        assert trt.state.parses == 1 and len(trt.state.networks) == 1 and v.builds == 5
        assert net.describe() == {"outputs": ["logits"], "fp32": []}  # clean for the next variant
    first, second, third, fourth, fifth = trt.state.builds
    assert first == fifth == {"outputs": ["logits"], "fp32": []}
    assert second == {"outputs": ["logits", "relu1_out", "conv2_out"], "fp32": []}
    assert marked.marking.mark == ["relu1_out", "conv2_out"] and plain.marking.mark == []
    assert third == {"outputs": ["logits"], "fp32": ["conv2"]}
    assert fourth == {"outputs": ["relu2_out"], "fp32": []}
    assert any("FP32 kept on 1 ONNX node(s); no TensorRT layer found for ghost" in n for n in fp32.notes)
    configs = trt.state.configs
    assert "OBEY_PRECISION_CONSTRAINTS" in configs[2].flags and "OBEY_PRECISION_CONSTRAINTS" not in configs[3].flags
    assert all(c.cache is configs[0].cache for c in configs)  # one timing cache across the variants
    assert configs[0].cache.entries == {f"build{i}".encode() for i in range(5)}


def test_variant_restores_precision_that_was_set_before_and_after_a_failed_build():
    trt = FakeTRT()
    with _variants(trt) as v:
        conv1 = v.parsed.network.get_layer(0)
        conv1.precision = DataType.HALF  # set by someone before (e.g. the base configuration)
        conv1.set_output_type(0, DataType.HALF)

        def fail(self, network, config):
            raise RuntimeError("Internal error: could not find any implementation")

        trt.Builder.build_serialized_network = fail
        with pytest.raises(Exception, match="could not find any implementation"):
            v.build(["relu2_out"], fp32_nodes=["conv1", "relu1"])
        net = v.parsed.network
        assert [net.get_output(i).name for i in range(net.num_outputs)] == ["logits"]
        assert conv1.precision is DataType.HALF and conv1.get_output_type(0) is DataType.HALF
        relu1 = net.get_layer(1)
        assert not relu1.precision_is_set and not relu1.output_type_is_set(0)


def test_fp32_variant_on_a_release_without_layer_precision_is_a_usage_error():
    import enum

    from trtdebug.errors import UsageError

    trt = FakeTRT()
    trt.__version__ = "11.0.0"
    trt.BuilderFlag = enum.IntEnum("BuilderFlag", ["TF32", "EDITABLE_TIMING_CACHE"], start=0)
    trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", ["STRONGLY_TYPED"], start=0)
    trt.ILayer = type("ILayer", (), {"metadata": None, "get_output": None})  # 11.x: no precision API
    with _variants(trt) as v:
        assert v.build(["relu1_out"]).marking.mark == ["relu1_out"]  # outputs still vary without a re-parse
        with pytest.raises(UsageError) as info:
            v.build(fp32_nodes=["conv1"])
    msg = str(info.value)
    assert "\n" not in msg and "TensorRT 11.0.0" in msg and "in the ONNX graph" in msg
