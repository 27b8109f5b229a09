"""What the TensorRT bisectors (``tactics``, ``fusion``) share: judging an engine, naming its layers,
and the build workers their candidates run in.

Both search by building many variants of one parsed network and judging each engine against
reference outputs computed once.  The builds and the judging happen in persistent worker
processes (:class:`~trtdebug.isolation.Worker`, one per device), each holding a *session* - the
parsed network, its builder and the judge - so a TensorRT segfault or hang in one candidate is
that candidate's verdict (``on_crash``), the worker is restarted, and the search goes on, while
the builder is created and the network parsed once per worker, not once per candidate.
:class:`RemoteSession` is the parent's side of a session; :func:`open_workers` starts them.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from trtdebug.debug.search import Judgement, Verdict
from trtdebug.errors import BackendError, UsageError


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


def write_bundle(out: Path, data: Dict[str, Any], report: Optional[Path], *, extra: Sequence[str] = ()) -> None:
    """Write ``repro.sh`` (runs ``data["repro"]`` in OUT; ``extra`` lines follow it) and ``report.json`` to OUT,
    and the report to REPORT if given."""
    from trtdebug.util.files import write_text_atomic

    tail = "".join(line + "\n" for line in extra)
    write_text_atomic(out / "repro.sh", f'#!/bin/sh\ncd "$(dirname "$0")" && {data["repro"]}\n{tail}')
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




# -- the build workers ------------------------------------------------------------------------------

def check_on_crash(on_crash: str) -> str:
    if on_crash not in ("bad", "skip"):
        raise UsageError(f"on_crash must be 'bad' or 'skip', not {on_crash!r}")
    return on_crash


class RemoteSession:
    """The parent's handle on a session living in ``worker``.

    :meth:`judged` is for candidates: a crash or hang becomes that candidate's verdict
    (``on_crash``: "bad" or "skip"), an exception raised there a SKIP (no evidence either way).
    :meth:`value` is for the steps of the search itself (recording, naming layers): their failure
    raises :class:`~trtdebug.errors.BackendError`.
    """

    def __init__(self, worker, *, on_crash: str = "skip") -> None:
        self.worker, self.on_crash = worker, check_on_crash(on_crash)

    def value(self, method: str, *args: Any) -> Any:
        outcome = self.worker.call(method, *args)
        if not outcome.ok:
            raise BackendError(f"the build worker's {method!r} {outcome.describe()}")
        return outcome.value

    def judged(self, method: str, *args: Any, fallback: Any = None) -> Tuple[Judgement, Any]:
        """``(judgement, extra)`` from a session method returning them; ``fallback`` is the extra of a failure."""
        from trtdebug.isolation import RAISED

        outcome = self.worker.call(method, *args)
        if outcome.ok:
            judgement, extra = outcome.value
            return Judgement(judgement.verdict, judgement.detail, outcome.seconds), extra
        verdict = Verdict.SKIP if outcome.kind == RAISED else Verdict(self.on_crash)
        return Judgement(verdict, f"candidate build {outcome.describe()}", outcome.seconds), fallback

    @property
    def restarts(self) -> int:
        return self.worker.restarts


@contextmanager
def open_workers(factory: Callable[..., Any], specs: Sequence[Any], devices: Sequence[Optional[int]], *,
                 timeout: Optional[float], name: str) -> Iterator[List[Any]]:
    """One started :class:`~trtdebug.isolation.Worker` per device, ``factory(spec)`` in each (started in
    parallel: each creates a builder and parses the network); closed on exit.  A worker that cannot
    start (the model does not parse, TensorRT is missing) raises BackendError."""
    from concurrent.futures import ThreadPoolExecutor

    from trtdebug.isolation import Worker

    workers = [Worker(factory, spec, device=device, timeout=timeout, name=f"{name}-{i}")
               for i, (spec, device) in enumerate(zip(specs, devices))]
    try:
        with ThreadPoolExecutor(max_workers=len(workers)) as pool:
            started = list(pool.map(lambda w: w.start(), workers))
        for outcome in started:
            if not outcome.ok:
                raise BackendError(f"the build worker could not start: it {outcome.describe()}")
        yield workers
    finally:
        for w in workers:
            w.close()


def worker_inputs(spec) -> Tuple[Any, Any, Any, Path]:
    """In a worker's factory: ``(trt module, model, ModelGraph, work dir)`` for a spec with ``model``
    (an ONNX file), ``config`` (TrtBuildConfig) and ``work`` (the worker's directory, created)."""
    from trtdebug.model import ModelGraph, load_model
    from trtdebug.runners.tensorrt import compat

    trt = compat.import_tensorrt(spec.config.module)
    model = load_model(spec.model)
    work = Path(spec.work)
    work.mkdir(parents=True, exist_ok=True)
    return trt, model, ModelGraph(model), work


def keep_engine(keep_dir: Path, name: Optional[str], engine_bytes: bytes) -> None:
    """Save an engine a later call names (``layers(name)``): in the worker's directory, so a restart keeps it."""
    if name is not None:
        from trtdebug.util.files import write_bytes_atomic

        write_bytes_atomic(keep_dir / f"{name}.engine", engine_bytes)


def kept_engine(keep_dir: Path, name: str) -> bytes:
    return (keep_dir / f"{name}.engine").read_bytes()
