"""The report as rich tables, one per comparison, each followed by a one-line verdict.

Every name goes into :class:`rich.text.Text` rather than markup: ONNX names routinely
contain ``[`` and ``/``, which rich would otherwise read as markup.
"""
from __future__ import annotations

from typing import List, Optional

from rich.console import Console
from rich.table import Table
from rich.text import Text

from trtdebug.comparison.report import Comparison, Report, TensorComparison
from trtdebug.render import format_number, format_shape, nonfinite_counts, sparkline

ORDERS = ("topo", "worst")
NAMES_SHOWN = 5  # names listed for "only in one runner" before "... and N more"


def print_report(report: Report, console: Console, *, order: str = "topo", limit: Optional[int] = None,
                 show_passing: bool = True, summary_only: bool = False, wide: bool = False) -> None:
    """Print every comparison of ``report``.

    ``order="worst"`` sorts rows by how far over tolerance they are; ``limit`` caps the rows
    of each table (the caption says how many were left out); ``show_passing=False`` keeps
    the failing rows only; ``summary_only`` prints the verdict lines without tables (CI logs).
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, not {order!r}")
    if report.meta.get("model") and not summary_only:
        console.print(Text(f"model: {report.meta['model']}"))
    for comparison in report.comparisons:
        if not summary_only:
            console.print(_table(comparison, order, limit, show_passing))
        for line in _summary(comparison):
            console.print(line)
    if not report.comparisons:
        console.print(Text("nothing was compared (a comparison needs two runners)", style="yellow"))


def _rows(comparison: Comparison, order: str, show_passing: bool) -> List[TensorComparison]:
    rows = comparison.tensors if show_passing else comparison.failed
    if order == "worst":
        rows = sorted(rows, key=lambda t: (t.passed, -t.stats.error_ratio, -(t.stats.max_abs or 0.0)))
    return rows


def _table(comparison: Comparison, order: str, limit: Optional[int], show_passing: bool) -> Table:
    rows = _rows(comparison, order, show_passing)
    shown = rows if limit is None else rows[:limit]
    hidden = [f"{len(rows) - len(shown)} more rows not shown (limit {limit})"] if len(shown) < len(rows) else []
    if not show_passing and comparison.tensors:
        hidden.append(f"{len(comparison.tensors) - len(comparison.failed)} passing tensors not shown")
    table = Table(title=Text(f"{comparison.test} vs {comparison.reference}", style="bold"),
                  caption=Text("; ".join(hidden)) if hidden else None, header_style="bold")
    for header, justify in [("#", "right"), ("tensor", "left"), ("producer", "left"), ("shape", "left"),
                            ("max abs", "right"), ("mean abs", "right"), ("max rel", "right"), ("cosine", "right"),
                            ("SQNR dB", "right"), ("NaN/Inf", "left"), ("|error| hist", "left"), ("result", "left")]:
        table.add_column(header, justify=justify, overflow="fold")
    first = comparison.first_failing
    positions = {id(t): i for i, t in enumerate(comparison.tensors)}
    for t in shown:
        table.add_row(*_cells(t, positions[id(t)], t is first))
    return table


def _cells(t: TensorComparison, position: int, is_first_failing: bool) -> List[Text]:
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
            Text(format_number(s.cosine, 6)), Text(format_number(s.sqnr_db)), Text(nonfinite_counts(s), style="magenta"),
            Text(sparkline(s.error_hist), style="yellow"), result]


def _summary(comparison: Comparison) -> List[Text]:
    """The verdict line, then the first failing tensor's worst element, warnings and unmatched names."""
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
                f"({format_number(worst.ratio)}x the tolerance); {first.stats.failing} of {first.stats.elements} "
                f"elements fail ({first.stats.failing_fraction:.2%})"))
        lines += [Text(f"  note: {note}") for note in first.stats.notes]
    lines += [Text(f"warning: {w}", style="yellow") for w in comparison.warnings]
    for side, names in ((comparison.reference, comparison.only_in_reference), (comparison.test, comparison.only_in_test)):
        if names:
            more = f" ... and {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else ""
            lines.append(Text(f"{len(names)} tensor(s) only in {side}: {', '.join(names[:NAMES_SHOWN])}{more}", style="dim"))
    return lines
