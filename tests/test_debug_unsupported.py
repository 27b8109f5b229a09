"""``trtdebug debug unsupported``: the parser's view first, then builds of subgraphs, each in a child.

Three layers of evidence:

* CPU, planted: a fake parser (``test_capability.Fake10``) and an oracle that fails whenever a
  chosen node is in the candidate - every path (parser, build error naming the node, bisection,
  crash, resume) with exact build counts;
* CPU, real: TensorRT-RTX's parser *accepts* and its builder *rejects* (found by trying, on
  TensorRT-RTX 1.7) a strided-and-dilated ConvTranspose ("Strided & Dilated Deconv are currently
  not supported", Myelin; the error names no node: bisection) and a TopK with K > 3840 ("K exceeds
  the maximum value allowed", naming the layer: build error), each spliced into the zoo's conv net;
* GPU (TensorRT 8.6): the same TopK, and a custom op the parser rejects.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from test_capability import Fake10
from trtdebug import zoo
from trtdebug.debug.oracle import CallableOracle, Case, TrtBuildFails
from trtdebug.debug.search import Judgement, NotFailing, Verdict
from trtdebug.debug.unsupported import find_unsupported
from trtdebug.errors import UsageError
from trtdebug.model import save_model

RTX_OPTIONS = {"builder_optimization_level": 0}


def _script() -> str:
    script = Path(sys.executable).parent / "trtdebug"
    return str(script) if script.exists() else shutil.which("trtdebug")


# -- models ------------------------------------------------------------------------------------------
def segmentation_net() -> onnx.ModelProto:
    """The zoo conv net's encoder with a decoder: a ConvTranspose with stride 2 *and* dilation 2 upsamples."""
    m = zoo.conv_net(batch=1, size=32)
    g = m.graph
    keep = [n for n in g.node if not n.name.startswith("head/")]
    del g.node[:]
    g.node.extend(keep)
    rng = np.random.default_rng(0)
    g.initializer.extend([numpy_helper.from_array((rng.standard_normal((64, 16, 3, 3)) * 0.05).astype(np.float32), "decoder.up.weight"),
                          numpy_helper.from_array((rng.standard_normal((4, 16, 1, 1)) * 0.1).astype(np.float32), "decoder.cls.weight")])
    g.node.extend([helper.make_node("ConvTranspose", ["stage2/pool_out", "decoder.up.weight"], ["up"], name="decoder/ConvTranspose",
                                    strides=[2, 2], dilations=[2, 2]),
                   helper.make_node("Relu", ["up"], ["up_relu"], name="decoder/Relu"),
                   helper.make_node("Conv", ["up_relu", "decoder.cls.weight"], ["logits"], name="decoder/Conv"),
                   helper.make_node("Softmax", ["logits"], ["mask"], name="decoder/Softmax", axis=1)])
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 4, 9, 9]))
    return m


def topk_net(k: int = 4096) -> onnx.ModelProto:
    """The zoo conv net, its scores weighted by the mean of the top-k activations of stage 0 (k > 3840: TensorRT's limit)."""
    m = zoo.conv_net(batch=1, size=32)
    g = m.graph
    g.initializer.append(numpy_helper.from_array(np.array([k], np.int64), "topk_pool.k"))
    g.node.extend([helper.make_node("Flatten", ["stage0/relu_out"], ["act_flat"], name="topk_pool/Flatten", axis=1),
                   helper.make_node("TopK", ["act_flat", "topk_pool.k"], ["topv", "topi"], name="topk_pool/TopK", axis=-1),
                   helper.make_node("ReduceMean", ["topv"], ["topmean"], name="topk_pool/ReduceMean", axes=[1]),
                   helper.make_node("Mul", ["probs", "topmean"], ["scored"], name="topk_pool/Mul")])
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("scored", TensorProto.FLOAT, [1, 10]))
    return m


def custom_op_net() -> onnx.ModelProto:
    """The zoo conv net with a custom-domain normalization (a plugin TensorRT does not have) after stage 1."""
    m = zoo.conv_net(batch=1, size=32)
    for node in m.graph.node:
        if node.name == "stage2/Conv":
            node.input[0] = "stage1/norm_out"
    index = [n.name for n in m.graph.node].index("stage2/Conv")
    m.graph.node.insert(index, helper.make_node("MyNorm", ["stage1/pool_out"], ["stage1/norm_out"], name="stage1/MyNorm",
                                                domain="com.example"))
    m.graph.value_info.append(helper.make_tensor_value_info("stage1/norm_out", TensorProto.FLOAT, [1, 32, 8, 8]))
    m.opset_import.append(helper.make_opsetid("com.example", 1))
    return m


# -- planted oracles ------------------------------------------------------------------------------
def _nodes(case):
    return {n.name for n in onnx.load(case.model).graph.node}


def _named_in_error(case):
    """Like TensorRT's TopK limit: the error names the layer (the ONNX node's name)."""
    if "stage1/Relu" in _nodes(case):
        return Judgement(Verdict.BAD, "Error Code 4: API Usage Error (IActivationLayer stage1/Relu: stage1/Relu: planted)")
    return Verdict.GOOD


def _two_anonymous(case):
    """Like a Myelin failure: no node named; two independent culprits."""
    if _nodes(case) & {"stage0/MaxPool", "head/Gemm"}:
        return Judgement(Verdict.BAD, "Error Code 1: Myelin (no implementation)")
    return Verdict.GOOD


def _segfault_on_relu(case):  # module level: runs in a spawned child
    if "stage2/Relu" in _nodes(case):
        os.kill(os.getpid(), signal.SIGSEGV)
    return False


def _conv_net(tmp_path, name="m.onnx"):
    return save_model(zoo.conv_net(batch=1, size=32), tmp_path / name)


def _runs_in_onnxruntime(path):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: np.random.default_rng(0).standard_normal([d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32)
             for i in sess.get_inputs()}
    return sess.run(None, feeds)


# -- CPU: planted -----------------------------------------------------------------------------------
def test_a_node_named_by_the_build_error_is_confirmed_with_two_builds(tmp_path):
    result = find_unsupported(_conv_net(tmp_path), tmp_path / "out", checker=Fake10(),
                              oracle=CallableOracle(_named_in_error, isolate=False))
    data = result.report
    assert result.culprit_nodes == ["stage1/Relu"]
    assert data["oracle_calls"] == 3  # the whole model, the named node alone, the model without it
    assert [s["phase"] for s in data["steps"]] == ["build", "named", "rest"]
    row, = data["summary"]
    assert (row["operator"], row["method"], row["nodes"]) == ("Relu", "build error", ["stage1/Relu"])
    assert "stage1/Relu: planted" in row["reason"]
    failing = onnx.load(str(result.failing[0]))
    assert [n.name for n in failing.graph.node] == ["stage1/Relu"]
    assert len(result.buildable) == 2  # before and after the culprit, each runs in ONNX Runtime
    for path in result.buildable + result.failing:
        assert _runs_in_onnxruntime(path)
    assert data["repro"].startswith("python ")  # the planted oracle's own repro
    assert json.loads((tmp_path / "out" / "unsupported.json").read_text())["culprit_nodes"] == ["stage1/Relu"]


def test_bisection_finds_culprits_the_error_does_not_name_and_a_rerun_resumes(tmp_path):
    oracle = CallableOracle(_two_anonymous, isolate=False)
    result = find_unsupported(_conv_net(tmp_path), tmp_path / "out", checker=Fake10(), oracle=oracle)
    data = result.report
    assert result.culprit_nodes == ["stage0/MaxPool", "head/Gemm"]
    assert {r["method"] for r in data["summary"]} == {"bisection"}
    assert all("Myelin" in r["reason"] for r in data["summary"])
    n = data["candidates"]  # 15 nodes: two culprits, each about 2*log2(n) builds
    assert data["oracle_calls"] <= 2 * (2 * int(np.ceil(np.log2(n))) + 1) + 2, data["oracle_calls"]
    rest = [e for e in data["buildable"]]
    assert [e["nodes"][0] for e in rest] == ["stage0/Conv", "stage1/Conv", "head/Softmax"]
    again = find_unsupported(_conv_net(tmp_path), tmp_path / "out", checker=Fake10(), oracle=oracle)
    assert again.culprit_nodes == result.culprit_nodes and again.report["oracle_calls"] == 0  # every answer from the journals
    assert sorted(p.name for p in (tmp_path / "out").glob("*.onnx")) == [
        "buildable_0.onnx", "buildable_1.onnx", "buildable_2.onnx", "failing_0.onnx", "failing_1.onnx"]


def test_nodes_the_parser_rejects_come_from_the_capability_pass_and_the_rest_is_built(tmp_path):
    path = save_model(custom_op_net(), tmp_path / "m.onnx")
    calls = []

    def builds_all(case):
        calls.append(sorted(_nodes(case)))
        return Verdict.GOOD

    result = find_unsupported(path, tmp_path / "out", checker=Fake10(unsupported={"MyNorm"}),
                              oracle=CallableOracle(builds_all, isolate=False))
    data = result.report
    assert result.culprit_nodes == ["stage1/MyNorm"]
    row, = data["summary"]
    assert row["method"] == "parser" and "No importer registered for op: MyNorm" in row["reason"]
    assert data["oracle_calls"] == 2 and len(calls) == 2  # one build per subgraph the parser accepts
    assert [b["built"] for b in data["buildable"]] == [True, True]
    assert "stage1/Relu" in data["buildable"][0]["nodes"] and "head/Gemm" in data["buildable"][1]["nodes"]
    assert data["capability"]["unsupported_nodes"] == 1


def test_a_build_that_crashes_is_a_failing_verdict(tmp_path):
    m = zoo.conv_net(batch=1, size=16, channels=4)
    result = find_unsupported(save_model(m, tmp_path / "m.onnx"), tmp_path / "out", checker=Fake10(),
                              oracle=CallableOracle(_segfault_on_relu, on_crash="bad", timeout=120))
    assert result.culprit_nodes == ["stage2/Relu"]
    assert "SIGSEGV" in result.report["summary"][0]["reason"]


def test_misuse_and_nothing_to_find(tmp_path):
    dynamic = save_model(zoo.conv_net(), tmp_path / "dyn.onnx")  # batch N
    with pytest.raises(UsageError, match=r"image:\[\?,3,32,32\] have dynamic shapes.*--input-shapes"):
        find_unsupported(dynamic, tmp_path / "o1", checker=Fake10(), oracle=CallableOracle(_two_anonymous, isolate=False))
    ok = find_unsupported(dynamic, tmp_path / "o2", checker=Fake10(), input_shapes={"image": (2, 3, 32, 32)},
                          oracle=CallableOracle(_two_anonymous, isolate=False))
    assert ok.culprit_nodes == ["stage0/MaxPool", "head/Gemm"]
    with pytest.raises(NotFailing, match="parses and builds every subgraph"):
        find_unsupported(_conv_net(tmp_path), tmp_path / "o3", checker=Fake10(),
                         oracle=CallableOracle(lambda case: False, isolate=False))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="refusing to write into it"):
        find_unsupported(_conv_net(tmp_path), mine, checker=Fake10(), oracle=CallableOracle(_two_anonymous, isolate=False))
    assert os.listdir(mine) == ["notes.txt"]
    with pytest.raises(UsageError, match="it is one of the inputs"):
        find_unsupported(_conv_net(tmp_path), tmp_path / "o4", report=tmp_path / "m.onnx", checker=Fake10(),
                         oracle=CallableOracle(_two_anonymous, isolate=False))


def test_html_page_escapes_what_comes_from_the_model(tmp_path):
    from trtdebug.render.debug_html import render_debug_html

    result = find_unsupported(_conv_net(tmp_path), tmp_path / "out", checker=Fake10(),
                              oracle=CallableOracle(_named_in_error, isolate=False))
    data = dict(result.report, culprit_nodes=["<script>alert(1)</script>"])
    page = render_debug_html(data)
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "build error" in page and "stage1/Relu: planted" in page and "buildable_1.onnx" in page


# -- CPU: the real TensorRT-RTX builder -------------------------------------------------------------
@pytest.fixture(scope="module")
def rtx():
    try:
        import tensorrt_rtx  # noqa: F401
    except ImportError:
        from importlib.metadata import PackageNotFoundError, version

        try:
            version("tensorrt-rtx")
        except PackageNotFoundError:
            pytest.skip("tensorrt-rtx is not installed (pip install -e '.[test,rtx]')")
        raise  # installed but broken: fail, don't skip
    return "tensorrt_rtx"


@pytest.mark.rtx
def test_rtx_parses_but_cannot_build_a_strided_dilated_deconv_and_the_console_script_isolates_it(rtx, tmp_path):
    save_model(segmentation_net(), tmp_path / "seg.onnx")
    out = tmp_path / "out"
    proc = subprocess.run([_script(), "debug", "unsupported", str(tmp_path / "seg.onnx"), "--out", str(out), "--trt-rtx",
                           "--builder-optimization-level", "0", "--report", str(tmp_path / "r.json"),
                           "--html", str(tmp_path / "r.html")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "decoder/ConvTranspose" in proc.stdout and "bisection" in proc.stdout
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["capability"]["fully_supported"]  # the parser alone would have said: all fine
    assert data["culprit_nodes"] == ["decoder/ConvTranspose"]
    row, = data["summary"]
    assert row["method"] == "bisection" and "Strided & Dilated Deconv are currently not supported" in row["reason"]
    assert data["builds"] <= 2 * 4 + 3  # 16 nodes
    oracle = TrtBuildFails(trt_options={"module": rtx, **RTX_OPTIONS})
    for piece in data["buildable"]:  # what is left builds with the real builder
        assert oracle.judge(Case(str(out / piece["file"]))).verdict is Verdict.GOOD
    repro = subprocess.run(["sh", str(out / "repro.sh")], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "PATH": f"{Path(_script()).parent}{os.pathsep}{os.environ['PATH']}"})
    assert repro.returncode == 3 and "Strided & Dilated Deconv" in repro.stderr
    assert "decoder/ConvTranspose" in (tmp_path / "r.html").read_text()


@pytest.mark.rtx
def test_rtx_topk_past_the_builders_limit_is_named_by_its_error(rtx, tmp_path):
    result = find_unsupported(save_model(topk_net(), tmp_path / "m.onnx"), tmp_path / "out", module=rtx,
                              trt_options=RTX_OPTIONS)
    row, = result.report["summary"]
    assert result.culprit_nodes == ["topk_pool/TopK"]
    assert row["method"] == "build error" and "K exceeds the maximum value allowed (3840)" in row["reason"]
    assert result.report["builds"] == 3


@pytest.mark.rtx
def test_rtx_reduce_with_build_flags_and_html(rtx, tmp_path):
    """``debug reduce --trt-build-fails --trt-rtx --builder-optimization-level 0``: the flags reach the oracle."""
    save_model(topk_net(), tmp_path / "m.onnx")
    proc = subprocess.run([_script(), "debug", "reduce", str(tmp_path / "m.onnx"), "--out", str(tmp_path / "out"),
                           "--trt-build-fails", "--trt-rtx", "--builder-optimization-level", "0",
                           "--html", str(tmp_path / "r.html")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "culprit node(s): topk_pool/TopK (TopK)" in proc.stdout
    repro = (tmp_path / "out" / "repro.sh").read_text()
    assert "--trt-rtx --builder-optimization-level 0" in repro
    assert "topk_pool/TopK" in (tmp_path / "r.html").read_text()


def test_reduce_build_flags_need_a_tensorrt_oracle(tmp_path):
    save_model(topk_net(), tmp_path / "m.onnx")
    proc = subprocess.run([sys.executable, "-m", "trtdebug", "debug", "reduce", str(tmp_path / "m.onnx"), "--out",
                           str(tmp_path / "o"), "--onnxrt-fails", "--fp16"], capture_output=True, text=True)
    assert proc.returncode == 2 and "apply to --backend trt and --trt-build-fails" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_trt_flags_in_repro_commands():
    oracle = TrtBuildFails(trt_options={"module": "tensorrt_rtx", "fp16": True, "tf32": False,
                                        "builder_optimization_level": 0, "bf16": False})
    assert oracle.repro(Case("m.onnx")) == "trtdebug run m.onnx --trt-rtx --fp16 --no-tf32 --builder-optimization-level 0"


# -- GPU: TensorRT 8.6 (the lead's H200) ---------------------------------------------------------
@pytest.mark.gpu
def test_gpu_topk_past_the_limit_inside_a_conv_net(tmp_path):
    """Either TensorRT 8.6's parser rejects TopK k=4096 (then: parser, 2 builds) or its builder does (build error, 3)."""
    result = find_unsupported(save_model(topk_net(), tmp_path / "m.onnx"), tmp_path / "out",
                              trt_options={"builder_optimization_level": 0})
    data = result.report
    print("method", [r["method"] for r in data["summary"]], "builds", data["builds"], "seconds", data["seconds"],
          "reason", data["summary"][0]["reason"])
    assert result.culprit_nodes == ["topk_pool/TopK"]
    assert data["builds"] <= (2 if data["summary"][0]["method"] == "parser" else 3 if data["summary"][0]["method"] == "build error"
                              else 2 * 5 + 3)  # bisection over 20 nodes: the bound


@pytest.mark.gpu
def test_gpu_custom_op_inside_a_conv_net_is_found_by_the_parser(tmp_path):
    result = find_unsupported(save_model(custom_op_net(), tmp_path / "m.onnx"), tmp_path / "out",
                              trt_options={"builder_optimization_level": 0})
    data = result.report
    print("builds", data["builds"], "seconds", data["seconds"], "reason", data["summary"][0]["reason"])
    assert result.culprit_nodes == ["stage1/MyNorm"] and data["summary"][0]["method"] == "parser"
    assert data["builds"] == 2 and all(b["built"] for b in data["buildable"])
