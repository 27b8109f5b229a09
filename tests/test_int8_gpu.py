"""INT8 on a real GPU (``pytest -m gpu tests/test_int8_gpu.py``; TensorRT 8.6-10.x for calibration).

* implicit INT8: a zoo conv net calibrated from the user's .npz batches (entropy and min-max), every
  layer compared with ONNX Runtime FP32 (``--mark-all``): a per-layer quantization-error report, the
  calibration cache written, and the second build served from it;
* explicit INT8: a quantize_static Q/DQ model built by TensorRT, compared with the FP32 model in FP32 names.
Through the console script, like a user.  Not run on hardware yet when this was written.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from trtdebug import zoo

pytestmark = pytest.mark.gpu
SCRIPT = Path(sys.executable).with_name("trtdebug")


def cli(*args):
    done = subprocess.run([str(SCRIPT), *map(str, args)], capture_output=True, timeout=600)
    done.stdout, done.stderr = done.stdout.decode("utf-8"), done.stderr.decode("utf-8")
    return done


def _calibration(path: Path, n: int = 8) -> Path:
    np.savez(path, **{f"it{k}/image": np.random.default_rng(50 + k).random((2, 3, 32, 32), dtype=np.float32)
                      for k in range(n)})
    return path


@pytest.mark.parametrize("calibrator", ["entropy", "minmax"])
def test_calibrated_int8_conv_net_layer_by_layer_against_fp32(tmp_path, calibrator):
    model = tmp_path / "conv.onnx"
    onnx.save(zoo.conv_net(batch=2), model)
    data, cache, report = _calibration(tmp_path / "calib.npz"), tmp_path / "calib.cache", tmp_path / "r.json"
    args = ["run", model, "--onnxrt", "--trt", "--int8", "--calibration-data", data, "--calibrator", calibrator,
            "--calibration-cache", cache, "--mark-all", "--builder-optimization-level", "0", "--report", report,
            "--atol", "0.05", "--rtol", "0.05"]
    done = cli(*args)
    assert done.returncode in (0, 1), done.stderr
    assert "calibration: 8 batch(es) served, cache written" in done.stderr and cache.stat().st_size > 0
    (comp,) = json.loads(report.read_text())["comparisons"]
    names = {t["name"]: t for t in comp["tensors"]}
    assert {"stage0/conv_out", "stage1/conv_out", "stage2/conv_out", "probs"} <= set(names)  # every layer
    for t in comp["tensors"]:  # an INT8 error, per layer, not a broken engine
        assert t["sqnr_db"] is not None and t["test_nan"] == 0
    assert names["probs"]["sqnr_db"] > 15
    again = cli(*args)
    assert "cache read" in again.stderr and "0 batch(es) served" in again.stderr


def test_explicit_qdq_model_on_tensorrt_in_fp32_names(tmp_path):
    pytest.importorskip("onnxruntime.quantization")
    sys.path.insert(0, str(Path(__file__).parent))
    from qdq_models import quantize

    q = quantize(zoo.conv_net(batch=1), tmp_path / "q.onnx")
    report = tmp_path / "r.json"
    done = cli("run", q, "--trt", "--mark-all", "--reference-model", tmp_path / "q_fp32.onnx",
               "--builder-optimization-level", "0", "--report", report, "--atol", "0.05", "--rtol", "0.05")
    assert done.returncode in (0, 1), done.stderr
    data = json.loads(report.read_text())
    names = [t["name"] for t in data["comparisons"][0]["tensors"]]
    assert "probs" in names and not any("QuantizeLinear" in n for n in names)
    assert data["meta"]["qdq_matching"]["activations"]
