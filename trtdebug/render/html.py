"""The report as one self-contained HTML page, rendered by jinja2 from ``templates/``.

The page must open from a mail attachment or an air-gapped machine: no external CSS,
scripts, fonts or images.  Plots are inline SVG drawn by template macros
(``templates/plots.html.j2``) from geometry computed here, not images from a plotting
library (matplotlib's dependencies break the GPU-machine pack); the only script sorts a
table by a clicked column.  Autoescaping is on: every name from the model reaches the
page through jinja2's escaping, never through string concatenation.  Values of ``meta``
are shown as a person reads them (``yes``, ``x: 2, 16, 64``), never as Python reprs.
"""
from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from trtdebug.comparison.metrics import Histogram
from trtdebug.comparison.report import Comparison, Report
from trtdebug.render import (format_number, format_one_minus_cos, format_shape, format_tolerance, nonfinite_counts,
                             tolerance_advice)
from trtdebug.util.files import write_text_atomic

COLORS = {"pass": "#2e7d32", "fail": "#c62828", "value": "#1565c0", "error": "#ef6c00"}


def render_html(report: Report) -> str:
    """The whole report page as a string."""
    return _environment().get_template("report.html.j2").render(
        report=report, model=report.meta.get("model"), meta_rows=meta_rows(report), colors=COLORS)


def write_html(report: Report, path: Union[str, os.PathLike]) -> Path:
    """Write the HTML report atomically (works as well on a report read back by ``load_report``)."""
    return write_text_atomic(path, render_html(report))


@lru_cache(maxsize=1)
def _environment():
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("trtdebug.render", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=False, lstrip_blocks=False)
    env.filters.update(
        num=format_number, tol=format_tolerance, one_minus_cos=format_one_minus_cos, shape=format_shape,
        nonfinite=nonfinite_counts, sortkey=_sort_key, one_minus_cos_key=lambda c: _sort_key(None if c is None else 1.0 - c),
        advice=tolerance_advice, plots=_divergence_plots, histogram=histogram_geometry, label=_label,
        scalars=lambda seq: all(not isinstance(v, (dict, list, tuple)) for v in seq), human_scalar=_human_scalar)
    return env


# -- the run's facts ---------------------------------------------------------------------------------
def meta_rows(report: Report) -> List[Tuple[str, Any]]:
    """``(label, value)`` rows for the facts table: the known ``meta`` keys first, each said once.

    ``runners`` merges the runner names with their details from ``meta["runners"]``;
    ``inputs`` / ``input_shapes`` and ``timings`` get a one-line summary per entry; any
    other key is shown as it is, through the template's ``human`` macro.
    """
    meta = dict(report.meta)
    rows: List[Tuple[str, Any]] = []
    if "model" in meta:
        rows.append(("model", meta.pop("model")))
    details = meta.pop("runners", None)
    details = details if isinstance(details, dict) else {}
    if any(details.get(name) for name in report.runners):
        rows.append(("runners", {name: details.get(name) or "" for name in report.runners}))
    else:
        rows.append(("runners", ", ".join(report.runners) or None))
    if report.comparisons:
        rows.append(("tolerances", _describe_tolerances(report.comparisons[0])))
    inputs, shapes = meta.pop("inputs", None), meta.pop("input_shapes", None)
    if isinstance(inputs, dict):
        rows.append(("inputs", {n: _describe_input(v) for n, v in inputs.items()}))
    elif isinstance(shapes, dict):
        rows.append(("inputs", {n: _describe_input({"shape": v}) for n, v in shapes.items()}))
    if isinstance(meta.get("timings"), dict):
        rows.append(("timings", {n: _describe_timing(v) for n, v in meta.pop("timings").items()}))
    rows += [(_label(k), v) for k, v in meta.items()]
    return rows


def _describe_tolerances(c: Comparison) -> str:
    tol = c.tolerances
    overrides = len(tol.per_tensor_atol) + len(tol.per_tensor_rtol)
    check = tol.check_error_stat if tol.check_error_stat != "quantile" else f"quantile {tol.error_quantile:g}"
    rule = "|test - ref| <= atol + rtol * |ref|" if tol.check_error_stat == "elemwise" else \
        f"{check}(|test - ref|) <= atol + rtol * {check}(|ref|)"
    return (f"{rule}: atol {tol.atol:g}, rtol {tol.rtol:g}, check {check}"
            + (f", {overrides} per-tensor override(s)" if overrides else ""))


def _describe_input(info: Any) -> Any:
    if isinstance(info, dict) and ("shape" in info or "dtype" in info):
        shape = info.get("shape")
        shape_text = format_shape(shape) if isinstance(shape, (list, tuple)) else ("" if shape is None else str(shape))
        return " ".join(x for x in (shape_text, str(info.get("dtype") or "")) if x)
    return info


def _describe_timing(times: Any) -> Any:
    if isinstance(times, (list, tuple)) and times and all(isinstance(t, (int, float)) for t in times):
        return f"mean {1e3 * sum(times) / len(times):.3g} ms, min {1e3 * min(times):.3g} ms over {len(times)} iteration(s)"
    return times


def _label(key: Any) -> str:
    """``mark_all`` -> ``mark all``: keys are labels for people here."""
    return str(key).replace("_", " ")


def _human_scalar(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return format_number(v, 6)  # ints stay exact
    return str(v)


def _sort_key(x: Any) -> str:
    """What the sorting script compares: numbers as text parseFloat reads back (``Infinity`` included)."""
    if isinstance(x, float):
        return "" if math.isnan(x) else ("Infinity" if x == math.inf else "-Infinity" if x == -math.inf else repr(x))
    return "" if x is None else str(x)


# -- plot geometry (drawn by templates/plots.html.j2) -------------------------------------------------
def histogram_geometry(hist: Optional[Histogram], kind: str, width: int = 300, height: int = 100) -> Dict[str, Any]:
    """Bars of ``hist`` in a ``width`` x ``height`` box with the range's ends as labels.

    ``kind`` is ``value`` or ``error`` (the colour); ``empty`` is the text shown instead of
    a plot (no data, or every error exactly 0).
    """
    if hist is None or not hist.counts:
        exact = hist is not None and hist.zeros
        return {"empty": f"all {hist.zeros} exact" if exact else "no data"}
    pad, label_h = 6, 16
    plot_h = height - label_h - 4
    top = max(hist.counts) or 1
    bar_w = (width - 2 * pad) / len(hist.counts)
    bars = [{"x": round(pad + i * bar_w, 1), "y": round(4 + plot_h - plot_h * n / top, 1),
             "w": round(max(bar_w - 1, 1), 1), "h": round(plot_h * n / top, 1),
             "tip": f"{format_number(hist.edges[i])} .. {format_number(hist.edges[i + 1])}: {n}"}
            for i, n in enumerate(hist.counts)]
    return {"empty": None, "width": width, "height": height, "pad": pad, "base": 4 + plot_h, "bars": bars,
            "color": COLORS[kind], "lo": format_number(hist.edges[0]), "hi": format_number(hist.edges[-1])}


def _divergence_plots(c: Comparison) -> Dict[str, Dict[str, Any]]:
    """Max |error| (log axis) and SQNR along topological order: the step shows where divergence starts."""
    first = c.first_failing
    marker = c.tensors.index(first) if first is not None else None
    names = [t.name for t in c.tensors]
    failing = [not t.passed for t in c.tensors]
    return {"error": series_geometry([t.stats.max_abs for t in c.tensors], names=names, failing=failing,
                                     marker=marker, log=True),
            "sqnr": series_geometry([t.stats.sqnr_db for t in c.tensors], names=names, failing=failing,
                                    marker=marker, log=False)}


def series_geometry(values: Sequence[Optional[float]], *, names: Sequence[str], failing: Sequence[bool],
                    marker: Optional[int], log: bool, width: int = 1000, height: int = 180) -> Dict[str, Any]:
    """A line through ``values`` in order, failing points in red, a dashed line at index ``marker``.

    Zeros (on a log axis) and infinities sit at the bottom / top edge, labelled ``0`` /
    ``inf``, apart from the finite range (its ends labelled where they are); undefined
    values leave a gap.  Each point's tooltip names its tensor and value.
    """
    ys, lo, hi = _plot_coordinates(values, log)
    left, right, top, bottom = 64, width - 10, 14, height - 18
    n = len(values)

    def x_of(i: int) -> float:
        return round(left + (right - left) * (i / (n - 1) if n > 1 else 0.5), 1)

    def y_of(v: float) -> float:
        return round(top + (bottom - top) * (hi - v) / (hi - lo), 1)

    points = [{"x": x_of(i), "y": y_of(v), "color": COLORS["fail"] if failing[i] else COLORS["pass"],
               "tip": f"{i}: {names[i]} = {format_number(values[i])}"} for i, v in enumerate(ys) if v is not None]
    lines = [" ".join(f"{x_of(i)},{y_of(v)}" for i, v in segment) for segment in _segments(ys)]
    return {"width": width, "height": height, "left": left, "right": right, "top": top, "bottom": bottom,
            "count": n, "points": points, "lines": lines, "fail_color": COLORS["fail"],
            "labels": _axis_labels(values, ys, log, y_of),
            "marker": None if marker is None else {"x": x_of(marker), "name": names[marker]}}


def _plot_coordinates(values: Sequence[Optional[float]], log: bool) -> Tuple[List[Optional[float]], float, float]:
    """Values in axis units (log10 when ``log``), clamped into a padded range; and that range."""
    axis = [_axis_value(v, log) for v in values]
    finite = [a for a in axis if a is not None and math.isfinite(a)]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    if lo == hi:
        lo, hi = lo - 1.0, hi + 1.0
    span = hi - lo
    # a band of its own at the edge for zeros (log axis) and infinities, apart from the finite values
    lo -= span * (0.2 if any(a == -math.inf for a in axis) else 0.08)
    hi += span * (0.2 if any(a == math.inf for a in axis) else 0.08)
    return [None if a is None else min(max(a, lo), hi) for a in axis], lo, hi


def _axis_value(v: Optional[float], log: bool) -> Optional[float]:
    if v is None or math.isnan(v):
        return None
    if log and v <= 0:
        return -math.inf
    return math.log10(v) if log and math.isfinite(v) else v


def _axis_labels(values: Sequence[Optional[float]], ys: Sequence[Optional[float]], log: bool,
                 y_of: Callable[[float], float]) -> List[Dict[str, Any]]:
    """Labels at the largest and smallest finite value, and ``0`` / ``inf`` at the edges where such values are."""
    labels: List[Dict[str, Any]] = []
    edges = {"0": lambda v: log and v <= 0, "inf": lambda v: v == math.inf, "-inf": lambda v: v == -math.inf and not log}
    for text, test in edges.items():
        hits = [y for v, y in zip(values, ys) if v is not None and y is not None and test(v)]
        if hits:
            labels.append({"y": y_of(hits[0]), "text": text})
    finite = [(v, y) for v, y in zip(values, ys) if v is not None and y is not None and math.isfinite(v) and not (log and v <= 0)]
    if finite:
        labels += [{"y": y_of(y), "text": format_number(v, 2 if log else 3)} for v, y in (max(finite), min(finite))]
    kept: List[Dict[str, Any]] = []
    for label in labels:  # drop a label that would overlap one already placed
        if all(abs(label["y"] - k["y"]) >= 11 for k in kept):
            kept.append(label)
    return kept


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


