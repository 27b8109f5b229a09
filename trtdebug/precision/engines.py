"""Judge keep-FP32 sets with TensorRT engines (``debug precision --backend trt``), by one of two routes.

* **onnx** - the ONNX-level route: the model is converted with the keep set
  (:func:`~trtdebug.precision.convert.convert`: FP16/BF16 everywhere but the kept nodes, Casts at
  the borders) and that model is built.  Where TensorRT has strongly typed networks (10.x, 11.x,
  TensorRT-RTX) it is built strongly typed, so every layer runs in the type the graph gives it; on
  11.x and RTX that is the only way to get reduced precision at all.  TensorRT 8.6 has no strong
  typing: the converted model is built with the FP16/BF16 flag and the kept nodes' layers are also
  pinned to FP32 (precision constraints), since under weak typing the graph's types are only hints.
  The deliverable is the converted model itself: it runs the same on every backend.
* **builder** - the builder-flag route (TensorRT <= 10.x only): the original FP32 model, the
  FP16/BF16 builder flag, the kept nodes' layers set to FP32 (``ILayer.precision`` and output
  types) and ``OBEY_PRECISION_CONSTRAINTS``.  TensorRT 11 removed all of it, so there it is refused.

``--route auto`` takes the ONNX-level route wherever strongly typed networks exist, and the builder
route on releases without them (8.6), where the builder flags are what makes FP32 binding.  Both are
chosen by feature detection (:func:`trtdebug.runners.tensorrt.compat.detect`), never by version.

Each candidate is built and run in a child process (:func:`trtdebug.isolation.run_isolated`) with a
timeout: a build that crashes, hangs or fails is that candidate's verdict (it fails), not the end of
the search.  All children share one timing-cache file, so later builds skip the tactic timing the
earlier ones did.  What cannot be a verdict - no TensorRT, no usable GPU, an option this TensorRT
refuses - ends the search with the error (exit 3 or 2), since every other candidate would fail alike.
"""
from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from trtdebug.errors import UsageError
from trtdebug.precision.search import Trial

ROUTE_ONNX, ROUTE_BUILDER, ROUTE_AUTO = "onnx", "builder", "auto"
ROUTES = (ROUTE_AUTO, ROUTE_ONNX, ROUTE_BUILDER)
# errors raised in a child that would be raised by every candidate alike: the search stops with them
_FATAL = ("UsageError", "InputError", "FeedError", "BackendUnavailableError")


@dataclass(frozen=True)
class RoutePlan:
    """The route a search takes on this TensorRT, and how its candidates are built."""

    route: str  # "onnx" or "builder"
    why: str  # one sentence for the report
    strongly_typed: bool  # the ONNX route builds strongly typed networks
    label: str  # "TensorRT 10.8.0.43"


def builder_route_missing(features, precision: str) -> Optional[str]:
    """Why the builder-flag route is not available on ``features`` (None: it is)."""
    flag = {"fp16": features.fp16_flag, "bf16": features.bf16_flag}[precision]
    if features.strong_typing_required or not features.layer_precision:
        return (f"{features.label} has no per-layer precision and no {precision.upper()} builder flag (strongly "
                "typed networks only, as in TensorRT 11)")
    if not flag:
        return f"{features.label} has no BuilderFlag.{precision.upper()}"
    if not (features.obey_precision_flag or features.prefer_precision_flag or features.strict_types_flag):
        return f"{features.label} has no precision-constraint builder flag"
    return None


def plan_route(features, precision: str, requested: str = ROUTE_AUTO) -> RoutePlan:
    """The route for ``requested`` (auto/onnx/builder) on ``features``; UsageError where it cannot be taken."""
    if requested not in ROUTES:
        raise UsageError(f"--route must be one of {', '.join(ROUTES)}, got {requested!r}")
    if precision not in ("fp16", "bf16"):
        raise UsageError(f"--backend trt searches fp16 or bf16, got {precision!r}")
    missing = builder_route_missing(features, precision)
    label = features.label
    if requested == ROUTE_BUILDER:
        if missing:
            raise UsageError(f"--route builder is not available: {missing}; use --route onnx (the model converted "
                             "with Casts around the kept nodes, built strongly typed)")
        return RoutePlan(ROUTE_BUILDER, f"requested; {label} has per-layer precision and precision constraints",
                         features.strongly_typed, label)
    if not features.strongly_typed and not {"fp16": features.fp16_flag, "bf16": features.bf16_flag}[precision]:
        raise UsageError(f"{label} can build {precision.upper()} neither from a strongly typed model nor with a "
                         "builder flag")
    if requested == ROUTE_AUTO and not features.strongly_typed and not missing:
        return RoutePlan(ROUTE_BUILDER, f"auto: {label} has no strongly typed networks, so the builder flags "
                         "(FP32 layer precisions + precision constraints) are what keeps nodes in FP32", False, label)
    why = ("requested" if requested == ROUTE_ONNX else "auto")
    if features.strongly_typed:
        why += f": the converted model is built strongly typed ({label} takes every layer's type from the model)"
    else:
        why += (f": {label} has no strongly typed networks, so the converted model is built with the "
                f"{precision.upper()} flag and its kept nodes pinned to FP32")
    return RoutePlan(ROUTE_ONNX, why, features.strongly_typed, label)


def candidate_build(plan: RoutePlan, model, precision: str, keep: Sequence[str]):
    """``(onnx model to build, TrtBuildConfig fields)`` for one keep set on ``plan``'s route."""
    if plan.route == ROUTE_BUILDER:
        return model, {precision: True, "fp32_nodes": tuple(keep)}
    from trtdebug.precision.convert import convert

    converted = convert(model, precision, keep)
    if plan.strongly_typed:
        return converted.model, {"strongly_typed": True}
    return converted.model, {precision: True, "fp32_nodes": tuple(converted.kept)}


def build_and_run(model_bytes: bytes, config: Dict[str, Any], feeds: Dict[str, np.ndarray],
                  latency_runs: int = 10) -> Dict[str, Any]:
    """Build ``model_bytes`` with TrtBuildConfig(**config), run it on ``feeds``; the child's work.

    Returns the graph outputs (float32 on the host), the median latency over ``latency_runs`` more
    inferences (host to host, ms), the engine's layer precision counts and the build's notes."""
    import onnx

    from trtdebug.model import ModelGraph
    from trtdebug.runners.tensorrt import TrtBuildConfig, make_trt_runner

    model = onnx.load_from_string(model_bytes)
    cfg = TrtBuildConfig(**{"show_progress": False, **config})
    with make_trt_runner(model, config=cfg, graph=ModelGraph(model), model=model) as runner:
        outputs = runner.infer(feeds)
        times = []
        for _ in range(latency_runs):
            runner.infer(feeds)
            times.append(runner.last_inference_time)
        extra = dict(runner.extra)
    names = [o.name for o in model.graph.output]
    return {"outputs": {n: np.asarray(outputs[n], dtype=np.float32) if np.issubdtype(np.asarray(outputs[n]).dtype,
                                                                                    np.floating) else outputs[n]
                        for n in names},
            "latency_ms": round(1e3 * statistics.median(times), 4) if times else None,
            "layer_precisions": extra.get("layer_precisions"), "build_s": extra.get("engine_build_s"),
            "notes": [n for n in extra.get("notes", []) if isinstance(n, str)]}


class TrtEvaluator:
    """Keep set -> :class:`~trtdebug.precision.search.Trial`, judged by a TensorRT engine (see the module docstring).

    ``build_options``: TrtBuildConfig fields every candidate shares (``module``, ``tf32``,
    ``builder_optimization_level``, ``timing_cache``...).  ``isolate=False`` builds in this process
    (tests with a fake TensorRT); ``run`` replaces :func:`build_and_run` there.
    """

    backend = "trt"

    def __init__(self, model, feeds: Mapping[str, np.ndarray], precision: str, *, route: str = ROUTE_AUTO,
                 build_options: Optional[Mapping[str, Any]] = None, timeout: float = 600.0, isolate: bool = True,
                 trt=None, run=build_and_run) -> None:
        from trtdebug.runners.tensorrt import compat

        options = dict(build_options or {})
        self.module = options.get("module", "tensorrt")
        trt = trt if trt is not None else compat.import_tensorrt(self.module)
        self.features = compat.detect(trt)
        self.plan = plan_route(self.features, precision, route)
        self.route = self.plan.route
        self.model, self.feeds, self.precision = model, dict(feeds), precision
        self.timeout, self.isolate, self._run = timeout, isolate, run
        self._scratch: Optional[str] = None
        if "timing_cache" not in options and self.features.timing_cache_effective:
            self._scratch = tempfile.mkdtemp(prefix="trtdebug-precision-")
            options["timing_cache"] = Path(self._scratch) / "timing.cache"  # one cache, shared by every child
        options.setdefault("persistent_cache", False)
        self.options = options
        self.notes: List[str] = [f"route: {self.route} ({self.plan.why})"]
        self.extra = {"route_reason": self.plan.why, "tensorrt": self.plan.label,
                      "builder_route_available": builder_route_missing(self.features, precision) is None}

    def close(self) -> None:
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def config_for(self, keep: Sequence[str]):
        """The model and TrtBuildConfig fields of the candidate for ``keep``."""
        model, fields = candidate_build(self.plan, self.model, self.precision, keep)
        return model, {**self.options, **fields}

    def __call__(self, keep: Sequence[str]) -> Trial:
        model, config = self.config_for(keep)
        kept_model = model if self.route == ROUTE_ONNX else None
        start = time.perf_counter()
        if not self.isolate:
            value = self._run(model.SerializeToString(), config, self.feeds)
        else:
            from trtdebug.isolation import OK, RAISED, run_isolated

            outcome = run_isolated(self._run, model.SerializeToString(), config, self.feeds, timeout=self.timeout)
            if outcome.kind == RAISED and (outcome.exc_type or "").rpartition(".")[2] in _FATAL:
                raise _rebuild_error(outcome)
            if outcome.kind != OK:
                return Trial(None, kept_model, f"candidate {outcome.describe()}",
                             {"seconds": round(time.perf_counter() - start, 3)})
            value = outcome.value
        info = {k: value.get(k) for k in ("latency_ms", "layer_precisions", "build_s")}
        info["build_notes"] = list(value.get("notes", []))
        return Trial(value["outputs"], kept_model, None, info)


def _rebuild_error(outcome):
    """The child's trtdebug error, raised here with its one line (its type decides the exit code)."""
    from trtdebug import errors

    cls = getattr(errors, (outcome.exc_type or "").rpartition(".")[2], errors.BackendError)
    if not (isinstance(cls, type) and issubclass(cls, errors.TrtDebugError)):
        cls = errors.BackendError
    return cls(outcome.message or "a candidate build failed")
