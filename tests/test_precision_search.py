"""``debug precision`` on ONNX Runtime (issue 10, CPU done-when): the all-FP16 check first, then a
keep-FP32 set of a few nodes around a planted overflow, whose converted model passes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx

from test_precision_attribution import feeds, planted
from trtdebug import zoo
from trtdebug.precision.attribution import run_all_tensors
from trtdebug.precision.convert import emulate
from trtdebug.precision.search import find_keep_set

SCRIPT = Path(sys.executable).with_name("trtdebug")


def test_planted_overflow_needs_only_the_nodes_around_it():
    model = planted()
    result = find_keep_set(model, feeds(), atol=1e-2, rtol=1e-2)
    assert result.passed and not result.before["passed"] and result.after["passed"]
    assert "planted/up" in result.keep_fp32 and len(result.keep_fp32) <= 3  # not half the model
    assert result.builds <= 4
    y = run_all_tensors(emulate(result.model, "fp16"), feeds())["y"]  # the written model is the one that passes
    ref = run_all_tensors(model, feeds())["y"]
    assert np.isfinite(y).all() and np.abs(y - ref).max() < 1e-2
    report = result.as_dict()
    assert report["keep_fp32"] == result.keep_fp32 and report["builds"] == result.builds
    assert report["attribution"][0]["node"] == "planted/up"


def test_a_model_that_passes_in_fp16_takes_one_evaluation():
    result = find_keep_set(zoo.transformer(batch=1, seq=8), feeds())
    assert result.passed and result.keep_fp32 == [] and result.builds == 1 and result.attribution is None


def test_cli_writes_report_and_model_and_guards_user_directories(tmp_path):
    src = tmp_path / "planted.onnx"
    onnx.save(planted(), str(src))
    out = tmp_path / "result"
    cmd = [str(SCRIPT), "debug", "precision", str(src), "--out", str(out), "--input-shapes", "x:[1,8,64]"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "keep in FP32 (2): planted/up, planted/down" in done.stdout and "top error introducer: planted/up" in done.stdout
    data = json.loads((out / "report.json").read_text())
    assert {"passed", "keep_fp32", "attribution", "before", "after", "builds"} <= set(data) and data["passed"]
    assert set(data["attribution"][0]) >= {"node", "op", "introduced_error", "accumulated_error", "first_nonfinite",
                                           "out_of_range"}
    onnx.checker.check_model(onnx.load(str(out / "model_fp16.onnx")))
    assert subprocess.run(cmd, capture_output=True, text=True).returncode == 0  # its own earlier result: replaced
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    refused = subprocess.run(cmd[:5] + [str(mine)] + cmd[6:], capture_output=True, text=True)
    assert refused.returncode == 2 and "refusing to replace" in refused.stderr and (mine / "notes.txt").exists()
    bad_route = subprocess.run(cmd + ["--route", "builder"], capture_output=True, text=True)  # a TensorRT option
    assert bad_route.returncode == 2 and "apply to --backend trt" in bad_route.stderr and "Traceback" not in bad_route.stderr
