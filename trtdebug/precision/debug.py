"""``trtdebug.debug_precision``: the whole ``debug precision`` run, for the CLI and for Python callers.

Load the model and one input set, pick the judge (ONNX Runtime with emulated storage, or TensorRT
engines by either route: :mod:`~trtdebug.precision.engines`), search the keep-FP32 set
(:func:`~trtdebug.precision.search.find_keep_set`) and write the result directory - the report,
the converted model that passes - and, if asked, the JSON report elsewhere and the HTML page.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from trtdebug.errors import UsageError

PathLike = Union[str, "os.PathLike[str]"]
BACKENDS = ("onnxrt", "trt")


def debug_precision(model: Union[PathLike, object], out: PathLike, *, precision: str = "fp16", backend: str = "onnxrt",
                    route: str = "auto", metric=None, atol: float = 1e-2, rtol: float = 1e-2,
                    inputs: Optional[PathLike] = None, input_shapes: Optional[Mapping[str, Sequence[int]]] = None,
                    seed: int = 1, max_builds: int = 48, build_options: Optional[Mapping[str, Any]] = None,
                    timeout: float = 600.0, report: Optional[PathLike] = None, html: Optional[PathLike] = None,
                    on_status: Optional[Callable[[str], None]] = None):
    """Find the nodes to keep in FP32 so that ``model`` passes in ``precision``; returns the PrecisionSearch.

    ``metric``: ``(reference, test) -> bool | (score, passed)`` or a ``module:function`` /
    ``file.py:function`` spec, replacing atol/rtol (see :mod:`trtdebug.precision.metric`).
    ``backend="trt"`` judges candidates by TensorRT engines built in child processes (``timeout``
    seconds each); ``route`` is auto, onnx or builder; ``build_options`` are TrtBuildConfig fields
    (``module="tensorrt_rtx"``, ``tf32=False``, ``builder_optimization_level=0``...).
    """
    from trtdebug.inputs.io import load_inputs as read_inputs
    from trtdebug.inputs.synthetic import generate_feeds
    from trtdebug.model.graph import ModelGraph
    from trtdebug.model.loader import load_model
    from trtdebug.precision.metric import as_metric
    from trtdebug.precision.search import check_out_dir, find_keep_set, write_results
    from trtdebug.runners.onnx_common import graph_input_metadata
    from trtdebug.util.files import check_output_paths

    if precision not in ("fp16", "bf16"):
        raise UsageError(f"--precision must be fp16 or bf16 here, got {precision!r}")
    if backend not in BACKENDS:
        raise UsageError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    options = dict(build_options or {})
    if backend != "trt" and (options or route != "auto"):
        raise UsageError("TensorRT options (--route, --trt-rtx, --tf32, --builder-optimization-level) apply to "
                         "--backend trt")
    judge_metric = as_metric(metric)  # a bad spec is exit 2 before anything runs
    paths = [model] if not hasattr(model, "graph") else []
    check_output_paths({"--out": out, "--report": report, "--html": html}, paths + [inputs])
    check_out_dir(out)
    onnx_model = load_model(model) if paths else model
    if inputs is not None:
        feeds = read_inputs(inputs, model=onnx_model)[0]
    else:
        meta = graph_input_metadata(ModelGraph(onnx_model))
        feeds = generate_feeds(meta, seed=seed, shapes=dict(input_shapes or {}))[0]
    evaluators = []

    def make_evaluator(named_model):
        from trtdebug.precision.engines import TrtEvaluator

        evaluators.append(TrtEvaluator(named_model, feeds, precision, route=route, build_options=options,
                                       timeout=timeout))
        return evaluators[-1]

    try:
        result = find_keep_set(onnx_model, feeds, precision=precision, atol=atol, rtol=rtol, max_builds=max_builds,
                               metric=judge_metric, on_status=on_status,
                               evaluator=make_evaluator if backend == "trt" else None)
    finally:
        for e in evaluators:
            e.close()
    result.extra["model"] = str(model) if paths else "(in memory)"
    write_results(result, out, report=report)
    if html is not None:
        from trtdebug.render.precision_html import write_precision_html

        write_precision_html(result.as_dict(), html)
    return result
