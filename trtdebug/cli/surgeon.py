"""``trtdebug surgeon sanitize|extract``: thin commands over :mod:`trtdebug.debug.surgeon`.

Registers itself on the main app when imported (one line in ``trtdebug.cli._register``).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from trtdebug.cli import common
from trtdebug.cli.typer_app import app, sub_app

surgeon_app = sub_app("surgeon",
                "Cut and clean ONNX models: fold constants and freeze shapes, or extract a subgraph.")

_MODEL = typer.Argument(..., metavar="MODEL.onnx", help="The ONNX model (never modified).", show_default=False)
_OUT = typer.Option(..., "-o", "--output", metavar="OUT.onnx", show_default=False,
                    help="Where to write the new model (atomically; never over MODEL).")


@surgeon_app.command("sanitize")
def sanitize_command(
    model: Path = _MODEL,
    out: Path = _OUT,
    input_shapes: Optional[List[str]] = typer.Option(None, "--input-shapes", help="Freeze dynamic inputs: NAME:[dims] (repeatable)."),
    no_fold: bool = typer.Option(False, "--no-fold", help="Do not fold constants (only freeze shapes and clean up)."),
    verbose: bool = common.VERBOSE,
) -> None:
    """Fold constants (onnx-graphsurgeon with ONNX Runtime), drop dead nodes, freeze input shapes."""
    from trtdebug.debug.surgeon import sanitize_model
    from trtdebug.inputs.spec import parse_input_shapes

    result = sanitize_model(model, out, input_shapes=parse_input_shapes(input_shapes or []) or None, fold=not no_fold)
    _show(result)


@surgeon_app.command("extract")
def extract_command(
    model: Path = _MODEL,
    out: Path = _OUT,
    inputs: str = typer.Option(..., "--inputs", metavar="A,B", show_default=False, help="Tensors the subgraph reads, comma-separated."),
    outputs: str = typer.Option(..., "--outputs", metavar="C,D", show_default=False, help="Tensors it computes, comma-separated."),
    input_shapes: Optional[List[str]] = typer.Option(None, "--input-shapes",
                                                     help="Shapes for graph inputs or --inputs tensors shape inference cannot give: NAME:[dims] (repeatable)."),
    verbose: bool = common.VERBOSE,
) -> None:
    """Extract the subgraph computing --outputs from --inputs as a model of its own (runs in ONNX Runtime)."""
    from trtdebug.debug.surgeon import extract_model
    from trtdebug.inputs.spec import parse_input_shapes

    result = extract_model(model, out, inputs=_names(inputs), outputs=_names(outputs),
                           input_shapes=parse_input_shapes(input_shapes or []) or None)
    _show(result)


def _names(text: str) -> List[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def _show(result) -> None:
    console = common.stdout_console()
    console.print(f"wrote {result.path}: {result.nodes} node(s); inputs {', '.join(result.inputs) or '-'}; "
                  f"outputs {', '.join(result.outputs)}", markup=False)
    err = common.stderr_console()
    for note in result.notes:
        err.print(f"note: {note}", markup=False)


app.add_typer(surgeon_app, name="surgeon")
