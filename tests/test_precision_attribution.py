"""Error attribution: introduced (node alone, on true inputs) vs accumulated (full reduced run) error,
on a transformer block with a planted FP16 overflow that a later node squashes."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper, numpy_helper

from trtdebug import zoo
from trtdebug.comparison.metrics import compare_arrays
from trtdebug.precision import attribution
from trtdebug.precision.attribution import attribute, run_all_tensors
from trtdebug.precision.convert import convert, emulate


def planted(kind: str = "mul"):
    """The zoo transformer with an overflow planted after the second LayerNorm (values ~N(0,1)):
    Mul by 3e4 then Div by 3e4 (|x| > 2.2 overflows FP16), or Exp then Log (x > 11 overflows; x is
    scaled by 8 first), feeding the FFN.  FP32 computes the identity; FP16 makes Inf, then NaN."""
    model = zoo.transformer(batch=1, seq=8)
    g = model.graph
    for n in g.node:
        if n.name == "block0/fc1":
            n.input[0] = "planted/down_out"
    at = next(i for i, n in enumerate(g.node) if n.name == "block0/ln2") + 1
    src = "block0/ln2_out"
    if kind == "mul":
        new = [helper.make_node("Mul", [src, "planted.scale"], ["planted/up_out"], name="planted/up"),
               helper.make_node("Div", ["planted/up_out", "planted.scale"], ["planted/down_out"], name="planted/down")]
        g.initializer.append(numpy_helper.from_array(np.array(3e4, np.float32), "planted.scale"))
    else:
        new = [helper.make_node("Mul", [src, "planted.eight"], ["planted/x8_out"], name="planted/x8"),
               helper.make_node("Exp", ["planted/x8_out"], ["planted/up_out"], name="planted/up"),
               helper.make_node("Log", ["planted/up_out"], ["planted/log_out"], name="planted/log"),
               helper.make_node("Div", ["planted/log_out", "planted.eight"], ["planted/down_out"], name="planted/down")]
        g.initializer.append(numpy_helper.from_array(np.array(8.0, np.float32), "planted.eight"))
    for k, n in enumerate(new):
        g.node.insert(at + k, n)
    return model


def feeds():
    return {"x": np.random.default_rng(0).standard_normal((1, 8, 64)).astype(np.float32)}


@pytest.mark.parametrize("kind", ["mul", "exp"])
def test_planted_overflow_fails_in_fp16_and_its_node_is_the_top_introducer(kind):
    model = planted(kind)
    ref = run_all_tensors(model, feeds())["y"]
    fp16 = run_all_tensors(emulate(convert(model, "fp16").model, "fp16"), feeds())["y"]
    assert not np.isfinite(fp16).all()  # ONNX Runtime on the FP16 model (FP16 storage honoured) fails
    assert not compare_arrays(ref, fp16, atol=1e-2, rtol=1e-2).passed
    result = attribute(model, feeds())
    top = result.ranking()[0]
    assert top.node == "planted/up" and top.introduced_error == float("inf") and top.out_of_range
    assert result.first_nonfinite["node"] == "planted/up" and result.first_out_of_range["node"] == "planted/up"
    down = next(n for n in result.nodes if n.node == "planted/down")
    assert down.accumulated_error == float("inf")  # inherits it...
    consumer = "planted/down" if kind == "mul" else "planted/log"
    assert next(n for n in result.nodes if n.node == consumer).inputs_out_of_range  # ...and is ranked after it
    fc1 = next(n for n in result.nodes if n.node == "block0/fc1")
    assert fc1.introduced_error < 1e-2 and fc1.accumulated_error > 1  # inherited, not introduced
    d = result.as_dict()
    assert set(d["attribution"][0]) >= {"node", "op", "introduced_error", "accumulated_error", "first_nonfinite", "out_of_range"}


def test_clean_model_introduces_fp16_sized_errors_only():
    result = attribute(zoo.transformer(batch=1, seq=8), feeds())
    assert result.first_nonfinite is None and result.first_out_of_range is None
    assert all(0 <= n.introduced_error < 1e-2 for n in result.nodes if n.introduced_error is not None)
    assert max(n.introduced_error for n in result.nodes if n.introduced_error is not None) > 1e-5  # really FP16


def test_one_reference_one_reduced_and_one_batched_local_run(monkeypatch):
    calls = []
    real = attribution._ort_run

    def counting(model, feeds_):
        calls.append(len(model.graph.node))
        return real(model, feeds_)

    monkeypatch.setattr(attribution, "_ort_run", counting)
    model = planted()
    attribute(model, feeds())
    assert len(calls) == 3  # FP32 run, FP16 run, and all nodes' local runs in one session
    assert calls[2] >= len(model.graph.node)


def test_a_node_kept_in_fp32_still_overflows_where_fp16_reads_its_output():
    result = attribute(planted(), feeds(), keep_fp32=["planted/up"])
    top = result.ranking()[0]
    assert top.node == "planted/up" and top.kept_fp32 and top.introduced_error == float("inf")
    fixed = attribute(planted(), feeds(), keep_fp32=["planted/up..planted/down"])
    assert fixed.first_nonfinite is None


def test_unknown_precision_is_a_usage_error():
    from trtdebug.errors import UsageError

    with pytest.raises(UsageError, match="--precision"):
        attribute(planted(), feeds(), precision="int8")


@pytest.mark.parametrize("to", ["fp16", "bf16"])
def test_emulation_rounds_every_stored_value_and_keeps_the_graph_float32(to):
    model = zoo.transformer(batch=1, seq=8)
    twin = emulate(convert(model, to).model, to)
    import onnx

    onnx.checker.check_model(onnx.shape_inference.infer_shapes(twin, strict_mode=True))
    assert not any(t.data_type in (onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16) for t in twin.graph.initializer)
    values = run_all_tensors(twin, feeds())
    ref = run_all_tensors(model, feeds())
    for name in ("block0/ln1_out", "block0/softmax_out", "y"):
        got = values[name]
        np.testing.assert_array_equal(got, attribution.round_to(got, to))  # representable in the target type
        err = attribution.relative_error(got, ref[name])
        assert 0 < err < (2e-2 if to == "fp16" else 1e-1)
