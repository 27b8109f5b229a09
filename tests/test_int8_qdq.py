"""INT8 explicit quantization (issue 10, item 4): Q/DQ models from ONNX Runtime's quantize_static compared
layer by layer with their FP32 model across the Q/DQ pairs, and ``debug precision --precision int8``
naming the quantizers that break a planted outlier conv net and writing the model without them."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

pytest.importorskip("onnxruntime.quantization")

from qdq_models import OUTLIER_TENSORS, outlier_conv_net, quantize  # noqa: E402
from trtdebug import zoo  # noqa: E402
from trtdebug.model import qdq  # noqa: E402
from trtdebug.precision.attribution import run_all_tensors  # noqa: E402
from trtdebug.precision.int8 import find_fp32_set, worst_channel_nsr  # noqa: E402

SCRIPT = Path(sys.executable).with_name("trtdebug")


def cli(*args):
    done = subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, timeout=300)
    done.stdout, done.stderr = done.stdout.decode("utf-8"), done.stderr.decode("utf-8")
    return done


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(qdq path, fp32 path) of the plain zoo conv net and of the outlier one, quantized by quantize_static."""
    d = tmp_path_factory.mktemp("qdq")
    plain = quantize(zoo.conv_net(batch=1), d / "plain.onnx")
    outlier = quantize(outlier_conv_net(), d / "outlier.onnx")
    return {"plain": (plain, d / "plain_fp32.onnx"), "outlier": (outlier, d / "outlier_fp32.onnx")}


def image(seed=1):
    return {"image": np.random.default_rng(seed).random((1, 3, 32, 32), dtype=np.float32)}


def test_quantizers_of_a_quantize_static_model(models):
    q_model = onnx.load(models["plain"][0])
    graph = qdq.find_quantizers(q_model)
    acts = {qdq.fp32_name(q) for q in graph.activations}
    assert {"stage0/conv_out", "stage1/relu_out", "stage2/pool_out", "logits", "probs"} <= acts
    assert {q.output for q in graph.activations if qdq.fp32_name(q) == "probs"} == {"probs"}  # graph output kept its name
    fp32 = onnx.load(models["plain"][1])
    names = qdq.weight_fp32_names(graph, q_model, fp32)
    assert names["stage1.conv.weight_DequantizeLinear_Output"] == "stage1.conv.weight"
    # quantize_static dropped the Relus (their Q clamps at 0): taking the pairs out puts them back
    assert "Relu" not in {n.op_type for n in q_model.graph.node}
    stripped = qdq.remove_quantizers(q_model, graph.quantizers, qdq=graph,
                                     weights=qdq.original_weights(graph, q_model, fp32))
    onnx.checker.check_model(stripped)
    assert {n.op_type for n in stripped.graph.node}.isdisjoint({"QuantizeLinear", "DequantizeLinear"})
    got, want = run_all_tensors(stripped, image())["probs"], run_all_tensors(fp32, image())["probs"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)  # with the original weights: the FP32 model


def test_qdq_emulation_matches_onnxruntime(models):
    q_model = onnx.load(models["outlier"][0])
    graph = qdq.find_quantizers(q_model)
    values = run_all_tensors(q_model, image())
    for q in graph.activations:
        assert np.array_equal(graph.qdq(q, values[q.tensor]), values[q.output]), q.name


def test_worst_channel_sees_what_the_tensor_ratio_hides():
    rng = np.random.default_rng(0)
    x = rng.random((1, 8, 4, 4)).astype(np.float32)
    x[:, 0] *= 300  # one outlier channel
    step = x.max() / 255
    rounded = np.round(x / step) * step
    whole = np.linalg.norm(rounded - x) / np.linalg.norm(x)
    assert whole < 0.01 and worst_channel_nsr(rounded, x) > 0.3


def test_run_compares_every_activation_across_the_qdq_pairs(models, tmp_path):
    q_path, fp32_path = models["outlier"]
    report = tmp_path / "r.json"
    done = cli("run", q_path, "--onnxrt", "--mark-all", "--reference-model", fp32_path, "--report", report)
    assert done.returncode == 1, done.stderr  # INT8 error at the default 1e-5 tolerances
    assert "Q/DQ: 13 activation(s)" in done.stderr and "Traceback" not in done.stderr
    data = json.loads(report.read_text())
    (comp,) = data["comparisons"]
    names = [t["name"] for t in comp["tensors"]]
    assert names[:3] == ["stage0/conv_out", "stage0/relu_out", "stage0/pool_out"] and names[-1] == "probs"
    assert not any("QuantizeLinear" in n for n in names)  # only FP32 names, and no quantizer internals
    matched = data["meta"]["qdq_matching"]
    assert matched["matched"]["stage1/conv_out_DequantizeLinear_Output"] == "stage1/conv_out"
    assert "stage1/conv_out_QuantizeLinear_Output" in matched["not_compared"]
    by = {t["name"]: t for t in comp["tensors"]}
    # what is compared is what the next layer reads (after rounding), not the float value before the Q
    assert by["stage0/conv_out"]["max_abs"] > 0
    # the outlier stage rounds its other channels away: stage 2 is where the signal is lost
    assert by["stage2/conv_out"]["sqnr_db"] < 15 < by["stage1/conv_out"]["sqnr_db"]
    assert by["stage1/relu_out"]["producer"] == "stage1/Relu"  # FP32 topology: the Relu quantize_static removed


def test_load_outputs_of_the_fp32_model_match_the_same_way(models, tmp_path):
    q_path, fp32_path = models["plain"]
    saved, r1, r2 = tmp_path / "fp32_out", tmp_path / "r1.json", tmp_path / "r2.json"
    assert cli("run", fp32_path, "--onnxrt", "--mark-all", "--save-outputs", saved).returncode == 0
    loaded = cli("run", q_path, "--onnxrt", "--mark-all", "--load-outputs", saved, "--report", r1,
                 "--atol", "0.1", "--rtol", "0.1")
    given = cli("run", q_path, "--onnxrt", "--mark-all", "--reference-model", fp32_path, "--report", r2,
                "--atol", "0.1", "--rtol", "0.1")
    one, two = (json.loads(p.read_text())["comparisons"][0]["tensors"] for p in (r1, r2))
    assert [(t["name"], t["max_abs"]) for t in one] == [(t["name"], t["max_abs"]) for t in two]
    assert len(one) == 13 and loaded.returncode == given.returncode


def test_a_qdq_reference_keeps_exact_names(models, tmp_path):
    q_path, _ = models["plain"]
    report = tmp_path / "r.json"
    done = cli("run", q_path, "--onnxrt", "--ref", "--mark-all", "--report", report, "--atol", "1e-3")
    data = json.loads(report.read_text())
    assert "qdq_matching" not in data["meta"] and "Q/DQ:" not in done.stderr
    assert "stage0/conv_out_DequantizeLinear_Output" in {t["name"] for t in data["comparisons"][0]["tensors"]}


def test_reference_model_misuse(models, tmp_path):
    q_path, fp32_path = models["plain"]
    missing = cli("run", q_path, "--onnxrt", "--reference-model", tmp_path / "nope.onnx")
    assert missing.returncode == 2 and "nope.onnx" in missing.stderr and "Traceback" not in missing.stderr
    windowed = cli("run", q_path, "--onnxrt", "--mark-all", "--max-memory", "1M", "--reference-model", fp32_path)
    assert windowed.returncode == 2 and "--reference-model" in windowed.stderr


def test_int8_search_names_the_outlier_quantizers(models):
    q_path, fp32_path = models["outlier"]
    q_model, fp32 = onnx.load(q_path), onnx.load(fp32_path)
    result = find_fp32_set(q_model, image(), fp32_model=fp32, atol=1e-2, rtol=1e-2)
    assert not result.before["passed"] and result.passed and result.after["passed"]
    assert result.attribution[0].tensor in OUTLIER_TENSORS
    assert result.keep_fp32 and set(result.keep_fp32) <= set(OUTLIER_TENSORS)
    assert len(result.removed) == len(result.keep_fp32) <= 3
    # the delivered model is the passing one: still INT8 elsewhere, and within tolerance of FP32
    left = qdq.find_quantizers(result.model).quantizers
    assert len(left) == len(qdq.find_quantizers(q_model).quantizers) - len(result.removed)
    y, ref = run_all_tensors(result.model, image())["probs"], run_all_tensors(fp32, image())["probs"]
    assert np.all(np.abs(y - ref) <= 1e-2 + 1e-2 * np.abs(ref))


def test_int8_model_that_passes_blames_nothing(models):
    q_path, fp32_path = models["plain"]
    result = find_fp32_set(onnx.load(q_path), image(), atol=1e-2, rtol=1e-2)
    assert result.passed and result.keep_fp32 == [] and result.before["passed"]
    assert any("weight quantizers are not ranked" in n for n in result.notes)  # no --fp32-model
    assert all(e.quantizer.kind == "activation" for e in result.attribution if e.introduced_error is not None)


def test_cli_debug_precision_int8(models, tmp_path):
    q_path, fp32_path = models["outlier"]
    out, report = tmp_path / "result", tmp_path / "copy.json"
    done = cli("debug", "precision", q_path, "--precision", "int8", "--out", out, "--report", report)
    assert done.returncode == 0, done.stderr
    assert "the INT8 model fails against FP32 (derived" in done.stdout and "keep in FP32" in done.stdout
    data = json.loads((out / "report.json").read_text())
    assert data == json.loads(report.read_text())
    assert {"passed", "keep_fp32", "attribution", "before", "after", "builds"} <= set(data) and data["passed"]
    assert set(data["attribution"][0]) >= {"node", "op", "introduced_error", "accumulated_error", "first_nonfinite",
                                           "out_of_range"}
    assert data["attribution"][0]["tensor"] in OUTLIER_TENSORS and set(data["keep_fp32"]) <= set(OUTLIER_TENSORS)
    fixed = onnx.load(str(out / "model_int8_fixed.onnx"))
    onnx.checker.check_model(fixed)
    assert run_all_tensors(fixed, image())["probs"].shape == (1, 10)
    given = cli("debug", "precision", q_path, "--precision", "int8", "--out", tmp_path / "given",
                "--fp32-model", fp32_path)
    assert given.returncode == 0 and "(given;" in given.stdout
    assert "stage1.conv.weight" in {a["tensor"] for a in
                                    json.loads((tmp_path / "given" / "report.json").read_text())["attribution"]}


def test_cli_debug_precision_int8_misuse(models, tmp_path):
    q_path, fp32_path = models["plain"]
    not_qdq = cli("debug", "precision", fp32_path, "--precision", "int8", "--out", tmp_path / "a")
    assert not_qdq.returncode == 2 and "needs a Q/DQ model" in not_qdq.stderr and "Traceback" not in not_qdq.stderr
    fp16 = cli("debug", "precision", fp32_path, "--out", tmp_path / "b", "--fp32-model", fp32_path)
    assert fp16.returncode == 2 and "--fp32-model applies to --precision int8" in fp16.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
