"""``trtdebug debug unsupported``: which nodes keep TensorRT from building the model, and why.

The parser's capability report (:mod:`trtdebug.runners.tensorrt.capability`) is cheap - no
build - but it only knows what the ONNX parser rejects.  Many failures come later: the parser
accepts a TopK whose K exceeds the builder's limit, a strided *and* dilated ConvTranspose that
no kernel implements, a tensor past the element-count limit; the builder then fails on the whole
model with one error, often naming no node.  So, in order of cost:

1. **sanitize** (freeze input shapes, fold constants): building any piece of the model needs
   static shapes for its boundary tensors, which shape inference then knows;
2. **parser** - the capability pass, in a child process (a crashing parser becomes a note, and
   the whole model goes to the build pass): nodes it rejects are culprits, with its reasons;
3. **build** - every subgraph the parser accepts is built, each in a child with a timeout
   (:class:`~trtdebug.debug.oracle.TrtBuildFails`: a crash or hang is a verdict).  One that builds
   is a maximal buildable subgraph.  One that fails is explained by
   - **build error**: the nodes TensorRT's error names (its layers carry the ONNX node names),
     each confirmed by building it alone and the subgraph without it (2 builds per node);
   - **bisection**: what still fails is searched with :func:`~trtdebug.debug.search.find_minimal`
     (``find_all``), one journal per subgraph, so a killed run resumes where it stopped.
4. **bundle** in ``OUT``: ``failing_<i>.onnx`` (each culprit set cut out: its minimal failing
   model), ``buildable_<i>.onnx`` (what builds, in topological runs), ``unsupported.json`` and
   ``repro.sh`` (one command per failing model).

Every subset is cut with the natural boundary of the full model (its outputs are the tensors
the rest of the model or the user reads), so TensorRT builds the same layers it would in place.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from trtdebug.debug.oracle import Case, ModelOracle, TrtBuildFails
from trtdebug.debug.search import Journal, Judgement, NotFailing, Progress, SerialExecutor, Step, Verdict, find_minimal
from trtdebug.errors import BackendError, UsageError

PathLike = Union[str, "os.PathLike[str]"]
REPORT = "unsupported.json"
MARKER = ".trtdebug-unsupported"
PARSER, BUILD_ERROR, BISECTION = "parser", "build error", "bisection"
_NAMED_LIMIT = 3  # nodes named by one build error that are tried alone


@dataclass
class UnsupportedResult:
    """What :func:`find_unsupported` found; ``report`` is what ``unsupported.json`` holds."""

    culprit_nodes: List[str]
    report: Dict[str, Any]
    out: Path
    repro: Optional[str] = None
    failing: List[Path] = field(default_factory=list)
    buildable: List[Path] = field(default_factory=list)


class _Region:
    """One subgraph the parser accepts, to be built; its answers go to its own journal."""

    def __init__(self, index: int, nodes: List[str], journal: Journal) -> None:
        self.index, self.nodes, self.journal = index, nodes, journal
        self.position = {n: i for i, n in enumerate(nodes)}

    def key(self, names: Sequence[str]) -> Tuple[int, ...]:
        return tuple(sorted(self.position[n] for n in names))


class _Builds:
    """Cuts node subsets with the full model's boundary and asks the build oracle, each in a child."""

    def __init__(self, model, oracle: ModelOracle, work: Path) -> None:
        from trtdebug.debug.subgraph import Cutter

        self.cutter = Cutter(model)  # no true values: a cut reads its boundary tensors as inputs
        self.graph = self.cutter.graph
        self.oracle, self.work = oracle, work
        self.calls = 0
        self.steps: List[Step] = []

    def cut(self, names: Sequence[str], *, name: str = "subgraph"):
        """The nodes ``names`` as a model whose outputs are what the rest of the model (or the user) reads."""
        from trtdebug.runners.tensorrt.capability import subgraph_io

        names = self.cutter.closure(names)  # topological order
        sub = self.cutter.cut(names, name=name)
        keep = set(subgraph_io(self.graph, names)[1])
        outputs = [o for o in sub.graph.output if o.name in keep]
        del sub.graph.output[:]
        sub.graph.output.extend(outputs)
        return sub

    def __call__(self, names: Sequence[str], device: Optional[int] = None) -> Judgement:
        from trtdebug.model import save_model

        where = Path(tempfile.mkdtemp(prefix="candidate-", dir=self.work))
        try:
            path = save_model(self.cut(names, name="trtdebug_candidate"), where / "model.onnx")
            self.calls += 1
            return self.oracle.judge(Case(str(path)), device)
        finally:
            shutil.rmtree(where, ignore_errors=True)

    def ask(self, region: _Region, names: Sequence[str], phase: str) -> Judgement:
        """The verdict on ``names`` (from the region's journal when it has one; else built and journaled)."""
        key = region.key(names)
        known = [a for a in region.journal.answers.get(key, []) if a.verdict is not Verdict.SKIP]
        answer = known[-1] if known else None
        if answer is None:
            answer = self(names)
            region.journal.record(key, answer)
        answer = Judgement(answer.verdict, _reason(answer.detail), answer.seconds)
        self.steps.append(Step(step=len(self.steps) + 1, phase=phase, region=_describe(names, region.nodes),
                               size=len(names), verdict=answer.verdict.value, detail=answer.detail,
                               seconds=round(answer.seconds, 3), calls=0 if known else 1))
        return answer


def find_unsupported(
    model: PathLike,
    out: PathLike,
    *,
    module: str = "tensorrt",
    trt_options: Optional[Mapping[str, Any]] = None,
    input_shapes: Optional[Mapping[str, Sequence[int]]] = None,
    fold: bool = True,
    timeout: Optional[float] = 600.0,
    on_crash: str = "bad",
    oracle: Optional[ModelOracle] = None,
    checker=None,
    report: Optional[PathLike] = None,
    on_status: Optional[Callable[[str], None]] = None,
    on_progress: Optional[Callable[[Progress], None]] = None,
) -> UnsupportedResult:
    """Find the nodes of ``model`` that TensorRT cannot parse or build; write the bundle to ``out``.

    ``module``: ``tensorrt`` or ``tensorrt_rtx``; ``trt_options``: other
    :class:`~trtdebug.runners.tensorrt.TrtBuildConfig` fields for every build (e.g.
    ``builder_optimization_level=0`` builds fastest).  ``on_crash``: a build that crashes or hangs
    past ``timeout`` seconds counts as failing ("bad", the default) or as no answer ("skip").
    ``oracle`` / ``checker`` replace the build oracle and the parser's
    :class:`~trtdebug.runners.tensorrt.capability.SupportChecker` (tests, other judges).
    Raises :class:`~trtdebug.debug.search.NotFailing` (exit 2) when the whole model builds.
    """
    from trtdebug.debug.subgraph import sanitize
    from trtdebug.model import load_model, save_model
    from trtdebug.util.files import check_output_paths

    status = on_status or (lambda msg: None)
    start = time.perf_counter()
    out = Path(out)
    _check_out(out)
    check_output_paths({"--out": out, "--report": report}, [model])
    options = {"module": module, **dict(trt_options or {})}
    oracle = oracle or TrtBuildFails(trt_options=options, timeout=timeout, on_crash=on_crash)

    status("loading and sanitizing the model")
    sanitized, notes = sanitize(load_model(model), input_shapes=input_shapes, fold=fold)
    _require_static_inputs(sanitized)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".trtdebug-unsupported-", dir=out))
    try:
        sanitized_path = save_model(sanitized, work / "sanitized.onnx")
        builds = _Builds(sanitized, oracle, work)
        order = builds.cutter.candidates

        status("asking the ONNX parser which nodes it supports")
        capability = _capability(sanitized, sanitized_path, module, checker, timeout, notes)
        culprits: List[Dict[str, Any]] = []
        if capability is None:
            regions_nodes = [list(order)]
        else:
            for row in capability["summary"]:
                for node in row["nodes"]:
                    culprits.append({"nodes": [node], "operator": row["operator"], "reason": row["reason"],
                                     "method": PARSER})
            regions_nodes = [sg["nodes"] for sg in capability["supported_subgraphs"]]

        context = {"model_sha256": hashlib.sha256(sanitized.SerializeToString(deterministic=True)).hexdigest(),
                   "oracle": oracle.describe()}
        buildable: List[Tuple[List[str], bool]] = []  # (nodes, that exact set was built)
        for k, nodes in enumerate(regions_nodes):
            region = _Region(k, list(nodes), Journal(out / f"journal-{k}.jsonl", nodes, context))
            status(f"building subgraph {k + 1} of {len(regions_nodes)} ({len(nodes)} nodes)")
            found, rest_built = _explain_region(region, builds, on_progress, status)
            if not found and not rest_built:
                notes.append(f"subgraph {k} ({_describe(nodes, order)}) could not be judged: {builds.steps[-1].detail}")
                continue
            culprits += found
            bad = {n for c in found for n in c["nodes"]}
            rest = [n for n in region.nodes if n not in bad]
            runs = _runs(rest, bad, region.nodes)
            buildable += [(run, rest_built and len(runs) == 1) for run in runs]
        if not culprits:
            raise NotFailing("TensorRT parses and builds every subgraph of the model: nothing unsupported"
                             + (f" ({'; '.join(notes)})" if notes else ""))

        status("writing the bundle")
        ops = {n.name: n.op_type for n in builds.graph.nodes}
        data = _write_bundle(out, builds, oracle, culprits, buildable, ops, report, {
            "command": "unsupported", "model": str(model), "oracle": oracle.describe(), "module": module,
            "capability": None if capability is None else {
                "fully_supported": capability["fully_supported"], "api": capability["api"],
                "product": capability["product"], "tensorrt_version": capability["tensorrt_version"],
                "unsupported_nodes": capability["num_unsupported_nodes"]},
            "candidates": len(order), "oracle_calls": builds.calls,
            "builds": builds.calls if oracle.builds else 0, "steps": [s.__dict__ for s in builds.steps],
            "notes": notes, "start": start,
        })
        return UnsupportedResult(culprit_nodes=data["culprit_nodes"], report=data, out=out, repro=data["repro"],
                                 failing=[out / f["file"] for f in data["failing"] if f["file"]],
                                 buildable=[out / b["file"] for b in data["buildable"] if b["file"]])
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _explain_region(region: _Region, builds: _Builds, on_progress, status) -> Tuple[List[Dict[str, Any]], bool]:
    """Culprits of one parser-accepted region, and whether the region without them was built."""
    whole = builds.ask(region, region.nodes, "build")
    if whole.verdict is not Verdict.BAD:
        return [], whole.verdict is Verdict.GOOD
    found: List[Dict[str, Any]] = []
    remaining = list(region.nodes)
    for node in _named_nodes(whole.detail, region.nodes)[:_NAMED_LIMIT]:
        status(f"building {node}, which TensorRT's error names, alone")
        alone = builds.ask(region, [node], "named")
        if alone.verdict is Verdict.BAD:
            found.append({"nodes": [node], "reason": alone.detail, "method": BUILD_ERROR})
            remaining.remove(node)
    if found:
        if not remaining:
            return found, False
        status(f"building subgraph {region.index + 1} without {', '.join(c['nodes'][0] for c in found)}")
        rest = builds.ask(region, remaining, "rest")
        if rest.verdict is Verdict.GOOD:
            return found, True
        if rest.verdict is Verdict.SKIP:
            return found, False
    status(f"bisecting {len(remaining)} nodes")
    journal = _sub_journal(region, remaining)
    result = find_minimal(remaining, SerialExecutor(lambda names: builds(names)), journal=journal,
                          find_all=True, on_progress=on_progress,
                          describe=lambda items: _describe(items, region.nodes))
    builds.steps += [Step(**{**s.__dict__, "step": len(builds.steps) + i + 1})
                     for i, s in enumerate(result.steps)]
    position = {n: i for i, n in enumerate(remaining)}
    for names in result.culprit_sets:
        answers = journal.answers.get(tuple(sorted(position[n] for n in names)), [])
        bad = [a.detail for a in answers if a.verdict is Verdict.BAD and a.detail]
        found.append({"nodes": list(names), "reason": _reason(bad[-1]) if bad else "fails to build (no error text)",
                      "method": BISECTION})
    # find_all stops when the rest passes (built) or nothing is left
    last = result.steps[-1] if result.steps else None
    return found, bool(last and last.phase == "rest" and last.verdict == Verdict.GOOD.value)


def _sub_journal(region: _Region, remaining: List[str]) -> Journal:
    """The search's journal over ``remaining``: the region's own when nothing was removed, else a file of its
    own, told (in memory) what the region's journal already knows about subsets of ``remaining``."""
    if remaining == region.nodes:
        return region.journal
    path = region.journal.path.with_name(region.journal.path.stem + "-rest.jsonl")
    journal = Journal(path, remaining, region.journal.header["context"])
    position = {n: i for i, n in enumerate(remaining)}
    for key, answers in region.journal.answers.items():
        names = [region.nodes[i] for i in key]
        if all(n in position for n in names):
            sub = tuple(sorted(position[n] for n in names))
            journal.answers.setdefault(sub, list(answers))
    return journal


def _reason(detail: str) -> str:
    """TensorRT's own words: the oracle's line without our prefix."""
    for prefix in ("TensorRT engine build failed: ",):
        if detail.startswith(prefix):
            return detail[len(prefix):]
    return detail


def _named_nodes(text: str, nodes: Sequence[str]) -> List[str]:
    """Nodes of ``nodes`` whose names appear in ``text`` as whole names (TensorRT names layers after them)."""
    named = []
    for node in sorted(nodes, key=len, reverse=True):  # 'conv_1' before 'conv'
        if node and re.search(r"(?<![\w./:-])" + re.escape(node) + r"(?![\w./-])", text):
            if not any(node in other for other in named):
                named.append(node)
    return sorted(named, key=list(nodes).index)


def _runs(rest: Sequence[str], bad: set, order: Sequence[str]) -> List[List[str]]:
    """``rest`` cut at the culprits into runs of consecutive nodes (topological order)."""
    runs: List[List[str]] = []
    current: List[str] = []
    keep = set(rest)
    for n in order:
        if n in keep:
            current.append(n)
        elif n in bad and current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


def _describe(items: Sequence[str], nodes: Sequence[str]) -> str:
    if len(items) == 1:
        return f"{items[0]} (1 of {len(nodes)})"
    return f"{items[0]} .. {items[-1]} ({len(items)} of {len(nodes)})"


# -- the parser's view ------------------------------------------------------------------------------
def _capability(model, path: Path, module: str, checker, timeout: Optional[float], notes: List[str]
                ) -> Optional[Dict[str, Any]]:
    """The capability report as a dict, or None (with a note) when the parser could not give one."""
    if checker is not None:
        from trtdebug.runners.tensorrt.capability import analyze_capability

        return analyze_capability(model, checker).to_dict()
    from trtdebug.isolation import OK, RAISED, run_isolated

    outcome = run_isolated(_capability_child, str(path), module, timeout=timeout)
    if outcome.kind == OK:
        return outcome.value
    if outcome.kind == RAISED and outcome.exc_type and outcome.exc_type.endswith("BackendUnavailableError"):
        raise BackendError(outcome.message or "TensorRT is not available")
    notes.append(f"the ONNX parser's capability check {outcome.describe()}; every node was checked by building")
    return None


def _capability_child(path: str, module: str) -> Dict[str, Any]:
    from trtdebug.inspect.capability import inspect_capability

    return inspect_capability(path, module=module).to_dict()


def _require_static_inputs(model) -> None:
    dynamic = []
    for vi in model.graph.input:
        dims = vi.type.tensor_type.shape.dim
        if any(not d.HasField("dim_value") for d in dims):
            dynamic.append(f"{vi.name}:[{','.join(str(d.dim_value) if d.HasField('dim_value') else '?' for d in dims)}]")
    if dynamic:
        raise UsageError(f"input(s) {', '.join(dynamic)} have dynamic shapes; building pieces of the model needs "
                         f"static ones: give --input-shapes, e.g. {dynamic[0].split(':')[0]}:[1,...]")


# -- the bundle -------------------------------------------------------------------------------------
def _write_bundle(out: Path, builds: _Builds, oracle: ModelOracle, culprits, buildable, ops, report, base
                  ) -> Dict[str, Any]:
    from trtdebug.model import save_model
    from trtdebug.runners.tensorrt.capability import subgraph_io
    from trtdebug.util.files import write_text_atomic

    _remove_earlier_models(out)
    failing, repros = [], []
    for i, c in enumerate(culprits):
        c["operator"] = c.get("operator") or ", ".join(dict.fromkeys(ops[n] for n in c["nodes"]))
        file = f"failing_{i}.onnx"
        try:
            save_model(builds.cut(c["nodes"], name=f"failing_{i}"), out / file)
        except Exception as exc:  # noqa: BLE001 - e.g. an untyped boundary after a custom op: say so, keep going
            c["note"], file = f"not saved: {exc}", None
        c["file"] = file
        c["repro"] = oracle.repro(Case(file)) if file else None
        if file:
            repros.append(c["repro"])
        ins, outs = subgraph_io(builds.graph, c["nodes"])
        failing.append({**c, "inputs": ins, "outputs": outs})
    pieces = []
    for i, (nodes, built) in enumerate(buildable):
        file, note = f"buildable_{i}.onnx", None
        try:
            save_model(builds.cut(nodes, name=f"buildable_{i}"), out / file)
        except Exception as exc:  # noqa: BLE001 - as for the failing ones
            file, note = None, f"not saved: {exc}"
        ins, outs = subgraph_io(builds.graph, nodes)
        pieces.append({"file": file, "nodes": nodes, "built": built, "inputs": ins, "outputs": outs, "note": note})
    rows: Dict[Tuple[str, str, str], Dict[str, Any]] = {}
    for c in failing:
        key = (c["operator"], c["reason"], c["method"])
        row = rows.setdefault(key, {"operator": c["operator"], "count": 0, "reason": c["reason"],
                                    "method": c["method"], "nodes": []})
        row["count"] += len(c["nodes"])
        row["nodes"] += c["nodes"]
    culprit_nodes = [n for c in failing for n in c["nodes"]]
    first = next((c for c in failing if c["file"]), None)
    start = base.pop("start")
    data = {**base, "out": str(out), "culprit_nodes": culprit_nodes, "culprit_ops": [ops[n] for n in culprit_nodes],
            "culprit_tactics": [], "summary": list(rows.values()), "failing": failing, "buildable": pieces,
            "minimal_model": str(out / first["file"]) if first else None, "repro": first["repro"] if first else None,
            "seconds": round(time.perf_counter() - start, 3)}
    write_text_atomic(out / MARKER, "trtdebug debug unsupported output; its models are replaced by the next run\n")
    if repros:
        write_text_atomic(out / "repro.sh", '#!/bin/sh\n# each line shows one failure\ncd "$(dirname "$0")" || exit 2\n'
                          + "".join(r + "\n" for r in repros))
        os.chmod(out / "repro.sh", 0o755)
    text = json.dumps(data, indent=2) + "\n"
    write_text_atomic(out / REPORT, text)
    if report is not None:
        write_text_atomic(report, text)
    return data


def _remove_earlier_models(out: Path) -> None:
    """Models an earlier run of ours left (listed in its report), so the bundle holds only this run's."""
    try:
        old = json.loads((out / REPORT).read_text(encoding="utf-8"))
        files = [e.get("file") for e in list(old.get("failing", [])) + list(old.get("buildable", []))]
    except (OSError, ValueError, TypeError, AttributeError):
        return
    for name in files:
        if isinstance(name, str) and re.fullmatch(r"(failing|buildable)_\d+\.onnx", name):
            for p in (out / name, out / (name + ".data")):
                if p.is_file():
                    p.unlink()


def _check_out(out: Path) -> None:
    """``out`` is new, empty, or an earlier unsupported directory (its journals are resumed)."""
    if out.exists():
        if not out.is_dir():
            raise UsageError(f"--out {out} exists and is not a directory")
        if any(out.iterdir()) and not (out / MARKER).exists() and not any(out.glob("journal-*.jsonl")):
            raise UsageError(f"--out {out} is not empty and not an earlier 'trtdebug debug unsupported' directory; "
                             "refusing to write into it")


def render_unsupported(data: Mapping[str, Any], console=None) -> None:
    """The console view of a report: one row per (operator, reason, method), then the files and the repro."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = console or Console()
    n = len(data["culprit_nodes"])
    console.print(f"{n} node(s) of {data['candidates']} keep TensorRT from building {data['model']} "
                  f"({data['builds']} build(s), {data['seconds']:.1f}s)", markup=False)
    for c in data["failing"]:
        console.print(f"culprit: {', '.join(c['nodes'])} ({c['operator']}, found by {c['method']})", markup=False)
    table = Table(show_edge=False, show_lines=True)
    for col in ("operator", "count", "method", "reason", "nodes"):
        table.add_column(col, overflow="fold", justify="right" if col == "count" else "left")
    for row in data["summary"]:
        table.add_row(Text(row["operator"]), str(row["count"]), Text(row["method"]), Text(row["reason"]),
                      Text(", ".join(row["nodes"])))
    console.print(table)
    out = Path(data.get("out") or ".")
    for kind in ("failing", "buildable"):
        files = [e["file"] for e in data[kind] if e.get("file")]
        if files:
            console.print(f"{kind}: {', '.join(files)}", markup=False)
    for note in data.get("notes", []):
        console.print(f"note: {note}", markup=False)
    if data.get("repro"):
        console.print(f"reproduce: {shlex.quote(str(out / 'repro.sh'))}  ({data['repro']})", markup=False)
