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
4. answer: the engine layer(s) that held S, the ONNX nodes fused into them, and the workaround
   (``--trt-outputs`` S) with the rebuilt engine's verdict and latency.

All candidate builds come from one parsed network (:class:`NetworkVariants`) in this process.
"""
from __future__ import annotations

import math
import os
import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

from trtdebug.debug.search import Judgement, NotFailing, Progress, Verdict, find_minimal
from trtdebug.errors import UsageError

PathLike = Union[str, "os.PathLike[str]"]
_OURS = ("report.json", "journal.jsonl")


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


def search_fusion(variants, judge: Callable[[bytes], Judgement], layers_of: Callable[[bytes], Any], graph, out: Path, *,
                  context: Optional[Dict[str, Any]] = None, on_progress: Optional[Callable[[Progress], None]] = None,
                  on_status: Optional[Callable[[str], None]] = None,
                  latency: Optional[Callable[[], Optional[float]]] = None) -> FusionResult:
    """Steps 1-4 on ``variants`` (a NetworkVariants); ``judge`` says whether an engine's outputs are right,
    ``layers_of`` reads an engine's layers (EngineInfo).  Pure enough to run on a fake TensorRT."""
    from trtdebug.model.surgery import OutputSelection
    from trtdebug.runners.tensorrt import marking

    status = on_status or (lambda msg: None)
    start = time.perf_counter()
    builds = 0
    status("building the unmodified engine")
    plain = variants.build()
    builds += 1
    verdict = judge(plain.engine_bytes)
    if verdict.verdict is not Verdict.BAD:
        raise NotFailing(f"the unmodified engine passes ({verdict.detail}): there is no fusion to blame")
    info = layers_of(plain.engine_bytes)
    plan = marking.plan_marking(variants.parsed.network, graph, OutputSelection(mark_all=True))
    status(f"building with all {len(plan.mark)} tensors marked")
    marked = variants.build(plan.mark)
    builds += 1
    all_verdict = judge(marked.engine_bytes)
    if all_verdict.verdict is not Verdict.GOOD:
        raise UsageError(f"marking every tensor does not fix the engine ({all_verdict.detail}): the failure is not a "
                         "fusion; try 'trtdebug debug tactics' or 'trtdebug debug reduce'")
    candidates = fused_candidates(info, graph, plan.mark) or list(plan.mark)

    def oracle(subset: Sequence[str]) -> Judgement:
        nonlocal builds
        builds += 1
        j = judge(variants.build(list(subset)).engine_bytes)
        if j.verdict is Verdict.SKIP:
            return j
        # the search looks for a set with the property: here "marking it makes the engine pass"
        return Judgement(Verdict.BAD if j.verdict is Verdict.GOOD else Verdict.GOOD, f"marked engine: {j.detail}")

    status(f"searching {len(candidates)} tensors inside fused layers")
    search_builds_before = builds
    result = find_minimal(candidates, oracle, journal=out / "journal.jsonl", context=dict(context or {}),
                          on_progress=on_progress, on_error="skip")
    search_builds = builds - search_builds_before
    tensors = list(result.culprits)

    by_node = {n: layer for layer in info.compute_layers for n in layer.onnx_nodes}
    layers: List[str] = []
    for t in tensors:
        layer = by_node.get(graph.tensor(t).producer)
        if layer is not None and layer.name not in layers:
            layers.append(layer.name)
    nodes = [n for name in layers for n in info.layer(name).onnx_nodes]
    status("rebuilding with the workaround")
    fixed = variants.build(tensors)
    builds += 1
    fixed_verdict = judge(fixed.engine_bytes)
    fixed_latency = latency() if latency else None
    judge(plain.engine_bytes)
    plain_latency = latency() if latency else None
    flags = " ".join(f"--trt-outputs {shlex.quote(t)}" for t in tensors)
    report = {
        "command": "fusion", "culprit_tensors": tensors, "culprit_layers": layers, "culprit_nodes": nodes,
        "culprit_tactics": [], "fused_layers": [{"layer": name, "onnx_nodes": list(info.layer(name).onnx_nodes),
                                                 "type": info.layer(name).type, "tactic": info.layer(name).tactic}
                                                for name in layers],
        "workaround": {"trt_outputs": tensors, "flags": flags, "verdict": fixed_verdict.verdict.value,
                       "detail": fixed_verdict.detail, "latency_ms": fixed_latency,
                       "unmodified_latency_ms": plain_latency},
        "candidates": len(candidates), "oracle_calls": result.oracle_calls, "reused_verdicts": result.reused,
        "builds": builds, "search_builds": search_builds,
        "build_bound": 2 * math.ceil(math.log2(max(len(candidates), 1))) + 3, "minimal_model": None,
        "steps": [dict(s.__dict__) for s in result.steps], "seconds": round(time.perf_counter() - start, 3),
    }
    return FusionResult(tensors, layers, nodes, report)


def debug_fusion(model: PathLike, out: PathLike, *, build_options: Optional[Mapping[str, Any]] = None,
                 inputs: Optional[PathLike] = None, input_shapes: Optional[Mapping[str, Sequence[int]]] = None,
                 seed: Optional[int] = None, reference_backend: str = "onnxrt", atol=None, rtol=None,
                 check_error_stat: str = "elemwise", report: Optional[PathLike] = None, on_progress=None,
                 on_status=None, judge: Optional[Callable[[bytes], Judgement]] = None) -> FusionResult:
    """``trtdebug debug fusion``; ``judge`` replaces the output comparison (engine bytes -> Judgement)."""
    import hashlib

    from trtdebug.debug.trt_engines import OutputJudge, engine_layers, reference_run, repro_flags, write_bundle
    from trtdebug.runners.tensorrt import compat
    from trtdebug.runners.tensorrt.builder import EngineBuilder
    from trtdebug.runners.tensorrt.config import TrtBuildConfig
    from trtdebug.runners.tensorrt.variants import NetworkVariants
    from trtdebug.util.files import check_output_paths

    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not any((out / m).exists() for m in _OURS))):
        raise UsageError(f"--out {out} is not an empty or earlier 'trtdebug debug fusion' directory; refusing to write into it")
    check_output_paths({"--out": out, "--report": report}, [model, inputs])
    options = dict(build_options or {})
    options.setdefault("persistent_cache", False)
    config = TrtBuildConfig(**options)
    out.mkdir(parents=True, exist_ok=True)
    onnx_model, graph, feed_shapes = reference_run(model, out, reference_backend=reference_backend, inputs=inputs,
                                                   input_shapes=input_shapes, seed=seed)
    work = Path(tempfile.mkdtemp(prefix=".trtdebug-fusion-", dir=out))
    trt = compat.import_tensorrt(config.module)
    builder = EngineBuilder(trt, onnx_model, graph, config, show_progress=False)
    output_judge = OutputJudge(work, out / "inputs.npz", out / "reference", atol=atol, rtol=rtol,
                               check_error_stat=check_error_stat)
    try:
        with NetworkVariants(builder, feed_shapes=feed_shapes) as variants:
            context = {"model_sha256": hashlib.sha256(onnx_model.SerializeToString()).hexdigest(),
                       "options": {k: str(v) for k, v in sorted(options.items())}, "atol": str(atol), "rtol": str(rtol)}
            result = search_fusion(variants, judge or output_judge, lambda b: engine_layers(builder, graph, b), graph,
                                   out, context=context, on_progress=on_progress, on_status=on_status,
                                   latency=(lambda: output_judge.last_latency_ms) if judge is None else None)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    flags = repro_flags(options)
    model_arg = shlex.quote(str(Path(model).resolve()))
    result.report["repro"] = f"trtdebug run {model_arg} --trt{flags} --load-inputs inputs.npz --load-outputs reference"
    result.report["workaround"]["command"] = result.report["repro"] + " " + result.report["workaround"]["flags"]
    write_bundle(out, result.report, report)
    return result
