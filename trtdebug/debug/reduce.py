"""``trtdebug debug reduce``: shrink a failing model to the smallest subgraph that still fails.

1. The model is sanitized once (input shapes frozen where known, constants folded, dead nodes
   dropped: :func:`trtdebug.debug.subgraph.sanitize`).
2. Where the oracle needs them, the true value of every tensor is computed once - a mark-all run
   of the reference backend - or read from ``load_outputs`` (e.g. the outputs of the model before
   it went wrong), with every input iteration.
3. The search (:mod:`trtdebug.debug.search`) asks the oracle about node subsets; each subset is
   cut out as its own model, written with its true inputs and reference outputs, and judged in a
   child process.  Answers go to ``OUT/journal.jsonl``: running the same command again resumes.
4. The repro bundle in ``OUT``: ``minimal.onnx``, ``inputs.npz``, ``reference/`` (its reference
   outputs), ``report.json`` and ``repro.sh`` (one command that shows the failure).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

from trtdebug.debug.oracle import Case, ModelOracle
from trtdebug.debug.search import LocalPool, Progress, SerialExecutor, find_minimal
from trtdebug.errors import UsageError

PathLike = Union[str, "os.PathLike[str]"]
REPORT = "report.json"
JOURNAL = "journal.jsonl"
_OURS = (REPORT, JOURNAL)


@dataclass
class ReduceResult:
    culprit_nodes: List[str]
    minimal_model: Path
    repro: str
    report: Dict[str, Any]
    out: Path


class _SubgraphJudge:
    """The search's oracle: cut the subset out, write it with its true values, ask the model oracle."""

    def __init__(self, cutter, oracle: ModelOracle, work: Path, feeds, reference) -> None:
        self.cutter, self.oracle, self.work = cutter, oracle, work
        self.feeds, self.reference = feeds, reference

    def __call__(self, candidate: Sequence[str], device: Optional[int]):
        where = Path(tempfile.mkdtemp(prefix="candidate-", dir=self.work))
        try:
            return self.oracle.judge(self.write_case(candidate, where), device)
        finally:
            shutil.rmtree(where, ignore_errors=True)

    def write_case(self, names: Sequence[str], where: Path) -> Case:
        """``where/model.onnx`` (+ ``inputs.npz`` and ``reference/`` when true values are known)."""
        from trtdebug.model import ModelGraph, save_model

        sub = self.cutter.cut(names, name="trtdebug_reduced")
        model_path = save_model(sub, where / "model.onnx")
        if self.reference is None:
            return Case(str(model_path))
        from trtdebug.debug.subgraph import true_values
        from trtdebug.inputs.io import save_inputs
        from trtdebug.results import OutputStore, RunResult, TensorSet, outputs_dir_problem
        from trtdebug.util.files import atomic_directory

        inputs, outputs = self.cutter.boundary(self.cutter.closure(names))
        inputs_path = save_inputs(where / "inputs.npz", true_values(inputs, self.feeds, self.reference))
        result = RunResult(runner="reference", iterations=[
            TensorSet({o: ref[o] for o in outputs if o in ref}) for ref in self.reference[:len(self.feeds)]])
        ref_dir = where / "reference"
        with atomic_directory(ref_dir, owned=outputs_dir_problem) as staging:
            store = OutputStore(staging, graph=ModelGraph(sub), model_path=str(model_path))
            store.add(result)
            store.write_index()
        return Case(str(model_path), str(inputs_path), str(ref_dir))


def reduce_model(
    model: PathLike,
    out: PathLike,
    *,
    oracle: ModelOracle,
    inputs: Union[None, PathLike, Sequence[Mapping[str, Any]]] = None,
    input_shapes: Optional[Mapping[str, Sequence[int]]] = None,
    iterations: Optional[int] = None,
    seed: Optional[int] = None,
    load_outputs: Optional[PathLike] = None,
    reference_backend: Optional[str] = None,
    fold: bool = True,
    devices: Optional[Sequence[Optional[int]]] = None,
    find_all: bool = False,
    repeat: int = 1,
    retries: int = 0,
    report: Optional[PathLike] = None,
    on_progress: Optional[Callable[[Progress], None]] = None,
    on_status: Optional[Callable[[str], None]] = None,
) -> ReduceResult:
    """Shrink ``model`` to a minimal set of nodes on which ``oracle`` still fails; write the bundle to ``out``.

    ``load_outputs``: saved mark-all outputs to use as the true values (their first runner), with
    ``inputs`` the feeds they were computed from; otherwise ``reference_backend`` (default: the
    oracle's, "ref" for an ONNX Runtime accuracy oracle) computes them on the sanitized model.
    ``devices``: one worker per id (``[0, 1]``), each candidate's child sees only its GPU.
    Raises :class:`~trtdebug.debug.search.NotFailing` (exit 2) when the whole model passes.
    """
    import trtdebug
    from trtdebug.debug.subgraph import Cutter, sanitize
    from trtdebug.model import load_model, save_model
    from trtdebug.util.files import check_output_paths, write_text_atomic

    status = on_status or (lambda msg: None)
    start = time.perf_counter()
    out = Path(out)
    _check_out(out)
    check_output_paths({"--out": out, "--report": report},
                       [model, inputs if isinstance(inputs, (str, os.PathLike)) else None, load_outputs])
    if load_outputs is not None and inputs is None:
        raise UsageError("--load-outputs needs --load-inputs: the inputs those outputs were computed from")

    status("loading and sanitizing the model")
    original = load_model(model)
    feeds = _load_feeds(inputs, iterations)
    freeze = dict(input_shapes or {}) or _common_shapes(feeds)
    sanitized, notes = sanitize(original, input_shapes=freeze, fold=fold)

    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".trtdebug-reduce-", dir=out))
    outcome = None
    try:
        reference = None
        if oracle.needs_reference:
            if load_outputs is not None:
                from trtdebug.results import load_outputs as read_outputs

                loaded = read_outputs(load_outputs)
                if not loaded.results:
                    raise UsageError(f"{load_outputs} holds no runner results")
                reference = loaded.results[0].iterations
                if len(reference) < len(feeds):
                    raise UsageError(f"{load_outputs} holds {len(reference)} iteration(s) but the inputs hold {len(feeds)}")
                notes.append(f"true values from {load_outputs} (runner {loaded.results[0].runner})")
            else:
                backend = reference_backend or oracle.reference_backend
                status(f"computing the true value of every tensor once ({backend})")
                outcome = trtdebug.run(sanitized, backends=(backend,), mark_all=True, inputs=feeds or None,
                                       input_shapes=input_shapes, iterations=None if feeds else iterations, seed=seed)
                reference, feeds = outcome.results[0].iterations, outcome.feeds
                notes.append(f"true values computed with {backend} on {len(feeds)} input set(s)")
        dtypes = {}
        if reference is not None:
            dtypes = {n: reference[0][n].dtype for n in reference[0]}
            dtypes.update({n: a.dtype for n, a in feeds[0].items()})
        available = None if reference is None else set(dtypes)
        cutter = Cutter(sanitized, available=available, dtypes=dtypes)
        judge = _SubgraphJudge(cutter, oracle, work, feeds, reference)
        executor = (LocalPool(judge, devices) if devices and len(devices) > 1
                    else SerialExecutor(judge, device=devices[0] if devices else None))
        context = {"model_sha256": _digest(sanitized), "oracle": oracle.describe(),
                   "reference": str(load_outputs or reference_backend or ""), "inputs": _feeds_digest(feeds)}
        status(f"searching {len(cutter.candidates)} nodes")
        result = find_minimal(cutter.candidates, executor, journal=out / JOURNAL, context=context, find_all=find_all,
                              repeat=repeat, retries=retries, on_progress=on_progress)

        culprits = cutter.closure([c for s in result.culprit_sets for c in s])
        status("writing the repro bundle")
        case = judge.write_case(culprits, work)
        minimal = out / "minimal.onnx"
        save_model(load_model(case.model, infer_shapes=False), minimal)
        bundle = Case("minimal.onnx")
        if case.inputs is not None:
            _move_into(Path(case.inputs), out / "inputs.npz")
            _move_into(Path(case.reference), out / "reference")
            bundle = Case("minimal.onnx", "inputs.npz", "reference")
        repro = oracle.repro(bundle)
        write_text_atomic(out / "repro.sh", f'#!/bin/sh\ncd "$(dirname "$0")" && {repro}\n')
        os.chmod(out / "repro.sh", 0o755)

        ops = {n.name: n.op_type for n in cutter.graph.nodes}
        data = {
            "command": "reduce", "model": str(model), "oracle": oracle.describe(),
            "culprit_nodes": culprits, "culprit_ops": [ops[c] for c in culprits],
            "culprit_sets": result.culprit_sets, "culprit_tactics": [],
            "minimal_model": str(minimal), "repro": repro, "candidates": len(cutter.candidates),
            "oracle_calls": result.oracle_calls, "reused_verdicts": result.reused,
            "builds": result.oracle_calls if oracle.builds else 0,
            "steps": [s.__dict__ for s in result.steps], "seconds": round(time.perf_counter() - start, 3),
            "notes": notes,
        }
        import json

        text = json.dumps(data, indent=2) + "\n"
        write_text_atomic(out / REPORT, text)
        if report is not None:
            write_text_atomic(report, text)
        return ReduceResult(culprits, minimal, repro, data, out)
    finally:
        if outcome is not None:
            outcome.close()
        shutil.rmtree(work, ignore_errors=True)


def _check_out(out: Path) -> None:
    """``out`` is new, empty, or an earlier reduce directory (then its journal is resumed)."""
    if out.exists():
        if not out.is_dir():
            raise UsageError(f"--out {out} exists and is not a directory")
        if any(out.iterdir()) and not any((out / m).exists() for m in _OURS):
            raise UsageError(f"--out {out} is not empty and not an earlier 'trtdebug debug reduce' directory; "
                             "refusing to write into it")


def _load_feeds(inputs, iterations: Optional[int]) -> List[Dict[str, Any]]:
    if inputs is None:
        return []
    if isinstance(inputs, (str, os.PathLike)):
        from trtdebug.inputs.io import load_inputs

        feeds = load_inputs(inputs)
    else:
        feeds = [dict(f) for f in inputs]
    return feeds[:iterations] if iterations else feeds


def _common_shapes(feeds) -> Dict[str, tuple]:
    """Input shapes to freeze: those every iteration shares (iterations of different shapes keep the model dynamic)."""
    if not feeds:
        return {}
    shapes = {n: tuple(a.shape) for n, a in feeds[0].items()}
    return {n: s for n, s in shapes.items() if all(n in f and tuple(f[n].shape) == s for f in feeds)}


def _digest(model) -> str:
    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()


def _feeds_digest(feeds) -> str:
    h = hashlib.sha256()
    for feed in feeds:
        for name in sorted(feed):
            h.update(name.encode())
            h.update(memoryview(feed[name].tobytes()))
    return h.hexdigest()


def _move_into(src: Path, dest: Path) -> None:
    """Put ``src`` at ``dest``, replacing an earlier bundle's file or directory of that name."""
    if dest.is_dir() and not dest.is_symlink():
        old = dest.with_name(f".{dest.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dest, old)
        os.replace(src, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dest)
