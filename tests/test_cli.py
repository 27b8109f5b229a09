"""End-to-end CLI tests: real models, real ONNX Runtime and reference, in a subprocess like a user.

They check the documented exit codes (0 pass, 1 accuracy failure, 2 bad input, 3 backend
failure) and that every error is one line on stderr, never a traceback.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from trtdebug import zoo

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from regression_triage import changed_copy  # noqa: E402


def trtdebug(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "trtdebug", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


def assert_one_line_error(proc, code, *fragments):
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith(("trtdebug: error", "Error", "Usage"))]
    assert errors, proc.stderr
    for f in fragments:
        assert f in proc.stderr, (f, proc.stderr)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    onnx.save(zoo.transformer(), d / "transformer.onnx")
    onnx.save(zoo.conv_net(batch=2), d / "conv.onnx")
    return d


def test_transformer_every_layer_onnxrt_vs_reference(models, tmp_path):
    report, html = tmp_path / "r.json", tmp_path / "r.html"
    proc = trtdebug("run", models / "transformer.onnx", "--onnxrt", "--ref", "--mark-all",
                    "--input-shapes", "x:[2,16,64]", "--report", report, "--html", html)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    data = json.loads(report.read_text())
    assert data["passed"] is True
    (comp,) = data["comparisons"]
    assert comp["reference"] == "reference" and comp["test"] == "onnxrt" and comp["first_failing"] is None
    graph_tensors = len(zoo.transformer().graph.node)
    assert len(comp["tensors"]) == graph_tensors  # every node output of the block
    required = {"name", "producer", "topo_index", "is_graph_output", "shape", "max_abs", "mean_abs", "median_abs",
                "p99_abs", "max_rel", "mean_rel", "cosine", "sqnr_db", "ref_nan", "ref_inf", "test_nan", "test_inf", "passed"}
    for t in comp["tensors"]:
        assert required <= set(t)
    assert [t["topo_index"] for t in comp["tensors"]] == sorted(t["topo_index"] for t in comp["tensors"])
    assert comp["tensors"][-1]["name"] == "y" and comp["tensors"][-1]["is_graph_output"]
    assert "<html" in html.read_text().lower()


def test_tight_tolerance_fails_with_exit_1_and_names_first_failing(models, tmp_path):
    report = tmp_path / "r.json"
    proc = trtdebug("run", models / "conv.onnx", "--onnxrt", "--ref", "--mark-all", "--atol", "0", "--rtol", "0",
                    "--report", report)
    assert proc.returncode == 1, proc.stderr
    comp = json.loads(report.read_text())["comparisons"][0]
    assert comp["first_failing"] is not None and "first failing" in proc.stdout


def test_regression_triage_names_the_changed_node(tmp_path):
    v1 = zoo.transformer()
    onnx.save(v1, tmp_path / "v1.onnx")
    onnx.save(changed_copy(v1, "block0.ffn.fc1.weight"), tmp_path / "v2.onnx")
    for v in ("v1", "v2"):
        proc = trtdebug("run", tmp_path / f"{v}.onnx", "--onnxrt", "--mark-all", "--input-shapes", "x:[2,16,64]",
                        "--save-inputs" if v == "v1" else "--load-inputs", tmp_path / "inputs.npz",
                        "--save-outputs", tmp_path / f"{v}_out")
        assert proc.returncode == 0, proc.stderr
        assert (tmp_path / f"{v}_out" / "index.json").exists()
    report = tmp_path / "cmp.json"
    proc = trtdebug("compare", tmp_path / "v1_out", tmp_path / "v2_out", "--report", report)
    assert proc.returncode == 1, proc.stderr
    comp = json.loads(report.read_text())["comparisons"][0]
    assert comp["first_failing"] == "block0/fc1_out"
    first = next(t for t in comp["tensors"] if t["name"] == "block0/fc1_out")
    assert first["producer"] == "block0/fc1"
    before = [t for t in comp["tensors"] if t["topo_index"] < first["topo_index"]]
    assert before and all(t["passed"] for t in before)
    # the same saved sets compared with themselves pass
    assert trtdebug("compare", tmp_path / "v1_out", tmp_path / "v1_out").returncode == 0


def test_load_outputs_as_reference_in_run(models, tmp_path):
    out = tmp_path / "ref_out"
    assert trtdebug("run", models / "conv.onnx", "--ref", "--mark-all", "--save-outputs", out).returncode == 0
    proc = trtdebug("run", models / "conv.onnx", "--onnxrt", "--mark-all", "--load-outputs", out)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "onnxrt vs reference" in proc.stdout


def test_polygraphy_outputs_json_can_be_compared(models, tmp_path):
    polygraphy_json = pytest.importorskip("polygraphy.json")
    from polygraphy.comparator import RunResults
    from polygraphy.comparator.struct import IterationResult

    out = tmp_path / "ours"
    assert trtdebug("run", models / "conv.onnx", "--onnxrt", "--save-outputs", out).returncode == 0
    from trtdebug.results import load_outputs

    ours = load_outputs(out).results[0].iterations[0]
    rr = RunResults()
    rr.append(("onnxrt-runner-N0", [IterationResult({n: np.array(ours[n]) * 1.5 for n in ours}, runtime=0.1,
                                                     runner_name="onnxrt-runner-N0")]))
    polygraphy_json.save_json(rr, str(tmp_path / "poly.json"))
    proc = trtdebug("compare", tmp_path / "poly.json", out, "--model", models / "conv.onnx")
    assert proc.returncode == 1 and "probs" in proc.stdout, proc.stdout + proc.stderr


# -- bad input: one line, exit 2 ----------------------------------------------------------------

def test_missing_model(tmp_path):
    assert_one_line_error(trtdebug("run", tmp_path / "nope.onnx", "--onnxrt"), 2, "not found")


def test_not_an_onnx_model(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_text("hello")
    assert_one_line_error(trtdebug("run", bad, "--onnxrt"), 2, "not an ONNX model")


def test_no_backend_chosen(models):
    assert_one_line_error(trtdebug("run", models / "conv.onnx"), 2, "--onnxrt")


def test_dynamic_dims_without_shapes(models):
    assert_one_line_error(trtdebug("run", models / "transformer.onnx", "--onnxrt"), 2, "--input-shapes x:[")


def test_unknown_input_name_in_shapes(models):
    assert_one_line_error(trtdebug("run", models / "transformer.onnx", "--onnxrt", "--input-shapes", "nope:[1,2,64]"), 2, "nope")


def test_loaded_inputs_with_unknown_name_wrong_shape_or_dtype(models, tmp_path):
    cases = {
        "unknown": {"image": np.zeros((2, 3, 32, 32), np.float32), "extra": np.zeros(1, np.float32)},
        "shape": {"image": np.zeros((2, 3, 16, 32), np.float32)},
        "dtype": {"image": np.zeros((2, 3, 32, 32), np.float64)},
    }
    for what, feeds in cases.items():
        path = tmp_path / f"{what}.npz"
        np.savez(path, **feeds)
        proc = trtdebug("run", models / "conv.onnx", "--onnxrt", "--load-inputs", path)
        assert_one_line_error(proc, 2, {"unknown": "extra", "shape": "shape", "dtype": "dtype"}[what])


def test_bad_tolerance_and_order(models):
    assert_one_line_error(trtdebug("run", models / "conv.onnx", "--onnxrt", "--atol", "abc"), 2, "--atol")
    assert_one_line_error(trtdebug("run", models / "conv.onnx", "--onnxrt", "--order", "sideways"), 2, "--order")


def test_compare_missing_and_malformed(tmp_path):
    assert_one_line_error(trtdebug("compare", tmp_path / "a", tmp_path / "b"), 2, "not found")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "index.json").write_text("{not json")
    assert_one_line_error(trtdebug("compare", tmp_path / "junk", tmp_path / "junk"), 2, "index.json")


def test_outputs_never_overwrite_user_data(models, tmp_path):
    user_dir = tmp_path / "mine"
    user_dir.mkdir()
    (user_dir / "precious.txt").write_text("keep me")
    proc = trtdebug("run", models / "conv.onnx", "--onnxrt", "--save-outputs", user_dir)
    assert_one_line_error(proc, 2, "refusing")
    assert (user_dir / "precious.txt").read_text() == "keep me"
    proc = trtdebug("run", models / "conv.onnx", "--onnxrt", "--ref", "--report", models / "conv.onnx")
    assert_one_line_error(proc, 2, "refusing")
    onnx.load(str(models / "conv.onnx"))  # still a model


def test_backend_failure_is_exit_3(tmp_path):
    m = onnx.parser.parse_model(
        """<ir_version: 8, opset_import: ["" : 17, "com.example" : 1]>
        g (float[2] x) => (float[2] y) { y = com.example.Mystery(x) }"""
    )
    onnx.save(m, tmp_path / "custom.onnx")
    assert_one_line_error(trtdebug("run", tmp_path / "custom.onnx", "--onnxrt"), 3, "ONNX Runtime")


def test_engine_with_onnxrt_is_usage_error(tmp_path):
    eng = tmp_path / "m.engine"
    eng.write_bytes(b"\0" * 16)
    assert_one_line_error(trtdebug("run", eng, "--onnxrt"), 2, "--trt")


def test_tf32_hint_only_for_default_tf32_fp32_matrix_failures():
    from trtdebug.api import tf32_hint
    from trtdebug.comparison import Tolerances, compare_runs
    from trtdebug.comparison.report import Report
    from trtdebug.results import RunResult, TensorSet
    from trtdebug.runners.tensorrt.config import TrtBuildConfig

    ref = RunResult("onnxrt", [TensorSet({"mm": np.ones(4, np.float32)})])
    test = RunResult("tensorrt", [TensorSet({"mm": np.full(4, 1.001, np.float32)})])
    topo = {"mm": {"producer": "fc", "producer_op": "MatMul", "topo_index": 1, "is_graph_output": True}}
    failing = Report(comparisons=[compare_runs(ref, test, tolerances=Tolerances(), topology=topo)])
    assert "--no-tf32" in tf32_hint(failing, trt=True, config=TrtBuildConfig())
    assert tf32_hint(failing, trt=True, config=TrtBuildConfig(tf32=False)) is None
    assert tf32_hint(failing, trt=True, config=TrtBuildConfig(fp16=True)) is None
    assert tf32_hint(failing, trt=False, config=None) is None
    topo["mm"]["producer_op"] = "Softmax"
    other = Report(comparisons=[compare_runs(ref, test, tolerances=Tolerances(), topology=topo)])
    assert tf32_hint(other, trt=True, config=TrtBuildConfig()) is None


def test_mark_all_says_how_many_weight_tensors_it_left_out(tmp_path):
    """A TorchScript-style export: an Identity per weight.  Those are not compared, and the run says so."""
    m = onnx.parser.parse_model(
        """<ir_version: 8, opset_import: ["" : 17]>
        g (float[2,4] x) => (float[2,4] y) <float[4,4] w = {1.0,0.0,0.0,0.0, 0.0,1.0,0.0,0.0,
                                                            0.0,0.0,1.0,0.0, 0.0,0.0,0.0,1.0}> {
            wi = Identity(w)  h = MatMul(x, wi)  y = Relu(h) }"""
    )
    onnx.save(m, tmp_path / "m.onnx")
    proc = trtdebug("run", str(tmp_path / "m.onnx"), "--onnxrt", "--ref", "--mark-all", "--report", str(tmp_path / "r.json"))
    assert proc.returncode == 0, proc.stderr
    assert "onnxrt: 2 tensors (1 left out: computed from weights alone)" in proc.stderr
    assert [t["name"] for t in json.loads((tmp_path / "r.json").read_text())["comparisons"][0]["tensors"]] == ["h", "y"]
