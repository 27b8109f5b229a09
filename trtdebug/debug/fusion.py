"""``trtdebug debug fusion``: which fusion is miscompiled, when marking every tensor fixes the engine.

Marking a tensor as an output forces TensorRT to write it, which splits any fused layer it runs
through.  So when the unmodified engine fails and the every-tensor ("mark all") engine passes,
the smallest set of tensors whose marking makes the engine pass names the fusion to blame:

1. build the unmodified engine (must fail) and read its layers with IEngineInspector; build the
   mark-all engine (must pass);
2. candidates: the tensors *inside* fused layers (produced by an ONNX node that shares its engine
   layer with another node), in topological order - only those can split a fusion;
3. delta debugging (:func:`trtdebug.debug.search.find_minimal`) for a minimal set S such that the
   engine with S marked passes (the search's "BAD" is "marking S fixes it");
4. answer: the engine layer(s) that held S, the ONNX nodes fused into them, and the workaround:
   ``OUT/workaround.onnx``, the model with S as extra graph outputs after its own, rebuilt from
   that file (a new parse) and judged, with its latency next to the unmodified engine's.

**Why an extra output is the barrier.**  Every deployment flow (trtexec, ``trtdebug run``, a
TensorRT plan built by a serving stack) parses an ONNX graph output into a network output, and
TensorRT must write a network output to memory, so no release can fuse through it; the cost is
one more tensor written per inference, and consumers that take outputs by position see the
model's own outputs first, unchanged.  An ONNX-level barrier that leaves the outputs as they are
is not available reliably: the nodes that would carry one (Identity, a Cast to the same type,
``x * 1``, a Q/DQ pair) are either removed by TensorRT's graph optimizer before fusion or change
the numbers (Q/DQ), and which no-ops survive is not documented behaviour of any release.

Every candidate build, and the engine run judging it, happens in a persistent worker process
(:class:`FusionSession` in a :class:`~trtdebug.isolation.Worker`, one per ``devices`` entry): each
worker parses the network once (:class:`~trtdebug.runners.tensorrt.variants.NetworkVariants`)
and shares one timing cache file with the others, so a candidate costs its build and run, and
a segfault or hang in one candidate is that candidate's verdict (``on_crash``) before the
worker restarts.
"""
from __future__ import annotations

import math
import os
import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from trtdebug.debug.search import Judgement, LocalPool, NotFailing, Progress, Verdict, as_judgement, find_minimal
from trtdebug.debug.trt_engines import RemoteSession, check_on_crash, keep_engine, kept_engine, open_workers
from trtdebug.errors import BackendError, UsageError

PathLike = Union[str, "os.PathLike[str]"]
_OURS = ("report.json", "journal.jsonl")
WORKAROUND = "workaround.onnx"


@dataclass
class FusionResult:
    tensors: List[str]  # the minimal set whose marking makes the engine pass
    layers: List[str]  # engine layers of the unmodified engine that held them
    nodes: List[str]  # ONNX nodes fused into those layers
    report: Dict[str, Any]


def fused_candidates(info, graph, markable: Sequence[str]) -> List[str]:
    """Markable tensors produced inside a fused layer of ``info`` (EngineInfo), in topological order."""
    fused = {n for layer in info.compute_layers if len(layer.onnx_nodes) > 1 for n in layer.onnx_nodes}
    wanted = set(markable)
    return [t for t in graph.tensor_order if t in wanted and graph.tensor(t).producer in fused]


def save_barrier_model(model, tensors: Sequence[str], path: Path) -> Path:
    """Write ``model`` with ``tensors`` appended to its graph outputs (types from shape inference where
    known) to ``path``, atomically; ``model`` is left as it was."""
    import copy

    from onnx import ValueInfoProto

    from trtdebug.model.loader import infer_model_shapes, save_model

    known = {vi.name: vi for vi in model.graph.value_info}
    if any(name not in known for name in tensors):  # a model loaded without shape inference
        # where inference fails too the output stays untyped, which is valid ONNX (TensorRT infers the type)
        known.update({vi.name: vi for vi in infer_model_shapes(model).graph.value_info})
    outputs = model.graph.output
    before = len(outputs)
    present = {o.name for o in outputs}
    try:
        for name in tensors:
            if name not in present:
                outputs.append(copy.deepcopy(known[name]) if name in known else ValueInfoProto(name=name))
        return save_model(model, path)
    finally:
        del outputs[before:]


# -- where the builds happen -----------------------------------------------------------------------

class FusionSession:
    """What a build worker serves for ``debug fusion``: one parsed network (NetworkVariants), the
    engine judge and the layer reader beside it, so engines never cross the pipe.

    Judged calls return ``(Judgement, latency_ms)``: the latency is the judge's mean inference
    time when it measures one (the default OutputJudge does).  ``keep`` names an engine to keep (a
    file in ``keep_dir``) for :meth:`layers` / :meth:`rejudge` later.
    """

    def __init__(self, variants, judge: Callable[[bytes], Any], layers_of: Callable[[bytes], Any], keep_dir: Path) -> None:
        self.variants, self.judge, self.layers_of, self.keep_dir = variants, judge, layers_of, Path(keep_dir)

    def markable(self) -> List[str]:
        """Every tensor the mark-all engine marks."""
        from trtdebug.model.surgery import OutputSelection
        from trtdebug.runners.tensorrt import marking

        return list(marking.plan_marking(self.variants.parsed.network, self.variants.builder.graph,
                                         OutputSelection(mark_all=True)).mark)

    def build(self, tensors: Sequence[str], keep: Optional[str] = None) -> Tuple[Judgement, Optional[float]]:
        engine = self.variants.build(list(tensors)).engine_bytes
        keep_engine(self.keep_dir, keep, engine)
        return self._judged(engine)

    def rejudge(self, keep: str) -> Tuple[Judgement, Optional[float]]:
        return self._judged(kept_engine(self.keep_dir, keep))

    def layers(self, keep: str):
        return self.layers_of(kept_engine(self.keep_dir, keep))

    def build_model(self, path: str) -> Tuple[Judgement, Optional[float]]:
        """Parse and build another ONNX file (the workaround) with the same configuration, and judge it."""
        from trtdebug.model import ModelGraph, load_model
        from trtdebug.runners.tensorrt.builder import EngineBuilder

        b = self.variants.builder
        model = load_model(path)
        other = EngineBuilder(b.trt, model, ModelGraph(model), b.config, show_progress=False)
        return self._judged(other.build(feed_shapes=self.variants.feed_shapes).engine_bytes)

    def _judged(self, engine: bytes) -> Tuple[Judgement, Optional[float]]:
        judgement = as_judgement(self.judge(engine))
        return judgement, getattr(self.judge, "last_latency_ms", None)


class RemoteFusion(RemoteSession):
    """A :class:`FusionSession` in a worker, with the same methods; a crashed or hung candidate is a verdict."""

    def markable(self) -> List[str]:
        return self.value("markable")

    def build(self, tensors: Sequence[str], keep: Optional[str] = None):
        return self.judged("build", list(tensors), keep)

    def rejudge(self, keep: str):
        return self.judged("rejudge", keep)

    def layers(self, keep: str):
        return self.value("layers", keep)

    def build_model(self, path: str):
        return self.judged("build_model", path)


@dataclass(frozen=True)
class FusionSpec:
    """What a worker needs to set up its session (it crosses to the worker, so it is picklable)."""

    model: str  # the ONNX file
    config: Any  # TrtBuildConfig
    feed_shapes: Optional[Dict[str, Tuple[int, ...]]]
    judge: Any  # engine bytes -> Judgement/Verdict/bool; picklable (an OutputJudge by default)
    work: str  # this worker's private directory


def fusion_session(spec: FusionSpec) -> FusionSession:
    """The worker's factory: import TensorRT, load and parse the model once."""
    from trtdebug.debug.trt_engines import engine_layers, worker_inputs
    from trtdebug.runners.tensorrt.builder import EngineBuilder
    from trtdebug.runners.tensorrt.variants import NetworkVariants

    trt, model, graph, work = worker_inputs(spec)
    builder = EngineBuilder(trt, model, graph, spec.config, show_progress=False)
    variants = NetworkVariants(builder, feed_shapes=spec.feed_shapes)
    return FusionSession(variants, spec.judge, lambda engine: engine_layers(builder, graph, engine), work)


# -- the search ------------------------------------------------------------------------------------

Session = Union[FusionSession, RemoteFusion]


def search_fusion(sessions: Union[Session, Sequence[Session]], graph, out: Path, *, model=None,
                  context: Optional[Dict[str, Any]] = None, on_progress: Optional[Callable[[Progress], None]] = None,
                  on_status: Optional[Callable[[str], None]] = None) -> FusionResult:
    """Steps 1-4 on ``sessions`` (one per device: :class:`FusionSession` here, over a fake TensorRT in
    tests, or :class:`RemoteFusion` in workers); the first builds the reference engines, all judge
    candidates.  ``model`` (the loaded ONNX model): write ``OUT/workaround.onnx`` and judge its build;
    without it the workaround is judged as the network with the culprit tensors marked."""
    sessions = list(sessions) if isinstance(sessions, (list, tuple)) else [sessions]
    lead = sessions[0]
    status = on_status or (lambda msg: None)
    start = time.perf_counter()
    builds = 0
    notes: List[str] = []
    status("building the unmodified engine")
    verdict, plain_latency = lead.build([], "plain")
    builds += 1
    if verdict.verdict is not Verdict.BAD:
        raise NotFailing(f"the unmodified engine passes ({verdict.detail}): there is no fusion to blame")
    try:
        info = lead.layers("plain")
    except BackendError as exc:  # e.g. an engine this machine cannot deserialize: search every tensor
        info = None
        notes.append(f"the unmodified engine's layers could not be read ({str(exc).splitlines()[0]}): every "
                     "markable tensor is a candidate and the culprit layers are not named")
    markable = lead.markable()
    status(f"building with all {len(markable)} tensors marked")
    all_verdict, _ = lead.build(markable)
    builds += 1
    if all_verdict.verdict is not Verdict.GOOD:
        raise UsageError(f"marking every tensor does not fix the engine ({all_verdict.detail}): the failure is not a "
                         "fusion; try 'trtdebug debug tactics' or 'trtdebug debug reduce'")
    candidates = (fused_candidates(info, graph, markable) if info is not None else []) or list(markable)

    def oracle(subset: Sequence[str], device: Optional[int] = None) -> Judgement:
        nonlocal builds
        builds += 1
        j, _ = sessions[device or 0].build(list(subset))
        if j.verdict is Verdict.SKIP:
            return j
        # the search looks for a set with the property: here "marking it makes the engine pass"
        return Judgement(Verdict.BAD if j.verdict is Verdict.GOOD else Verdict.GOOD, f"marked engine: {j.detail}",
                         j.seconds)

    status(f"searching {len(candidates)} tensors inside fused layers"
           + (f" on {len(sessions)} workers" if len(sessions) > 1 else ""))
    search_builds_before = builds
    pool = LocalPool(oracle, devices=list(range(len(sessions))), on_error="skip") if len(sessions) > 1 else None
    try:
        result = find_minimal(candidates, pool or oracle, journal=out / "journal.jsonl", context=dict(context or {}),
                              on_progress=on_progress, on_error="skip")
    finally:
        if pool is not None:
            pool.close()
    search_builds = builds - search_builds_before
    tensors = list(result.culprits)

    layers: List[str] = []
    nodes: List[str] = []
    if info is not None:
        by_node = {n: layer for layer in info.compute_layers for n in layer.onnx_nodes}
        for t in tensors:
            layer = by_node.get(graph.tensor(t).producer)
            if layer is not None and layer.name not in layers:
                layers.append(layer.name)
        nodes = [n for name in layers for n in info.layer(name).onnx_nodes]
    workaround = out / WORKAROUND
    if model is not None:
        status(f"rebuilding from {WORKAROUND}")
        save_barrier_model(model, tensors, workaround)
        fixed_verdict, fixed_latency = lead.build_model(str(workaround))
    else:
        status("rebuilding with the workaround")
        fixed_verdict, fixed_latency = lead.build(tensors)
    builds += 1
    if plain_latency is not None:  # measured again now, under the same conditions as the workaround's
        _, plain_latency = lead.rejudge("plain")
    restarts = sum(getattr(s, "restarts", 0) for s in sessions)
    if restarts:
        notes.append(f"the build worker was restarted {restarts} time(s) after a candidate crashed or hung "
                     "(those candidates' verdicts say so)")
    flags = " ".join(f"--trt-outputs {shlex.quote(t)}" for t in tensors)
    report = {
        "command": "fusion", "culprit_tensors": tensors, "culprit_layers": layers, "culprit_nodes": nodes,
        "culprit_tactics": [], "fused_layers": [{"layer": name, "onnx_nodes": list(info.layer(name).onnx_nodes),
                                                 "type": info.layer(name).type, "tactic": info.layer(name).tactic}
                                                for name in layers],
        "workaround": {"trt_outputs": tensors, "flags": flags, "onnx": str(workaround) if model is not None else None,
                       "verdict": fixed_verdict.verdict.value, "detail": fixed_verdict.detail,
                       "latency_ms": fixed_latency, "unmodified_latency_ms": plain_latency,
                       "how": (f"deploy {WORKAROUND} instead of the model: its own outputs come first, unchanged; "
                               f"the extra output(s) {', '.join(tensors)} keep TensorRT from fusing across them "
                               "(ignore their values)")},
        "candidates": len(candidates), "oracle_calls": result.oracle_calls, "reused_verdicts": result.reused,
        "builds": builds, "search_builds": search_builds, "workers": len(sessions), "worker_restarts": restarts,
        "build_bound": 2 * math.ceil(math.log2(max(len(candidates), 1))) + 3, "minimal_model": None,
        "steps": [dict(s.__dict__) for s in result.steps], "seconds": round(time.perf_counter() - start, 3),
        "notes": notes,
    }
    return FusionResult(tensors, layers, nodes, report)


def debug_fusion(model: PathLike, out: PathLike, *, build_options: Optional[Mapping[str, Any]] = None,
                 inputs: Optional[PathLike] = None, input_shapes: Optional[Mapping[str, Sequence[int]]] = None,
                 seed: Optional[int] = None, reference_backend: str = "onnxrt", atol=None, rtol=None,
                 check_error_stat: str = "elemwise", report: Optional[PathLike] = None, on_progress=None,
                 on_status=None, judge: Optional[Callable[[bytes], Judgement]] = None,
                 timeout: Optional[float] = 600.0, on_crash: str = "skip",
                 devices: Optional[Sequence[int]] = None) -> FusionResult:
    """``trtdebug debug fusion``.  ``judge`` replaces the output comparison (engine bytes -> Judgement);
    it runs in the build workers, so it must be picklable.  ``timeout``, ``on_crash`` and ``devices``
    as in :func:`trtdebug.debug.tactics.debug_tactics`."""
    import hashlib

    from trtdebug.debug.trt_engines import OutputJudge, reference_run, repro_flags, write_bundle
    from trtdebug.runners.tensorrt.config import TrtBuildConfig
    from trtdebug.util.files import check_output_paths

    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not any((out / m).exists() for m in _OURS))):
        raise UsageError(f"--out {out} is not an empty or earlier 'trtdebug debug fusion' directory; refusing to write into it")
    check_output_paths({"--out": out, "--report": report}, [model, inputs])
    check_on_crash(on_crash)
    options = dict(build_options or {})
    options.setdefault("persistent_cache", False)
    try:
        config = TrtBuildConfig(**options)
    except TypeError as exc:
        raise UsageError(f"unknown TensorRT build option: {exc}") from exc
    out.mkdir(parents=True, exist_ok=True)
    onnx_model, graph, feed_shapes = reference_run(model, out, reference_backend=reference_backend, inputs=inputs,
                                                   input_shapes=input_shapes, seed=seed)
    work = Path(tempfile.mkdtemp(prefix=".trtdebug-fusion-", dir=out))
    if config.timing_cache is None and not config.persistent_cache:
        # the search's own cache, one file for every worker and restart (saves merge under a lock)
        config = replace(config, timing_cache=work / "timing.cache")
    device_ids = list(devices) if devices else [None]
    specs = []
    for i, _ in enumerate(device_ids):
        mine = work / f"worker-{i}"
        specs.append(FusionSpec(str(Path(model).resolve()), config, feed_shapes,
                                judge or OutputJudge(mine, out / "inputs.npz", out / "reference", atol=atol, rtol=rtol,
                                                     check_error_stat=check_error_stat), str(mine)))
    try:
        with open_workers(fusion_session, specs, device_ids, timeout=timeout, name="fusion") as workers:
            context = {"model_sha256": hashlib.sha256(onnx_model.SerializeToString()).hexdigest(),
                       "options": {k: str(v) for k, v in sorted(options.items())}, "atol": str(atol), "rtol": str(rtol)}
            result = search_fusion([RemoteFusion(w, on_crash=on_crash) for w in workers], graph, out,
                                   model=onnx_model, context=context, on_progress=on_progress, on_status=on_status)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    flags = repro_flags(options)
    model_arg = shlex.quote(str(Path(model).resolve()))
    result.report["repro"] = f"trtdebug run {model_arg} --trt{flags} --load-inputs inputs.npz --load-outputs reference"
    w = result.report["workaround"]
    w["command"] = result.report["repro"] + " " + w["flags"]
    w["onnx_command"] = (f"trtdebug run {WORKAROUND} --trt{flags} --load-inputs inputs.npz --load-outputs reference")
    write_bundle(out, result.report, report, extra=[f"# the workaround: the model with a fusion barrier, {w['how']}",
                                                     f"# {w['onnx_command']}"])
    return result
