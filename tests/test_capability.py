"""TensorRT capability partitioning, driven by fake ONNX parsers that answer like TensorRT 8.6 and 10.x.

The fakes reproduce the parser's contract (see trtdebug/runners/tensorrt/capability.py): listed
subgraphs are the candidate nodes in topological order, rejected nodes are the gaps, flags are True
only for a fully parsed model, and 8.6's parse stops at the first failing node.
"""
import json
import sys
import types

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

from trtdebug import zoo
from trtdebug.errors import BackendError, BackendUnavailableError, UsageError
from trtdebug.model import ModelGraph, load_model
from trtdebug.runners.tensorrt.parser_errors import ParserIssue, parser_issue
from trtdebug.runners.tensorrt.capability import (
    API_V1,
    API_V2,
    MARKER,
    NO_ERROR_REASON,
    REPORT_NAME,
    SupportCheck,
    SupportChecker,
    _TrtChecker,
    analyze_capability,
    ensure_unique_node_names,
    save_capability,
    subgraph_io,
    subgraphs_from_parser,
    tensorrt_checker,
)


def _topo(model):
    # ModelGraph sorts node protos; map back to indices of model.graph.node by name
    names = [n.name for n in model.graph.node]
    return [names.index(n) for n in ModelGraph(model).node_names]


class Fake86(SupportChecker):
    """supports_model as in TensorRT 8.6: parse stops at the first failing node; registry gaps."""

    api = API_V1
    version = "8.6.fake"

    def __init__(self, unsupported=(), silent=()):
        self.unsupported = set(unsupported)  # no importer: a gap, and a parse error
        self.silent = set(silent)  # registry says no, parse says nothing (8.6's NonZero)
        self.calls = []

    def check(self, model):
        nodes = model.graph.node
        self.calls.append([n.name for n in nodes])
        order = _topo(model)
        error_node = next((i for i in order if nodes[i].op_type in self.unsupported), None)
        errors = []
        if error_node is not None:
            op = nodes[error_node].op_type
            errors.append(ParserIssue(desc=f"Assertion failed: creator && \"Plugin not found\" (op {op})",
                                      code="UNSUPPORTED_NODE", node_index=error_node, func="importFallbackPluginImporter"))
        runs, current = [], []
        for i in order:
            op = nodes[i].op_type
            if op in self.unsupported or op in self.silent or i == error_node:
                if current:
                    runs.append(current)
                current = []
            else:
                current.append(i)
        if current:
            runs.append(current)
        ok = not errors and not any(nodes[i].op_type in self.silent for i in order)
        if ok:
            return SupportCheck(True, [(order, True)], [])
        return SupportCheck(False, [(r, False) for r in runs], errors)


class Fake10(Fake86):
    """supports_model_v2 as in TensorRT 10.x: static checks report every failing node by name and op."""

    api = API_V2
    version = "10.8.fake"

    def check(self, model):
        result = super().check(model)
        nodes = model.graph.node
        errors = [ParserIssue(desc=f"No importer registered for op: {nodes[i].op_type}.", code="UNSUPPORTED_NODE",
                              node_index=i, node_name=nodes[i].name, op=nodes[i].op_type)
                  for i in _topo(model) if nodes[i].op_type in self.unsupported]
        return SupportCheck(result.supported, result.subgraphs, errors)


def _load(model, tmp_path, name="m.onnx"):
    path = tmp_path / name
    onnx.save(model, str(path))
    return load_model(path), path


def _feeds(sess, seed=0):
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in sess.get_inputs():
        shape = [d if isinstance(d, int) and d > 0 else 2 for d in inp.shape]
        dtype = {"tensor(float)": np.float32, "tensor(int64)": np.int64}[inp.type]
        feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def _run_saved(path):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outs = sess.run(None, _feeds(sess))
    assert outs and all(np.all(np.isfinite(o)) for o in outs if o.dtype.kind == "f")
    return sess


# -- partitioning ----------------------------------------------------------------------------------------
def test_conv_net_with_unsupported_maxpool_8_6(tmp_path):
    model, _ = _load(zoo.conv_net(), tmp_path)
    checker = Fake86(unsupported={"MaxPool"})
    report = analyze_capability(model, checker)
    assert not report.fully_supported and report.api == API_V1 and report.tensorrt_version == "8.6.fake"
    assert [s.nodes for s in report.unsupported] == [["stage0/MaxPool"], ["stage1/MaxPool"], ["stage2/MaxPool"]]
    assert [s.nodes[0] for s in report.supported] == ["stage0/Conv", "stage1/Conv", "stage2/Conv", "head/GlobalAveragePool"]
    assert report.supported[-1].nodes[-1] == "head/Softmax"
    assert all(s.verified for s in report.supported)
    assert len(report.rows) == 1
    row = report.rows[0]
    assert (row.operator, row.count) == ("MaxPool", 3)
    assert row.nodes == ["stage0/MaxPool", "stage1/MaxPool", "stage2/MaxPool"]
    assert "Plugin not found" in row.reason and row.reason.startswith("UNSUPPORTED_NODE")
    assert report.unsupported[1].inputs == ["stage1/relu_out"] and report.unsupported[1].outputs == ["stage1/pool_out"]
    assert report.unsupported[0].errors[0].node_name == "stage0/MaxPool" and report.unsupported[0].errors[0].op == "MaxPool"


def test_saved_subgraphs_are_valid_models_onnxruntime_runs(tmp_path):
    model, path = _load(zoo.conv_net(), tmp_path)
    report = analyze_capability(model, Fake86(unsupported={"MaxPool"}))
    out = save_capability(report, model, tmp_path / "cap")
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted([MARKER, REPORT_NAME] + [f"supported_{i}.onnx" for i in range(4)]
                           + [f"unsupported_{i}.onnx" for i in range(3)])
    for sg in report.supported + report.unsupported:
        assert sg.file == sg.file_name
        saved = onnx.load(str(out / sg.file))
        onnx.checker.check_model(saved, full_check=True)
        assert [n.name for n in saved.graph.node] == sg.nodes
        sess = _run_saved(out / sg.file)
        assert [i.name for i in sess.get_inputs()] == sg.inputs
    data = json.loads((out / REPORT_NAME).read_text())
    assert data["summary"][0]["operator"] == "MaxPool" and data["summary"][0]["count"] == 3
    assert data["num_unsupported_nodes"] == 3 and data["unsupported_subgraphs"][0]["file"] == "unsupported_0.onnx"
    assert data["out_dir"] == str(tmp_path / "cap")


def test_adjacent_unsupported_nodes_each_get_their_own_reason(tmp_path):
    # 8.6 stops at the first failing node, so the second one is diagnosed on its own
    model, _ = _load(zoo.conv_net(), tmp_path)
    checker = Fake86(unsupported={"GlobalAveragePool", "Flatten"})
    report = analyze_capability(model, checker)
    assert [s.nodes for s in report.unsupported] == [["head/GlobalAveragePool", "head/Flatten"]]
    assert {(r.operator, r.count) for r in report.rows} == {("GlobalAveragePool", 1), ("Flatten", 1)}
    flatten = next(r for r in report.rows if r.operator == "Flatten")
    assert "(op Flatten)" in flatten.reason and flatten.nodes == ["head/Flatten"]
    out = save_capability(report, model, tmp_path / "cap")
    _run_saved(out / "unsupported_0.onnx")


def test_registry_only_rejection_has_a_clear_reason(tmp_path):
    model, _ = _load(zoo.conv_net(), tmp_path)
    report = analyze_capability(model, Fake86(silent={"Softmax"}))
    assert [s.nodes for s in report.unsupported] == [["head/Softmax"]]
    assert report.rows[0].reason == NO_ERROR_REASON


def test_transformer_with_v2_semantics(tmp_path):
    model, _ = _load(zoo.transformer(blocks=2), tmp_path)
    checker = Fake10(unsupported={"Erf", "Softmax"})
    report = analyze_capability(model, checker)
    assert report.api == API_V2
    assert [s.nodes for s in report.unsupported] == [["block0/softmax"], ["block0/gelu_erf"], ["block1/softmax"], ["block1/gelu_erf"]]
    rows = {r.operator: r for r in report.rows}
    assert rows["Erf"].count == 2 and rows["Softmax"].count == 2
    assert rows["Erf"].reason == "UNSUPPORTED_NODE: No importer registered for op: Erf."
    assert len(report.supported) == 5
    out = save_capability(report, model, tmp_path / "cap")
    for sg in report.supported + report.unsupported:
        _run_saved(out / sg.file)


def test_recursion_rechecks_unproven_subgraphs_and_terminates(tmp_path):
    model, _ = _load(zoo.transformer(blocks=3), tmp_path)
    checker = Fake86(unsupported={"Erf"})
    report = analyze_capability(model, checker)
    assert [s.nodes for s in report.unsupported] == [[f"block{i}/gelu_erf"] for i in range(3)]
    # top-level check, one re-check per listed subgraph (4), one error check per unsupported run (3)
    assert len(checker.calls) == 1 + 4 + 3
    assert sum(len(s.nodes) for s in report.supported) == report.num_nodes - 3


def test_fully_supported_model(tmp_path):
    model, _ = _load(zoo.conv_net(), tmp_path)
    report = analyze_capability(model, Fake86())
    assert report.fully_supported and report.rows == [] and report.unsupported == []
    assert report.supported[0].nodes == ModelGraph(model).node_names
    out = save_capability(report, model, tmp_path / "cap")
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, REPORT_NAME])
    assert json.loads((out / REPORT_NAME).read_text())["fully_supported"] is True


def _custom_op_model():
    m = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["a"], name="relu"),
         helper.make_node("MyOp", ["a"], ["b"], name="custom", domain="com.example"),
         helper.make_node("Sigmoid", ["b"], ["y"], name="sigmoid")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    m.ir_version = 8
    return m


def test_custom_domain_op_sandwiched_between_supported_ops(tmp_path):
    model, _ = _load(_custom_op_model(), tmp_path)
    report = analyze_capability(model, Fake86(unsupported={"MyOp"}))
    assert [s.nodes for s in report.unsupported] == [["custom"]]
    assert report.rows[0].operator == "com.example::MyOp"
    # its output has no dtype, so it cannot be re-parsed alone: the reason comes from the first check
    assert "Plugin not found" in report.rows[0].reason and "cannot be cut out" in report.unsupported[0].note
    # the custom op's output has no dtype: what follows cannot be cut out and re-checked, and says so
    assert [s.nodes for s in report.supported] == [["relu"], ["sigmoid"]]
    assert report.supported[0].verified and not report.supported[1].verified
    assert "no known dtype" in report.supported[1].note
    out = save_capability(report, model, tmp_path / "cap")
    assert report.supported[0].file == "supported_0.onnx" and report.supported[1].file is None
    assert "not saved" in report.supported[1].note
    data = json.loads((out / REPORT_NAME).read_text())
    assert data["supported_subgraphs"][1]["file"] is None
    _run_saved(out / "supported_0.onnx")


def test_subgraph_that_fails_as_a_whole_is_unsupported_not_an_endless_loop(tmp_path):
    class BoundaryFailure(Fake86):
        # rejects, blaming no node, any model that outputs 'stage1/relu_out' (as a boundary problem would)
        def check(self, model):
            if any(o.name == "stage1/relu_out" for o in model.graph.output):
                self.calls.append([n.name for n in model.graph.node])
                return SupportCheck(False, [(_topo(model), False)], [ParserIssue(desc="output type mismatch", code="INVALID_GRAPH")])
            return super().check(model)

    model, _ = _load(zoo.conv_net(), tmp_path)
    checker = BoundaryFailure(unsupported={"MaxPool"})
    report = analyze_capability(model, checker)
    assert len(checker.calls) < 30
    # stage0's MaxPool and the rejected stage-1 nodes are adjacent: one unsupported region
    assert [s.nodes for s in report.unsupported] == [
        ["stage0/MaxPool", "stage1/Conv", "stage1/BatchNormalization", "stage1/Relu", "stage1/MaxPool"], ["stage2/MaxPool"]]
    rows = {r.operator: r for r in report.rows}
    assert rows["Conv"].reason == "INVALID_GRAPH: output type mismatch" and rows["Relu"].nodes == ["stage1/Relu"]
    assert rows["MaxPool"].count == 3


def test_duplicate_node_names_are_made_unique(tmp_path):
    m = onnx.parser.parse_model(
        """<ir_version: 8, opset_import: ["" : 17]>
        g (float[2] x) => (float[2] y) { a = Relu(x)  b = Neg(a)  y = Relu(b) }""")
    for n in m.graph.node:
        n.name = "dup"
    model, _ = _load(m, tmp_path)
    fixed, renamed = ensure_unique_node_names(model)
    assert len({n.name for n in fixed.graph.node}) == 3 and renamed
    report = analyze_capability(model, Fake86(unsupported={"Neg"}))
    assert report.unsupported[0].nodes == ["dup__1"] and report.notes
    out = save_capability(report, model, tmp_path / "cap")
    _run_saved(out / "unsupported_0.onnx")


def test_subgraph_io():
    graph = ModelGraph(zoo.conv_net())
    ins, outs = subgraph_io(graph, ["stage0/BatchNormalization", "stage0/Relu"])
    assert ins == ["stage0/conv_out"] and outs == ["stage0/relu_out"]
    ins, outs = subgraph_io(graph, ["head/Gemm", "head/Softmax"])
    assert ins == ["flat"] and outs == ["probs"]  # initializers are not inputs; graph outputs are outputs


# -- the output directory --------------------------------------------------------------------------------
def test_refuses_a_non_empty_directory_that_is_not_ours(tmp_path):
    from trtdebug.inspect.capability import inspect_capability

    _, path = _load(zoo.conv_net(), tmp_path)
    user_dir = tmp_path / "mine"
    user_dir.mkdir()
    (user_dir / "precious.txt").write_text("keep me")
    checker = Fake86(unsupported={"MaxPool"})
    with pytest.raises(UsageError, match="refusing"):
        inspect_capability(path, user_dir, checker=checker)
    assert checker.calls == []  # refused before any work
    assert (user_dir / "precious.txt").read_text() == "keep me"
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(UsageError):
        inspect_capability(path, a_file, checker=checker)
    with pytest.raises(UsageError):
        inspect_capability(path, path, checker=checker)  # the model itself


def test_replaces_its_own_earlier_output(tmp_path):
    from trtdebug.inspect.capability import inspect_capability

    _, path = _load(zoo.conv_net(), tmp_path)
    out = tmp_path / "cap"
    inspect_capability(path, out, checker=Fake86(unsupported={"MaxPool"}))
    assert (out / "unsupported_2.onnx").exists()
    report = inspect_capability(path, out, checker=Fake86(unsupported={"Softmax"}))
    assert report.model_path == str(path)
    assert not (out / "unsupported_2.onnx").exists() and (out / "unsupported_0.onnx").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    inspect_capability(path, empty, checker=Fake86(unsupported={"Softmax"}))
    assert (empty / MARKER).exists()


# -- the CLI ----------------------------------------------------------------------------------------------
def test_cli_capability_prints_summary_and_writes_json(tmp_path, monkeypatch):
    import trtdebug.inspect.capability as cap_mod
    from trtdebug.cli.inspect import inspect_app

    _, path = _load(zoo.conv_net(), tmp_path)
    monkeypatch.setattr(cap_mod, "tensorrt_checker", lambda **kw: Fake86(unsupported={"MaxPool"}))
    result = CliRunner().invoke(inspect_app, ["capability", str(path), "--out", str(tmp_path / "cap"),
                                              "--json", str(tmp_path / "cap.json")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "MaxPool" in result.output and "Summary" in result.output and "unsupported_0" in result.output
    data = json.loads((tmp_path / "cap.json").read_text())
    assert data["summary"][0]["nodes"] == ["stage0/MaxPool", "stage1/MaxPool", "stage2/MaxPool"]
    assert (tmp_path / "cap" / "supported_3.onnx").exists()


def test_cli_capability_refusal_is_a_usage_error(tmp_path, monkeypatch):
    import trtdebug.inspect.capability as cap_mod
    from trtdebug.cli.inspect import inspect_app

    _, path = _load(zoo.conv_net(), tmp_path)
    monkeypatch.setattr(cap_mod, "tensorrt_checker", lambda **kw: Fake86())
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "a").write_text("a")
    result = CliRunner().invoke(inspect_app, ["capability", str(path), "--out", str(tmp_path / "mine")])
    assert isinstance(result.exception, UsageError)


# -- the TensorRT adapter, against fake tensorrt modules ------------------------------------------------------
class _Enum:
    def __init__(self, name, value=0):
        self.name, self.value = name, value

    def __int__(self):
        return self.value

    def __str__(self):
        return f"ErrorCode.{self.name}"


class FakeError86:
    """IParserError of 8.6: no node_name()/node_operator()."""

    def __init__(self, node, desc):
        self._node, self._desc = node, desc

    def node(self):
        return self._node

    def desc(self):
        return self._desc

    def code(self):
        return _Enum("UNSUPPORTED_NODE", 8)

    def func(self):
        return "importFallbackPluginImporter"


class FakeError10(FakeError86):
    def node_name(self):
        return "custom"

    def node_operator(self):
        return "MyOp"


def _fake_trt(version, api):
    major = int(version.split(".")[0])
    trt = types.SimpleNamespace(__version__=version)

    class ILogger:
        def __init__(self):
            pass

    class Network:
        pass

    class Builder:
        flags_seen = []
        if major < 10:  # 8.x: implicit batch still exists, so EXPLICIT_BATCH must be asked for
            max_batch_size = 1

        def __init__(self, logger):
            pass

        def create_network(self, flags):
            Builder.flags_seen.append(flags)
            return Network()

    class ParserBase:
        def __init__(self, network, logger):
            self._errors = []

        @property
        def num_errors(self):
            return len(self._errors)

        def get_error(self, i):
            return self._errors[i]

        def _answer(self, data):
            model = onnx.load_from_string(data)
            ops = [n.op_type for n in model.graph.node]
            bad = [i for i, op in enumerate(ops) if op == "MyOp"]
            if bad:
                self._errors = [(FakeError10 if major >= 10 else FakeError86)(bad[0], "Plugin not found")]
                return False, [([i for i in range(len(ops)) if i < bad[0]], False),
                               ([i for i in range(len(ops)) if i > bad[0]], False)]
            return True, [(list(range(len(ops))), True)]

    if api == API_V1:
        class OnnxParser(ParserBase):
            def supports_model(self, data, path=None):
                return self._answer(data)
    else:
        class OnnxParser(ParserBase):
            def supports_model_v2(self, data, path=None):
                ok, self._subgraphs = self._answer(data)
                return ok

            @property
            def num_subgraphs(self):
                return len(self._subgraphs)

            def is_subgraph_supported(self, i):
                return self._subgraphs[i][1]

            def get_subgraph_nodes(self, i):
                return self._subgraphs[i][0]

    trt.ILogger, trt.Builder, trt.OnnxParser = ILogger, Builder, OnnxParser
    flags = {"STRONGLY_TYPED": _Enum("STRONGLY_TYPED", 1)} if major >= 10 else {}
    if major < 11:  # kept (deprecated, ignored) in 10.x, gone in 11
        flags["EXPLICIT_BATCH"] = _Enum("EXPLICIT_BATCH", 0)
        trt.BuilderFlag = types.SimpleNamespace(FP16=_Enum("FP16", 0))  # 11.x: no precision flags
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(**flags)
    return trt


@pytest.mark.parametrize("version,api,flags", [("8.6.0", API_V1, 1 << 0), ("10.0.1", API_V1, 0),
                                               ("10.8.0", API_V2, 0), ("11.0.0", API_V2, 1 << 1)])
def test_trt_checker_adapts_to_each_parser_api(tmp_path, version, api, flags):
    model, _ = _load(_custom_op_model(), tmp_path)
    trt = _fake_trt(version, api)
    checker = _TrtChecker(trt)
    assert checker.api == api and checker.version == version
    result = checker.check(model)
    assert not result.supported
    assert result.subgraphs == [([0], False), ([2], False)]
    issue = result.errors[0]
    assert issue.node_index == 1 and issue.code == "UNSUPPORTED_NODE" and issue.desc == "Plugin not found"
    # EXPLICIT_BATCH on 8.x only; STRONGLY_TYPED where TensorRT requires it (11.x)
    assert trt.Builder.flags_seen[-1] == flags
    report = analyze_capability(model, checker)
    assert report.rows[0].operator == "com.example::MyOp" and report.rows[0].nodes == ["custom"]


def test_trt_checker_without_any_support_api():
    trt = _fake_trt("8.6.0", API_V1)
    del trt.OnnxParser.supports_model
    with pytest.raises(BackendError, match="neither"):
        _TrtChecker(trt)


def test_parser_issue_from_8_6_and_10_errors():
    old = parser_issue(FakeError86(3, "Plugin not found"))
    assert (old.node_index, old.node_name, old.op, old.code, old.func) == (3, None, None, "UNSUPPORTED_NODE",
                                                                           "importFallbackPluginImporter")
    new = parser_issue(FakeError10(-1, "Plugin not found"))
    assert new.node_index is None and new.node_name == "custom" and new.op == "MyOp"

    class Weird:
        def __str__(self):
            return "In node 2: something broke"

    assert parser_issue(Weird()).desc == "In node 2: something broke"


def test_subgraphs_from_parser_accepts_both_count_accessors():
    class WithCount:
        num_subgraphs = 2

        def get_subgraph_nodes(self, i):
            return [i, i + 10]

        def is_subgraph_supported(self, i):
            return i == 1

    class WithGetter(WithCount):
        num_subgraphs = property(lambda self: (_ for _ in ()).throw(AttributeError()))

        def get_nb_subgraphs(self):
            return 2

    expected = [([0, 10], False), ([1, 11], True)]
    assert subgraphs_from_parser(WithCount()) == expected
    getter = WithGetter()
    assert not hasattr(getter, "num_subgraphs")
    assert subgraphs_from_parser(getter) == expected


def test_missing_tensorrt_is_a_clear_backend_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(BackendUnavailableError, match="tensorrt"):
        tensorrt_checker()
