"""Renderers of a :class:`~trtdebug.compare.report.Report`: console (rich), JSON, self-contained HTML.

The renderers are loaded on first use (``from trtdebug.render import write_html`` works),
so writing JSON never imports rich.  The small text formatters below are shared by the
console and HTML renderers so both show the same numbers the same way.
"""
from __future__ import annotations

import importlib
import math
from typing import Any, Optional, Sequence

from trtdebug.compare.metrics import Histogram, TensorStats

_EXPORTS = {"print_report": "console", "report_json": "json", "write_json": "json", "load_report": "json",
            "render_html": "html", "write_html": "html"}
SPARK_LEVELS = " ▁▂▃▄▅▆▇█"

__all__ = sorted(_EXPORTS) + ["format_number", "format_shape", "nonfinite_counts", "sparkline"]


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
