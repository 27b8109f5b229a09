"""``trtdebug inspect model|engine|capability``: thin commands over :mod:`trtdebug.inspect`.

Errors are raised as :class:`trtdebug.errors.TrtDebugError`; the main CLI turns them into one line
and an exit code.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional

import typer

from trtdebug.cli import common
from trtdebug.cli.typer_app import sub_app
from trtdebug.util.files import check_output_paths

inspect_app = sub_app("inspect",
                "Look inside an ONNX model or a TensorRT engine, and see which nodes TensorRT supports.")

_JSON_HELP = "Also write the result as JSON to FILE (written atomically)."
_RTX = typer.Option(False, "--trt-rtx", help="Use TensorRT-RTX (the 'rtx' extra) instead of TensorRT.")
# ``--verbose`` is read by trtdebug.cli.main (tracebacks); capability also passes it to TensorRT's logger.


def _console(stderr: bool = False):
    return common.stderr_console() if stderr else common.stdout_console()


def _write_json(path: Optional[Path], data: Dict[str, Any]) -> None:
    from trtdebug.util.files import write_text_atomic

    if path is not None:
        write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


@inspect_app.command("model")
def model_command(
    model: Path = typer.Argument(..., metavar="MODEL.onnx", help="The ONNX model.", show_default=False),
    json_path: Optional[Path] = typer.Option(None, "--json", metavar="FILE", help=_JSON_HELP, show_default=False),
    verbose: bool = common.VERBOSE,
) -> None:
    """Inputs, outputs (dtype, shape, dynamic dims), opset, operator histogram, node and parameter counts."""
    from trtdebug.inspect.model import inspect_model, render_model_summary

    check_output_paths({"--json": json_path}, [model])  # before any work
    summary = inspect_model(model)
    render_model_summary(summary, _console())
    _write_json(json_path, summary.to_dict())


@inspect_app.command("engine")
def engine_command(
    engine: Path = typer.Argument(..., metavar="FILE.engine", help="A serialized TensorRT engine.", show_default=False),
    model: Optional[Path] = typer.Option(None, "--model", metavar="MODEL.onnx", show_default=False,
                                         help="The ONNX model the engine was built from: checks and completes "
                                              "the layer -> ONNX node map."),
    profile: int = typer.Option(0, "--profile", min=0, help="Optimization profile whose layers to list."),
    json_path: Optional[Path] = typer.Option(None, "--json", metavar="FILE", help=_JSON_HELP, show_default=False),
    trt_rtx: bool = _RTX,
    verbose: bool = common.VERBOSE,
) -> None:
    """I/O tensors with per-profile shapes, layers with type, precision, tactic and ONNX nodes, device memory.

    Needs TensorRT.  Per-layer details need an engine built with detailed profiling verbosity.
    """
    from trtdebug.inspect.engine import inspect_engine, render_engine_summary

    check_output_paths({"--json": json_path}, [engine, model])  # before any work
    summary = inspect_engine(engine, model=model, profile=profile, module="tensorrt_rtx" if trt_rtx else "tensorrt")
    render_engine_summary(summary, _console())
    _write_json(json_path, summary.to_dict())


@inspect_app.command("capability")
def capability_command(
    model: Path = typer.Argument(..., metavar="MODEL.onnx", help="The ONNX model.", show_default=False),
    out: Optional[Path] = typer.Option(None, "--out", metavar="DIR", show_default=False,
                                       help="Save every supported and unsupported subgraph as its own ONNX model, "
                                            "and capability.json, in DIR (a new, empty, or earlier capability directory)."),
    json_path: Optional[Path] = typer.Option(None, "--json", metavar="FILE", help=_JSON_HELP, show_default=False),
    trt_rtx: bool = _RTX,
    verbose: bool = common.VERBOSE,
) -> None:
    """Which nodes TensorRT's ONNX parser supports: subgraphs and a summary (operator, count, reason, nodes).

    Needs TensorRT, or TensorRT-RTX with --trt-rtx (no GPU needed).
    """
    from trtdebug.inspect.capability import inspect_capability, render_capability

    check_output_paths({"--json": json_path, "--out": out}, [model])  # before any work
    status = _console(stderr=True)
    report = inspect_capability(model, out, verbose=verbose, module="tensorrt_rtx" if trt_rtx else "tensorrt",
                                progress=lambda msg: status.print(msg, style="dim", markup=False))
    render_capability(report, _console())
    _write_json(json_path, report.to_dict())
