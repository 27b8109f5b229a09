"""A JSON report loads back into the same objects, and anything else is refused in one line."""
from __future__ import annotations

import json

import numpy as np
import pytest

from trtdebug.comparison import Report, Tolerances, compare_runs
from trtdebug.comparison.report import REPORT_VERSION, Comparison, TensorComparison
from trtdebug.errors import EXIT_USAGE, InputError, ReportFormatError
from trtdebug.render import load_report, render_html, write_html, write_json
from trtdebug.results import RunResult, TensorSet


def _set(arrays):
    ts = TensorSet()
    for name, a in arrays.items():
        ts.set_array(name, a)
    return ts


def _report() -> Report:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 8)).astype(np.float32)
    w = rng.standard_normal((8,)).astype(np.float32)
    ref = {"x": x, "bn": x * w, "relu": np.maximum(x * w, 0), "nan": np.array([1.0, np.nan, np.inf], np.float32),
           "zeros": np.zeros(4, np.float32), "ids": np.arange(6).reshape(2, 3), "reshaped": x[0]}
    trt = dict(ref, bn=ref["bn"] * np.float32(1.001), nan=np.array([np.nan, np.nan, -np.inf], np.float32),
               zeros=np.full(4, 1e-3, np.float32), reshaped=x[0].reshape(8, 3))
    ort = dict(ref, relu=ref["relu"] + np.float32(1e-6))
    topology = {n: {"producer": f"{n}_node", "producer_op": op, "topo_index": i, "is_graph_output": n == "relu"}
                for i, (n, op) in enumerate([("bn", "BatchNormalization"), ("relu", "Relu"), ("nan", "Div"),
                                             ("zeros", "Sub"), ("ids", "Shape"), ("reshaped", "Reshape")])}
    tol = Tolerances(atol=1e-5, rtol=1e-4, per_tensor_atol={"relu": 1e-4}, per_tensor_rtol={"bn:0": 0.5})
    runs = [RunResult("reference", [_set(ref), _set(ref)]), RunResult("onnxrt", [_set(ort), _set(ort)]),
            RunResult("trt", [_set(trt), _set(ref)])]
    comparisons = [compare_runs(runs[0], r, tolerances=tol, topology=topology) for r in runs[1:]]
    comparisons[1].warnings.append("a warning")
    return Report(comparisons=comparisons, meta={"model": "m.onnx", "mark_all": True, "seed": 1,
                                                 "input_shapes": {"x": [2, 3, 8]}, "bad": float("inf"),
                                                 "runners": {"trt": {"layers": [{"name": "l0"}]}}})


def test_load_report_gives_back_the_same_report(tmp_path):
    original = _report()
    t = {t.name: t for t in original.comparisons[1].tensors}
    assert t["nan"].stats.test_nan and t["reshaped"].stats.atol_to_pass_reason == "the shapes differ"
    assert t["zeros"].stats.rtol_to_pass is None and t["bn"].stats.atol_to_pass
    path = write_json(original, tmp_path / "r.json")
    loaded = load_report(path)
    assert loaded.to_dict() == original.to_dict()
    assert isinstance(loaded.comparisons[0].tensors[0].stats.shape, tuple)
    assert loaded.comparisons[1].tensors[0].stats.worst.index == original.comparisons[1].tensors[0].stats.worst.index
    assert loaded.comparisons[1].tolerances == original.comparisons[1].tolerances
    assert render_html(loaded) == render_html(original)
    write_html(loaded, tmp_path / "r.html")


def test_each_level_has_from_dict():
    original = _report()
    c = original.comparisons[1]
    assert Comparison.from_dict(json.loads(json.dumps(c.to_dict()))).to_dict() == c.to_dict()
    t = c.tensors[2]
    assert TensorComparison.from_dict(json.loads(json.dumps(t.to_dict()))).to_dict() == t.to_dict()
    assert Tolerances.from_dict(c.tolerances.to_dict()) == c.tolerances


def test_a_report_without_newer_fields_still_loads():
    d = json.loads(json.dumps(_report().to_dict()))
    for c in d["comparisons"]:
        for t in c["tensors"]:
            for key in ("atol_to_pass", "rtol_to_pass", "atol_to_pass_reason", "rtol_to_pass_reason", "worst"):
                t.pop(key)
    report = Report.from_dict(d)
    assert report.comparisons[1].tensors[0].stats.atol_to_pass is None


@pytest.mark.parametrize("content, message", [
    ("not json at all", "not a JSON file"),
    (b"\xff\xfe\x00", "not a JSON file"),
    ("[1, 2]", "not a trtdebug report"),
    ('{"format": "trtdebug-outputs", "version": 1}', "not a trtdebug report (format 'trtdebug-outputs'"),
    ('{"format": "trtdebug-report", "version": 99}', "newer trtdebug"),
    ('{"format": "trtdebug-report", "version": "1"}', "invalid version"),
    ('{"format": "trtdebug-report", "version": 1, "comparisons": {}}', "expected a list"),
    ('{"format": "trtdebug-report", "version": 1, "comparisons": [{"reference": "a"}]}', "missing 'test'"),
])
def test_not_a_report_is_one_line_error(tmp_path, content, message):
    path = tmp_path / "r.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(ReportFormatError) as info:
        load_report(path)
    text = str(info.value)
    assert message in text and str(path) in text and "\n" not in text
    assert info.value.exit_code == EXIT_USAGE


def test_malformed_fields_are_format_errors():
    d = json.loads(json.dumps(_report().to_dict()))
    cases = [("max_abs", "big"), ("shape", "2x3"), ("elements", 1.5), ("passed", "yes"), ("worst", [1]),
             ("value_hist", {"edges": [0.0]}), ("name", None)]
    for key, bad in cases:
        broken = json.loads(json.dumps(d))
        broken["comparisons"][0]["tensors"][0][key] = bad
        with pytest.raises(ReportFormatError):
            Report.from_dict(broken)
    broken = json.loads(json.dumps(d))
    broken["comparisons"][0]["tolerances"]["atol"] = -1
    with pytest.raises(ReportFormatError, match="tolerance"):
        Report.from_dict(broken)


def test_missing_file_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="cannot read report"):
        load_report(tmp_path / "nope.json")


def test_current_version_is_accepted():
    assert Report.from_dict({"format": "trtdebug-report", "version": REPORT_VERSION}).comparisons == []
