"""``trtdebug inspect capability``: which nodes TensorRT supports, each subgraph saved as a model.

The partitioning logic lives in :mod:`trtdebug.runners.tensorrt.capability` (pure, tested with a
fake parser); this module loads the model, runs it with TensorRT's parser and prints the result.
"""
from __future__ import annotations

import os
from typing import Callable, Optional

from trtdebug.runners.tensorrt.capability import (
    REPORT_NAME,
    CapabilityReport,
    SupportChecker,
    analyze_capability,
    capability_dir_problem,
    save_capability,
    tensorrt_checker,
)


def check_out_dir(out_dir: os.PathLike) -> None:
    """Fail before any work if ``out_dir`` is the user's (see :func:`capability_dir_problem`)."""
    from trtdebug.util.files import check_replaceable

    check_replaceable(out_dir, capability_dir_problem)


def inspect_capability(model_path: os.PathLike, out_dir: Optional[os.PathLike] = None, *,
                       checker: Optional[SupportChecker] = None, verbose: bool = False,
                       progress: Optional[Callable[[str], None]] = None, module: str = "tensorrt") -> CapabilityReport:
    """Partition the model at ``model_path`` into TensorRT-supported and unsupported subgraphs.

    With ``out_dir``, every subgraph is saved there as ``supported_<i>.onnx`` / ``unsupported_<i>.onnx``
    together with ``capability.json``.  ``checker`` defaults to the ONNX parser of ``module`` (``tensorrt``,
    or ``tensorrt_rtx`` for TensorRT-RTX, which needs no GPU for this; ``verbose``: with its verbose log).
    """
    from trtdebug.model.graph import ModelGraph
    from trtdebug.model.loader import load_model
    from trtdebug.util.files import check_output_paths

    if out_dir is not None:
        check_output_paths({"--out": out_dir}, [model_path])
        check_out_dir(out_dir)
    model = load_model(model_path)
    checker = checker or tensorrt_checker(verbose=verbose, module=module)
    graph = ModelGraph(model)
    report = analyze_capability(model, checker, graph=graph, progress=progress)
    report.model_path = str(model_path)
    if out_dir is not None:
        save_capability(report, model, out_dir, graph=graph)
    return report


def render_capability(report: CapabilityReport, console=None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    console = console or Console()
    version = f"{report.product} {report.tensorrt_version}" if report.tensorrt_version else report.product
    console.print(f"[bold]{version} ONNX parser capability[/bold] for {escape(report.model_path or 'the model')} "
                  f"(via {report.api})")
    if report.fully_supported:
        console.print(f"  [green]fully supported[/green]: all {report.num_nodes} nodes parse")
    else:
        n_bad = len(report.unsupported_nodes)
        console.print(f"  [red]{n_bad} of {report.num_nodes} nodes unsupported[/red] in "
                      f"{len(report.unsupported)} subgraph(s); {len(report.supported)} supported subgraph(s)")
        table = Table(title="Summary", title_justify="left", show_edge=False, show_lines=True)
        for col in ("operator", "count", "reason", "nodes"):
            table.add_column(col, overflow="fold", justify="right" if col == "count" else "left")
        for row in report.rows:
            shown = row.nodes[:8]
            nodes = ", ".join(shown) + (f" (+{len(row.nodes) - len(shown)} more)" if len(row.nodes) > len(shown) else "")
            table.add_row(Text(row.operator), str(row.count), Text(row.reason), Text(nodes))
        console.print(table)
        subs = Table(title="Subgraphs", title_justify="left", show_edge=False)
        for col in ("subgraph", "nodes", "ops", "inputs", "outputs", "file"):
            subs.add_column(col, overflow="fold", no_wrap=col in ("subgraph", "nodes", "file"))
        for sg in sorted(report.supported + report.unsupported, key=lambda s: (s.position, not s.supported)):
            ops = ", ".join(f"{k}x{v}" if v > 1 else k for k, v in list(sg.ops.items())[:6])
            if len(sg.ops) > 6:
                ops += ", ..."
            label = f"{sg.kind}_{sg.index}" + ("" if sg.verified else " (unverified)")
            style = "green" if sg.supported else "red"
            subs.add_row(Text(label, style=style), str(len(sg.nodes)), Text(ops), Text(_short(sg.inputs)),
                         Text(_short(sg.outputs)), Text(sg.file or "-"))
        console.print(subs)
    if report.out_dir:
        console.print(f"  written to {report.out_dir} ({REPORT_NAME} and the subgraph models)", markup=False)
    for note in report.notes:
        console.print(f"  note: {note}", markup=False)


def _short(names, limit: int = 3) -> str:
    shown = list(names[:limit])
    return ", ".join(shown) + (f" (+{len(names) - limit})" if len(names) > limit else "")
