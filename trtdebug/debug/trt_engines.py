"""What the TensorRT bisectors (``tactics``, ``fusion``) ask of a built engine: is it right, how fast, which layers.

Both search by building many variants of one network in this process and judging each engine
against reference outputs computed once; these are the two questions they share.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from trtdebug.debug.search import Judgement, Verdict


def reference_run(model, out: Path, *, reference_backend: str, inputs, input_shapes, seed: Optional[int]):
    """Load MODEL and run the reference once, saving its outputs to ``OUT/reference`` and its inputs to
    ``OUT/inputs.npz``: every engine is judged against them and the repro replays them.

    Returns ``(onnx_model, graph, feed_shapes)``; the shapes fix the engines' dynamic inputs."""
    import trtdebug
    from trtdebug.model import ModelGraph, load_model

    onnx_model = load_model(model)
    graph = ModelGraph(onnx_model)
    with trtdebug.run(onnx_model, backends=(reference_backend,), inputs=inputs, input_shapes=input_shapes, seed=seed,
                      save_outputs=out / "reference", record_inputs=False, save_inputs=out / "inputs.npz") as ref:
        feed_shapes = {n: tuple(a.shape) for n, a in ref.feeds[0].items()}
    return onnx_model, graph, feed_shapes


def repro_flags(options: Mapping[str, Any]) -> str:
    """The ``trtdebug run`` flags of the build options that are switched on (``fp16=True`` -> `` --fp16``)."""
    return "".join(f" --{k.replace('_', '-')}" for k, v in options.items() if v is True)


def write_bundle(out: Path, data: Dict[str, Any], report: Optional[Path]) -> None:
    """Write ``repro.sh`` (runs ``data["repro"]`` in OUT) and ``report.json`` to OUT, and the report to REPORT if given."""
    from trtdebug.util.files import write_text_atomic

    write_text_atomic(out / "repro.sh", f'#!/bin/sh\ncd "$(dirname "$0")" && {data["repro"]}\n')
    os.chmod(out / "repro.sh", 0o755)
    text = json.dumps(data, indent=2) + "\n"
    write_text_atomic(out / "report.json", text)
    if report is not None:
        write_text_atomic(report, text)


def engine_layers(builder, graph, engine_bytes: bytes):
    """The engine's layers mapped to ONNX nodes (:class:`~trtdebug.runners.tensorrt.inspector.EngineInfo`),
    read with IEngineInspector; ``builder`` is the EngineBuilder that built it (its module and logger)."""
    from trtdebug.runners.tensorrt import engine as engine_mod
    from trtdebug.runners.tensorrt.inspector import parse_engine_info

    runtime, engine = engine_mod.deserialize(builder.trt, builder.logger, engine_bytes)
    try:
        layers = engine_mod.layer_information(builder.trt, engine, builder.features)
    finally:
        del engine, runtime
    return parse_engine_info({"Layers": layers}, graph)


class OutputJudge:
    """BAD when the engine's outputs on ``inputs`` differ from the saved ``reference`` beyond tolerance.

    Runs the engine in this process through :func:`trtdebug.run` (an engine file, no build).
    """

    def __init__(self, work: Path, inputs: Path, reference: Path, *, atol=None, rtol=None,
                 check_error_stat: str = "elemwise") -> None:
        self.work, self.inputs, self.reference = work, inputs, reference
        self.tol = {"atol": atol, "rtol": rtol, "check_error_stat": check_error_stat}
        self.last_latency_ms: Optional[float] = None  # mean inference time of the last engine judged

    def __call__(self, engine_bytes: bytes) -> Judgement:
        import trtdebug
        from trtdebug.errors import BackendError

        path = self.work / "candidate.engine"
        path.write_bytes(engine_bytes)
        try:
            outcome = trtdebug.run(path, backends=("trt",), inputs=self.inputs, load_outputs=[self.reference],
                                   **self.tol)
        except BackendError as exc:
            return Judgement(Verdict.SKIP, f"the engine could not run: {str(exc).splitlines()[0]}")
        with outcome:
            runtimes = outcome.results[-1].runtimes if outcome.results else []
            self.last_latency_ms = 1e3 * sum(runtimes) / len(runtimes) if runtimes else None
            if outcome.passed:
                return Judgement(Verdict.GOOD, "within tolerance")
            first = outcome.first_failing
            err = first.stats.max_abs if first is not None else None
            where = (first.name if first is not None else "an output") + (f" (max abs error {err:.3g})" if err is not None else "")
            return Judgement(Verdict.BAD, f"differs at {where}")


