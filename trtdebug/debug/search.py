"""Find a minimal failing set among ordered candidates: bisection, then delta debugging.

The search is pure: it knows candidates only as an ordered list of names (ONNX nodes in
topological order, layers, tactics, tensors) and asks an *oracle* about subsets of them.  The
oracle answers GOOD (the failure is gone), BAD (it reproduces) or SKIP (no answer: the candidate
could not be judged, e.g. it crashed and the user said a crash is no evidence).

Strategy (Zeller's ddmin, with bisection as its first gear):

* the whole set is judged first: a search over a set that does not fail has nothing to find;
* **bisection**: split the current failing set in two and keep the half that still fails.  One
  culprit among N costs at most ``2 * ceil(log2 N) + 1`` oracle calls;
* when neither half fails alone (two nodes that only fail together, or SKIPs), **delta
  debugging** refines: finer splits, and complements (the set minus one part), until removing
  any single candidate makes the failure disappear (a 1-minimal set);
* ``find_all``: the culprits found are removed and the rest judged again, until it passes.

Every oracle answer is appended to a JSON-lines **journal** (flushed and fsynced per line): a
search started again on the same journal re-asks nothing already answered, so a killed run
resumes where it stopped.  A flaky oracle is asked ``repeat`` times per subset (stopping at the
first BAD when ``flaky="bad"``), a SKIP is retried ``retries`` times.

Subsets are judged through an :class:`Executor` (``submit(candidate) -> Future``): the serial
one runs the oracle in the calling thread; :class:`LocalPool` runs one worker per device and
hands each call its device id.  With W workers the search asks W subsets at once (both halves
of a bisection on two GPUs), which costs calls but saves wall time; a distributed executor only
has to implement the same two methods.
"""
from __future__ import annotations

import enum
import inspect
import json
import math
import os
import queue
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Hashable, List, Optional, Sequence, Tuple, Union

from trtdebug.errors import UsageError

Subset = Tuple[int, ...]  # indices into the candidate list, ascending
JOURNAL_FORMAT = "trtdebug-search-journal"
JOURNAL_VERSION = 1


class Verdict(str, enum.Enum):
    """What an oracle says about one candidate set."""

    GOOD = "good"  # the failure does not reproduce
    BAD = "bad"  # the failure reproduces
    SKIP = "skip"  # no answer (crash counted as no evidence, unbuildable subgraph, ...)


@dataclass(frozen=True)
class Judgement:
    """One oracle answer: the verdict, a line saying why, and how long it took."""

    verdict: Verdict
    detail: str = ""
    seconds: float = 0.0


def as_judgement(value: Any, seconds: float = 0.0) -> Judgement:
    """Read an oracle's return value: a Judgement, a Verdict (or its string), or a bool meaning *fails*."""
    if isinstance(value, Judgement):
        return value if value.seconds else Judgement(value.verdict, value.detail, seconds)
    if isinstance(value, bool):
        return Judgement(Verdict.BAD if value else Verdict.GOOD, seconds=seconds)
    if isinstance(value, (Verdict, str)):
        try:
            return Judgement(Verdict(value), seconds=seconds)
        except ValueError:
            pass
    raise TypeError(f"an oracle must return a Verdict, 'good'/'bad'/'skip', a bool (True: fails) or a Judgement, "
                    f"not {value!r}")


#: ``oracle(candidate, device)``; ``device`` is the worker's device id (None when there is none).
#: Plain ``oracle(candidate)`` callables are accepted too.
Oracle = Callable[..., Any]


def _takes_device(oracle: Oracle) -> bool:
    try:
        params = inspect.signature(oracle).parameters.values()
    except (TypeError, ValueError):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name == "device" for p in params)


class _Caller:
    """Calls an oracle with or without the device, times it, reads its answer; an exception
    is a verdict if ``on_error`` says so ("skip"/"bad"), else it propagates ("raise")."""

    def __init__(self, oracle: Oracle, on_error: str) -> None:
        if on_error not in ("raise", "skip", "bad"):
            raise UsageError(f"on_error must be raise, skip or bad, not {on_error!r}")
        self.oracle, self.on_error, self.with_device = oracle, on_error, _takes_device(oracle)

    def __call__(self, candidate: tuple, device: Optional[int]) -> Judgement:
        start = time.perf_counter()
        try:
            value = self.oracle(candidate, device) if self.with_device else self.oracle(candidate)
        except Exception as exc:  # noqa: BLE001 - a crashing oracle is a verdict when the user says so
            if self.on_error == "raise":
                raise
            return Judgement(Verdict(self.on_error), f"oracle raised {type(exc).__name__}: {exc}",
                             time.perf_counter() - start)
        return as_judgement(value, time.perf_counter() - start)


class Executor:
    """Judges candidates: ``submit(candidate) -> Future[Judgement]``; ``workers`` calls may run at once."""

    workers: int = 1

    def submit(self, candidate: tuple) -> "Future[Judgement]":
        raise NotImplementedError

    def close(self) -> None:
        """Stop: cancel what has not started."""


class SerialExecutor(Executor):
    """Runs each call at once, in the calling thread (its future is already done)."""

    def __init__(self, oracle: Oracle, *, device: Optional[int] = None, on_error: str = "raise") -> None:
        self._call, self.device = _Caller(oracle, on_error), device

    def submit(self, candidate: tuple) -> "Future[Judgement]":
        future: Future = Future()
        try:
            future.set_result(self._call(candidate, self.device))
        except Exception as exc:  # noqa: BLE001 - handed to the waiter, as a pool would
            future.set_exception(exc)
        return future


class LocalPool(Executor):
    """One worker thread per device; each call gets a free device's id.

    The threads only wait: the work itself runs in child processes (the oracles of
    :mod:`trtdebug.debug.oracle` isolate every candidate), so one process can drive several GPUs.
    """

    def __init__(self, oracle: Oracle, devices: Sequence[Optional[int]] = (0, 1), *, on_error: str = "raise") -> None:
        if not devices:
            raise UsageError("a worker pool needs at least one device")
        self._call = _Caller(oracle, on_error)
        self.devices = list(devices)
        self.workers = len(self.devices)
        self._free: "queue.Queue[Optional[int]]" = queue.Queue()
        for d in self.devices:
            self._free.put(d)
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="trtdebug-oracle")

    def submit(self, candidate: tuple) -> "Future[Judgement]":
        return self._pool.submit(self._run, candidate)

    def _run(self, candidate: tuple) -> Judgement:
        device = self._free.get()
        try:
            return self._call(candidate, device)
        finally:
            self._free.put(device)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


# -- journal ----------------------------------------------------------------------------------

class Journal:
    """Every oracle answer of one search, one JSON line each; read back to resume.

    The first line names the candidates and a caller-given ``context`` (oracle, model hash):
    resuming a different search from this file is refused rather than silently reusing
    answers to other questions.  A last line cut short by a kill is ignored.
    """

    def __init__(self, path: Union[str, "os.PathLike[str]"], candidates: Sequence[Hashable],
                 context: Optional[Dict[str, Any]] = None) -> None:
        self.path = Path(path)
        self.header = {"format": JOURNAL_FORMAT, "version": JOURNAL_VERSION,
                       "candidates": [str(c) for c in candidates], "context": dict(context or {})}
        self.answers: Dict[Subset, List[Judgement]] = {}
        if self.path.exists() and self.path.stat().st_size:
            self._load()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._append(self.header)

    def _load(self) -> None:
        lines = self.path.read_text(encoding="utf-8").splitlines()
        try:
            header = json.loads(lines[0])
        except (ValueError, IndexError) as exc:
            raise UsageError(f"{self.path} is not a trtdebug search journal") from exc
        if not isinstance(header, dict) or header.get("format") != JOURNAL_FORMAT:
            raise UsageError(f"{self.path} is not a trtdebug search journal")
        for key in ("candidates", "context"):
            if json.loads(json.dumps(header.get(key))) != json.loads(json.dumps(self.header[key])):
                raise UsageError(f"journal {self.path} belongs to a different search (its {key} differ); "
                                 "use another output directory or remove the journal")
        complete = True
        for line in lines[1:]:
            try:
                rec = json.loads(line)
                subset = tuple(int(i) for i in rec["candidate"])
                answer = Judgement(Verdict(rec["verdict"]), rec.get("detail", ""), float(rec.get("seconds", 0.0)))
            except (ValueError, KeyError, TypeError):
                complete = False  # the line a kill cut short: that answer is asked again
                continue
            self.answers.setdefault(subset, []).append(answer)
        if not complete:  # rewrite without the broken line, so appends start on a fresh line
            good = [ln for ln in lines if _parses(ln)]
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(ln + "\n" for ln in good), encoding="utf-8")
            os.replace(tmp, self.path)

    def record(self, subset: Subset, answer: Judgement) -> None:
        self.answers.setdefault(subset, []).append(answer)
        self._append({"candidate": list(subset), "verdict": answer.verdict.value, "detail": answer.detail,
                      "seconds": round(answer.seconds, 4)})

    def _append(self, obj: Dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(obj) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def _parses(line: str) -> bool:
    try:
        json.loads(line)
        return True
    except ValueError:
        return False


# -- the search -------------------------------------------------------------------------------

@dataclass
class Step:
    """One judged subset, as the report lists it."""

    step: int
    phase: str  # "check" (the whole set), "bisect", "ddmin", "rest" (find_all)
    region: str
    size: int
    verdict: str
    detail: str
    seconds: float
    calls: int  # oracle calls this step made (0: answered by the journal)


@dataclass(frozen=True)
class Progress:
    """What a progress callback receives before each batch of oracle calls."""

    step: int
    estimate: int  # about how many steps in all
    phase: str
    region: str
    seconds_per_call: Optional[float]  # mean so far, None before the first call


@dataclass
class SearchResult:
    culprits: List[Any]  # the first minimal failing set, in candidate order
    culprit_sets: List[List[Any]]  # all of them with find_all (else just the first)
    oracle_calls: int  # calls made by this run
    reused: int  # answers read back from the journal
    steps: List[Step] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> Dict[str, Any]:
        return {"culprits": [str(c) for c in self.culprits],
                "culprit_sets": [[str(c) for c in s] for s in self.culprit_sets],
                "oracle_calls": self.oracle_calls, "reused": self.reused, "seconds": round(self.seconds, 3),
                "steps": [asdict(s) for s in self.steps]}


class NotFailing(UsageError):
    """The whole candidate set does not fail: there is nothing to search for."""


class Search:
    """One search; see the module docstring.  Use :func:`find_minimal` for the common case."""

    def __init__(self, candidates: Sequence[Any], executor: Executor, *, journal: Optional[Journal] = None,
                 repeat: int = 1, retries: int = 0, flaky: str = "bad",
                 on_progress: Optional[Callable[[Progress], None]] = None,
                 describe: Optional[Callable[[List[Any]], str]] = None) -> None:
        if repeat < 1 or retries < 0:
            raise UsageError("repeat must be >= 1 and retries >= 0")
        if flaky not in ("bad", "skip"):
            raise UsageError(f"flaky must be 'bad' or 'skip', not {flaky!r}")
        self.candidates = list(candidates)
        self.executor, self.journal = executor, journal
        self.repeat, self.retries, self.flaky = repeat, retries, flaky
        self.on_progress = on_progress
        self.describe = describe or self._describe
        self.calls = self.reused = 0
        self.call_seconds = 0.0
        self.steps: List[Step] = []
        self._answers: Dict[Subset, List[Judgement]] = dict(journal.answers) if journal else {}
        self._reused_keys = set(self._answers)

    # -- public ---------------------------------------------------------------------------------
    def run(self, *, find_all: bool = False) -> SearchResult:
        start = time.perf_counter()
        everything: Subset = tuple(range(len(self.candidates)))
        if not everything:
            raise UsageError("nothing to search: no candidates")
        verdict = self._first_bad([everything], "check")
        if verdict is None:
            last = self.steps[-1]
            raise NotFailing(f"the whole set does not fail ({last.verdict}"
                             + (f": {last.detail}" if last.detail else "") + "): nothing to reduce")
        sets: List[Subset] = []
        rest = everything
        while True:
            found = self._minimize(rest)
            sets.append(found)
            rest = tuple(i for i in rest if i not in set(found))
            if not find_all or not rest or self._first_bad([rest], "rest") is None:
                break
        names = [[self.candidates[i] for i in s] for s in sets]
        return SearchResult(culprits=names[0], culprit_sets=names, oracle_calls=self.calls, reused=self.reused,
                            steps=self.steps, seconds=time.perf_counter() - start)

    # -- strategy -------------------------------------------------------------------------------
    def _minimize(self, current: Subset) -> Subset:
        """A 1-minimal failing subset of ``current`` (which fails)."""
        base = max(2, self.executor.workers)  # one part per worker while bisecting
        n = base
        while len(current) >= 2:
            n = min(n, len(current))
            parts = _split(current, n)
            phase = "bisect" if n == base else "ddmin"
            i = self._first_bad(parts, phase)
            if i is not None:
                current, n = parts[i], base
                continue
            if n > 2:
                complements = [tuple(x for x in current if x not in set(p)) for p in parts]
                i = self._first_bad(complements, "ddmin")
                if i is not None:
                    current, n = complements[i], max(n - 1, 2)
                    continue
            if n >= len(current):
                break
            n = min(len(current), 2 * n)
        return current

    def _first_bad(self, subsets: Sequence[Subset], phase: str) -> Optional[int]:
        """Judge ``subsets`` in order, ``workers`` at a time; the index of the first BAD one, or None."""
        width = max(1, self.executor.workers)
        for start in range(0, len(subsets), width):
            chunk = list(subsets[start:start + width])
            self._report_progress(phase, chunk, len(subsets[start:]))
            verdicts = self._judge(chunk, phase)
            for offset, v in enumerate(verdicts):
                if v is Verdict.BAD:
                    return start + offset
        return None

    # -- asking the oracle ---------------------------------------------------------------------
    def _judge(self, subsets: List[Subset], phase: str) -> List[Verdict]:
        """Verdicts for ``subsets``, asking the oracle (in parallel across subsets) only what the
        answers so far do not settle."""
        t0 = time.perf_counter()
        calls_before = {s: len(self._answers.get(s, [])) for s in subsets}
        while True:
            pending = [s for s in dict.fromkeys(subsets) if self._needs_call(s)]
            if not pending:
                break
            futures = [(s, self.executor.submit(tuple(self.candidates[i] for i in s))) for s in pending]
            try:
                for s, fut in futures:
                    answer = fut.result()
                    self.calls += 1
                    self.call_seconds += answer.seconds
                    self._answers.setdefault(s, []).append(answer)
                    if self.journal is not None:
                        self.journal.record(s, answer)
            except BaseException:
                for _, fut in futures:
                    fut.cancel()
                raise
        verdicts = []
        for s in subsets:
            verdict, detail = self._combine(self._answers[s])
            made = len(self._answers[s]) - calls_before[s]
            if s in self._reused_keys and made == 0:
                self.reused += 1
            self.steps.append(Step(step=len(self.steps) + 1, phase=phase, region=self._region(s), size=len(s),
                                   verdict=verdict.value, detail=detail, calls=made,
                                   seconds=round(time.perf_counter() - t0, 3)))
            verdicts.append(verdict)
        return verdicts

    def _needs_call(self, s: Subset) -> bool:
        answers = self._answers.get(s, [])
        real = [a for a in answers if a.verdict is not Verdict.SKIP]
        skips = len(answers) - len(real)
        if self.flaky == "bad" and any(a.verdict is Verdict.BAD for a in real):
            return False
        if len(real) >= self.repeat:
            return False
        return skips <= self.retries  # a SKIP is retried, at most ``retries`` times

    def _combine(self, answers: List[Judgement]) -> Tuple[Verdict, str]:
        real = [a for a in answers if a.verdict is not Verdict.SKIP]
        if not real:
            return Verdict.SKIP, answers[-1].detail if answers else ""
        bad = [a for a in real if a.verdict is Verdict.BAD]
        detail = next((a.detail for a in bad if a.detail), "") or real[-1].detail
        if bad and len(bad) < len(real):  # some runs failed, some passed
            note = f"flaky: {len(bad)} of {len(real)} answers bad"
            return (Verdict.BAD if self.flaky == "bad" else Verdict.SKIP), (f"{note}; {detail}" if detail else note)
        return (Verdict.BAD if bad else Verdict.GOOD), detail

    # -- progress ------------------------------------------------------------------------------
    def _report_progress(self, phase: str, chunk: List[Subset], remaining_here: int) -> None:
        if self.on_progress is None:
            return
        size = max(len(s) for s in chunk)
        estimate = len(self.steps) + remaining_here + 2 * math.ceil(math.log2(max(size, 1)))
        per_call = self.call_seconds / self.calls if self.calls else None
        self.on_progress(Progress(step=len(self.steps) + 1, estimate=max(estimate, len(self.steps) + 1),
                                  phase=phase, region=" | ".join(self._region(s) for s in chunk),
                                  seconds_per_call=per_call))

    def _region(self, s: Subset) -> str:
        return self.describe([self.candidates[i] for i in s])

    def _describe(self, items: List[Any]) -> str:
        n = len(self.candidates)
        if len(items) == 1:
            return f"{items[0]} (1 of {n})"
        return f"{items[0]} .. {items[-1]} ({len(items)} of {n})"


def _split(s: Subset, n: int) -> List[Subset]:
    """``s`` cut into ``n`` contiguous parts as equal as possible (the first ones one longer)."""
    size, extra = divmod(len(s), n)
    parts, start = [], 0
    for k in range(n):
        end = start + size + (1 if k < extra else 0)
        parts.append(s[start:end])
        start = end
    return [p for p in parts if p]


def find_minimal(candidates: Sequence[Any], oracle: Union[Oracle, Executor], *,
                 journal: Union[None, str, "os.PathLike[str]", Journal] = None,
                 context: Optional[Dict[str, Any]] = None, find_all: bool = False, repeat: int = 1,
                 retries: int = 0, flaky: str = "bad", on_error: str = "raise",
                 on_progress: Optional[Callable[[Progress], None]] = None,
                 describe: Optional[Callable[[List[Any]], str]] = None) -> SearchResult:
    """Search ``candidates`` for a minimal set the oracle judges BAD.

    ``oracle``: ``f(candidate_items[, device]) -> Verdict | bool (True: fails) | Judgement``, or an
    :class:`Executor` (e.g. ``LocalPool(f, devices=[0, 1])``).  ``journal``: a path (created, or
    resumed when it exists) or a :class:`Journal`.  ``on_error``: what an exception raised by a
    plain oracle means ("raise", "skip", "bad"); the isolated oracles of :mod:`trtdebug.debug.oracle`
    turn crashes into verdicts themselves.  Raises :class:`NotFailing` when the whole set passes.
    """
    executor = oracle if isinstance(oracle, Executor) else SerialExecutor(oracle, on_error=on_error)
    if journal is not None and not isinstance(journal, Journal):
        journal = Journal(journal, candidates, context)
    try:
        return Search(candidates, executor, journal=journal, repeat=repeat, retries=retries, flaky=flaky,
                      on_progress=on_progress, describe=describe).run(find_all=find_all)
    finally:
        if executor is not oracle:
            executor.close()
