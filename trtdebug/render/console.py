"""The report as rich tables, one per comparison, each followed by a few verdict lines.

The default table fits an 80-column terminal with one line per tensor: name (cut in the
middle: both ends of an ONNX name tell tensors apart), op, max abs and max rel error,
``1-cos`` and SQNR, result.  ``wide=True`` gives every statistic, for wide terminals and logs.
The verdict lines name the first failing tensor, the tolerances that would pass it and
every tensor, and the op types that fail.

Every name goes into :class:`rich.text.Text` rather than markup: ONNX names routinely
contain ``[`` and ``/``, which rich would otherwise read as markup.
"""
from __future__ import annotations

import math
from typing import List, Optional

from rich.console import Console
from rich.table import Table
from rich.text import Text

from trtdebug.comparison.metrics import TensorStats
from trtdebug.comparison.report import Comparison, Report, TensorComparison
from trtdebug.render import (ellipsize_middle, format_number, format_one_minus_cos, format_shape, format_tolerance,
                             nonfinite_counts, sparkline, tolerance_advice)

ORDERS = ("topo", "worst")
NAMES_SHOWN = 5  # names listed for "only in one runner" before "... and N more"
OPS_SHOWN = 5  # op types listed in the "failing by op type" line
# the compact table's columns after the name: (header, width); rich puts 2 spaces between columns
COMPACT_COLUMNS = [("op", 9), ("max abs", 8), ("max rel", 8), ("1-cos", 7), ("SQNR", 5), ("result", 6)]
MIN_NAME_WIDTH = 12
OUTPUT_TAG = " (out)"


def print_report(report: Report, console: Console, *, order: str = "topo", limit: Optional[int] = None,
                 show_passing: bool = True, summary_only: bool = False, wide: bool = False) -> None:
    """Print every comparison of ``report``.

    ``order="worst"`` sorts rows by how far over tolerance they are; ``limit`` caps the rows
    of each table (the caption says how many were left out); ``show_passing=False`` keeps
    the failing rows only; ``summary_only`` prints the verdict lines without tables (CI logs);
    ``wide`` prints every column (shape, mean abs, NaN/Inf, error histogram, tolerances to
    pass), cells wrapping where the terminal is narrower, instead of the 80-column table.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, not {order!r}")
    if report.meta.get("model") and not summary_only:
        console.print(Text(f"model: {report.meta['model']}"))
    for comparison in report.comparisons:
        if not summary_only:
            rows = _rows(comparison, order, show_passing)
            shown = rows if limit is None else rows[:limit]
            table = _wide_table(comparison, shown) if wide else _compact_table(comparison, shown, console.width)
            table.caption = _caption(comparison, rows, shown, limit, show_passing, wide)
            console.print(table)
        for line in _summary(comparison):
            console.print(line)
    if not report.comparisons:
        console.print(Text("nothing was compared (a comparison needs two runners)", style="yellow"))


def _rows(comparison: Comparison, order: str, show_passing: bool) -> List[TensorComparison]:
    rows = comparison.tensors if show_passing else comparison.failed
    if order == "worst":
        rows = sorted(rows, key=lambda t: (t.passed, -t.stats.error_ratio, -(t.stats.max_abs or 0.0)))
    return rows


def _caption(comparison: Comparison, rows: List[TensorComparison], shown: List[TensorComparison],
             limit: Optional[int], show_passing: bool, wide: bool) -> Optional[Text]:
    notes = [f"{len(rows) - len(shown)} more rows not shown (limit {limit})"] if len(shown) < len(rows) else []
    if not show_passing and comparison.tensors:
        notes.append(f"{len(comparison.tensors) - len(comparison.failed)} passing tensors not shown")
    if not wide and any(t is comparison.first_failing for t in shown):
        notes.append("* first failing")
    return Text("; ".join(notes)) if notes else None


def _compact_table(comparison: Comparison, shown: List[TensorComparison], width: int) -> Table:
    """One line per tensor within ``width`` columns: long names lose their middle, never their line."""
    fixed = sum(w + 2 for _, w in COMPACT_COLUMNS)
    longest = max((len(t.name) + (len(OUTPUT_TAG) if t.is_graph_output else 0) for t in shown), default=0)
    name_width = max(MIN_NAME_WIDTH, min(longest, width - fixed))
    first = comparison.first_failing
    table = Table(title=Text(f"{comparison.test} vs {comparison.reference}", style="bold"), box=None,
                  padding=(0, 1), pad_edge=False, header_style="bold")
    table.add_column("tensor", width=name_width, no_wrap=True, overflow="ellipsis")
    for header, column_width in COMPACT_COLUMNS:
        table.add_column(header, width=column_width, no_wrap=True, overflow="ellipsis",
                         justify="left" if header in ("op", "result") else "right")
    for t in shown:
        s = t.stats
        tag = OUTPUT_TAG if t.is_graph_output else ""
        name = Text(ellipsize_middle(t.name, name_width - len(tag)), style="bold red" if t is first else "")
        name.append(tag, style="cyan")
        result = Text("pass", style="green") if t.passed else Text("FAIL*" if t is first else "FAIL", style="bold red")
        table.add_row(name, Text(_short_op(t.producer_op or "", COMPACT_COLUMNS[0][1])),
                      Text(format_number(s.max_abs)), Text(format_number(s.max_rel)),
                      Text(format_one_minus_cos(s.cosine)), Text(_short_sqnr(s.sqnr_db)), result)
    return table


def _short_op(op: str, width: int) -> str:
    """An op type in ``width`` characters, read from its start ("LayerNorm", "ReduceMe…"): the start of an
    op name says what it is, its middle does not ("La…zation" said nothing)."""
    op = op.replace("Normalization", "Norm")
    return op if len(op) <= width else op[: width - 1] + "…"


def _short_sqnr(x: Optional[float]) -> str:
    """SQNR in at most 5 characters: one decimal below 100 dB, none from there on."""
    if x is None or not math.isfinite(x):
        return format_number(x)
    return f"{x:.1f}" if abs(x) < 99.95 else f"{x:.0f}"


def _wide_table(comparison: Comparison, shown: List[TensorComparison]) -> Table:
    """Every column; cells wrap where the terminal is too narrow."""
    table = Table(title=Text(f"{comparison.test} vs {comparison.reference}", style="bold"), header_style="bold")
    for header, justify in [("#", "right"), ("tensor", "left"), ("producer", "left"), ("shape", "left"),
                            ("max abs", "right"), ("mean abs", "right"), ("max rel", "right"), ("1-cos", "right"),
                            ("SQNR dB", "right"), ("NaN/Inf", "left"), ("|error| hist", "left"),
                            ("atol to pass", "right"), ("rtol to pass", "right"), ("result", "left")]:
        table.add_column(header, justify=justify, overflow="fold")
    first = comparison.first_failing
    positions = {id(t): i for i, t in enumerate(comparison.tensors)}
    for t in shown:
        table.add_row(*_wide_cells(t, positions[id(t)], t is first))
    return table


def _wide_cells(t: TensorComparison, position: int, is_first_failing: bool) -> List[Text]:
    s = t.stats
    name = Text(t.name, style="bold red" if is_first_failing else "")
    if t.is_graph_output:
        name.append(" (output)", style="cyan")
    producer = " ".join(p for p in (t.producer_op, t.producer) if p)
    result = Text("pass", style="green") if t.passed else Text("FAIL", style="bold red")
    if is_first_failing:
        result.append(" <- first", style="red")
    return [Text(str(position)), name, Text(producer), Text(format_shape(s.shape)),
            Text(format_number(s.max_abs)), Text(format_number(s.mean_abs)), Text(format_number(s.max_rel)),
            Text(format_one_minus_cos(s.cosine)), Text(format_number(s.sqnr_db)),
            Text(nonfinite_counts(s), style="magenta"), Text(sparkline(s.error_hist), style="yellow"),
            Text(_needed(s, "atol")), Text(_needed(s, "rtol")), result]


def _needed(s: TensorStats, key: str) -> str:
    """A failing tensor's tolerance to pass; ``never`` when no value passes it; empty when it passes."""
    if s.passed:
        return ""
    value = getattr(s, f"{key}_to_pass")
    return "never" if value is None else format_tolerance(value)


def _summary(comparison: Comparison) -> List[Text]:
    """The verdict line, then the first failing tensor's worst element and the tolerances that
    would pass it, failing op types, tolerances for every tensor, warnings and unmatched names."""
    counts = comparison.summary()
    line = Text(f"{comparison.test} vs {comparison.reference}: {counts['passed']}/{counts['tensors']} tensors passed",
                style="bold green" if comparison.passed else "bold red")
    if counts["graph_outputs"]:
        line.append(f" ({counts['graph_outputs'] - counts['graph_outputs_failed']}/{counts['graph_outputs']} graph outputs)")
    lines = [line]
    first = comparison.first_failing
    if first is not None:
        line.append("; first failing: ")
        line.append(first.name, style="bold")
        if first.producer:
            line.append(f" (produced by {first.producer}" + (f", {first.producer_op})" if first.producer_op else ")"))
        worst = first.stats.worst
        if worst is not None:
            lines.append(Text(
                f"  worst element {list(worst.index)}: reference {format_number(worst.reference, 6)}, "
                f"test {format_number(worst.test, 6)}, |error| {format_number(worst.abs_error)} "
                f"({_times_tolerance(worst.ratio)}); {first.stats.failing} of {first.stats.elements} "
                f"elements fail ({first.stats.failing_fraction:.2%})"))
        lines.append(Text(f"  it passes with {_alone(first.stats, 'atol')}, or with {_alone(first.stats, 'rtol')}"))
        lines += [Text(f"  note: {note}") for note in first.stats.notes]
        lines += _failing_ops(comparison)
        advice = tolerance_advice(comparison)
        if advice:
            lines.append(Text("to pass every tensor: " + advice[0]))
            lines += [Text("                   or: " + a) for a in advice[1:]]
    lines += [Text(f"warning: {w}", style="yellow") for w in comparison.warnings]
    for side, names in ((comparison.reference, comparison.only_in_reference), (comparison.test, comparison.only_in_test)):
        if names:
            more = f" ... and {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else ""
            lines.append(Text(f"{len(names)} tensor(s) only in {side}: {', '.join(names[:NAMES_SHOWN])}{more}", style="dim"))
    return lines


def _alone(s: TensorStats, key: str) -> str:
    """``atol 3.21e-03`` (rounded up, so it passes), or why no value of ``key`` passes the tensor."""
    value = getattr(s, f"{key}_to_pass")
    if value is None:
        return f"no {key} ({getattr(s, f'{key}_to_pass_reason')})"
    other = "rtol" if key == "atol" else "atol"
    return f"{key} {format_tolerance(value)} ({other} {getattr(s, other):g})"


def _failing_ops(comparison: Comparison) -> List[Text]:
    """``failing by op type: BatchNormalization 4/4, Conv 1/12``: a pattern across ops at a glance."""
    failing = [r for r in comparison.per_op() if r["failed"]]
    if not failing:
        return []
    more = f" ... and {len(failing) - OPS_SHOWN} more" if len(failing) > OPS_SHOWN else ""
    return [Text("failing by op type: " + ", ".join(f"{r['op']} {r['failed']}/{r['tensors']}"
                                                    for r in failing[:OPS_SHOWN]) + more)]


def _times_tolerance(ratio) -> str:
    """How far past the tolerance the worst element is; with a tolerance of 0 there is no ratio to give."""
    if ratio is None or not math.isfinite(ratio):
        return "the tolerance is 0"
    return f"{format_number(ratio)}x the tolerance"
