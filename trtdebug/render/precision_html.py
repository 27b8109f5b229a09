"""The ``debug precision`` report (its ``report.json``) as one self-contained HTML page.

Rendered by jinja2 from ``templates/precision.html.j2`` with autoescaping on: node names come
from the user's model and reach the page escaped.  The plot - the error each node *introduces*
(run alone on true inputs) against the error it *carries* (accumulated in the full reduced run),
along the topological order - is inline SVG whose geometry is computed here (coordinates only;
every text goes through the template), as the comparison page's plots are.  No scripts, no network.
"""
from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

from trtdebug.util.files import write_text_atomic

COLORS = {"introduced": "#1565c0", "accumulated": "#ef6c00", "kept": "#c62828"}
_FLOOR = 1e-8  # errors below this (and exact zeros) sit on the plot's floor


def render_precision_html(data: Mapping[str, Any]) -> str:
    """The page for one ``debug precision`` report (a dict as in ``report.json``)."""
    data = dict(data)
    return _environment().get_template("precision.html.j2").render(
        data=data, plot=error_plot(data.get("topological") or [], set(data.get("keep_fp32") or [])), colors=COLORS,
        ranking=list(data.get("attribution") or [])[:60])


def write_precision_html(data: Mapping[str, Any], path: Union[str, "os.PathLike[str]"]) -> Path:
    return write_text_atomic(path, render_precision_html(data))


def _value(x) -> Optional[float]:
    """A report number (float, ``"inf"``, ``"nan"`` or None) as a float for the plot; None: not drawn."""
    if x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def error_plot(nodes: List[Mapping[str, Any]], kept: set, *, width: int = 900, height: int = 260) -> Dict[str, Any]:
    """Geometry of the introduced/accumulated error plot: log10 y axis, one x step per node, Inf on top."""
    left, right, top, bottom = 56, width - 12, 14, height - 30
    points = []
    finite = [v for n in nodes for v in (_value(n.get("introduced_error")), _value(n.get("accumulated_error")))
              if v is not None and math.isfinite(v) and v > 0]
    hi = math.ceil(math.log10(max(finite))) if finite else 0
    lo = math.floor(math.log10(max(min(finite), _FLOOR))) if finite else -6
    hi = max(hi, lo + 1)
    span = len(nodes) - 1 if len(nodes) > 1 else 1

    def y_of(v: float) -> float:
        if math.isinf(v):
            return float(top)
        frac = (math.log10(max(v, 10.0 ** lo)) - lo) / (hi - lo)
        return round(bottom - frac * (bottom - top - 12), 1)  # Inf gets the 12 px band at the top

    lines: Dict[str, List[str]] = {"introduced": [], "accumulated": []}
    for i, n in enumerate(nodes):
        x = round(left + (right - left) * i / span, 1)
        for key in lines:
            v = _value(n.get(f"{key}_error"))
            if v is None:
                continue
            y = y_of(v)
            lines[key].append(f"{x},{y}")
            if key == "introduced" and (n.get("node") in kept or math.isinf(v)):
                points.append({"x": x, "y": y, "color": COLORS["kept"] if n.get("node") in kept else COLORS[key],
                               "node": n.get("node"), "op": n.get("op"), "value": n.get("introduced_error"),
                               "kept": n.get("node") in kept})
    labels = [{"y": y_of(10.0 ** e), "text": f"1e{e}"} for e in range(lo, hi + 1)]
    return {"width": width, "height": height, "left": left, "right": right, "top": top, "bottom": bottom,
            "labels": labels, "inf_y": top, "count": len(nodes), "points": points,
            "lines": {k: " ".join(v) for k, v in lines.items()}}


def _fmt(x) -> str:
    v = _value(x)
    if x is None:
        return "-"
    if v is None:
        return str(x)
    if math.isinf(v):
        return "inf"
    return f"{v:.3g}"


@lru_cache(maxsize=1)
def _environment():
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("trtdebug.render", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["err"] = _fmt
    return env
