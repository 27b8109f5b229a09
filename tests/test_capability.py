"""TensorRT capability partitioning, driven by fake ONNX parsers that answer like TensorRT 8.6 and 10.x.

The fakes reproduce the parser's contract (see trtdebug/runners/tensorrt/capability.py): listed
subgraphs are the candidate nodes in topological order, rejected nodes are the gaps, flags are True
only for a fully parsed model, and 8.6's parse stops at the first failing node.
"""
import json
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

import trt_fakes

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


# -- the TensorRT adapter, on the fakes of every snapshotted release (tests/trt_fakes.py) ----------------------
def _parser_apis(version):
    return [api for api in (API_V1, API_V2) if trt_fakes.has_member(version, "OnnxParser", api)]


# every release with each capability API it has: supports_model on 8.6-10.x, supports_model_v2 on 10.3+/11.x
RELEASE_APIS = [(v, api) for v in trt_fakes.releases() for api in _parser_apis(v)]


def _answer_like_tensorrt(trt):
    """The parser's answer to a model with one ``MyOp``: the nodes around it, unproven, and its error."""
    def support(data):
        nodes = onnx.load_from_string(data).graph.node
        bad = [i for i, n in enumerate(nodes) if n.op_type == "MyOp"]
        if not bad:
            return True, [(list(range(len(nodes))), True)], []
        i = bad[0]
        error = trt_fakes.parser_error(trt, i, "Plugin not found", func="importFallbackPluginImporter",
                                       node_name=nodes[i].name, node_operator=nodes[i].op_type)
        return False, [(list(range(i)), False), (list(range(i + 1, len(nodes))), False)], [error]
    return support


@pytest.mark.parametrize("version,api", RELEASE_APIS)
def test_trt_checker_on_every_release(tmp_path, version, api):
    model, _ = _load(_custom_op_model(), tmp_path)
    trt = trt_fakes.fake_trt(version)
    if api == API_V1 and trt_fakes.has_member(version, "OnnxParser", API_V2):
        delattr(trt.OnnxParser, API_V2)  # 10.3+ has both and the checker prefers v2: take supports_model here
    trt._fake.support = _answer_like_tensorrt(trt)
    checker = _TrtChecker(trt)
    assert checker.api == api and checker.version == trt.__version__
    result = checker.check(model)
    assert not result.supported
    assert result.subgraphs == [([0], False), ([2], False)]
    issue = result.errors[0]
    assert issue.node_index == 1 and issue.code == "UNSUPPORTED_NODE" and issue.desc == "Plugin not found"
    assert issue.func == "importFallbackPluginImporter"
    # node_name()/node_operator() exist from 10.0 on; 8.6's error names only the node index
    has_names = trt_fakes.has_member(version, "ParserError", "node_name")
    assert (issue.node_name, issue.op) == (("custom", "MyOp") if has_names else (None, None))
    assert f"OnnxParser.{api}" in trt._fake.reads
    assert ("OnnxParser.get_subgraph_nodes" in trt._fake.reads) == (api == API_V2)  # v2 lists subgraphs one by one
    # EXPLICIT_BATCH on 8.x only; STRONGLY_TYPED where TensorRT requires it (11.x, TensorRT-RTX)
    flags = trt.NetworkDefinitionCreationFlag
    if version.startswith(("11.", "rtx-")):
        expected_flags = 1 << int(flags.STRONGLY_TYPED)
    elif version.startswith("8."):
        expected_flags = 1 << int(flags.EXPLICIT_BATCH)
    else:
        expected_flags = 0
    assert trt._fake.network_flags == [expected_flags]
    report = analyze_capability(model, checker)
    assert report.rows[0].operator == "com.example::MyOp" and report.rows[0].nodes == ["custom"]
    assert "Plugin not found" in report.rows[0].reason
    assert [s.nodes for s in report.supported] == [["relu"], ["sigmoid"]]


def test_trt_checker_without_any_support_api():
    trt = trt_fakes.fake_trt("8.6.1")
    delattr(trt.OnnxParser, "supports_model")  # a TensorRT before 8.0 had no capability query
    with pytest.raises(BackendError, match="neither"):
        _TrtChecker(trt)


def test_trt_checker_reports_a_parser_that_raises(tmp_path):
    model, _ = _load(_custom_op_model(), tmp_path)
    trt = trt_fakes.fake_trt("11.0.0.114")

    def raising(data):
        raise RuntimeError("Failed to parse ONNX model")
    trt._fake.support = raising
    with pytest.raises(BackendError, match="failed while checking support: Failed to parse"):
        _TrtChecker(trt).check(model)


@pytest.mark.parametrize("version", ["8.6.1", "10.0.1", "11.0.0.114"])
def test_parser_issue_from_each_release(version):
    trt = trt_fakes.fake_trt(version)
    issue = parser_issue(trt_fakes.parser_error(trt, 3, "Plugin not found", func="importFallbackPluginImporter",
                                                node_name="custom", node_operator="MyOp"))
    assert (issue.node_index, issue.code, issue.func, issue.desc) == (3, "UNSUPPORTED_NODE", "importFallbackPluginImporter",
                                                                     "Plugin not found")
    if version.startswith("8."):  # no node_name()/node_operator(); ErrorCode.name is a method there
        assert callable(trt.ErrorCode.UNSUPPORTED_NODE.name)
        assert (issue.node_name, issue.op) == (None, None)
    else:
        assert (issue.node_name, issue.op) == ("custom", "MyOp")
    assert parser_issue(trt_fakes.parser_error(trt, -1, "model-level")).node_index is None


def test_parser_issue_from_something_that_is_not_a_parser_error():
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
