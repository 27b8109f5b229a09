"""Q/DQ models for the INT8 tests, made by ONNX Runtime's own ``quantize_static`` from zoo conv nets.

Calibration feeds are seeded batches in the default input range [0, 1), like the inputs trtdebug
generates.  ``outlier_conv_net`` plants the classic per-tensor INT8 failure: one channel of stage 1
carries activations ~300x the others (a bias that large, with the next conv reading that channel
through near-zero weights, so it hardly matters in FP32), and min-max calibration stretches the
stage's per-tensor scale over it, rounding every other channel of that stage to a few levels.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from trtdebug import zoo

OUTLIER_TENSORS = ("stage1/conv_out", "stage1/relu_out", "stage1/pool_out")


def calibration_feeds(n: int = 4, *, batch: int = 1, size: int = 32, seed: int = 100):
    return [{"image": np.random.default_rng(seed + i).random((batch, 3, size, size), dtype=np.float32)}
            for i in range(n)]


def outlier_conv_net(seed: int = 0, *, batch: int = 1, outlier: float = 300.0):
    """zoo.conv_net with one outlier channel in stage 1 (see the module docstring)."""
    from onnx import numpy_helper

    model = zoo.conv_net(seed, batch=batch)
    inits = {t.name: t for t in model.graph.initializer}

    def edit(name, fn):
        arr = numpy_helper.to_array(inits[name]).copy()
        fn(arr)
        inits[name].CopyFrom(numpy_helper.from_array(arr.astype(np.float32), name))

    edit("stage1.conv.bias", lambda b: b.__setitem__(0, outlier))
    edit("stage1.bn.bias", lambda b: b.__setitem__(0, 0.0))
    edit("stage2.conv.weight", lambda w: w.__setitem__((slice(None), 0), w[:, 0] * 1e-4))
    return model


def quantize(model, path: Path, *, feeds=None, per_channel: bool = False) -> Path:
    """``model`` saved beside ``path`` and quantized to ``path`` by quantize_static (QDQ, min-max)."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(feeds if feeds is not None else calibration_feeds())

        def get_next(self):
            return next(self._it, None)

    fp32 = path.with_name(path.stem + "_fp32.onnx")
    onnx.save(model, fp32)
    quantize_static(str(fp32), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    calibrate_method=CalibrationMethod.MinMax)
    return path
