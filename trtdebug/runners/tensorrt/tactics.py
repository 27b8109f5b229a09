"""Record and pin TensorRT's tactic choices: the two mechanisms, and the replay file.

A wrong engine whose wrongness depends on *which kernel* TensorRT picked for a layer is found
by recording the choices of a good and a bad build, then building with some layers pinned to
the good choice and the rest to the bad one (``trtdebug.debug.tactics``).  TensorRT offers
two ways to see and pin choices, and each release has one or both:

* **algorithm selector** (8.6 - 10.x; removed in 11): an ``IAlgorithmSelector`` subclass on the
  builder configuration.  ``select_algorithms(context, choices)`` is asked, per layer (the
  context's ``name`` is the engine layer's name), which of its candidate algorithms may be
  timed; ``report_algorithms`` tells the final choice.  The subclass is defined inside
  :func:`make_selector` because TensorRT must not be imported when trtdebug is.
* **editable timing cache** (10.8+ and 11): ``BuilderFlag.EDITABLE_TIMING_CACHE`` makes the
  timing cache hold one entry per layer configuration - ``TimingCacheKey`` (16 bytes, written
  ``0x`` + 32 hex digits) to ``TimingCacheValue(tacticHash, timingMSec)`` - which
  ``ITimingCache.queryKeys/query/update`` read and overwrite; a build with the cache attached
  uses the cached tactic.  Keys do not name layers; the search names them afterwards by
  comparing engines (see ``trtdebug.debug.tactics``).  **This path was written against the API
  surfaces of 10.8/11 and tested only against fakes: it never ran on real TensorRT.**

A replay file (JSON, :func:`save_replay`) holds either the per-layer choices or the cache entries
of a good build; ``trtdebug run --load-tactics FILE`` (``TrtBuildConfig.load_tactics``) rebuilds
with them through :func:`apply_replay`.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from trtdebug.errors import BackendError, UsageError
from trtdebug.runners.tensorrt import compat

REPLAY_FORMAT = "trtdebug-tactics"
REPLAY_VERSION = 1
SELECTOR = "algorithm_selector"
TIMING_CACHE = "editable_timing_cache"
_KEY_RE = re.compile(r"0x[0-9a-fA-F]{32}")


# -- what was chosen ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Choice:
    """One algorithm of one layer: TensorRT's implementation and tactic ids and its I/O types."""

    implementation: int
    tactic: int
    io: Tuple[str, ...] = ()  # "FLOAT"/"HALF"/... per input then output, where TensorRT tells it

    def to_dict(self) -> Dict[str, Any]:
        return {"implementation": self.implementation, "tactic": self.tactic, "io": list(self.io)}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Choice":
        return cls(int(d["implementation"]), int(d["tactic"]), tuple(d.get("io", ())))

    def label(self) -> str:
        io = f" [{','.join(self.io)}]" if self.io else ""
        return f"implementation {self.implementation:#x} tactic {self.tactic:#x}{io}"


@dataclass
class TacticRecord:
    """The choices of one build: per layer (algorithm selector) or per cache key (editable cache)."""

    mechanism: str
    chosen: Dict[str, Choice] = field(default_factory=dict)  # layer -> its final algorithm
    options: Dict[str, List[Choice]] = field(default_factory=dict)  # layer -> what it could choose from
    entries: Dict[str, Tuple[int, float]] = field(default_factory=dict)  # cache key -> (tacticHash, ms)


def choice_of(algorithm, n_io: int) -> Choice:
    """A :class:`Choice` from an ``IAlgorithm`` (``n_io``: inputs + outputs of its context)."""
    variant = algorithm.algorithm_variant
    io = []
    for i in range(n_io):
        try:
            info = algorithm.get_algorithm_io_info(i)
        except Exception:  # noqa: BLE001 - some layers report fewer I/O infos than the context
            break
        if info is None:
            break
        io.append(compat.dtype_name(info.dtype))
    return Choice(int(variant.implementation), int(variant.tactic), tuple(io))


def _n_io(context) -> int:
    return int(context.num_inputs) + int(context.num_outputs)


def make_selector(trt, *, record: Optional[TacticRecord] = None, force: Optional[Dict[str, Choice]] = None,
                  misses: Optional[List[str]] = None):
    """An ``IAlgorithmSelector`` that records every layer's options and choice into ``record`` and,
    for layers in ``force``, lets TensorRT choose only that algorithm.

    A forced layer whose algorithm is not among its choices keeps all of them and is listed in
    ``misses`` (the build is then not the one asked for; callers say so).  Defined here, not at
    import: the base class is TensorRT's.
    """
    force = dict(force or {})

    class Selector(trt.IAlgorithmSelector):
        def __init__(self) -> None:
            trt.IAlgorithmSelector.__init__(self)

        def select_algorithms(self, context, choices):
            name = str(context.name)
            n = _n_io(context)
            options = [choice_of(c, n) for c in choices]
            if record is not None:
                record.options[name] = options
            wanted = force.get(name)
            if wanted is None:
                return list(range(len(choices)))
            picked = [i for i, c in enumerate(options) if c == wanted]
            if not picked:
                if misses is not None:
                    misses.append(name)
                return list(range(len(choices)))
            return picked

        def report_algorithms(self, contexts, choices):
            if record is None:
                return
            for context, algorithm in zip(contexts, choices):
                record.chosen[str(context.name)] = choice_of(algorithm, _n_io(context))

    return Selector()


def good_choice_for(layer: str, options: Sequence[Choice], good: TacticRecord) -> Optional[Choice]:
    """Among a bad build's ``options`` for ``layer``, the one matching the good build's choice.

    The same algorithm if offered; else one with the good build's I/O types (an FP32 build's
    choice on an FP16 build); else, for a layer the good build fused differently, the first
    all-FP32 option.  None: no option resembles the good build here.
    """
    target = good.chosen.get(layer)
    if target is not None:
        if target in options:
            return target
        same_io = [c for c in options if c.io and c.io == target.io]
        if same_io:
            return same_io[0]
    fp32 = [c for c in options if c.io and all(t == "FLOAT" for t in c.io)]
    return fp32[0] if fp32 else None


# -- editable timing cache (10.8+/11) ---------------------------------------------------------------

def key_text(key) -> str:
    """``0x`` + 32 hex digits: a TimingCacheKey's string form (as TensorRT documents it)."""
    m = _KEY_RE.search(str(key))
    if m is None:
        raise BackendError(f"cannot read a timing cache key as text (got {str(key)[:60]!r})")
    return m.group(0).lower()


def _no_editable_cache(features: compat.Features) -> UsageError:
    return UsageError(f"{features.label} has no editable timing cache (BuilderFlag.EDITABLE_TIMING_CACHE, 10.8+)")


def cache_entries(cache, features: compat.Features) -> Dict[str, Tuple[int, float]]:
    """Every entry of an editable ``ITimingCache``: key text -> (tacticHash, timingMSec)."""
    if features.editable_timing_cache:  # the names below exist from 10.8 on
        out = {}
        for key in cache.queryKeys():
            value = cache.query(key)
            out[key_text(key)] = (int(value.tacticHash), float(value.timingMSec))
        return out
    raise _no_editable_cache(features)


def update_entries(trt, cache, features: compat.Features, entries: Dict[str, Tuple[int, float]]) -> None:
    """Write ``entries`` into an editable cache (each pins its layer configuration's tactic)."""
    if not features.editable_timing_cache:
        raise _no_editable_cache(features)
    for text, (tactic_hash, ms) in entries.items():
        if features.editable_timing_cache:  # the names below exist from 10.8 on
            value = trt.TimingCacheValue(int(tactic_hash), float(ms))
            if not cache.update(trt.TimingCacheKey.parse(text), value):
                raise BackendError(f"TensorRT refused to update timing cache entry {text}")


def attach_editable_cache(trt, config, features: compat.Features, entries: Optional[Dict[str, Tuple[int, float]]] = None):
    """A fresh editable timing cache on ``config`` (an IBuilderConfig), holding ``entries``; returned."""
    if not compat.enable_editable_timing_cache(trt, config, features):
        raise _no_editable_cache(features)
    cache = config.create_timing_cache(b"")
    if entries:
        update_entries(trt, cache, features, entries)
    config.set_timing_cache(cache, False)
    return cache


def mechanism(features: compat.Features) -> str:
    """The selector where it exists (it names layers), else the editable cache; neither: UsageError."""
    if features.algorithm_selector:
        return SELECTOR
    if features.editable_timing_cache and features.timing_cache_effective:  # RTX accepts cache calls as no-ops
        return TIMING_CACHE
    raise UsageError(f"{features.label} can neither record nor pin tactics (no IAlgorithmSelector, "
                     "no editable timing cache)")


# -- replay files ---------------------------------------------------------------------------------

def replay_document(record: TacticRecord, *, features: compat.Features, model: str = "",
                    notes: Sequence[str] = ()) -> Dict[str, Any]:
    doc: Dict[str, Any] = {"format": REPLAY_FORMAT, "version": REPLAY_VERSION, "mechanism": record.mechanism,
                           "tensorrt": features.label, "model": model, "notes": list(notes)}
    if record.mechanism == SELECTOR:
        doc["layers"] = {name: c.to_dict() for name, c in record.chosen.items()}
    else:
        doc["entries"] = {k: [h, ms] for k, (h, ms) in record.entries.items()}
    return doc


def save_replay(path: Union[str, Path], record: TacticRecord, *, features: compat.Features, model: str = "",
                notes: Sequence[str] = ()) -> Path:
    from trtdebug.util.files import write_text_atomic

    write_text_atomic(path, json.dumps(replay_document(record, features=features, model=model, notes=notes),
                                       indent=2) + "\n")
    return Path(path)


def load_replay(path: Union[str, Path]) -> TacticRecord:
    """Read a replay file; anything else is a one-line UsageError."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"--load-tactics: {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"--load-tactics: {path} is not a trtdebug tactics file ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != REPLAY_FORMAT:
        raise UsageError(f"--load-tactics: {path} is not a trtdebug tactics file (written by 'trtdebug debug tactics')")
    try:
        if doc["mechanism"] == SELECTOR:
            return TacticRecord(SELECTOR, chosen={k: Choice.from_dict(v) for k, v in doc["layers"].items()})
        if doc["mechanism"] == TIMING_CACHE:
            return TacticRecord(TIMING_CACHE, entries={k: (int(v[0]), float(v[1])) for k, v in doc["entries"].items()})
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise UsageError(f"--load-tactics: {path} is damaged ({type(exc).__name__}: {exc})") from exc
    raise UsageError(f"--load-tactics: {path} uses an unknown mechanism {doc.get('mechanism')!r}")


def apply_replay(trt, config, features: compat.Features, record: TacticRecord,
                 misses: Optional[List[str]] = None) -> object:
    """Pin ``record``'s choices on ``config``; returns what must stay alive until the build ends.

    A selector file needs a TensorRT with IAlgorithmSelector (not 11); a cache file needs the
    editable timing cache (10.8+).  Both refuse clearly where the mechanism is missing.
    """
    if record.mechanism == SELECTOR:
        if not features.algorithm_selector:
            raise UsageError(f"this tactics file pins tactics with IAlgorithmSelector, which {features.label} does not "
                             "have (removed in TensorRT 11); record it again on this TensorRT")
        selector = make_selector(trt, force=record.chosen, misses=misses)
        config.algorithm_selector = selector
        return selector
    return attach_editable_cache(trt, config, features, record.entries)

