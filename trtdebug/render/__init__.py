"""Renderers of a :class:`~trtdebug.comparison.report.Report`: console (rich), JSON, self-contained HTML.

The renderers are loaded on first use (``from trtdebug.render import write_html`` works),
so writing JSON never imports rich.  The small text formatters below are shared by the
console and HTML renderers so both show the same numbers the same way.
"""
from __future__ import annotations

import importlib
import math
from typing import Any, List, Optional, Sequence

from trtdebug.comparison.metrics import Histogram, TensorStats
from trtdebug.comparison.report import Comparison

_EXPORTS = {"print_report": "console", "report_json": "json", "write_json": "json", "load_report": "json",
            "render_html": "html", "write_html": "html"}
SPARK_LEVELS = " ▁▂▃▄▅▆▇█"

__all__ = sorted(_EXPORTS) + ["ellipsize_middle", "format_number", "format_one_minus_cos", "format_shape",
                               "format_tolerance", "nonfinite_counts", "sparkline", "tolerance_advice"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"trtdebug.render.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def format_number(x: Optional[float], digits: int = 3) -> str:
    """Compact: ``-`` for undefined, ``inf``/``nan`` spelled out, else ``digits`` significant digits."""
    if x is None:
        return "-"
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{digits}g}"


def format_one_minus_cos(cosine: Optional[float]) -> str:
    """``1 - cosine`` in scientific notation: a cosine of 0.99999994 reads ``6.0e-08``, not ``1``.

    Exactly ``0`` for a cosine of exactly 1, so "identical direction" stays recognisable.
    """
    if cosine is None:
        return "-"
    gap = 1.0 - cosine
    return "0" if gap == 0 else f"{gap:.1e}"


def format_tolerance(x: Optional[float]) -> str:
    """A tolerance to suggest: 3 significant digits, rounded *up* so that the printed value still passes."""
    if x is None:
        return "-"
    if x == 0 or not math.isfinite(x):
        return format_number(x)
    text = f"{x:.2e}"
    while float(text) < x:
        mantissa, exponent = text.split("e")
        text = f"{(float(mantissa) + 0.01) * 10.0 ** int(exponent):.2e}"
    return text


def tolerance_advice(comparison: Comparison) -> List[str]:
    """How to make every tensor pass, as command-line flags: ``--atol ...`` or ``--rtol ...``, or why not.

    Empty when the comparison passes.  The flags keep the other tolerance as it is and list
    per-tensor values for tensors that have their own override.
    """
    if comparison.passed or not comparison.tensors:
        return []
    need = comparison.tolerances_to_pass()
    tol = comparison.tolerances
    lines = []
    for key, other in (("atol", "rtol"), ("rtol", "atol")):
        if need[key] is None:
            lines.append(f"no --{key} alone passes every tensor ({need[f'{key}_reason']})")
            continue
        flags = [f"--{key} {format_tolerance(need[key])}"]
        flags += [f"--{key} {name}:{format_tolerance(v)}" for name, v in need[f"{key}_per_tensor"].items()]
        lines.append(f"{' '.join(flags)} (with {other} {getattr(tol, other):g})")
    return lines


def ellipsize_middle(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters by replacing its middle with ``…``.

    Both ends of an ONNX name tell tensors apart (``/model/encoder/…/layers.3/attn/Softmax_output_0``);
    the end says more (layer, op), so it keeps two thirds.
    """
    if len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    head = (width - 1) // 3
    return text[:head] + "…" + text[len(text) - (width - 1 - head):]


def format_shape(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape) if len(shape) else "scalar"


def sparkline(hist: Optional[Histogram]) -> str:
    """One block character per bin, height proportional to its count; ``exact`` when no error at all."""
    if hist is None:
        return ""
    if not hist.counts:
        return "exact" if hist.zeros else ""
    top = max(hist.counts) or 1
    steps = len(SPARK_LEVELS) - 1
    return "".join(SPARK_LEVELS[math.ceil(c * steps / top)] for c in hist.counts)


def nonfinite_counts(stats: TensorStats) -> str:
    """``ref 2 NaN, test 1 Inf``: only the non-zero counts, empty when both sides are finite."""
    parts = [f"{side} {count} {kind}" for side, count, kind in (
        ("ref", stats.ref_nan, "NaN"), ("ref", stats.ref_inf, "Inf"), ("test", stats.test_nan, "NaN"), ("test", stats.test_inf, "Inf"))
        if count]
    return ", ".join(parts)
