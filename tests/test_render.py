"""Renderers: strict JSON, self-contained escaped HTML, console tables."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from rich.console import Console

from trtdebug.comparison import Report, Tolerances, compare_runs
from trtdebug.comparison.report import json_float
from trtdebug.render import format_number, report_json, sparkline, write_html, write_json
from trtdebug.render.console import print_report
from trtdebug.render.html import render_html, series_geometry
from trtdebug.results import RunResult, TensorSet

SCRIPT_NAME = "<script>alert(1)</script>"
MARKUP_NAME = "[bold]layer[/bold]"
FIRST_FAILING = "block0/fc1_out"

REQUIRED_TENSOR_KEYS = {"name", "producer", "topo_index", "is_graph_output", "shape", "max_abs", "mean_abs",
                        "median_abs", "p99_abs", "max_rel", "mean_rel", "cosine", "sqnr_db", "ref_nan", "ref_inf",
                        "test_nan", "test_inf", "passed"}


@pytest.fixture
def report():
    rng = np.random.default_rng(1)
    names = ["input", SCRIPT_NAME, MARKUP_NAME, FIRST_FAILING, "block0/relu_out", "logits"]
    ref, test, topology = TensorSet(), TensorSet(), {}
    for i, name in enumerate(names):
        a = rng.standard_normal((4, 8)).astype(np.float32)
        b = a.copy()
        if i >= 3:
            b = a + 1e-2 * rng.standard_normal(a.shape).astype(np.float32)
        if name == "logits":
            b[0, 0] = np.nan
        ref.set_array(name, a)
        test.set_array(name, b)
        topology[name] = {"producer": None if i == 0 else name.replace("_out", ""), "producer_op": None if i == 0 else "MatMul",
                          "topo_index": i, "is_graph_output": name == "logits"}
    cmp = compare_runs(RunResult("reference", [ref]), RunResult("onnxrt", [test]), tolerances=Tolerances(),
                       topology=topology)
    return Report(comparisons=[cmp], meta={"model": "model.onnx", "inputs": {"input": {"shape": [4, 8], "dtype": "float32"}},
                                           "timings": {"onnxrt": [0.002, 0.003]}})


def test_json_is_strict_and_has_the_contract_keys(report, tmp_path):
    d = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert d["passed"] is False
    (c,) = d["comparisons"]
    assert (c["reference"], c["test"], c["passed"], c["first_failing"]) == ("reference", "onnxrt", False, FIRST_FAILING)
    assert c["first_failing_producer"] == "block0/fc1"
    for t in c["tensors"]:
        assert REQUIRED_TENSOR_KEYS <= set(t)
    by_name = {t["name"]: t for t in c["tensors"]}
    assert by_name["input"]["sqnr_db"] == "inf"  # identical: non-finite floats are strings
    assert by_name["logits"]["worst"]["test"] == "nan"
    assert by_name["logits"]["test_nan"] == 1 and by_name["logits"]["is_graph_output"] is True
    assert isinstance(by_name[FIRST_FAILING]["max_abs"], float)
    assert by_name[FIRST_FAILING]["shape"] == [4, 8]
    path = write_json(report, tmp_path / "out" / "report.json")
    assert json.loads(path.read_text()) == json.loads(report_json(report))


def test_json_float():
    assert [json_float(x) for x in (None, 1.5, float("inf"), float("-inf"), float("nan"), np.float32(2))] == \
        [None, 1.5, "inf", "-inf", "nan", 2.0]


def test_html_is_self_contained_and_escaped(report, tmp_path):
    path = write_html(report, tmp_path / "report.html")
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//)""", text, re.I)
    assert "http" not in text and "<link" not in text and "@import" not in text
    assert SCRIPT_NAME not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert text.count("<script>") == 1  # ours, the table sorter
    assert '<div class="box">' in text and FIRST_FAILING in text
    assert "<svg" in text and "<polyline" in text and "<rect" in text
    assert "model.onnx" in text


def test_html_without_comparisons():
    assert "Nothing was compared" in render_html(Report())


def test_series_handles_gaps_zeros_and_infinities():
    g = series_geometry([0.0, None, 1e-3, float("inf"), float("nan")], names=["a", "b", "c", "d", "e"],
                        failing=[False, False, True, True, False], marker=2, log=True)
    assert len(g["points"]) == 3 and len(g["lines"]) == 2 and g["marker"]["name"] == "c"
    assert [p["y"] for p in g["points"]][::2] == [g["bottom"], g["top"]]  # zero at the bottom, inf at the top


def _console_text(report, **kwargs) -> str:
    console = Console(record=True, width=200)
    print_report(report, console, **kwargs)
    return console.export_text()


def test_console_names_first_failing(report):
    text = _console_text(report)
    assert f"first failing: {FIRST_FAILING} (produced by block0/fc1, MatMul)" in text
    assert "onnxrt vs reference: 3/6 tensors passed" in text
    assert MARKUP_NAME in text  # printed literally, not read as rich markup
    assert "worst element" in text


def test_console_limit_and_hidden_rows(report):
    text = _console_text(report, order="worst", limit=2)
    assert "4 more rows not shown" in text
    table = text.split("more rows not shown")[0]
    assert "logits" in table and "input" not in table  # the NaN tensor is the worst
    text = _console_text(report, show_passing=False)
    assert "3 passing tensors not shown" in text and "block0/relu_out" in text


def test_console_rejects_unknown_order(report):
    with pytest.raises(ValueError):
        print_report(report, Console(), order="alphabetical")


def test_text_helpers():
    assert format_number(None) == "-" and format_number(float("inf")) == "inf" and format_number(0.000123456) == "0.000123"
    from trtdebug.comparison.metrics import Histogram

    assert sparkline(Histogram(edges=[1, 2, 3, 4], counts=[0, 4, 8], log=True)) == " ▄█"
    assert sparkline(Histogram(edges=[], counts=[], log=True, zeros=3)) == "exact"


def _transformer_runs(n_layers=3):
    """Tensors named the way PyTorch exports name them, one op type (BatchNormalization) failing throughout."""
    rng = np.random.default_rng(4)
    ops = ["MatMul", "Add", "LayerNormalization", "Softmax", "BatchNormalization", "Gelu", "Reshape"]
    ref, test, topology = TensorSet(), TensorSet(), {}
    for i in range(n_layers * len(ops)):
        op = ops[i % len(ops)]
        name = f"/model/encoder/layers.{i // len(ops)}/self_attn/{op}_output_0"
        a = rng.standard_normal((2, 16, 64)).astype(np.float32)
        b = a.copy()
        if op == "BatchNormalization":
            b += np.float32(2e-3) * rng.standard_normal(a.shape).astype(np.float32)
        ref.set_array(name, a)
        test.set_array(name, b)
        topology[name] = {"producer": name[:-len("_output_0")], "producer_op": op, "topo_index": i,
                          "is_graph_output": i == n_layers * len(ops) - 1}
    return RunResult("onnxrt", [ref]), RunResult("trt", [test]), topology


def _transformer_report(n_layers=3, tolerances=None):
    ref, test, topology = _transformer_runs(n_layers)
    return Report(comparisons=[compare_runs(ref, test, topology=topology, tolerances=tolerances)],
                  meta={"model": "encoder.onnx"})


def test_console_fits_80_columns_one_line_per_row():
    report = _transformer_report()
    console = Console(record=True, width=80)
    print_report(report, console)
    text = console.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    rows = [line for line in lines if re.match(r"/model\S*( \(out\))?  .*  (pass|FAIL\*?) *$", line)]
    assert len(rows) == len(report.comparisons[0].tensors)
    assert all("…" in row for row in rows)  # names lose their middle, not their line
    assert sum(row.rstrip().endswith("FAIL*") for row in rows) == 1
    assert "failing by op type: BatchNormalization 3/3" in text
    header = next(line for line in lines if line.startswith("tensor"))
    assert header.split() == ["tensor", "op", "max", "abs", "max", "rel", "1-cos", "SQNR", "result"]
    ops = {row.split()[1] for row in rows}
    assert "LayerNorm" in ops or "BatchNorm" in ops, ops  # long op types keep their start, not "La…zation"


def test_console_op_types_keep_their_start():
    from trtdebug.render.console import _short_op

    assert _short_op("LayerNormalization", 9) == "LayerNorm" and _short_op("ReduceMean", 9) == "ReduceMe…"
    assert _short_op("Conv", 9) == "Conv" and _short_op("GatherElements", 9) == "GatherEl…"


def test_console_wide_has_every_column():
    text = _console_text(_transformer_report(1), wide=True)
    for header in ("mean abs", "NaN/Inf", "atol to pass", "rtol to pass", "producer"):
        assert header in text
    assert "/model/encoder/layers.0/self_attn/BatchNormalization_output_0" in text


def test_console_suggests_tolerances_that_pass():
    text = _console_text(_transformer_report(1))
    atol = float(re.search(r"to pass every tensor: --atol (\S+) \(with rtol 1e-05\)", text).group(1))
    rtol = float(re.search(r"or: --rtol (\S+) \(with atol 1e-05\)", text).group(1))
    assert re.search(r"it passes with atol \S+ \(rtol 1e-05\), or with rtol \S+ \(atol 1e-05\)", text)
    assert _transformer_report(1, Tolerances(atol=atol)).passed
    assert _transformer_report(1, Tolerances(rtol=rtol)).passed
    assert not _transformer_report(1, Tolerances(atol=atol * 0.99)).passed


def test_cosine_close_to_one_is_not_shown_as_one():
    from trtdebug.render import format_one_minus_cos

    assert format_one_minus_cos(0.99999994) == "6.0e-08"
    assert format_one_minus_cos(1.0) == "0" and format_one_minus_cos(None) == "-"


def test_suggested_tolerance_text_rounds_up():
    from trtdebug.render import format_tolerance

    for x in (3.2004e-3, 9.9999e-5, 1e-3, 0.1 + 0.2, 123456.7):
        assert float(format_tolerance(x)) >= x
    assert format_tolerance(3.2004e-3) == "3.21e-03" and format_tolerance(1e-3) == "1.00e-03"


def test_ellipsize_middle_keeps_both_ends():
    from trtdebug.render import ellipsize_middle

    name = "/model/encoder/layers.11/self_attn/Softmax_output_0"
    cut = ellipsize_middle(name, 24)
    assert len(cut) == 24 and cut.startswith("/model") and cut.endswith("Softmax_output_0")
    assert ellipsize_middle("short", 24) == "short" and ellipsize_middle(name, 1) == "…"


def _visible_text(page: str) -> str:
    """What a reader sees: the page without scripts, styles and tags (tooltips count: they are read too)."""
    page = re.sub(r"<(script|style)>.*?</\1>", " ", page, flags=re.S)
    titles = " ".join(re.findall(r"<title>(.*?)</title>", page, flags=re.S))
    return re.sub(r"<[^>]+>", " ", page) + " " + titles


def _realistic_report():
    report = _transformer_report(2)
    report.meta.update({"iterations": 1, "mark_all": True, "seed": 1, "input_shapes": {"x": [2, 16, 64]},
                        "runners": {"onnxrt": {"providers": ["CPUExecutionProvider"], "onnxruntime_version": "1.17"},
                                    "trt": {"engine_path": None, "tf32": False, "num_layers": 12,
                                            "profiles": [{"min": {"x": [1, 1, 64]}, "max": {"x": [8, 128, 64]}}],
                                            "layers": [{"name": f"layer{i}", "precision": "FP32"} for i in range(20)]}}})
    return report


def test_html_shows_values_humanly():
    page = render_html(_realistic_report())
    visible = _visible_text(page)
    for repr_text in ("True", "False", "None", "{'", "['", "&#39;"):
        assert repr_text not in visible, repr_text
    assert re.search(r"mark all\s*</th>\s*<td>yes", page)
    assert "2x16x64" in visible  # the input shape
    assert visible.count("CPUExecutionProvider") == 1
    meta_table = page.split('<table class="meta">')[1].split("</table>\n")[0]
    assert meta_table.count("<th>runners</th>") == 1


def test_html_cosine_and_tolerances_to_pass():
    report = _realistic_report()
    page = render_html(report)
    cosine = report.comparisons[0].first_failing.stats.cosine
    assert f"cosine {format_number(cosine, 10)} (1-cos {1 - cosine:.1e})" in page
    assert "Every tensor passes with" in page and "<code>--atol " in page
    assert "atol to pass" in page and "rtol to pass" in page


def test_html_per_op_table():
    page = render_html(_realistic_report())
    table = page.split('<table class="sortable per-op">')[1].split("</table>")[0]
    rows = re.findall(r"<tr class=\"(\w+)\"><td data-v=\"([^\"]+)\">", table)
    assert rows[0] == ("fail", "BatchNormalization")  # failing op types come first
    assert [op for css, op in rows if css == "fail"] == ["BatchNormalization"]
    assert re.search(r'data-v="2">2</td>\s*<td class="num" data-v="2">2</td>', table)  # 2 tensors, 2 failing
    per_op = report_json_per_op(_realistic_report())
    assert per_op[0]["op"] == "BatchNormalization" and per_op[0]["failed"] == per_op[0]["tensors"] == 2


def report_json_per_op(report):
    return json.loads(report_json(report))["comparisons"][0]["per_op"]


def test_html_offline_and_escaped_everywhere(report):
    page = render_html(report)
    for attr_value in re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", page, re.I):
        assert attr_value.startswith("#"), attr_value
    assert "<script>alert" not in page and page.count("<script>") == 1
    assert "[bold]layer[/bold]" in page
