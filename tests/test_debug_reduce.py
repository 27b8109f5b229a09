"""Oracles, subgraph cutting and ``trtdebug debug reduce`` on a transformer block with a planted bad node."""
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
from onnx import helper, numpy_helper

import trtdebug
from trtdebug import zoo
from trtdebug.debug.oracle import (AccuracyOracle, CallableOracle, Case, CommandOracle, OnnxRuntimeFails,
                                   TrtBuildFails)
from trtdebug.debug.reduce import reduce_model
from trtdebug.debug.search import NotFailing, Verdict
from trtdebug.debug.subgraph import Cutter, sanitize
from trtdebug.errors import UsageError
from trtdebug.model import save_model

TOL = {"atol": 1e-4, "rtol": 1e-4}
PLANTED = "block0/fc1_bias"


def _console_script() -> str:
    script = Path(sys.executable).parent / "trtdebug"
    return str(script) if script.exists() else shutil.which("trtdebug")


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """orig.onnx, bad.onnx (one bias of fc1 changed), the original's mark-all outputs and inputs (2 iterations)."""
    d = tmp_path_factory.mktemp("planted")
    model = zoo.transformer(seed=3)  # dynamic B and S
    save_model(model, d / "orig.onnx")
    bad = onnx.ModelProto()
    bad.CopyFrom(model)
    for init in bad.graph.initializer:
        if init.name == "block0.ffn.fc1.bias":
            value = numpy_helper.to_array(init).copy()
            value[5] += 0.05  # subtle: 0.05 on one channel of 256
            init.CopyFrom(numpy_helper.from_array(value, init.name))
    save_model(bad, d / "bad.onnx")
    rng = np.random.default_rng(0)
    feeds = [{"x": rng.standard_normal((2, 8, 64)).astype(np.float32)},
             {"x": rng.standard_normal((2, 8, 64)).astype(np.float32)}]
    with trtdebug.run(d / "orig.onnx", backends=("ref",), mark_all=True, inputs=feeds, save_outputs=d / "reference",
                      save_inputs=d / "inputs.npz"):
        pass
    return d


# -- oracles ------------------------------------------------------------------------------------

def _is_big(case):  # module level: runs in a spawned child
    return len(onnx.load(case.model).graph.node) > 2


def _has_tanh(case):
    return any(n.op_type == "Tanh" for n in onnx.load(case.model).graph.node)


def _segfault(case):
    os.kill(os.getpid(), signal.SIGSEGV)


def _tiny_model(path, op="Relu"):
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])
    m = helper.make_model(helper.make_graph([helper.make_node(op, ["x"], ["y"], name="n0")], "g", [x], [y]),
                          opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return Case(str(path))


def test_command_oracle_codes_regex_crash_and_hang(tmp_path):
    case = _tiny_model(tmp_path / "m.onnx")
    py = sys.executable
    script = tmp_path / "check.py"
    script.write_text("import sys, os, signal, time\nmode = sys.argv[1]\nassert sys.argv[2].endswith('m.onnx')\n"
                      "if mode == 'segv': os.kill(os.getpid(), signal.SIGSEGV)\n"
                      "if mode == 'hang': time.sleep(60)\n"
                      "print('ERROR: mismatch' if mode == 'msg' else 'fine')\nsys.exit(int(mode) if mode.isdigit() else 1)\n")
    judge = lambda mode, **kw: CommandOracle(f"{py} {script} {mode} {{model}}", **kw).judge(case)  # noqa: E731
    assert judge("0").verdict is Verdict.GOOD
    assert judge("1").verdict is Verdict.BAD and "exit code 1" in judge("1").detail
    assert judge("3", fail_codes=[2]).verdict is Verdict.GOOD
    assert judge("2", fail_codes=[2]).verdict is Verdict.BAD
    assert judge("msg", fail_regex=["ERROR: mis"]).verdict is Verdict.BAD
    assert judge("1", fail_regex=["ERROR: mis"]).verdict is Verdict.GOOD  # fails, but not the failure we hunt
    assert judge("segv").verdict is Verdict.SKIP and "SIGSEGV" in judge("segv").detail
    assert judge("segv", on_crash="bad").verdict is Verdict.BAD
    hang = judge("hang", timeout=1)
    assert hang.verdict is Verdict.SKIP and "timed out" in hang.detail and hang.seconds < 10
    with pytest.raises(UsageError, match="no inputs"):
        CommandOracle("x {inputs}").judge(case)
    with pytest.raises(UsageError, match="cannot run"):
        CommandOracle("/nonexistent/checker {model}").judge(case)


def test_callable_oracle_runs_isolated_and_survives_a_segfault(tmp_path):
    case = _tiny_model(tmp_path / "m.onnx")
    assert CallableOracle(_is_big).judge(case).verdict is Verdict.GOOD
    crashed = CallableOracle(_segfault, on_crash="bad").judge(case)
    assert crashed.verdict is Verdict.BAD and "SIGSEGV" in crashed.detail
    assert CallableOracle(_segfault).judge(case).verdict is Verdict.SKIP
    assert CallableOracle(lambda c: True, isolate=False).judge(case).verdict is Verdict.BAD


def test_onnxruntime_fails_oracle(tmp_path):
    assert OnnxRuntimeFails().judge(_tiny_model(tmp_path / "ok.onnx")).verdict is Verdict.GOOD
    bad = OnnxRuntimeFails().judge(_tiny_model(tmp_path / "bad.onnx", op="NoSuchOp"))
    assert bad.verdict is Verdict.BAD and "NoSuchOp" in bad.detail


@pytest.mark.gpu
def test_trt_build_oracle_on_the_gpu(tmp_path):
    assert TrtBuildFails().judge(_tiny_model(tmp_path / "ok.onnx")).verdict is Verdict.GOOD
    bad = TrtBuildFails().judge(_tiny_model(tmp_path / "bad.onnx", op="NoSuchOp"))
    assert bad.verdict is Verdict.BAD and "NoSuchOp" in bad.detail


# -- subgraphs ----------------------------------------------------------------------------------

def test_any_node_subset_cuts_into_a_runnable_model_fed_with_true_values(planted):
    import onnxruntime as ort

    from trtdebug.inputs.io import load_inputs
    from trtdebug.results import load_outputs

    model, notes = sanitize(onnx.load(str(planted / "orig.onnx")), input_shapes={"x": (2, 8, 64)})
    reference = load_outputs(planted / "reference").results[0].iterations[0]
    feeds = load_inputs(planted / "inputs.npz")[0]
    cutter = Cutter(model, available=set(reference) | {"x"})
    names = cutter.candidates
    subset = [names[3], names[10], names[11], names[25]]  # not connected
    sub = cutter.cut(subset)
    onnx.checker.check_model(sub, full_check=True)
    assert [n.name for n in sub.graph.node] == subset
    ins = [i.name for i in sub.graph.input]
    session = ort.InferenceSession(sub.SerializeToString(), providers=["CPUExecutionProvider"])
    values = {n: (feeds[n] if n in feeds else np.asarray(reference[n])) for n in ins}
    for name, got in zip([o.name for o in sub.graph.output], session.run(None, values)):
        np.testing.assert_allclose(got, reference[name], atol=1e-4, rtol=1e-4)
    # without true values for intermediates, a node pulls in its producers back to the graph input
    only_x = Cutter(model, available={"x"})
    closed = only_x.closure([names[5]])
    assert len(closed) > 1 and closed[-1] == names[5] and only_x.boundary(closed)[0] == ["x"]


# -- reduce -------------------------------------------------------------------------------------

def test_reduce_with_the_onnxruntime_accuracy_oracle_names_the_planted_node(planted, tmp_path):
    steps = []
    result = reduce_model(planted / "bad.onnx", tmp_path / "out", oracle=AccuracyOracle("onnxrt", **TOL),
                          inputs=planted / "inputs.npz", load_outputs=planted / "reference", on_progress=steps.append,
                          report=tmp_path / "r.json")
    assert result.culprit_nodes == [PLANTED]
    report = json.loads((tmp_path / "r.json").read_text())
    for key in ("culprit_nodes", "oracle_calls", "builds", "minimal_model", "steps", "seconds"):
        assert key in report
    assert report["culprit_ops"] == ["Add"] and report["builds"] == 0
    assert report["oracle_calls"] <= 2 * np.log2(report["candidates"]) + 3
    assert steps and all(p.step <= p.estimate for p in steps) and steps[-1].seconds_per_call > 0
    minimal = onnx.load(str(result.minimal_model))
    assert [n.name for n in minimal.graph.node] == [PLANTED]
    # the bundle reproduces: its command fails on the minimal model (exit 1: accuracy), two iterations in it
    from trtdebug.inputs.io import load_inputs

    assert len(load_inputs(tmp_path / "out" / "inputs.npz")) == 2
    proc = subprocess.run(["sh", str(tmp_path / "out" / "repro.sh")], capture_output=True, text=True,
                          env={**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"})
    assert proc.returncode == 1, proc.stderr
    assert "block0/fc1_bias_out" in proc.stdout

    # run again on the same directory: the journal answers everything
    again = reduce_model(planted / "bad.onnx", tmp_path / "out", oracle=AccuracyOracle("onnxrt", **TOL),
                         inputs=planted / "inputs.npz", load_outputs=planted / "reference")
    assert again.culprit_nodes == [PLANTED]
    assert again.report["oracle_calls"] == 0 and again.report["reused_verdicts"] == len(again.report["steps"])


def test_reduce_of_a_model_that_passes_says_so(planted, tmp_path):
    with pytest.raises(NotFailing, match="nothing to reduce"):
        reduce_model(planted / "orig.onnx", tmp_path / "out", oracle=AccuracyOracle("onnxrt", **TOL),
                     inputs=planted / "inputs.npz", load_outputs=planted / "reference")


def test_reduce_refuses_a_directory_of_the_users(planted, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="refusing"):
        reduce_model(planted / "bad.onnx", tmp_path / "mine", oracle=AccuracyOracle("onnxrt"))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"
    with pytest.raises(UsageError, match="--load-inputs"):
        reduce_model(planted / "bad.onnx", tmp_path / "o", oracle=AccuracyOracle("onnxrt"),
                     load_outputs=planted / "reference")


def test_cli_reduce_with_a_check_command_through_the_console_script(planted, tmp_path):
    """The done-when test: the installed ``trtdebug`` script, a --check that is itself ``trtdebug run``."""
    exe = _console_script()
    check = f"{exe} run {{model}} --onnxrt --load-inputs {{inputs}} --load-outputs {{reference}} --atol 1e-4 --rtol 1e-4 -q"
    proc = subprocess.run([exe, "debug", "reduce", str(planted / "bad.onnx"), "--out", str(tmp_path / "out"),
                           "--check", check, "--fail-code", "1", "--load-inputs", str(planted / "inputs.npz"),
                           "--load-outputs", str(planted / "reference"), "--report", str(tmp_path / "r.json")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert f"culprit node(s): {PLANTED} (Add)" in proc.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["culprit_nodes"] == [PLANTED] and report["oracle"].startswith("check: ")
    assert "minimal.onnx" in (tmp_path / "out" / "repro.sh").read_text()


def test_cli_reduce_finds_a_node_replaced_by_a_different_op(tmp_path):
    """A node replaced by a subtly different op, judged against the original's golden (python -m trtdebug)."""
    model = zoo.transformer(seed=1)
    for node in model.graph.node:  # a subtly different op: exact GELU's Erf replaced by Tanh
        if node.name == "block0/gelu_erf":
            node.op_type = "Tanh"
    save_model(model, tmp_path / "m.onnx")
    orig = zoo.transformer(seed=1)
    save_model(orig, tmp_path / "orig.onnx")
    with trtdebug.run(tmp_path / "orig.onnx", backends=("ref",), mark_all=True, input_shapes={"x": (1, 4, 64)},
                      save_outputs=tmp_path / "ref", save_inputs=tmp_path / "in.npz"):
        pass
    proc = subprocess.run([sys.executable, "-m", "trtdebug", "debug", "reduce", str(tmp_path / "m.onnx"),
                           "--out", str(tmp_path / "out"), "--backend", "onnxrt", "--load-inputs", str(tmp_path / "in.npz"),
                           "--load-outputs", str(tmp_path / "ref"), "--atol", "1e-4", "--rtol", "1e-4"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "culprit node(s): block0/gelu_erf (Tanh)" in proc.stdout


def test_cli_reduce_misuse_is_one_line(tmp_path, planted):
    for args, message in ((["--out", str(tmp_path / "o")], "exactly one oracle"),
                          (["--out", str(tmp_path / "o"), "--backend", "onnxrt", "--onnxrt-fails"], "exactly one oracle"),
                          (["--out", str(tmp_path / "o"), "--backend", "tvm"], "--backend"),
                          (["--out", str(tmp_path / "o"), "--check", "x", "--devices", "a,b"], "--devices"),
                          (["--out", str(tmp_path / "o"), "--backend", "onnxrt", "--fail-code", "1"], "--check")):
        proc = subprocess.run([sys.executable, "-m", "trtdebug", "debug", "reduce", str(planted / "bad.onnx"), *args],
                              capture_output=True, text=True)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_reduce_without_true_values_on_two_workers(tmp_path):
    """An oracle that needs no reference (a structural check), two workers each given a device id."""
    model = zoo.transformer(seed=2, blocks=2)
    for node in model.graph.node:
        if node.name == "block1/gelu_erf":
            node.op_type = "Tanh"
    save_model(model, tmp_path / "m.onnx")
    result = reduce_model(tmp_path / "m.onnx", tmp_path / "out", oracle=CallableOracle(_has_tanh),
                          input_shapes={"x": (1, 4, 64)}, devices=[0, 1])
    assert result.culprit_nodes == ["block1/gelu_erf"]
    assert not (tmp_path / "out" / "inputs.npz").exists() and "python" in result.repro
    bisect = [s for s in result.report["steps"] if s["phase"] == "bisect"]
    assert len(bisect) % 2 == 0  # both halves judged at once at every level


def _fp16_overflow_model(path):
    """x -> MatMul -> Mul(12) -> Exp -> Log -> MatMul -> y: exact in FP32; Exp's values pass 65504, FP16's max."""
    rng = np.random.default_rng(0)
    w1 = onnx.numpy_helper.from_array((rng.standard_normal((256, 256)) * 0.2).astype(np.float32), "w1")
    w2 = onnx.numpy_helper.from_array((rng.standard_normal((256, 256)) * 0.05).astype(np.float32), "w2")
    k = onnx.numpy_helper.from_array(np.array(12.0, np.float32), "k")
    nodes = [onnx.helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
             onnx.helper.make_node("Mul", ["h", "k"], ["hk"], name="amplify"),
             onnx.helper.make_node("Exp", ["hk"], ["e"], name="exp"),
             onnx.helper.make_node("Log", ["e"], ["l"], name="log"),
             onnx.helper.make_node("MatMul", ["l", "w2"], ["y"], name="fc2")]
    graph = onnx.helper.make_graph(nodes, "overflow", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [256, 256])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [256, 256])], [w1, w2, k])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


@pytest.mark.gpu
def test_reduce_with_the_tensorrt_fp16_oracle_finds_a_minimal_failing_subgraph(tmp_path):
    """TensorRT FP16 against ONNX Runtime on the GPU: a minimal failing node set, each candidate built in a child.

    Seen on TensorRT 8.6 (H200): the culprits are fc1 + amplify (FP16 MatMul error, scaled), not Exp -
    its marked output is FP32, so it never overflows (the precision issue's item 0).
    """
    from trtdebug.debug.oracle import AccuracyOracle, Case, Verdict
    from trtdebug.debug.reduce import reduce_model

    model = _fp16_overflow_model(tmp_path / "overflow.onnx")
    oracle = AccuracyOracle("trt", atol=1e-2, rtol=1e-2, trt_options={"fp16": True, "builder_optimization_level": 0})
    reduce_model(model, tmp_path / "out", oracle=oracle, report=tmp_path / "r.json")
    report = json.loads((tmp_path / "r.json").read_text())
    print("culprits", report["culprit_nodes"], "oracle calls", report["oracle_calls"], "seconds", report["seconds"])
    assert 1 <= len(report["culprit_nodes"]) <= 2
    assert set(report["culprit_nodes"]) <= {"fc1", "amplify", "exp", "log", "fc2"}
    assert report["oracle_calls"] <= 2 * 3 + 3  # 5 candidates: log2(5) < 3
    out = tmp_path / "out"
    again = oracle.judge(Case(str(out / "minimal.onnx"), str(out / "inputs.npz"), str(out / "reference")))
    assert again.verdict is Verdict.BAD, again  # the bundle reproduces the failure
