"""Prove the CPU golden against the ONNX backend test data shipped inside the ``onnx`` wheel.

Each case is a model with expected outputs (``onnx/backend/test/data/{simple,pytorch-converted,
pytorch-operator,real,light}``).  Per case:

* ``expected``: the reference runner (onnx.reference with trtdebug's corrected ops) reproduces
  the expected outputs;
* ``onnxruntime``: where ONNX Runtime itself reproduces them (at 1e-3), ONNX Runtime and the
  reference agree on *every intermediate tensor* (``mark_all``) at atol/rtol 1e-3 through the
  real comparator - which is what ``trtdebug run --onnxrt --ref --mark-all`` relies on.

The two checks of a case run back to back and share one reference run (a one-entry cache), so
each model is evaluated by the slow reference once.  ``light`` models ship no inputs: the
expected outputs come from the input the ONNX backend runner generates for them
(``arange(n).reshape(shape) / n`` in float32), which is rebuilt here.  Light models whose
reference run takes tens of seconds run only with ``TRTDEBUG_SLOW_TESTS=1``.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import onnx
import pytest

from trtdebug.comparison.comparator import compare_runs
from trtdebug.comparison.tolerances import Tolerances
from trtdebug.errors import BackendError
from trtdebug.inputs.onnx_testdata import load_testdata_inputs, load_testdata_outputs
from trtdebug.model import ModelGraph, OutputSelection, load_model
from trtdebug.results import RunResult, TensorSet, topology_of
from trtdebug.runners.reference import ReferenceRunner

DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
KINDS = ("simple", "pytorch-converted", "pytorch-operator", "real", "light")
SLOW = os.environ.get("TRTDEBUG_SLOW_TESTS") == "1"

# Cases that cannot pass, each with its reason.
XFAIL = {
    "simple/test_gradient_of_add": "onnx.reference has no Gradient op (ai.onnx.preview.training)",
    "simple/test_gradient_of_add_and_mul": "onnx.reference has no Gradient op (ai.onnx.preview.training)",
}
# Reference run time on 2 idle cores; onnx.reference's MaxPool loops in Python (80% of the time).
# Kept by default: alexnet (LRN), squeezenet (opset-9 Softmax), resnet50 (opset-9 BatchNormalization).
SLOW_LIGHT = {
    "light/light_densenet121": "~14 s",
    "light/light_inception_v1": "~31 s",
    "light/light_inception_v2": "~41 s",
    "light/light_vgg19": "~14 s",
    "light/light_zfnet512": "~5 s (MaxPool; LRN is covered by alexnet)",
    "light/light_shufflenet": "~4 s (MaxPool; BatchNormalization is covered by resnet50)",
}
# Tensors whose value the spec leaves open, so ONNX Runtime and the reference may both be right.
UNSPECIFIED = ("Dropout mask outside training before opset 12: ONNX Runtime returns zeros, the reference ones "
               "(opset 12 made it all ones)")


def _unspecified(graph) -> List[str]:
    if graph.opset >= 12:
        return []
    return [n.output[1] for n in graph.nodes if n.op_type == "Dropout" and len(n.output) > 1 and n.output[1]]


# The onnx backend runner's tolerances for the light models (onnx/backend/test/case/model).
LIGHT_RTOL = {"light/light_densenet121": 2e-3}


@dataclass(frozen=True)
class Case:
    id: str
    model: Path
    data: Optional[Path] = None  # directory of test_data_set_*; None for light models
    expected_pb: Optional[Path] = None  # light models: the one expected output

    @property
    def rtol(self) -> float:
        return LIGHT_RTOL.get(self.id, 1e-3)


def _cases() -> List[Case]:
    cases = []
    for kind in KINDS:
        folder = DATA / kind
        if not folder.is_dir():
            continue
        if kind == "light":
            cases += [Case(f"light/{m.stem}", m, expected_pb=m.with_name(m.stem + "_output_0.pb"))
                      for m in sorted(folder.glob("*.onnx"))]
            continue
        for d in sorted(p for p in folder.iterdir() if p.is_dir()):
            cases.append(Case(f"{kind}/{d.name}", d / "model.onnx", data=d))
    return cases


def _params():
    params = []
    for case in _cases():
        marks = []
        if not case.model.exists():
            marks.append(pytest.mark.skip(reason="download URL only (data.json); its light_ model is tested instead"))
        elif case.id in XFAIL:
            marks.append(pytest.mark.xfail(reason=XFAIL[case.id], strict=True, raises=BackendError))
        elif case.id in SLOW_LIGHT and not SLOW:
            marks.append(pytest.mark.skip(reason=f"reference takes {SLOW_LIGHT[case.id]}; set TRTDEBUG_SLOW_TESTS=1"))
        for check in ("expected", "onnxruntime"):
            params.append(pytest.param(case, check, marks=marks, id=f"{case.id}-{check}"))
    return params


def _light_feed(model) -> Dict[str, np.ndarray]:
    """The input the ONNX backend runner generates for light models (see the module docstring)."""
    inits = {t.name for t in model.graph.initializer}
    feed = {}
    for vi in model.graph.input:
        if vi.name not in inits:
            shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim)
            n = int(np.prod(shape))
            feed[vi.name] = (np.arange(n).reshape(shape) / n).astype(np.float32)
    return feed


@functools.lru_cache(maxsize=1)
def _loaded(case: Case):
    """(model, graph, feeds, expected RunResult) of a case."""
    model = load_model(case.model)
    graph = ModelGraph(model)
    if case.data is not None:
        feeds = load_testdata_inputs(case.data, graph)
        expected = RunResult("expected", [TensorSet(t) for t in load_testdata_outputs(case.data, graph)])
    else:
        feeds = [_light_feed(model)]
        tensor = onnx.TensorProto()
        tensor.ParseFromString(case.expected_pb.read_bytes())
        expected = RunResult("expected", [TensorSet({graph.output_names[0]: onnx.numpy_helper.to_array(tensor)})])
    return model, graph, feeds, expected


@functools.lru_cache(maxsize=1)
def _reference(case: Case) -> RunResult:
    """Every tensor of the case's model, per data set, from the reference runner (run once per case)."""
    model, graph, feeds, _ = _loaded(case)
    return _run(ReferenceRunner(model, outputs=OutputSelection(mark_all=True), graph=graph), feeds)


def _run(runner, feeds) -> RunResult:
    with runner:
        result = RunResult(runner.name, [TensorSet(runner.infer(feed)) for feed in feeds])
        result.extra.update(runner.extra)
    return result


def _failures(reference: RunResult, test: RunResult, tolerances: Tolerances, topology) -> List[str]:
    comparison = compare_runs(reference, test, tolerances=tolerances, topology=topology, workers=1)
    missing = [n for n in comparison.only_in_reference if n in reference.iterations[0]]
    lines = [f"{t.name}: max_abs={t.stats.max_abs}" for t in comparison.failed]
    return lines + [f"{n}: missing from {test.runner}" for n in missing if reference.runner == "expected"]


def _non_numeric_equal(expected: RunResult, actual: RunResult) -> RunResult:
    """Check string/object outputs exactly here (the comparator measures numbers); return the rest."""
    numeric = RunResult(expected.runner)
    for exp_set, act_set in zip(expected.iterations, actual.iterations):
        kept = {}
        for name in exp_set:
            if exp_set[name].dtype.kind in "OUS":
                np.testing.assert_array_equal(act_set[name], exp_set[name], err_msg=name)
            else:
                kept[name] = exp_set[name]
        numeric.iterations.append(TensorSet(kept))
    return numeric


@pytest.mark.parametrize("case, check", _params())
def test_backend_data(case: Case, check: str):
    if check == "expected":
        _check_reference_matches_expected(case)
    else:
        _check_onnxruntime_matches_reference(case)


def _check_reference_matches_expected(case: Case):
    _, graph, _, expected = _loaded(case)
    reference = _reference(case)
    numeric = _non_numeric_equal(expected, reference)
    failures = _failures(numeric, reference, Tolerances(atol=1e-7, rtol=case.rtol), topology_of(graph))
    assert not failures, failures[:5]


def _check_onnxruntime_matches_reference(case: Case):
    from trtdebug.runners.onnxruntime import OnnxRuntimeRunner

    model, graph, feeds, expected = _loaded(case)
    reference = _reference(case)  # before the skips below: it also proves the case loads (XFAIL)
    topology = topology_of(graph)
    try:
        plain = _run(OnnxRuntimeRunner(model, graph=graph), feeds)
    except BackendError as exc:
        pytest.skip(f"ONNX Runtime cannot run this model: {exc}")
    if any(t.dtype.kind in "OUS" for t in expected.iterations[0].values()):
        pytest.skip("string outputs: nothing for the numeric comparator")
    wrong = _failures(expected, plain, Tolerances(atol=1e-3, rtol=1e-3), topology)
    if wrong:
        pytest.skip(f"ONNX Runtime itself misses the expected outputs: {wrong[0]}")
    unspecified = _unspecified(graph)  # see UNSPECIFIED: left out of both sides, every other tensor compared
    selection = OutputSelection(mark_all=True, exclude=tuple(unspecified))
    everything = _run(OnnxRuntimeRunner(model, graph=graph, outputs=selection), feeds)
    reference = RunResult(reference.runner, [TensorSet({n: t[n] for n in t if n not in unspecified})
                                             for t in reference.iterations])
    comparison = compare_runs(reference, everything, tolerances=Tolerances(atol=1e-3, rtol=1e-3), topology=topology,
                              workers=1)
    assert comparison.tensors, "nothing compared"
    assert comparison.passed, [f"{t.name} ({t.producer_op}): max_abs={t.stats.max_abs}" for t in comparison.failed][:5]
    assert not comparison.only_in_test, comparison.only_in_test[:5]
