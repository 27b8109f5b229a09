"""``trtdebug debug tactics``: find the layer(s) whose tactic choice makes TensorRT's outputs wrong.

1. **Two recorded builds**: a *bad* one (the user's configuration, e.g. ``--fp16``) and a *good*
   one - the same network without reduced precision (``good="fp32"``), or rebuilt with fresh
   timing caches until a build passes (``good="rebuild"``; TensorRT's timings are noisy, so
   rebuilds may pick other kernels).  Each build records what every layer chose (and could
   choose): see :mod:`trtdebug.runners.tensorrt.tactics` for the two mechanisms.
2. **Candidates**: the layers (or timing cache keys) whose bad choice differs from the good one.
3. **Search** (:func:`trtdebug.debug.search.find_minimal`): a candidate set S is judged by building
   with the bad choice on S and the good choice on every other candidate, and comparing the
   engine's outputs with the reference.  One culprit among N costs about ``2*log2(N)+1`` builds,
   plus the two recordings.  Every build is in this process, from one parsed network
   (:class:`~trtdebug.runners.tensorrt.variants.NetworkVariants`), so a build costs the build alone.
4. **Bundle** in ``OUT``: ``tactics.json`` (the good choices: ``trtdebug run --load-tactics`` rebuilds
   the engine that passes), ``bad-tactics.json`` (the failing ones), ``inputs.npz``, ``reference/``,
   ``report.json`` and ``repro.sh``.  Recordings are kept in ``recordings.json`` and verdicts in
   ``journal.jsonl``: the same command again resumes without recording anew.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shlex
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from trtdebug.debug.search import Judgement, NotFailing, Progress, Verdict, find_minimal
from trtdebug.debug.trt_engines import OutputJudge, engine_layers, reference_run, repro_flags, write_bundle
from trtdebug.errors import UsageError
from trtdebug.runners.tensorrt import tactics as tt

PathLike = Union[str, "os.PathLike[str]"]
EngineJudge = Callable[[bytes], Judgement]
_OURS = ("report.json", "journal.jsonl", "recordings.json")


# -- building: one parsed network, records and forced builds -------------------------------------

class TacticBuilds:
    """The builds a tactic search needs, for one model and one (bad) configuration.

    ``good_config`` is the configuration of the good recording (``None``: rebuilds of the bad one).
    Counts every build in :attr:`builds`.
    """

    def __init__(self, trt, model, graph, config, *, good_config=None, feed_shapes=None) -> None:
        from trtdebug.runners.tensorrt.builder import EngineBuilder
        from trtdebug.runners.tensorrt.variants import NetworkVariants

        self.trt, self.graph = trt, graph
        self.builder = EngineBuilder(trt, model, graph, config, show_progress=False)
        self.features = self.builder.features
        self.mechanism = tt.mechanism(self.features)
        self.variants = NetworkVariants(self.builder, feed_shapes=feed_shapes)
        self._good_variants = None
        self._good_args = (model, graph, good_config, feed_shapes) if good_config is not None else None
        self._search_cache = None
        self.builds = 0
        self.misses: List[str] = []  # forced layers whose algorithm TensorRT did not offer

    def close(self) -> None:
        self.variants.close()
        if self._good_variants is not None:
            self._good_variants.close()

    def record(self, which: str = "bad") -> Tuple[bytes, tt.TacticRecord]:
        """Build with a fresh timing cache (so rebuilds may choose anew) and record every choice."""
        variants = self.variants if which == "bad" else self._good()
        record = tt.TacticRecord(self.mechanism)
        trt, f = self.trt, self.features
        used: List[object] = []

        def configure(config):
            if self.mechanism == tt.SELECTOR:
                if f.timing_cache:
                    config.set_timing_cache(config.create_timing_cache(b""), False)
                selector = tt.make_selector(trt, record=record)
                config.algorithm_selector = selector
                return selector
            used.append(tt.attach_editable_cache(trt, config, f))  # filled by the build: one entry per layer key
            return used[-1]

        result = variants.build(configure=configure)
        self.builds += 1
        if self.mechanism == tt.TIMING_CACHE:
            record.entries = tt.cache_entries(used[-1], f)
        return result.engine_bytes, record

    def forced(self, plan: tt.TacticRecord) -> bytes:
        """Build the bad configuration with ``plan``'s choices pinned."""
        trt, f = self.trt, self.features

        def configure(config):
            if plan.mechanism == tt.SELECTOR:
                if f.timing_cache:  # one cache for the whole search: each tactic is timed once
                    if self._search_cache is None:
                        self._search_cache = config.create_timing_cache(b"")
                    config.set_timing_cache(self._search_cache, False)
                selector = tt.make_selector(trt, force=plan.chosen, misses=self.misses)
                config.algorithm_selector = selector
                return selector
            return tt.attach_editable_cache(trt, config, f, plan.entries)

        result = self.variants.build(configure=configure)
        self.builds += 1
        return result.engine_bytes

    def layers(self, engine_bytes: bytes):
        """The engine's layers mapped to ONNX nodes (:class:`~trtdebug.runners.tensorrt.inspector.EngineInfo`)."""
        return engine_layers(self.builder, self.graph, engine_bytes)

    def _good(self):
        if self._good_variants is None:
            from trtdebug.runners.tensorrt.builder import EngineBuilder
            from trtdebug.runners.tensorrt.variants import NetworkVariants

            if self._good_args is None:
                return self.variants
            model, graph, config, feed_shapes = self._good_args
            self._good_variants = NetworkVariants(EngineBuilder(self.trt, model, graph, config, show_progress=False),
                                                  feed_shapes=feed_shapes)
        return self._good_variants


# -- the candidates and plans ----------------------------------------------------------------------

@dataclass
class Candidates:
    """What differs between the bad and the good build: per layer/key, the (bad, good) choices."""

    mechanism: str
    names: List[str]
    bad: tt.TacticRecord
    pairs: Dict[str, Tuple[Any, Any]]

    def plan(self, bad_on: Sequence[str]) -> tt.TacticRecord:
        """The bad build's choices, with the good one on every candidate not in ``bad_on``."""
        keep = set(bad_on)
        if self.mechanism == tt.SELECTOR:
            chosen = dict(self.bad.chosen)
            chosen.update({n: good for n, (_, good) in self.pairs.items() if n not in keep})
            return tt.TacticRecord(self.mechanism, chosen=chosen)
        entries = dict(self.bad.entries)
        entries.update({k: good for k, (_, good) in self.pairs.items() if k not in keep})
        return tt.TacticRecord(self.mechanism, entries=entries)


def diff_records(bad: tt.TacticRecord, good: tt.TacticRecord) -> Candidates:
    """The candidates: layers (selector) or cache keys (editable cache) whose choice differs and
    for which the bad build offers the good choice; in the bad build's layer order."""
    pairs: Dict[str, Tuple[Any, Any]] = {}
    if bad.mechanism == tt.SELECTOR:
        for layer, choice in bad.chosen.items():
            alt = tt.good_choice_for(layer, bad.options.get(layer, [choice]), good)
            if alt is not None and alt != choice:
                pairs[layer] = (choice, alt)
    else:
        for key, value in bad.entries.items():
            other = good.entries.get(key)
            if other is not None and other[0] != value[0]:
                pairs[key] = (value, other)
    return Candidates(bad.mechanism, list(pairs), bad, pairs)


# -- the search ------------------------------------------------------------------------------------

@dataclass
class TacticsResult:
    culprit_layers: List[str]
    culprit_nodes: List[str]
    replay: Path
    report: Dict[str, Any]


def search_tactics(builds: TacticBuilds, judge: EngineJudge, out: Path, *, good: str = "fp32",
                   max_rebuilds: int = 6, context: Optional[Dict[str, Any]] = None,
                   on_progress: Optional[Callable[[Progress], None]] = None,
                   on_status: Optional[Callable[[str], None]] = None) -> TacticsResult:
    """Record, diff, bisect and write ``tactics.json``/``bad-tactics.json``; returns the findings.

    The pure part of ``debug tactics``: ``builds`` may be a :class:`TacticBuilds` over a fake TensorRT,
    ``judge`` any engine judge.  Raises :class:`NotFailing` if the bad build passes and UsageError
    if no good build can be found.
    """
    status = on_status or (lambda msg: None)
    start = time.perf_counter()
    context = dict(context or {}, mechanism=builds.mechanism, good=good)
    steps: List[Dict[str, Any]] = []
    bad, good_rec, bad_engine = _recordings(builds, judge, out, good, max_rebuilds, context, steps, status)
    cands = diff_records(bad, good_rec)
    if not cands.names:
        raise UsageError("the good and the bad build chose the same tactics wherever the bad build could take the good "
                         "one: the difference is not a tactic choice (try 'trtdebug debug fusion' or 'debug reduce')"
                         + ("; on the editable timing cache, FP32 and FP16 builds share no cache keys: use --good rebuild"
                            if builds.mechanism == tt.TIMING_CACHE and good == "fp32" else ""))
    search_builds_before = builds.builds

    def oracle(subset: Sequence[str]) -> Judgement:
        return judge(builds.forced(cands.plan(subset)))

    status(f"bisecting {len(cands.names)} {'layers' if cands.mechanism == tt.SELECTOR else 'timing cache entries'}")
    result = find_minimal(cands.names, oracle, journal=out / "journal.jsonl", context=context,
                          on_progress=on_progress, on_error="skip")
    search_builds = builds.builds - search_builds_before
    culprits = list(result.culprits)

    status("checking that the good choices give a passing engine")
    good_plan = cands.plan([])
    good_engine = builds.forced(good_plan)
    replay_verdict = judge(good_engine)
    bad_plan = cands.plan(cands.names)
    notes = [f"good build: {'the same network without reduced precision' if good == 'fp32' else 'a rebuild'}"]
    if builds.misses:
        notes.append(f"TensorRT did not offer the pinned algorithm for {len(set(builds.misses))} layer(s) in some "
                     f"builds ({', '.join(sorted(set(builds.misses))[:5])}); those chose freely")
    tt.save_replay(out / "tactics.json", good_plan, features=builds.features, model=str(context.get("model", "")),
                   notes=["the good build's tactics: rebuilds an engine that passes"])
    tt.save_replay(out / "bad-tactics.json", bad_plan, features=builds.features,
                   model=str(context.get("model", "")), notes=["the failing build's tactics"])

    layers, nodes, described = _name_culprits(builds, cands, culprits, bad_engine, good_engine)
    report = {
        "command": "tactics", "mechanism": cands.mechanism, "tensorrt": builds.features.label,
        "culprit_layers": layers, "culprit_nodes": nodes, "culprit_tactics": described,
        "candidates": len(cands.names), "oracle_calls": result.oracle_calls, "reused_verdicts": result.reused,
        "builds": builds.builds, "search_builds": search_builds,
        "build_bound": 2 * math.ceil(math.log2(max(len(cands.names), 1))) + 3,
        "replay": str(out / "tactics.json"), "replay_verdict": replay_verdict.verdict.value,
        "replay_detail": replay_verdict.detail, "minimal_model": None,
        "steps": steps + [dict(s.__dict__) for s in result.steps],
        "seconds": round(time.perf_counter() - start, 3), "notes": notes,
    }
    return TacticsResult(layers, nodes, out / "tactics.json", report)


def _recordings(builds: TacticBuilds, judge: EngineJudge, out: Path, good: str, max_rebuilds: int,
                context: Dict[str, Any], steps: List[Dict[str, Any]], status) -> Tuple[tt.TacticRecord, tt.TacticRecord, bytes]:
    """The bad and good recordings (read back from ``recordings.json`` when resuming)."""
    path = out / "recordings.json"
    if path.exists():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("context") == json.loads(json.dumps(context)):
            status("reusing the recorded builds of the earlier run")
            bad_engine = builds.forced(_record_from(saved["bad"]))  # the failing engine, for naming layers
            return _record_from(saved["bad"]), _record_from(saved["good"]), bad_engine
    bad = good_rec = bad_engine = None
    attempts = 1 if good == "fp32" else max(2, max_rebuilds)
    status("recording the tactics of the failing build")
    for attempt in range(attempts):
        engine, record = builds.record("bad")
        verdict = judge(engine)
        steps.append({"phase": "record", "region": f"build {attempt + 1}", "verdict": verdict.verdict.value,
                      "detail": verdict.detail})
        if verdict.verdict is Verdict.BAD and bad is None:
            bad, bad_engine = record, engine
        elif verdict.verdict is Verdict.GOOD and good_rec is None:
            good_rec = record
        if bad is not None and (good == "fp32" or good_rec is not None):
            break
    if bad is None:
        raise NotFailing(f"{attempts} build(s) of the model passed: there is no failing tactic to find")
    if good == "fp32":
        status("recording the tactics of the build without reduced precision")
        engine, good_rec = builds.record("good")
        verdict = judge(engine)
        steps.append({"phase": "record", "region": "good build", "verdict": verdict.verdict.value,
                      "detail": verdict.detail})
        if verdict.verdict is not Verdict.GOOD:
            raise UsageError(f"the build without reduced precision fails too ({verdict.detail}): not a tactic problem; "
                             "try 'trtdebug debug reduce' or '--good rebuild'")
    elif good_rec is None:
        raise UsageError(f"none of {attempts} rebuilds passed: no good tactics to compare with (try --good fp32 "
                         "with --fp16, or more --rebuilds)")
    from trtdebug.util.files import write_text_atomic

    write_text_atomic(path, json.dumps({"context": context, "bad": _record_to(bad), "good": _record_to(good_rec)}) + "\n")
    return bad, good_rec, bad_engine


def _record_to(r: tt.TacticRecord) -> Dict[str, Any]:
    return {"mechanism": r.mechanism, "chosen": {k: c.to_dict() for k, c in r.chosen.items()},
            "options": {k: [c.to_dict() for c in v] for k, v in r.options.items()},
            "entries": {k: list(v) for k, v in r.entries.items()}}


def _record_from(d: Mapping[str, Any]) -> tt.TacticRecord:
    return tt.TacticRecord(d["mechanism"], chosen={k: tt.Choice.from_dict(c) for k, c in d["chosen"].items()},
                           options={k: [tt.Choice.from_dict(c) for c in v] for k, v in d["options"].items()},
                           entries={k: (int(v[0]), float(v[1])) for k, v in d["entries"].items()})


def _name_culprits(builds: TacticBuilds, cands: Candidates, culprits: List[str], bad_engine: bytes,
                   good_engine: bytes) -> Tuple[List[str], List[str], List[Dict[str, Any]]]:
    """Engine layer names, ONNX nodes and a description per culprit.

    Selector: the culprits *are* layer names; the failing engine's inspector maps them to nodes.
    Editable cache: keys name no layer, so the layers whose tactic differs between the failing
    engine and the good one (the replay build) are the culprit keys' layers.
    """
    try:
        bad_info = builds.layers(bad_engine)
    except Exception:  # noqa: BLE001 - naming is best effort; the culprits stand without it
        bad_info = None
    from trtdebug.runners.tensorrt.inspector import parse_engine_info

    def nodes_of(layer: str) -> List[str]:
        if bad_info is not None:
            try:
                return list(bad_info.layer(layer).onnx_nodes)
            except KeyError:
                pass
        return list(parse_engine_info({"Layers": [{"Name": layer}]}, builds.graph).layers[0].onnx_nodes)

    described: List[Dict[str, Any]] = []
    if cands.mechanism == tt.SELECTOR:
        layers = culprits
        for layer in culprits:
            bad, good = cands.pairs[layer]
            described.append({"layer": layer, "onnx_nodes": nodes_of(layer), "bad": bad.label(), "good": good.label(),
                              "bad_choice": bad.to_dict(), "good_choice": good.to_dict()})
    else:
        layers = []
        try:
            good_info = builds.layers(good_engine)
            good_tactics = {layer.name: layer.tactic for layer in good_info.layers}
            layers = [layer.name for layer in (bad_info.layers if bad_info else [])
                      if layer.name in good_tactics and good_tactics[layer.name] != layer.tactic]
        except Exception:  # noqa: BLE001
            pass
        for key in culprits:
            bad, good = cands.pairs[key]
            described.append({"timing_cache_key": key, "bad": f"tactic hash {bad[0]:#x}",
                              "good": f"tactic hash {good[0]:#x}", "layers_with_changed_tactic": layers})
    nodes: List[str] = []
    for layer in layers:
        for n in nodes_of(layer):
            if n not in nodes:
                nodes.append(n)
    return layers, nodes, described


# -- the command -----------------------------------------------------------------------------------

def debug_tactics(model: PathLike, out: PathLike, *, build_options: Optional[Mapping[str, Any]] = None,
                  good: str = "auto", max_rebuilds: int = 6, inputs: Optional[PathLike] = None,
                  input_shapes: Optional[Mapping[str, Sequence[int]]] = None, seed: Optional[int] = None,
                  reference_backend: str = "onnxrt", atol=None, rtol=None, check_error_stat: str = "elemwise",
                  report: Optional[PathLike] = None, on_progress=None, on_status=None,
                  judge: Optional[EngineJudge] = None) -> TacticsResult:
    """``trtdebug debug tactics``: see the module docstring.

    ``build_options``: :class:`~trtdebug.runners.tensorrt.TrtBuildConfig` fields of the failing build
    (``fp16=True``...).  ``good``: ``fp32`` (the good build drops FP16/BF16/INT8), ``rebuild``, or
    ``auto`` (fp32 when a reduced precision is asked for, else rebuild).  ``judge``: replaces the
    default output comparison (engine bytes -> Judgement).
    """
    from trtdebug.runners.tensorrt import compat
    from trtdebug.runners.tensorrt.config import TrtBuildConfig
    from trtdebug.util.files import check_output_paths

    status = on_status or (lambda msg: None)
    out = Path(out)
    _check_out(out)
    check_output_paths({"--out": out, "--report": report}, [model, inputs])
    options = dict(build_options or {})
    options.setdefault("persistent_cache", False)
    try:
        config = TrtBuildConfig(**options)
    except TypeError as exc:
        raise UsageError(f"unknown TensorRT build option: {exc}") from exc
    reduced = config.fp16 or config.bf16 or config.int8
    if good == "auto":
        good = "fp32" if reduced else "rebuild"
    if good not in ("fp32", "rebuild"):
        raise UsageError(f"--good must be fp32, rebuild or auto, not {good!r}")
    if good == "fp32" and not reduced:
        raise UsageError("--good fp32 needs a reduced-precision build to compare with (--fp16, --bf16 or --int8)")

    out.mkdir(parents=True, exist_ok=True)
    status("computing the reference outputs")
    onnx_model, graph, feed_shapes = reference_run(model, out, reference_backend=reference_backend, inputs=inputs,
                                                   input_shapes=input_shapes, seed=seed)
    work = Path(tempfile.mkdtemp(prefix=".trtdebug-tactics-", dir=out))
    trt = compat.import_tensorrt(config.module)
    good_config = replace(config, fp16=False, bf16=False, int8=False) if good == "fp32" else None
    builds = TacticBuilds(trt, onnx_model, graph, config, good_config=good_config, feed_shapes=feed_shapes)
    try:
        judge = judge or OutputJudge(work, out / "inputs.npz", out / "reference", atol=atol, rtol=rtol,
                                     check_error_stat=check_error_stat)
        context = {"model": str(model), "model_sha256": hashlib.sha256(onnx_model.SerializeToString()).hexdigest(),
                   "options": {k: str(v) for k, v in sorted(options.items())}, "atol": str(atol), "rtol": str(rtol)}
        result = search_tactics(builds, judge, out, good=good, max_rebuilds=max_rebuilds, context=context,
                                on_progress=on_progress, on_status=status)
    finally:
        builds.close()
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    flags = repro_flags(options)
    repro = (f"trtdebug run {shlex.quote(str(Path(model).resolve()))} --trt{flags} --load-tactics bad-tactics.json "
             "--load-inputs inputs.npz --load-outputs reference")
    result.report["repro"] = repro
    result.report["workaround"] = repro.replace("bad-tactics.json", "tactics.json")
    write_bundle(out, result.report, report)
    return result


def _check_out(out: Path) -> None:
    if out.exists():
        if not out.is_dir():
            raise UsageError(f"--out {out} exists and is not a directory")
        if any(out.iterdir()) and not any((out / m).exists() for m in _OURS):
            raise UsageError(f"--out {out} is not empty and not an earlier 'trtdebug debug' directory; refusing to write into it")
