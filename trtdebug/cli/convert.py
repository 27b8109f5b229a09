"""``trtdebug convert``: thin command over :func:`trtdebug.precision.convert.convert_file`."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from trtdebug.cli import common
from trtdebug.cli.typer_app import app
from trtdebug.errors import UsageError


@app.command(help="Convert an FP32 ONNX model to FP16 or BF16, keeping chosen nodes in FP32, with Casts only "
                  "where the two sets meet. The result runs on every backend, and is how TensorRT 11 "
                  "(strongly typed) gets reduced precision.")
def convert(
    model: Path = typer.Argument(..., metavar="MODEL.onnx", help="The FP32 ONNX model.", show_default=False),
    to: str = typer.Option(..., "--to", help="Target precision: fp16 or bf16."),
    out: Path = typer.Option(..., "-o", "--output", metavar="OUT.onnx", show_default=False,
                             help="Where to write the converted model (must not exist, unless --overwrite)."),
    keep_fp32: Optional[List[str]] = typer.Option(None, "--keep-fp32", metavar="NODE|OPTYPE|A..B",
                                                  help="Keep in FP32: a node name, an op type, or every node between "
                                                       "tensors/nodes A and B (repeatable)."),
    io_types: str = typer.Option("keep", "--io-types", help="Graph inputs/outputs: keep (float32) or convert."),
    on_overflow: str = typer.Option("keep", "--on-overflow",
                                    help="A node whose weights exceed FP16's range: keep (in FP32, reported) or refuse."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT.onnx if it exists."),
    verbose: bool = common.VERBOSE,
) -> None:
    from trtdebug.precision.convert import convert_file
    from trtdebug.util.files import check_output_paths

    common.check_choice(io_types, ("keep", "convert"), "--io-types")
    common.check_choice(on_overflow, ("keep", "refuse"), "--on-overflow")
    check_output_paths({"--output": out}, [model])
    if out.exists() and not overwrite:
        raise UsageError(f"{out} exists; give another -o path or --overwrite")
    result = convert_file(model, out, to, keep_fp32 or (), keep_io_types=io_types == "keep", on_overflow=on_overflow)
    console = common.stdout_console()
    console.print(f"wrote {out}: {result.summary()}", highlight=False, markup=False)
    for node, why in result.kept.items():
        console.print(f"  FP32 {node}: {why}", highlight=False, markup=False)
