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
   plus the two recordings.  Every build, and the engine run judging it, happens in a persistent
   worker process (:class:`TacticSession` in a :class:`~trtdebug.isolation.Worker`, one per
   ``devices`` entry): the network is parsed once per worker
   (:class:`~trtdebug.runners.tensorrt.variants.NetworkVariants`), so a candidate costs its build
   and run alone, and a segfault or hang in one candidate is its verdict (``on_crash``), after
   which the worker restarts.  With two devices both halves of a bisection are judged at once.
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

from trtdebug.debug.search import Judgement, LocalPool, NotFailing, Progress, Verdict, as_judgement, find_minimal
from trtdebug.debug.trt_engines import (OutputJudge, RemoteSession, check_on_crash, engine_layers, keep_engine,
                                        kept_engine, open_workers,
                                        reference_run, repro_flags, write_bundle)
from trtdebug.errors import BackendError, UsageError
from trtdebug.runners.tensorrt import tactics as tt

PathLike = Union[str, "os.PathLike[str]"]
EngineJudge = Callable[[bytes], Judgement]
_OURS = ("report.json", "journal.jsonl", "recordings.json")


# -- building: one parsed network, records and forced builds -------------------------------------

class TacticBuilds:
    """The builds a tactic search needs, for one model and one (bad) configuration.

    ``good_config`` is the configuration of the good recording (``None``: rebuilds of the bad one).
    ``search_cache``: a file for the timing cache the forced builds share (loaded at the first,
    saved after each), so a restarted worker does not time every tactic again.
    Counts every build in :attr:`builds`.
    """

    def __init__(self, trt, model, graph, config, *, good_config=None, feed_shapes=None,
                 search_cache: Optional[Path] = None) -> None:
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
        self._search_cache_file = search_cache
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
                        saved = self._search_cache_file
                        blob = saved.read_bytes() if saved is not None and saved.is_file() else b""
                        self._search_cache = config.create_timing_cache(blob) or config.create_timing_cache(b"")
                    config.set_timing_cache(self._search_cache, False)
                selector = tt.make_selector(trt, force=plan.chosen, misses=self.misses)
                config.algorithm_selector = selector
                return selector
            return tt.attach_editable_cache(trt, config, f, plan.entries)

        result = self.variants.build(configure=configure)
        self.builds += 1
        if self._search_cache is not None and self._search_cache_file is not None:
            from trtdebug.util.files import write_bytes_atomic

            write_bytes_atomic(self._search_cache_file, bytes(self._search_cache.serialize()))
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


class TacticSession:
    """What a build worker serves for ``debug tactics``: the builds with the judge beside them, so an
    engine is judged where it was built and only verdicts and records cross the pipe.

    ``keep`` names an engine to keep (a file in ``keep_dir``) for :meth:`layers` later.  In this
    process it is also what the pure tests search with.
    """

    def __init__(self, builds: TacticBuilds, judge: EngineJudge, keep_dir: Path) -> None:
        self.builds, self.judge, self.keep_dir = builds, judge, Path(keep_dir)

    def describe(self):
        """(mechanism, features) of the TensorRT the worker runs."""
        return self.builds.mechanism, self.builds.features

    def record(self, which: str = "bad", keep: Optional[str] = None) -> Tuple[Judgement, tt.TacticRecord]:
        engine, record = self.builds.record(which)
        keep_engine(self.keep_dir, keep, engine)
        return as_judgement(self.judge(engine)), record

    def forced(self, plan: tt.TacticRecord, keep: Optional[str] = None) -> Tuple[Judgement, List[str]]:
        """The verdict on the build pinned to ``plan``, and the layers whose pinned algorithm was not offered."""
        before = len(self.builds.misses)
        engine = self.builds.forced(plan)
        keep_engine(self.keep_dir, keep, engine)
        return as_judgement(self.judge(engine)), self.builds.misses[before:]

    def layers(self, keep: str):
        return self.builds.layers(kept_engine(self.keep_dir, keep))


class RemoteTactics(RemoteSession):
    """A :class:`TacticSession` in a worker, with the same methods; a crashed or hung candidate is a verdict."""

    def describe(self):
        return self.value("describe")

    def record(self, which: str = "bad", keep: Optional[str] = None):
        return self.judged("record", which, keep, fallback=None)  # record None: that build crashed

    def forced(self, plan: tt.TacticRecord, keep: Optional[str] = None):
        return self.judged("forced", plan, keep, fallback=[])

    def layers(self, keep: str):
        return self.value("layers", keep)


@dataclass(frozen=True)
class TacticSpec:
    """What a worker needs to set up its session (it crosses to the worker, so it is picklable)."""

    model: str  # the ONNX file
    config: Any  # TrtBuildConfig of the failing build
    good_config: Any  # of the good recording; None: rebuilds
    feed_shapes: Optional[Dict[str, Tuple[int, ...]]]
    judge: Any  # engine bytes -> Judgement/Verdict/bool; picklable (an OutputJudge by default)
    work: str  # this worker's private directory


def tactic_session(spec: TacticSpec) -> TacticSession:
    """The worker's factory: import TensorRT, load and parse the model once."""
    from trtdebug.debug.trt_engines import worker_inputs

    trt, model, graph, work = worker_inputs(spec)
    builds = TacticBuilds(trt, model, graph, spec.config, good_config=spec.good_config,
                          feed_shapes=spec.feed_shapes, search_cache=work / "search.timing-cache")
    return TacticSession(builds, spec.judge, work)


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


Session = Union[TacticSession, RemoteTactics]


def search_tactics(sessions: Union[Session, Sequence[Session]], graph, out: Path, *, good: str = "fp32",
                   max_rebuilds: int = 6, context: Optional[Dict[str, Any]] = None,
                   on_progress: Optional[Callable[[Progress], None]] = None,
                   on_status: Optional[Callable[[str], None]] = None) -> TacticsResult:
    """Record, diff, bisect and write ``tactics.json``/``bad-tactics.json``; returns the findings.

    The pure part of ``debug tactics``.  ``sessions``: one per device (a :class:`TacticSession` here,
    over a fake TensorRT in tests, or :class:`RemoteTactics` in workers); the first records and names,
    all judge candidates (in parallel when there are several).  ``graph``: the model's ModelGraph.
    Raises :class:`NotFailing` if the bad build passes and UsageError if no good build can be found.
    """
    sessions = list(sessions) if isinstance(sessions, (list, tuple)) else [sessions]
    lead = sessions[0]
    status = on_status or (lambda msg: None)
    start = time.perf_counter()
    mechanism, features = lead.describe()
    context = dict(context or {}, mechanism=mechanism, good=good)
    steps: List[Dict[str, Any]] = []
    counts = {"builds": 0}
    misses: List[str] = []

    def forced(session, plan, keep=None) -> Judgement:
        counts["builds"] += 1
        judgement, missed = session.forced(plan, keep)
        misses.extend(missed)
        return judgement

    bad, good_rec = _recordings(lead, forced, counts, out, good, max_rebuilds, context, steps, status)
    cands = diff_records(bad, good_rec)
    if not cands.names:
        raise UsageError("the good and the bad build chose the same tactics wherever the bad build could take the good "
                         "one: the difference is not a tactic choice (try 'trtdebug debug fusion' or 'debug reduce')"
                         + ("; on the editable timing cache, FP32 and FP16 builds share no cache keys: use --good rebuild"
                            if mechanism == tt.TIMING_CACHE and good == "fp32" else ""))
    search_builds_before = counts["builds"]

    def oracle(subset: Sequence[str], device: Optional[int] = None) -> Judgement:
        return forced(sessions[device or 0], cands.plan(subset))

    status(f"bisecting {len(cands.names)} {'layers' if cands.mechanism == tt.SELECTOR else 'timing cache entries'}"
           + (f" on {len(sessions)} workers" if len(sessions) > 1 else ""))
    pool = LocalPool(oracle, devices=list(range(len(sessions))), on_error="skip") if len(sessions) > 1 else None
    try:
        result = find_minimal(cands.names, pool or oracle, journal=out / "journal.jsonl", context=context,
                              on_progress=on_progress, on_error="skip")
    finally:
        if pool is not None:
            pool.close()
    search_builds = counts["builds"] - search_builds_before
    culprits = list(result.culprits)

    status("checking that the good choices give a passing engine")
    good_plan = cands.plan([])
    replay_verdict = forced(lead, good_plan, "good")
    bad_plan = cands.plan(cands.names)
    notes = [f"good build: {'the same network without reduced precision' if good == 'fp32' else 'a rebuild'}"]
    if misses:
        notes.append(f"TensorRT did not offer the pinned algorithm for {len(set(misses))} layer(s) in some "
                     f"builds ({', '.join(sorted(set(misses))[:5])}); those chose freely")
    restarts = sum(getattr(s, "restarts", 0) for s in sessions)
    if restarts:
        notes.append(f"the build worker was restarted {restarts} time(s) after a candidate crashed or hung "
                     "(those candidates' verdicts say so)")
    tt.save_replay(out / "tactics.json", good_plan, features=features, model=str(context.get("model", "")),
                   notes=["the good build's tactics: rebuilds an engine that passes"])
    tt.save_replay(out / "bad-tactics.json", bad_plan, features=features,
                   model=str(context.get("model", "")), notes=["the failing build's tactics"])

    layers, nodes, described = _name_culprits(lead, graph, cands, culprits)
    report = {
        "command": "tactics", "mechanism": cands.mechanism, "tensorrt": features.label,
        "culprit_layers": layers, "culprit_nodes": nodes, "culprit_tactics": described,
        "candidates": len(cands.names), "oracle_calls": result.oracle_calls, "reused_verdicts": result.reused,
        "builds": counts["builds"], "search_builds": search_builds,
        "build_bound": 2 * math.ceil(math.log2(max(len(cands.names), 1))) + 3,
        "replay": str(out / "tactics.json"), "replay_verdict": replay_verdict.verdict.value,
        "replay_detail": replay_verdict.detail, "minimal_model": None, "workers": len(sessions),
        "worker_restarts": restarts,
        "steps": steps + [dict(s.__dict__) for s in result.steps],
        "seconds": round(time.perf_counter() - start, 3), "notes": notes,
    }
    return TacticsResult(layers, nodes, out / "tactics.json", report)


def _recordings(session: Session, forced, counts: Dict[str, int], out: Path, good: str, max_rebuilds: int,
                context: Dict[str, Any], steps: List[Dict[str, Any]], status) -> Tuple[tt.TacticRecord, tt.TacticRecord]:
    """The bad and good recordings (read back from ``recordings.json`` when resuming); the failing
    engine is kept in the session as ``"bad"`` for naming layers."""
    path = out / "recordings.json"
    if path.exists():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("context") == json.loads(json.dumps(context)):
            status("reusing the recorded builds of the earlier run")
            forced(session, _record_from(saved["bad"]), "bad")  # the failing engine, for naming layers
            return _record_from(saved["bad"]), _record_from(saved["good"])
    bad = good_rec = None
    crashed: List[str] = []
    attempts = 1 if good == "fp32" else max(2, max_rebuilds)
    status("recording the tactics of the failing build")
    for attempt in range(attempts):
        counts["builds"] += 1
        verdict, record = session.record("bad", "bad" if bad is None else None)
        steps.append({"phase": "record", "region": f"build {attempt + 1}", "verdict": verdict.verdict.value,
                      "detail": verdict.detail})
        if record is None:  # the recording build crashed or hung: another rebuild may not
            crashed.append(verdict.detail)
            continue
        if verdict.verdict is Verdict.BAD and bad is None:
            bad = record
        elif verdict.verdict is Verdict.GOOD and good_rec is None:
            good_rec = record
        if bad is not None and (good == "fp32" or good_rec is not None):
            break
    if bad is None:
        if len(crashed) == attempts:
            raise BackendError(f"every recording build failed ({crashed[-1]}): a build that crashes has no tactics "
                               "to compare; try 'trtdebug debug reduce --trt-build-fails'")
        raise NotFailing(f"{attempts} build(s) of the model passed: there is no failing tactic to find")
    if good == "fp32":
        status("recording the tactics of the build without reduced precision")
        counts["builds"] += 1
        verdict, good_rec = session.record("good")
        steps.append({"phase": "record", "region": "good build", "verdict": verdict.verdict.value,
                      "detail": verdict.detail})
        if verdict.verdict is not Verdict.GOOD or good_rec is None:
            raise UsageError(f"the build without reduced precision fails too ({verdict.detail}): not a tactic problem; "
                             "try 'trtdebug debug reduce' or '--good rebuild'")
    elif good_rec is None:
        raise UsageError(f"none of {attempts} rebuilds passed: no good tactics to compare with (try --good fp32 "
                         "with --fp16, or more --rebuilds)")
    from trtdebug.util.files import write_text_atomic

    write_text_atomic(path, json.dumps({"context": context, "bad": _record_to(bad), "good": _record_to(good_rec)}) + "\n")
    return bad, good_rec


def _record_to(r: tt.TacticRecord) -> Dict[str, Any]:
    return {"mechanism": r.mechanism, "chosen": {k: c.to_dict() for k, c in r.chosen.items()},
            "options": {k: [c.to_dict() for c in v] for k, v in r.options.items()},
            "entries": {k: list(v) for k, v in r.entries.items()}}


def _record_from(d: Mapping[str, Any]) -> tt.TacticRecord:
    return tt.TacticRecord(d["mechanism"], chosen={k: tt.Choice.from_dict(c) for k, c in d["chosen"].items()},
                           options={k: [tt.Choice.from_dict(c) for c in v] for k, v in d["options"].items()},
                           entries={k: (int(v[0]), float(v[1])) for k, v in d["entries"].items()})


def _name_culprits(session: Session, graph, cands: Candidates,
                   culprits: List[str]) -> Tuple[List[str], List[str], List[Dict[str, Any]]]:
    """Engine layer names, ONNX nodes and a description per culprit.

    Selector: the culprits *are* layer names; the failing engine's inspector maps them to nodes.
    Editable cache: keys name no layer, so the layers whose tactic differs between the failing
    engine and the good one (the replay build) are the culprit keys' layers.  Both engines are
    the ones the session kept as ``"bad"`` and ``"good"``.
    """
    try:
        bad_info = session.layers("bad")
    except Exception:  # noqa: BLE001 - naming is best effort; the culprits stand without it
        bad_info = None
    from trtdebug.runners.tensorrt.inspector import parse_engine_info

    def nodes_of(layer: str) -> List[str]:
        if bad_info is not None:
            try:
                return list(bad_info.layer(layer).onnx_nodes)
            except KeyError:
                pass
        return list(parse_engine_info({"Layers": [{"Name": layer}]}, graph).layers[0].onnx_nodes)

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
            good_info = session.layers("good")
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
                  judge: Optional[EngineJudge] = None, timeout: Optional[float] = 600.0, on_crash: str = "skip",
                  devices: Optional[Sequence[int]] = None) -> TacticsResult:
    """``trtdebug debug tactics``: see the module docstring.

    ``build_options``: :class:`~trtdebug.runners.tensorrt.TrtBuildConfig` fields of the failing build
    (``fp16=True``...).  ``good``: ``fp32`` (the good build drops FP16/BF16/INT8), ``rebuild``, or
    ``auto`` (fp32 when a reduced precision is asked for, else rebuild).  ``judge``: replaces the
    default output comparison (engine bytes -> Judgement); it runs in the build workers, so it
    must be picklable (a module-level function or an object of a module-level class).
    ``timeout``: seconds per build worker call (a candidate's build and run; the worker's start)
    before it counts as a hang; ``on_crash``: what a crashed or hung candidate means ("skip": no
    answer, "bad": it fails).  ``devices``: GPU ids, one build worker each (candidates judged in
    parallel); default one worker on the current device.
    """
    from trtdebug.runners.tensorrt.config import TrtBuildConfig
    from trtdebug.util.files import check_output_paths

    status = on_status or (lambda msg: None)
    out = Path(out)
    _check_out(out)
    check_output_paths({"--out": out, "--report": report}, [model, inputs])
    check_on_crash(on_crash)
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
    good_config = replace(config, fp16=False, bf16=False, int8=False) if good == "fp32" else None
    device_ids = list(devices) if devices else [None]
    specs = []
    for i, _ in enumerate(device_ids):
        mine = work / f"worker-{i}"
        specs.append(TacticSpec(str(Path(model).resolve()), config, good_config, feed_shapes,
                                judge or OutputJudge(mine, out / "inputs.npz", out / "reference", atol=atol, rtol=rtol,
                                                     check_error_stat=check_error_stat), str(mine)))
    try:
        status(f"starting {len(specs)} build worker(s)")
        with open_workers(tactic_session, specs, device_ids, timeout=timeout, name="tactics") as workers:
            context = {"model": str(model), "model_sha256": hashlib.sha256(onnx_model.SerializeToString()).hexdigest(),
                       "options": {k: str(v) for k, v in sorted(options.items())}, "atol": str(atol), "rtol": str(rtol)}
            result = search_tactics([RemoteTactics(w, on_crash=on_crash) for w in workers], graph, out, good=good,
                                    max_rebuilds=max_rebuilds, context=context, on_progress=on_progress,
                                    on_status=status)
    finally:
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
