"""``debug precision --metric``: a top-1 agreement metric on a classifier (the zoo conv net, softmax head)
through the console script, its errors, the API's ``metric=`` callable, the HTML page and JSON report,
and the bisection that drops the groups a passing keep set does not need."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from test_precision_attribution import feeds, planted
from trtdebug import zoo
from trtdebug.errors import MetricError, UsageError
from trtdebug.precision.attribution import run_all_tensors
from trtdebug.precision.metric import load_metric
from trtdebug.precision.search import Trial, find_keep_set

SCRIPT = Path(sys.executable).with_name("trtdebug")
TOP1 = '''
import numpy as np

def top1(reference, test):
    """Share of samples whose top-1 class is unchanged; passes at 100%. NaN/Inf never agree."""
    (name,) = reference
    ref, got = reference[name], test[name]
    same = (np.argmax(ref, axis=-1) == np.argmax(got, axis=-1)) & np.isfinite(got).all(axis=-1)
    score = float(same.mean())
    return score, score == 1.0

def raises(reference, test):
    raise ValueError("labels file missing")

def nonsense(reference, test):
    return None
'''


def classifier(plant: bool = False):
    """The zoo conv net (8 images, 10 classes, softmax); ``plant``: a Mul by 3e4 and Div back after stage 1,
    which overflows FP16 (|x| > 2.2) into Inf and then NaN class scores."""
    model = zoo.conv_net(batch=8)
    if plant:
        g = model.graph
        for n in g.node:
            if n.name == "stage2/Conv":
                n.input[0] = "planted/down_out"
        at = next(i for i, n in enumerate(g.node) if n.name == "stage1/MaxPool") + 1
        g.initializer.append(numpy_helper.from_array(np.array(3e4, np.float32), "planted.scale"))
        g.node.insert(at, helper.make_node("Mul", ["stage1/pool_out", "planted.scale"], ["planted/up_out"], name="planted/up"))
        g.node.insert(at + 1, helper.make_node("Div", ["planted/up_out", "planted.scale"], ["planted/down_out"],
                                               name="planted/down"))
    return model


def _run(tmp_path, model, *extra, name="m"):
    src = tmp_path / f"{name}.onnx"
    onnx.save(model, str(src))
    metric = tmp_path / "metrics.py"
    metric.write_text(TOP1)
    out = tmp_path / f"{name}_out"
    cmd = [str(SCRIPT), "debug", "precision", str(src), "--out", str(out)] + [str(a).replace("METRIC", str(metric))
                                                                            for a in extra]
    return subprocess.run(cmd, capture_output=True, text=True), out


def test_top1_metric_passes_where_atol_fails_in_one_evaluation(tmp_path):
    tight = ("--atol", "1e-6", "--rtol", "0")
    done, out = _run(tmp_path, classifier(), *tight, "--metric", "METRIC:top1", "--html", tmp_path / "p.html")
    assert done.returncode == 0, done.stderr
    data = json.loads((out / "report.json").read_text())
    assert data["metric"].endswith("metrics.py:top1") and data["builds"] == 1 and data["keep_fp32"] == []
    assert data["before"]["metric"] == {"name": data["metric"], "score": 1.0, "passed": True}
    assert not data["before"]["outputs"]["probs"]["passed"]  # the elementwise rule would have failed it
    assert "nothing to keep in FP32" in done.stdout and "metric" in done.stdout
    plain, _ = _run(tmp_path, classifier(), *tight, "--max-builds", "2", name="plain")
    assert plain.returncode == 1  # same tolerance, no metric: fails


def test_top1_metric_drives_the_search_on_a_planted_overflow(tmp_path):
    done, out = _run(tmp_path, classifier(plant=True), "--metric", "METRIC:top1", "--report", tmp_path / "r.json",
                     "--html", tmp_path / "p.html")
    assert done.returncode == 0, done.stderr
    data = json.loads((out / "report.json").read_text())
    assert data == json.loads((tmp_path / "r.json").read_text())  # --report is the same report
    assert "planted/up" in data["keep_fp32"] and len(data["keep_fp32"]) <= 3
    assert data["before"]["metric"]["score"] < 1.0 and not data["before"]["passed"]
    assert data["after"]["metric"]["score"] == 1.0 and data["after"]["passed"]
    assert data["tolerances"] == {} and all("metric_score" in t for t in data["trials"])
    page = (tmp_path / "p.html").read_text()
    assert "planted/up" in page and "metric" in page and "<svg" in page
    fixed = onnx.load(str(out / "model_fp16.onnx"))  # the written model passes the metric
    from trtdebug.precision.convert import emulate

    x = {"image": np.random.default_rng(1).random((8, 3, 32, 32), dtype=np.float32)}
    y = run_all_tensors(emulate(fixed, "fp16"), x)["probs"]
    ref = run_all_tensors(classifier(plant=True), x)["probs"]
    assert (np.argmax(y, -1) == np.argmax(ref, -1)).all()


@pytest.mark.parametrize("spec, code, words", [
    ("nocolon", 2, "expected module:function"),
    ("no_such_module_xyz:f", 2, "cannot import no_such_module_xyz"),
    ("METRIC:missing", 2, "has no 'missing'"),
    ("/nowhere/m.py:f", 2, "no such file"),
    ("METRIC:raises", 3, "raised ValueError: labels file missing"),
    ("METRIC:nonsense", 3, "returned NoneType None"),
])
def test_bad_metrics_are_one_line_errors(tmp_path, spec, code, words):
    done, out = _run(tmp_path, classifier(), "--metric", spec)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code and len(lines) == 1 and words in lines[0], done.stderr
    assert "Traceback" not in done.stderr and not out.exists()


def test_api_takes_a_callable_and_a_module_spec():
    def agree(reference, test):
        return bool(np.array_equal(np.argmax(reference["probs"], -1), np.argmax(test["probs"], -1)))

    x = {"image": np.random.default_rng(0).random((8, 3, 32, 32), dtype=np.float32)}
    result = find_keep_set(classifier(), x, atol=0, rtol=0, metric=agree)
    assert result.passed and result.builds == 1 and result.metric.endswith("agree")
    assert load_metric("numpy:allclose").func is np.allclose  # an importable module:function
    with pytest.raises(UsageError):
        load_metric("numpy:pi")  # not callable
    with pytest.raises(MetricError):
        find_keep_set(classifier(), x, metric=lambda r, t: (0.5, "yes"))


def test_html_escapes_names_and_holds_the_keep_set(tmp_path):
    from trtdebug.render.precision_html import render_precision_html

    model = planted()
    for n in model.graph.node:  # names from a user's model can hold markup
        if n.name.startswith("planted/"):
            n.name = n.name.replace("planted/", "planted/<b>")
    result = find_keep_set(model, feeds())
    assert result.passed and "planted/<b>up" in result.keep_fp32
    page = render_precision_html(result.as_dict())
    assert "planted/&lt;b&gt;up" in page and "<b>up" not in page
    assert page.count("planted/&lt;b&gt;down") >= 2  # keep list and ranking table
    assert "Error introduced vs accumulated" in page and "<polyline" in page and "inf</text>" in page
    assert "Ranking by introduced error" in page and "with the keep set (fixed)" in page


@pytest.mark.parametrize("positions", [(9,), (3, 9)])
def test_bisection_drops_the_groups_a_passing_set_does_not_need(positions):
    """An evaluator that passes exactly when chosen nodes are kept: the greedy phase adds 1+2+4+8 groups
    (4 evaluations after the all-FP16 one); dropping the unneeded ones by bisection takes about
    2 log2(15) evaluations per needed group - fewer than removing the 15 one at a time."""
    model = zoo.transformer(batch=1, seq=8)
    ref = run_all_tensors(model, feeds())
    from trtdebug.precision.attribution import attribute
    from trtdebug.precision.search import _groups

    groups = _groups(model, attribute(model, feeds()))
    needed = {groups[p][0] for p in positions}
    seen = []

    def evaluator(named):
        def judge(keep):
            seen.append(frozenset(keep))
            return Trial({"y": ref["y"] if needed <= set(keep) else ref["y"] + 1.0})
        return judge

    result = find_keep_set(model, feeds(), evaluator=evaluator)
    assert result.passed and set(result.keep_fp32) == needed
    assert len(seen) == len(set(seen)) == result.builds  # no keep set built twice
    drop_phase = result.builds - 1 - 4
    print("drop-phase evaluations", positions, drop_phase)
    assert drop_phase <= (7 if len(positions) == 1 else 13) < 15
