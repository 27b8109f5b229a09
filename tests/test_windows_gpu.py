"""Windowed TensorRT (``--max-memory`` with ``--trt``) on a real GPU: ``pytest -m gpu tests/test_windows_gpu.py``.

Not run where this was written (no GPU): the TensorRT window path is covered there only by the
ONNX Runtime windows, which share all of run_windowed.
"""
from __future__ import annotations

import pytest

import trtdebug
from trtdebug import zoo

pytestmark = pytest.mark.gpu

SHAPE = {"x": [2, 16, 64]}
BUDGET = 48 << 10  # the transformer's every-layer activations are ~20x this
TRT = dict(tf32=False, builder_optimization_level=0)


def _verdicts(report):
    c = report.comparisons[0]
    return (c.first_failing and c.first_failing.name, [(t.name, t.passed) for t in c.tensors])


def test_windowed_tensorrt_gives_the_verdicts_of_a_full_mark_all_run(tmp_path):
    import onnx

    path = tmp_path / "t.onnx"
    onnx.save(zoo.transformer(blocks=2), path)
    common = dict(backends=("onnxrt", "trt"), mark_all=True, input_shapes=SHAPE, atol=1e-3, rtol=1e-3, **TRT)
    with trtdebug.run(path, **common) as full:
        expected = _verdicts(full.report)
    with trtdebug.run(path, max_memory=BUDGET, **common) as windowed:
        assert _verdicts(windowed.report) == expected
        meta = windowed.report.meta["windows"]
    assert meta["estimated_total_bytes"] > 4 * BUDGET  # a full mark-all does not fit the budget
    assert len(meta["windows"]) >= 4 and all(w["estimated_bytes"] <= BUDGET for w in meta["windows"])
    assert windowed.results[-1].extra["windows"] == len(meta["windows"])
