"""``trtdebug run --onnxrt --ref --mark-all`` on a Paddle-style opset-11 conv net, like a user would."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator

from trtdebug import zoo

TRTDEBUG = str(Path(sys.executable).with_name("trtdebug"))  # the installed console script


def test_paddle_net_every_batchnorm_matches_onnxruntime(tmp_path):
    model = zoo.paddle_conv_net()
    onnx.save(model, tmp_path / "paddle.onnx")
    report = tmp_path / "r.json"
    proc = subprocess.run([TRTDEBUG, "run", tmp_path / "paddle.onnx", "--onnxrt", "--ref", "--mark-all",
                           "--atol", "1e-3", "--rtol", "1e-3", "--report", report],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "RuntimeWarning" not in proc.stderr
    data = json.loads(report.read_text())
    (comparison,) = data["comparisons"]
    compared = {t["name"] for t in comparison["tensors"]}
    bn_outputs = {n.output[0] for n in model.graph.node if n.op_type == "BatchNormalization"}
    assert len(bn_outputs) == 8 and bn_outputs <= compared
    assert "BatchNormalization" in data["meta"]["runners"]["reference"]["overrides"]


def test_paddle_net_exercises_the_batchnorm_bug():
    """Upstream onnx.reference (no overrides) is off by far more than 1e-3 on this model's BN outputs."""
    model = zoo.paddle_conv_net()
    feed = {"image": np.random.default_rng(0).random((1, 3, 32, 32), np.float32)}
    bn = [n.output[0] for n in model.graph.node if n.op_type == "BatchNormalization"][0]
    upstream = ReferenceEvaluator(model).run(None, feed, intermediate=True)[bn]
    from trtdebug.runners.reference_ops import overridden_ops

    fixed = ReferenceEvaluator(model, new_ops=overridden_ops()).run(None, feed, intermediate=True)[bn]
    assert np.abs(upstream - fixed).max() > 1e-2


def test_overrides_are_named_only_at_the_opsets_where_onnx_reference_is_wrong():
    from trtdebug.runners.reference_ops import overrides_in

    assert [op for op, _ in overrides_in(zoo.paddle_conv_net())] == ["BatchNormalization", "Softmax"]  # opset 11
    assert overrides_in(zoo.transformer()) == []  # opset 17: Softmax-13 is right upstream
