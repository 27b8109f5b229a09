"""Corrections to ``onnx.reference``: replacement op classes for ops it gets wrong.

``onnx.reference`` is the CPU golden, so an op it computes wrongly turns every comparison
against it into a false alarm (or hides a real error).  ``ReferenceEvaluator(new_ops=...)``
takes replacement classes keyed by ``(domain, class name)``; one class replaces the op at
*every* opset, so each class here reads the model's opset and follows that version's spec.

Each entry of :data:`OVERRIDES` says what is wrong upstream and which backend test data
exposes it (``tests/test_reference_conformance.py`` runs them); the runner copies the table
into its ``extra`` so a report records which ops the golden did not take from onnx.reference.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np
from onnx.reference.op_run import OpRun

DEFAULT_EPSILON = 1e-5
DEFAULT_MOMENTUM = 0.9

OVERRIDES: Dict[str, str] = {
    "BatchNormalization": (
        "opsets 7-13: onnx.reference runs training mode (batch statistics) whenever `momentum` is set, "
        "and its schema default always sets it; the spec uses training mode only when the optional "
        "mean/var outputs are requested (opset 6: is_test=0; opset 14+: training_mode=1). "
        "Exposed by light/light_densenet121."
    ),
    "Softmax": (
        "opsets 1-12: onnx.reference applies opset 13 semantics (default axis -1, one axis); the spec "
        "defaults to axis 1 and normalizes over all dimensions from `axis` on (input coerced to 2-D). "
        "Exposed by light/light_squeezenet (Softmax on [1,1000,1,1])."
    ),
    "LogSoftmax": (
        "opsets 1-12: same axis/2-D coercion error as Softmax; every opset: log(softmax(x)) gives -inf "
        "(and a numpy warning) where the probability underflows, x - max - log(sum(exp)) does not."
    ),
    "Hardmax": "opsets 1-12: same axis/2-D coercion error as Softmax.",
    "LRN": (
        "onnx.reference loops over the batch dimension instead of the channels, so with batch 1 only "
        "channel 0 is normalized by its neighbours (and it accepts 4-D input only). "
        "Exposed by light/light_bvlc_alexnet against ONNX Runtime."
    ),
    "GatherElements": (
        "onnx.reference gathers with np.choose, which takes at most 64 choices: along an axis longer than 64 "
        "it fails (or, for 2-D input, falls back to a loop that reads only the first index of each row); it "
        "also wraps out-of-range indices instead of refusing them, and refuses indices smaller than the data "
        "on the other axes, which the spec allows. Exposed by a torch.onnx (dynamo) export of BERT, whose "
        "position ids are gathered from a [1, 512] buffer."
    ),
    "DequantizeLinear": (
        "opsets 10-18: onnx.reference has no implementation below opset 19 (it has QuantizeLinear 10), so "
        "it could not load any Q/DQ model quantize_static writes at opset 13-18; the integer semantics "
        "are those of opset 19, whose implementation is used (without its float8/blocked extensions)."
    ),
}


def overridden_ops(model=None) -> List[type]:
    """The replacement classes, for ``ReferenceEvaluator(model, new_ops=overridden_ops(model))``.

    A class replaces its op at every opset, so one that only fills a gap (DequantizeLinear) is added
    only for the ``model`` whose opset has the gap.
    """
    ops = [BatchNormalization, Softmax, LogSoftmax, Hardmax, LRN, GatherElements]
    if model is not None and _opset(model) in range(*_DEQUANTIZE_GAP):
        ops.append(_dequantize_linear())
    return ops


def _opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


_DEQUANTIZE_GAP = (10, 19)


def _dequantize_linear() -> type:
    """DequantizeLinear for opsets 10-18: opset 19's implementation, which has the same integer semantics."""
    from onnx.reference.ops.op_dequantize_linear import DequantizeLinear_19

    class DequantizeLinear(DequantizeLinear_19):
        op_schema = None  # the latest schema's attributes (block_size, output_dtype) are not this opset's

        def _run(self, x, x_scale, x_zero_point=None, axis=None):
            return super()._run(x, x_scale, x_zero_point, axis=1 if axis is None else axis)

    return DequantizeLinear


class _VersionedOp(OpRun):
    """An op that follows the spec of the model's opset.

    ``op_schema = None`` stops OpRun from filling attribute defaults from the *latest*
    schema (the root of the Softmax bug): each ``_run`` applies its version's defaults.
    """

    op_schema = None

    @property
    def opset(self) -> int:
        opsets = self.run_params["opsets"]
        return int(opsets.get("", opsets.get("ai.onnx", 0)) or 0)


class BatchNormalization(_VersionedOp):
    def _run(self, x, scale, bias, mean, var, epsilon=None, momentum=None, training_mode=None, is_test=None,
             spatial=None, consumed_inputs=None):  # noqa: ARG002 - legacy attributes, no effect on the math
        eps = DEFAULT_EPSILON if epsilon is None else epsilon
        if not self._training(training_mode, is_test):
            return (_normalize(x, scale, bias, mean, var, eps),)
        axes = tuple(i for i in range(x.ndim) if i != 1)
        batch_mean, batch_var = x.mean(axis=axes), x.var(axis=axes)
        y = _normalize(x, scale, bias, batch_mean, batch_var, eps)
        m = DEFAULT_MOMENTUM if momentum is None else momentum
        running_mean = (mean * m + batch_mean * (1 - m)).astype(mean.dtype)
        running_var = (var * m + batch_var * (1 - m)).astype(var.dtype)
        outputs = (y, running_mean, running_var)
        if self.opset < 14:  # opsets 6-13 also return the batch statistics (saved_mean, saved_var)
            outputs += (batch_mean.astype(mean.dtype), batch_var.astype(var.dtype))
        return outputs[: len(self.onnx_node.output)]

    def _training(self, training_mode, is_test) -> bool:
        if self.opset >= 14:
            return bool(training_mode)
        if self.opset <= 6:
            return not is_test
        return sum(1 for o in self.onnx_node.output if o) > 1


def _normalize(x, scale, bias, mean, var, eps):
    # opsets 6-8 allow per-activation parameters (spatial=0): shaped like x without the batch dim
    shape = (1, *scale.shape) if scale.ndim > 1 else (1, -1) + (1,) * (x.ndim - 2)
    s, b, m, v = (np.reshape(p, shape) for p in (scale, bias, mean, var))
    return (s * (x - m) / np.sqrt(v + eps) + b).astype(x.dtype)


class _AxisOp(_VersionedOp):
    """Softmax-family ops: opset 13+ normalize along one axis (default -1); opsets 1-12 coerce the
    input to 2-D at ``axis`` (default 1) and normalize each row of the flattened trailing dims."""

    def _run(self, x, axis=None):
        if x.size == 0:
            return (x,)
        if self.opset >= 13:
            return (self._along(x, -1 if axis is None else axis).astype(x.dtype),)
        axis = 1 if axis is None else axis
        axis = axis + x.ndim if axis < 0 else axis
        rows = int(np.prod(x.shape[:axis]))
        flat = x.reshape(rows, -1)
        return (self._along(flat, 1).reshape(x.shape).astype(x.dtype),)

    @staticmethod
    def _along(x: np.ndarray, axis: int) -> np.ndarray:
        raise NotImplementedError


class Softmax(_AxisOp):
    @staticmethod
    def _along(x, axis):
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        return e / e.sum(axis=axis, keepdims=True)


class LogSoftmax(_AxisOp):
    @staticmethod
    def _along(x, axis):
        shifted = x - x.max(axis=axis, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


class Hardmax(_AxisOp):
    @staticmethod
    def _along(x, axis):
        y = np.zeros_like(x)
        np.put_along_axis(y, np.expand_dims(np.argmax(x, axis=axis), axis), 1, axis=axis)
        return y


class LRN(_VersionedOp):
    def _run(self, x, size=None, alpha=1e-4, beta=0.75, bias=1.0):
        # the window for channel c is [c - floor((size-1)/2), c + ceil((size-1)/2)], clipped to [0, C-1]
        before, after = (size - 1) // 2, size // 2
        square = np.pad(x * x, [(0, 0), (before, after)] + [(0, 0)] * (x.ndim - 2))
        square_sum = np.lib.stride_tricks.sliding_window_view(square, size, axis=1).sum(axis=-1)
        return ((x / (bias + (alpha / size) * square_sum) ** beta).astype(x.dtype),)


class GatherElements(OpRun):
    """``out[i][j][k] = data[index[i][j][k]][j][k]`` along ``axis``: numpy's take_along_axis, on the part of
    ``data`` the indices cover (the output has the indices' shape; their other dimensions may be smaller)."""

    def _run(self, data, indices, axis=0):
        axis = axis + data.ndim if axis < 0 else axis
        size = data.shape[axis]
        index = indices.astype(np.int64)
        if index.size and (index.min() < -size or index.max() >= size):
            raise ValueError(f"GatherElements: index out of range [-{size}, {size - 1}] along axis {axis}")
        index = np.where(index < 0, index + size, index)
        covered = tuple(slice(None) if d == axis else slice(0, n) for d, n in enumerate(indices.shape))
        return (np.take_along_axis(data[covered], index, axis=axis),)


# The default-domain opsets at which onnx.reference's own op is wrong (every opset when absent): the
# replacement computes the others too, but only these are worth telling the user about.
WRONG_OPSETS: Dict[str, Tuple[int, int]] = {
    "BatchNormalization": (7, 13), "Softmax": (1, 12), "LogSoftmax": (1, 12), "Hardmax": (1, 12),
    "DequantizeLinear": (_DEQUANTIZE_GAP[0], _DEQUANTIZE_GAP[1] - 1),
}


def overrides_in(model) -> List[Tuple[str, str]]:
    """(op, why) for the overridden ops this model uses (main graph and subgraphs) at an opset where
    onnx.reference gets them wrong."""
    opset = _opset(model)
    used = set()

    def walk(graph):
        for node in graph.node:
            if node.domain in ("", "ai.onnx"):
                used.add(node.op_type)
            for attr in node.attribute:
                for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    walk(g)

    walk(model.graph)
    def wrong_here(op: str) -> bool:
        lo, hi = WRONG_OPSETS.get(op, (0, opset))
        return lo <= opset <= hi

    return [(op, why) for op, why in OVERRIDES.items() if op in used and wrong_here(op)]
