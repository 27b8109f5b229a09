"""The report as one self-contained HTML file: no external CSS, scripts, fonts or images.

The file must open from a mail attachment or an air-gapped machine, so the plots are
inline SVG drawn by the small functions below rather than matplotlib images, and the
only script is a few lines that sort the tensor table by a clicked column.  Every name
from the model goes through :func:`html.escape`.
"""
from __future__ import annotations

import html
import math
import os
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

from trtdebug.comparison.metrics import Histogram, TensorStats
from trtdebug.comparison.report import Comparison, Report, TensorComparison
from trtdebug.render import format_number, format_shape, nonfinite_counts
from trtdebug.util.files import write_text_atomic

PASS_COLOR, FAIL_COLOR, VALUE_COLOR, ERROR_COLOR = "#2e7d32", "#c62828", "#1565c0", "#ef6c00"

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:1.5em;color:#222}
h1 .badge,h2 .badge{font-size:.6em;padding:.15em .5em;border-radius:.3em;color:#fff;vertical-align:middle}
.badge.pass{background:#2e7d32}.badge.fail{background:#c62828}
table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}
table.tensors th{background:#f4f4f4;cursor:pointer;position:sticky;top:0;white-space:nowrap}
table.tensors td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.fail td{background:#fdecea}tr.first td{background:#f9c6c0;font-weight:bold}
.first-box{border-left:6px solid #c62828;background:#fdecea;padding:.6em 1em;margin:1em 0}
.muted{color:#777}.warn{color:#a15c00}.name{font-family:ui-monospace,Menlo,Consolas,monospace;word-break:break-all}
details summary{cursor:pointer;color:#1565c0}svg{background:#fafafa;margin:2px}
"""

_JS = """
document.querySelectorAll("table.tensors").forEach(function(table){
  table.querySelectorAll("th").forEach(function(th, col){
    th.addEventListener("click", function(){
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var dir = th.dataset.dir === "asc" ? -1 : 1;
      th.dataset.dir = dir === 1 ? "asc" : "desc";
      rows.sort(function(a, b){
        var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v, nx = parseFloat(x), ny = parseFloat(y);
        if (!isNaN(nx) && !isNaN(ny)) return nx < ny ? -dir : nx > ny ? dir : 0;
        return String(x).localeCompare(String(y)) * dir;
      });
      rows.forEach(function(r){ body.appendChild(r); });
    });
  });
});
"""


def render_html(report: Report) -> str:
    """The whole report page as a string."""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             "<title>trtdebug report</title>", f"<style>{_CSS}</style></head><body>",
             f"<h1>trtdebug report {_badge(report.passed)}</h1>", _meta_table(report)]
    parts += [_comparison_section(c) for c in report.comparisons]
    if not report.comparisons:
        parts.append('<p class="muted">Nothing was compared (a comparison needs two runners).</p>')
    parts.append(f"<script>{_JS}</script></body></html>")
    return "\n".join(parts)


def write_html(report: Report, path: Union[str, os.PathLike]) -> Path:
    """Write the HTML report atomically."""
    return write_text_atomic(path, render_html(report))


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _badge(passed: bool) -> str:
    return '<span class="badge pass">PASSED</span>' if passed else '<span class="badge fail">FAILED</span>'


def _meta_table(report: Report) -> str:
    meta = dict(report.meta)
    rows: List[Tuple[str, str]] = []
    if "model" in meta:
        rows.append(("model", _e(meta.pop("model"))))
    rows.append(("runners", _e(", ".join(report.runners)) or '<span class="muted">none</span>'))
    if report.comparisons:
        tol = report.comparisons[0].tolerances
        overrides = len(tol.per_tensor_atol) + len(tol.per_tensor_rtol)
        rows.append(("tolerances", _e(f"|test - ref| <= atol + rtol * |ref|: atol {tol.atol:g}, rtol {tol.rtol:g}, "
                                      f"check {tol.check_error_stat}"
                                      + (f" (quantile {tol.error_quantile:g})" if tol.check_error_stat == "quantile" else "")
                                      + (f", {overrides} per-tensor override(s)" if overrides else ""))))
    if isinstance(meta.get("inputs"), dict):
        rows.append(("inputs", "<br>".join(f'<span class="name">{_e(n)}</span> {_e(_describe_input(v))}'
                                           for n, v in meta.pop("inputs").items())))
    if isinstance(meta.get("timings"), dict):
        rows.append(("timings", "<br>".join(f"{_e(n)}: {_e(_describe_timing(v))}" for n, v in meta.pop("timings").items())))
    rows += [(str(k), _e(v)) for k, v in meta.items()]
    return "<table class=\"meta\">" + "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def _describe_input(info: Any) -> str:
    if isinstance(info, dict):
        shape = info.get("shape")
        return " ".join(x for x in (format_shape(shape) if shape is not None else "", str(info.get("dtype") or "")) if x)
    return str(info)


def _describe_timing(times: Any) -> str:
    if isinstance(times, (list, tuple)) and times and all(isinstance(t, (int, float)) for t in times):
        return f"mean {1e3 * sum(times) / len(times):.3g} ms, min {1e3 * min(times):.3g} ms over {len(times)} iteration(s)"
    return str(times)


def _comparison_section(c: Comparison) -> str:
    counts = c.summary()
    parts = [f"<section><h2>{_e(c.test)} vs {_e(c.reference)} {_badge(c.passed)}</h2>",
             f"<p>{counts['passed']}/{counts['tensors']} tensors passed"
             + (f"; graph outputs {counts['graph_outputs'] - counts['graph_outputs_failed']}/{counts['graph_outputs']}, "
                f"intermediates {counts['intermediates'] - counts['intermediates_failed']}/{counts['intermediates']}"
                if counts["graph_outputs"] or counts["intermediates"] else "")
             + f"; {c.iterations} iteration(s) compared.</p>"]
    if c.first_failing is not None:
        parts.append(_first_failing_box(c.first_failing))
    if c.warnings:
        parts.append('<ul class="warn">' + "".join(f"<li>{_e(w)}</li>" for w in c.warnings) + "</ul>")
    if c.tensors:
        parts.append(_divergence_plots(c))
        parts.append(_tensor_table(c))
    for side, names in ((c.reference, c.only_in_reference), (c.test, c.only_in_test)):
        if names:
            parts.append(f"<details><summary>{len(names)} tensor(s) only in {_e(side)}</summary>"
                         + "<br>".join(f'<span class="name">{_e(n)}</span>' for n in names) + "</details>")
    parts.append("</section>")
    return "\n".join(parts)


def _first_failing_box(t: TensorComparison) -> str:
    s = t.stats
    producer = " ".join(_e(p) for p in (t.producer_op, t.producer) if p)
    lines = [f'<b>First failing tensor:</b> <span class="name">{_e(t.name)}</span>'
             + (f" (produced by {producer})" if producer else ""),
             f"{s.failing} of {s.elements} elements fail ({s.failing_fraction:.2%}); max |error| {format_number(s.max_abs)}, "
             f"cosine {format_number(s.cosine, 6)}, SQNR {format_number(s.sqnr_db)} dB, iteration {t.iteration}"]
    if s.worst is not None:
        w = s.worst
        lines.append(f"worst element {_e(list(w.index))}: reference {format_number(w.reference, 6)}, "
                     f"test {format_number(w.test, 6)}, |error| {format_number(w.abs_error)} "
                     f"({format_number(w.ratio)}x the tolerance)")
    lines += [_e(n) for n in s.notes]
    return '<div class="first-box">' + "<br>".join(lines) + "</div>"


_COLUMNS = ["#", "tensor", "producer", "shape", "dtype", "max abs", "mean abs", "p99 abs", "max rel", "cosine",
            "SQNR dB", "NaN/Inf", "failing", "result", "details"]


def _tensor_table(c: Comparison) -> str:
    first = c.first_failing
    head = "".join(f"<th>{_e(h)}</th>" for h in _COLUMNS)
    body = [_tensor_row(i, t, t is first) for i, t in enumerate(c.tensors)]
    return (f'<table class="tensors"><thead><tr>{head}</tr></thead><tbody>' + "\n".join(body) + "</tbody></table>")


def _tensor_row(position: int, t: TensorComparison, is_first: bool) -> str:
    s = t.stats
    name = f'<span class="name">{_e(t.name)}</span>' + (' <span class="muted">(output)</span>' if t.is_graph_output else "")
    dtype = s.ref_dtype if s.ref_dtype == s.test_dtype else f"{s.ref_dtype} / {s.test_dtype}"
    result = f'<b style="color:{PASS_COLOR}">pass</b>' if t.passed else f'<b style="color:{FAIL_COLOR}">FAIL</b>'
    cells = [
        _td(position, position), _td(name, t.name, raw=True),
        _td(" ".join(p for p in (t.producer_op, t.producer) if p), t.producer_op or ""),
        _td(format_shape(s.shape), s.elements), _td(dtype, dtype),
        _num(s.max_abs), _num(s.mean_abs), _num(s.p99_abs), _num(s.max_rel), _num(s.cosine, 6), _num(s.sqnr_db),
        _td(nonfinite_counts(s), s.ref_nan + s.ref_inf + s.test_nan + s.test_inf),
        _td(f"{s.failing} ({s.failing_fraction:.2%})", s.failing_fraction),
        _td(result + (" (first)" if is_first else ""), int(t.passed), raw=True),
        _td(_details(s), "", raw=True),
    ]
    css = "first" if is_first else ("fail" if not t.passed else "pass")
    return f'<tr class="{css}">' + "".join(cells) + "</tr>"


def _td(content: Any, sort_value: Any, *, raw: bool = False) -> str:
    return f'<td data-v="{_e(_sort_key(sort_value))}">{content if raw else _e(content)}</td>'


def _num(x: Optional[float], digits: int = 3) -> str:
    return f'<td class="num" data-v="{_e(_sort_key(x))}">{_e(format_number(x, digits))}</td>'


def _sort_key(x: Any) -> str:
    """What the sorting script compares: numbers as text parseFloat reads back (``Infinity`` included)."""
    if isinstance(x, float):
        return "" if math.isnan(x) else ("Infinity" if x == math.inf else "-Infinity" if x == -math.inf else repr(x))
    return "" if x is None else str(x)


def _details(s: TensorStats) -> str:
    extra = [f"elements {s.elements}, finite pairs {s.finite_pairs}",
             f"median |error| {format_number(s.median_abs)}, median rel {format_number(s.median_rel)}, "
             f"p99 rel {format_number(s.p99_rel)}", f"atol {s.atol:g}, rtol {s.rtol:g}, error ratio {format_number(s.error_ratio)}"]
    if s.worst is not None and s.worst.ratio > 0:
        extra.append(f"worst {list(s.worst.index)}: ref {format_number(s.worst.reference, 6)}, "
                     f"test {format_number(s.worst.test, 6)}")
    extra += s.notes
    return ("<details><summary>plots</summary>"
            + svg_histogram(s.value_hist, color=VALUE_COLOR, title="reference values")
            + svg_histogram(s.error_hist, color=ERROR_COLOR, title="|error| (log bins)")
            + "<br>" + "<br>".join(_e(x) for x in extra) + "</details>")


def svg_histogram(hist: Optional[Histogram], *, color: str, title: str, width: int = 240, height: int = 90) -> str:
    """Bars of ``hist`` with the first and last edges as labels; each bar's tooltip gives its range and count."""
    if hist is None or not hist.counts:
        text = f"{title}: all {hist.zeros} exact" if hist is not None and hist.zeros else f"{title}: no data"
        return f'<span class="muted">{_e(text)}</span>'
    top, pad, label_h = max(hist.counts) or 1, 4, 14
    plot_h = height - 2 * label_h
    bar_w = (width - 2 * pad) / len(hist.counts)
    parts = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">',
             f'<text x="{pad}" y="11" font-size="11">{_e(title)}'
             + (f" ({hist.zeros} exact)" if hist.zeros else "") + "</text>"]
    for i, count in enumerate(hist.counts):
        h = plot_h * count / top
        lo, hi = hist.edges[i], hist.edges[i + 1]
        parts.append(f'<rect x="{pad + i * bar_w:.1f}" y="{label_h + plot_h - h:.1f}" width="{max(bar_w - 1, 1):.1f}" '
                     f'height="{h:.1f}" fill="{color}"><title>{_e(format_number(lo))} .. {_e(format_number(hi))}: '
                     f"{count}</title></rect>")
    parts.append(f'<text x="{pad}" y="{height - 2}" font-size="10">{_e(format_number(hist.edges[0]))}</text>')
    parts.append(f'<text x="{width - pad}" y="{height - 2}" font-size="10" text-anchor="end">'
                 f"{_e(format_number(hist.edges[-1]))}</text></svg>")
    return "".join(parts)


def _divergence_plots(c: Comparison) -> str:
    """Max |error| (log axis) and SQNR along topological order: the step shows where divergence starts."""
    first = c.first_failing
    marker = c.tensors.index(first) if first is not None else None
    failing = [not t.passed for t in c.tensors]
    names = [t.name for t in c.tensors]
    return ("<div>"
            + svg_series([t.stats.max_abs for t in c.tensors], names=names, failing=failing, marker=marker,
                         log=True, title="max |error| along topological order (log scale)")
            + "<br>"
            + svg_series([t.stats.sqnr_db for t in c.tensors], names=names, failing=failing, marker=marker,
                         log=False, title="SQNR (dB) along topological order; identical tensors at the top")
            + "</div>")


def svg_series(values: Sequence[Optional[float]], *, names: Sequence[str], failing: Sequence[bool],
               marker: Optional[int], log: bool, title: str, width: int = 960, height: int = 170) -> str:
    """A line through ``values`` in order, failing points in red, a dashed line at index ``marker``.

    Zeros (on a log axis) and infinities are drawn at the bottom / top edge; undefined
    values leave a gap.  Each point's tooltip names its tensor and value.
    """
    ys, lo, hi = _plot_coordinates(values, log)
    left, right, top, bottom = 60, 10, 18, 16
    n = len(values)

    def x_of(i: int) -> float:
        return left + (width - left - right) * (i / (n - 1) if n > 1 else 0.5)

    def y_of(v: float) -> float:
        return top + (height - top - bottom) * (hi - v) / (hi - lo)

    parts = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">',
             f'<text x="{left}" y="12" font-size="12">{_e(title)}</text>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#999"/>',
             f'<text x="{left - 4}" y="{top + 8}" font-size="10" text-anchor="end">{_e(_axis_label(hi, log))}</text>',
             f'<text x="{left - 4}" y="{height - bottom}" font-size="10" text-anchor="end">{_e(_axis_label(lo, log))}</text>']
    if marker is not None:
        mx = x_of(marker)
        anchor = f'x="{mx + 3:.1f}"' if mx < width / 2 else f'x="{mx - 3:.1f}" text-anchor="end"'
        parts.append(f'<line x1="{mx:.1f}" y1="{top}" x2="{mx:.1f}" y2="{height - bottom}" stroke="{FAIL_COLOR}" '
                     f'stroke-dasharray="4 3"/><text {anchor} y="{height - 3}" font-size="10" '
                     f'fill="{FAIL_COLOR}">first failing: {_e(names[marker])}</text>')
    for segment in _segments(ys):
        points = " ".join(f"{x_of(i):.1f},{y_of(v):.1f}" for i, v in segment)
        parts.append(f'<polyline points="{points}" fill="none" stroke="#555" stroke-width="1"/>')
    for i, v in enumerate(ys):
        if v is not None:
            color = FAIL_COLOR if failing[i] else PASS_COLOR
            parts.append(f'<circle cx="{x_of(i):.1f}" cy="{y_of(v):.1f}" r="2.5" fill="{color}">'
                         f"<title>{i}: {_e(names[i])} = {_e(format_number(values[i]))}</title></circle>")
    parts.append("</svg>")
    return "".join(parts)


def _plot_coordinates(values: Sequence[Optional[float]], log: bool) -> Tuple[List[Optional[float]], float, float]:
    """Values in axis units (log10 when ``log``), clamped into a padded range; and that range."""
    axis: List[Optional[float]] = []
    for v in values:
        if v is None or math.isnan(v):
            axis.append(None)
        elif log and v <= 0:
            axis.append(-math.inf)
        else:
            axis.append(math.log10(v) if log and math.isfinite(v) else v)
    finite = [a for a in axis if a is not None and math.isfinite(a)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    if lo == hi:
        lo, hi = lo - 1.0, hi + 1.0
    pad = 0.08 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    return [None if a is None else min(max(a, lo), hi) for a in axis], lo, hi


def _axis_label(v: float, log: bool) -> str:
    return format_number(10.0 ** v, 2) if log else format_number(v, 3)


def _segments(ys: Sequence[Optional[float]]) -> List[List[Tuple[int, float]]]:
    """Runs of consecutive defined points, so gaps stay gaps."""
    runs: List[List[Tuple[int, float]]] = [[]]
    for i, v in enumerate(ys):
        if v is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((i, v))
    return [r for r in runs if r]
