"""Which ONNX nodes TensorRT's ONNX parser supports, as subgraphs, with the parser's reasons.

How the parser answers (the same on TensorRT 8.6, 10.x and 11.x; only the API differs):

* ``supports_model(bytes, path)`` (8.x-10.x; removed in 11) returns ``(ok, [(node_indices, flag), ...])``;
  ``supports_model_v2(bytes, path)`` (10.1+) returns ``ok`` and the same list through
  ``num_subgraphs`` / ``get_nb_subgraphs()``, ``is_subgraph_supported(i)`` and ``get_subgraph_nodes(i)``.
* The listed subgraphs hold the *candidate* nodes, in the parser's topological order; nodes the
  parser rejected are the gaps between them.  A flag is ``True`` only when the whole model parsed;
  otherwise every flag is ``False``, meaning "not proven": the parser stops at the first failing
  node, so later nodes were only checked against its operator registry.
* Hence the recursion Polygraphy's ``inspect capability`` uses: cut each unproven subgraph out as a
  model of its own and ask again, until every piece either parses or shrinks to its gaps.  The
  reasons come from parsing each unsupported piece (``parser.get_error(i)``), then each of its
  nodes that no error named.

The logic is pure and takes a :class:`SupportChecker` (one method), so CPU tests drive it with a
fake; :func:`tensorrt_checker` builds the real one (TensorRT is imported only there).
"""
from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from trtdebug.errors import BackendError, UsageError
from trtdebug.runners.tensorrt.parser_errors import ParserIssue, op_label, parser_issues, resolve_issue

log = logging.getLogger(__name__)

MARKER = ".trtdebug-capability"
REPORT_NAME = "capability.json"
API_V1 = "supports_model"
API_V2 = "supports_model_v2"
NO_ERROR_REASON = ("rejected by the parser's supports_model, but parsing it alone reports no error "
                   "(the parser's operator support check excludes this op)")


# -- what a checker returns ------------------------------------------------------------------------
@dataclass(frozen=True)
class SupportCheck:
    """The parser's answer for one model: overall verdict, candidate subgraphs, errors."""

    supported: bool
    subgraphs: List[Tuple[List[int], bool]]
    errors: List[ParserIssue] = field(default_factory=list)


class SupportChecker:
    """Interface: ``check(model) -> SupportCheck`` for an ``onnx.ModelProto``."""

    api: str = API_V1
    version: Optional[str] = None
    product: str = "TensorRT"  # or "TensorRT-RTX"
    notes: Sequence[str] = ()  # what the report should say about this library

    def check(self, model) -> SupportCheck:  # pragma: no cover - interface
        raise NotImplementedError


# -- the report --------------------------------------------------------------------------------------
@dataclass
class Subgraph:
    index: int
    supported: bool
    nodes: List[str]
    ops: Dict[str, int]
    inputs: List[str]
    outputs: List[str]
    verified: bool = True  # False: the parser accepted these nodes, but they could not be re-checked alone
    errors: List[ParserIssue] = field(default_factory=list)
    file: Optional[str] = None
    note: Optional[str] = None
    position: int = 0  # topological index of its first node, to list subgraphs in model order

    @property
    def kind(self) -> str:
        return "supported" if self.supported else "unsupported"

    @property
    def file_name(self) -> str:
        return f"{self.kind}_{self.index}.onnx"

    def to_dict(self) -> Dict[str, Any]:
        return {
            "index": self.index, "supported": self.supported, "verified": self.verified, "file": self.file,
            "nodes": list(self.nodes), "ops": dict(self.ops), "inputs": list(self.inputs),
            "outputs": list(self.outputs), "errors": [e.to_dict() for e in self.errors], "note": self.note,
            "position": self.position,
        }


@dataclass
class SummaryRow:
    operator: str
    count: int
    reason: str
    nodes: List[str]

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass
class CapabilityReport:
    fully_supported: bool
    num_nodes: int
    supported: List[Subgraph]
    unsupported: List[Subgraph]
    rows: List[SummaryRow]
    api: str = API_V1
    tensorrt_version: Optional[str] = None
    product: str = "TensorRT"
    model_path: Optional[str] = None
    out_dir: Optional[str] = None
    notes: List[str] = field(default_factory=list)

    @property
    def unsupported_nodes(self) -> List[str]:
        return [n for s in self.unsupported for n in s.nodes]

    def to_dict(self) -> Dict[str, Any]:
        return {
            "model": self.model_path, "product": self.product, "tensorrt_version": self.tensorrt_version,
            "api": self.api,
            "fully_supported": self.fully_supported, "num_nodes": self.num_nodes,
            "num_unsupported_nodes": len(self.unsupported_nodes), "out_dir": self.out_dir,
            "summary": [r.to_dict() for r in self.rows],
            "supported_subgraphs": [s.to_dict() for s in self.supported],
            "unsupported_subgraphs": [s.to_dict() for s in self.unsupported],
            "notes": list(self.notes),
        }


# -- pure helpers ---------------------------------------------------------------------------------------
def ensure_unique_node_names(model) -> Tuple[Any, Dict[str, str]]:
    """``model`` itself when node names are unique, else a copy with duplicates renamed (``name__1``).

    Subgraphs are tracked by node name, so names must be unique; the map says what was renamed.
    """
    seen: Set[str] = set()
    dup = False
    for n in model.graph.node:
        if not n.name or n.name in seen:
            dup = True
            break
        seen.add(n.name)
    if not dup:
        return model, {}
    copy = type(model)()
    copy.CopyFrom(model)
    taken = {n.name for n in copy.graph.node if n.name}
    used: Set[str] = set()
    renamed: Dict[str, str] = {}
    for i, n in enumerate(copy.graph.node):
        base = n.name or f"{n.op_type}_{i}"
        name = base
        k = 0
        while name in used or (name != n.name and name in taken):
            k += 1
            name = f"{base}__{k}"
        if name != n.name:
            renamed[name] = n.name
            n.name = name
        used.add(name)
    return copy, renamed


def subgraph_io(graph, names: Sequence[str]) -> Tuple[List[str], List[str]]:
    """Inputs and outputs of the subgraph made of the nodes ``names`` of ``graph`` (a ModelGraph).

    Inputs: tensors its nodes read that are produced outside it and are not initializers.
    Outputs: tensors it produces that are graph outputs or read outside it; a node none of whose
    outputs qualify keeps its first output, so that extraction does not drop it.
    """
    from trtdebug.model.graph import _implicit_inputs

    members = set(names)
    nodes = [n for n in graph.nodes if n.name in members]
    produced: Set[str] = {o for n in nodes for o in n.output if o}
    graph_outputs = set(graph.output_names)
    inputs: List[str] = []
    for n in nodes:
        for t in list(n.input) + _implicit_inputs(n):
            if t and t not in produced and t not in graph.initializer_names and t not in inputs:
                inputs.append(t)
    outputs: List[str] = []
    for n in nodes:
        kept = False
        for o in n.output:
            if not o:
                continue
            used_outside = any(c.name not in members for c in graph.consumers.get(o, ()))
            if o in graph_outputs or used_outside:
                outputs.append(o)
                kept = True
        if not kept:
            consumed_inside = any(o and graph.consumers.get(o) for o in n.output)
            if not consumed_inside:
                first = next((o for o in n.output if o), None)
                if first is not None:
                    outputs.append(first)
    return inputs, outputs


def extract_nodes(model, graph, names: Sequence[str], *, name: Optional[str] = None):
    """The nodes ``names`` cut out as a standalone model (``UsageError`` if it cannot be typed)."""
    from trtdebug.model import extract_subgraph

    inputs, outputs = subgraph_io(graph, names)
    if not outputs:
        raise UsageError("the subgraph has no outputs")
    typed = _typed_tensors(model)
    untyped = [t for t in inputs + outputs if t not in typed]
    if untyped:
        producers = {t: graph.tensor(t).producer_op for t in untyped if t in graph}
        detail = ", ".join(f"{t!r}" + (f" (output of {producers[t]})" if producers.get(t) else "") for t in untyped[:3])
        raise UsageError(f"boundary tensor(s) {detail} have no known dtype (ONNX shape inference could not type them)")
    return extract_subgraph(model, inputs, outputs, name=name)


def _typed_tensors(model) -> Set[str]:
    g = model.graph
    typed = {t.name for t in g.initializer}
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            typed.add(vi.name)
    return typed


def _runs(order: Sequence[str], members: Set[str]) -> List[List[str]]:
    """Maximal runs of consecutive nodes of ``order`` that are in ``members``."""
    runs: List[List[str]] = []
    current: List[str] = []
    for n in order:
        if n in members:
            current.append(n)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


def _names_of(check: SupportCheck, node_names: Sequence[str]) -> List[Tuple[List[str], bool]]:
    out = []
    for indices, ok in check.subgraphs:
        names = [node_names[i] for i in indices if 0 <= int(i) < len(node_names)]
        if names:
            out.append((names, bool(ok)))
    return out


# -- the analysis ---------------------------------------------------------------------------------------
def analyze_capability(model, checker: SupportChecker, *, graph=None, max_depth: int = 64,
                       max_node_diagnoses: int = 256, progress: Optional[Callable[[str], None]] = None) -> CapabilityReport:
    """Partition ``model`` into subgraphs TensorRT's parser supports and ones it does not.

    ``model`` should come from :func:`trtdebug.model.load_model` (named nodes, inferred shapes: the
    extracted subgraphs need typed inputs).
    """
    from trtdebug.model.graph import ModelGraph

    say = progress or (lambda msg: None)
    notes: List[str] = []
    model, renamed = ensure_unique_node_names(model)
    if renamed:
        graph = None
        notes.append(f"{len(renamed)} node(s) had duplicate or empty names and were renamed for this report "
                     f"(e.g. {next(iter(renamed))!r})")
    graph = graph or ModelGraph(model)
    order = graph.node_names
    by_name = {n.name: n for n in graph.nodes}
    file_names = [n.name for n in model.graph.node]

    product = getattr(checker, "product", "TensorRT")
    say(f"checking the model with the {product} ONNX parser")
    top = checker.check(model)
    report = CapabilityReport(fully_supported=False, num_nodes=len(order), supported=[], unsupported=[], rows=[],
                              api=getattr(checker, "api", API_V1), tensorrt_version=getattr(checker, "version", None),
                              product=product, notes=notes + list(getattr(checker, "notes", ())))
    if top.supported:
        report.fully_supported = True
        ins, outs = subgraph_io(graph, order)
        report.supported.append(Subgraph(0, True, list(order), _ops(order, by_name), ins, outs))
        return report

    # errors already seen, by node: reasons for nodes that cannot be re-parsed on their own
    seen_errors: Dict[str, List[ParserIssue]] = {}

    def remember(issues: Sequence[ParserIssue]) -> None:
        for e in issues:
            if e.node_name in by_name and e not in seen_errors.setdefault(e.node_name, []):
                seen_errors[e.node_name].append(e)

    remember([resolve_issue(e, model) for e in top.errors])

    # 1. supported pieces, re-checking every unproven subgraph on its own
    pieces: List[Tuple[List[str], bool, Optional[str]]] = []  # (nodes, verified, note)
    failed_whole: List[Tuple[List[str], List[ParserIssue]]] = []
    stack: List[Tuple[List[str], bool, int]] = [(names, ok, 0) for names, ok in reversed(_names_of(top, file_names))]
    while stack:
        names, ok, depth = stack.pop()
        if ok:
            pieces.append((names, True, None))
            continue
        if depth >= max_depth:
            pieces.append((names, False, f"not re-checked: recursion limit {max_depth} reached"))
            continue
        try:
            sub = extract_nodes(model, graph, names)
        except Exception as exc:  # cannot be typed or cut: keep the parser's first answer
            pieces.append((names, False, f"not re-checked alone: {exc}"))
            continue
        say(f"re-checking a subgraph of {len(names)} node(s)")
        check = checker.check(sub)
        if check.supported:
            pieces.append((names, True, None))
            continue
        remember([resolve_issue(e, sub) for e in check.errors])
        sub_names = [n.name for n in sub.graph.node]
        parts = _names_of(check, sub_names)
        covered = {n for p, _ in parts for n in p}
        if covered >= set(names) and not any(flag for _, flag in parts):
            # nothing left out, yet it fails: the subgraph is rejected as a whole (boundary, outputs...)
            failed_whole.append((names, [resolve_issue(e, sub) for e in check.errors]))
            continue
        for p, flag in reversed(parts):
            stack.append((p, flag, depth + 1))

    supported_nodes = {n for p, _, _ in pieces for n in p}
    position = {n: i for i, n in enumerate(order)}
    pieces.sort(key=lambda p: min(position.get(n, len(order)) for n in p[0]))
    for i, (names, verified, note) in enumerate(pieces):
        names = sorted(set(names), key=lambda n: position.get(n, len(order)))
        ins, outs = subgraph_io(graph, names)
        report.supported.append(Subgraph(i, True, names, _ops(names, by_name), ins, outs, verified=verified, note=note,
                                         position=position[names[0]]))
        if note:
            notes.append(f"supported_{i}: {note}")

    # 2. unsupported runs and their reasons
    whole_errors = {n: errs for names, errs in failed_whole for n in names}
    unsupported_runs = _runs(order, set(order) - supported_nodes)
    reasons: Dict[str, List[ParserIssue]] = {}
    diagnosed = 0
    for i, names in enumerate(unsupported_runs):
        ins, outs = subgraph_io(graph, names)
        sg = Subgraph(i, False, names, _ops(names, by_name), ins, outs, position=position[names[0]])
        report.unsupported.append(sg)
        try:
            sub = extract_nodes(model, graph, names)
        except Exception as exc:
            sg.note = f"cannot be cut out as a model: {exc}"
            notes.append(f"unsupported_{i}: {sg.note}")
            sub = None
        if sub is not None:
            say(f"collecting parser errors for unsupported subgraph {i} ({len(names)} node(s))")
            sg.errors = [resolve_issue(e, sub) for e in checker.check(sub).errors]
        for e in sg.errors:
            if e.node_name in by_name:
                reasons.setdefault(e.node_name, []).append(e)
        for n in names:
            if n not in reasons and seen_errors.get(n):
                reasons[n] = seen_errors[n]  # named by an earlier check of a larger graph
        for n in names:
            if n in whole_errors and n not in reasons and whole_errors[n]:
                reasons[n] = whole_errors[n]
        # nodes no error named: the parser stopped before them; ask about each on its own
        for n in names:
            if n in reasons:
                continue
            fallback = list(sg.errors) if sg.errors and not any(e.node_name in by_name for e in sg.errors) else None
            if diagnosed >= max_node_diagnoses:
                if fallback:
                    reasons[n] = fallback
                continue
            diagnosed += 1
            try:
                single = extract_nodes(model, graph, [n])
            except Exception as exc:
                reasons[n] = fallback or [ParserIssue(desc=f"not diagnosed: cannot be cut out alone ({exc})",
                                                      node_name=n, op=op_label(by_name[n]))]
                continue
            errs = [resolve_issue(e, single) for e in checker.check(single).errors]
            own = [e for e in errs if e.node_name in (None, n)]
            if own:
                reasons[n] = [ParserIssue(desc=e.desc, code=e.code, node_index=e.node_index, node_name=n,
                                          op=e.op or op_label(by_name[n]), func=e.func) for e in own]
            elif fallback:
                reasons[n] = fallback  # the run's errors name no node: they are all we know
    if diagnosed >= max_node_diagnoses:
        notes.append(f"only the first {max_node_diagnoses} unsupported nodes without a parser error were diagnosed alone")
    report.rows = _summary_rows(unsupported_runs, reasons, by_name)
    return report


def _ops(names: Sequence[str], by_name) -> Dict[str, int]:
    hist: Dict[str, int] = {}
    for n in names:
        key = op_label(by_name[n])
        hist[key] = hist.get(key, 0) + 1
    return hist


def _summary_rows(runs: Sequence[Sequence[str]], reasons: Dict[str, List[ParserIssue]], by_name) -> List[SummaryRow]:
    rows: Dict[Tuple[str, str], SummaryRow] = {}
    for names in runs:
        for n in names:
            op = op_label(by_name[n])
            issues = reasons.get(n)
            reason = " | ".join(dict.fromkeys(e.reason for e in issues)) if issues else NO_ERROR_REASON
            key = (op, reason)
            if key not in rows:
                rows[key] = SummaryRow(operator=op, count=0, reason=reason, nodes=[])
            rows[key].count += 1
            rows[key].nodes.append(n)
    return list(rows.values())


# -- saving ---------------------------------------------------------------------------------------------
def save_capability(report: CapabilityReport, model, out_dir, *, graph=None) -> Path:
    """Write every subgraph as its own ONNX model plus ``capability.json`` into ``out_dir``.

    The directory is built aside and swapped in; an existing directory is replaced only when it is
    empty or one of ours holding nothing else (:func:`capability_dir_problem`), never the user's.
    """
    from trtdebug.model.graph import ModelGraph
    from trtdebug.model.loader import save_model
    from trtdebug.util.files import atomic_directory, write_text_atomic

    model, renamed = ensure_unique_node_names(model)
    graph = graph if (graph is not None and not renamed) else ModelGraph(model)
    out = Path(out_dir)
    report.out_dir = str(out)
    with atomic_directory(out, owned=capability_dir_problem) as staging:
        (staging / MARKER).write_text("trtdebug inspect capability output; safe to replace\n", encoding="utf-8")
        if not report.fully_supported:
            for sg in list(report.supported) + list(report.unsupported):
                try:
                    sub = extract_nodes(model, graph, sg.nodes, name=f"{sg.kind}_{sg.index}")
                except Exception as exc:
                    sg.file = None
                    sg.note = (sg.note + "; " if sg.note else "") + f"not saved: {exc}"
                    continue
                save_model(sub, staging / sg.file_name)
                sg.file = sg.file_name
        write_text_atomic(staging / REPORT_NAME, json.dumps(report.to_dict(), indent=2) + "\n")
    return out


def capability_dir_problem(directory: Path) -> Optional[str]:
    """Why ``directory`` is not an earlier capability output we may replace (None: it is).

    Ours means: the marker file, and nothing but what its ``capability.json`` lists (the
    subgraph models, with their external data files).
    """
    from trtdebug.util.files import unlisted_entry

    if not (directory / MARKER).is_file():
        return f"it is not a trtdebug capability directory (no {MARKER})"
    try:
        saved = json.loads((directory / REPORT_NAME).read_text(encoding="utf-8"))
        subgraphs = list(saved.get("supported_subgraphs", [])) + list(saved.get("unsupported_subgraphs", []))
        models = [sg["file"] for sg in subgraphs if sg.get("file")]
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        return f"its {REPORT_NAME} cannot be read ({exc})"
    stray = unlisted_entry(directory, [MARKER, REPORT_NAME, *models, *(m + ".data" for m in models)])
    return f"it holds {stray}, which trtdebug did not write" if stray else None


# -- TensorRT ---------------------------------------------------------------------------------------------
def subgraphs_from_parser(parser) -> List[Tuple[List[int], bool]]:
    """The subgraph list a ``supports_model_v2`` call left in ``parser`` (10.1+)."""
    if hasattr(parser, "num_subgraphs"):
        count = int(parser.num_subgraphs)
    else:
        count = int(parser.get_nb_subgraphs())
    return [([int(i) for i in parser.get_subgraph_nodes(i)], bool(parser.is_subgraph_supported(i))) for i in range(count)]


def tensorrt_checker(*, verbose: bool = False, module: str = "tensorrt") -> SupportChecker:
    """The real checker: the ONNX parser of ``module`` (``tensorrt`` or ``tensorrt_rtx``; ``supports_model_v2``
    where present)."""
    from trtdebug.runners.tensorrt.compat import import_tensorrt

    return _TrtChecker(import_tensorrt(module), verbose=verbose)


class _TrtChecker(SupportChecker):
    """Asks TensorRT's parser; every version difference goes through :mod:`compat` (found by name)."""

    def __init__(self, trt, *, verbose: bool = False) -> None:
        from trtdebug.runners.tensorrt import compat
        from trtdebug.runners.tensorrt.logger import shared_logger

        self.trt = trt
        self.features = compat.detect(trt)
        self.version = self.features.version
        self.product = self.features.product
        self.notes = [n for n in compat.backend_notes(self.features) if "timing cache" not in n]
        if self.features.supports_model_v2:  # 10.1+, the only one on 11.x
            self.api = API_V2
        elif self.features.supports_model:  # 8.x - 10.x
            self.api = API_V1
        else:
            raise BackendError(f"{self.features.label}'s ONNX parser has neither supports_model_v2 nor supports_model")
        self.logger = shared_logger(trt, verbose=verbose)
        try:
            self.builder = trt.Builder(self.logger)
        except Exception as exc:  # noqa: BLE001 - no GPU / driver
            raise BackendError(f"TensorRT could not create a builder (is a GPU available?): {exc}") from exc
        if self.builder is None:
            raise BackendError("TensorRT could not create a builder: "
                               + self.logger.messages.error_text("is a GPU available?"))
        self._flags = compat.network_flags(trt, self.features,
                                           strongly_typed=compat.wants_strong_typing(self.features, False))

    def check(self, model) -> SupportCheck:
        from trtdebug.model.loader import model_bytes_or_path

        with tempfile.TemporaryDirectory(prefix="trtdebug-cap-") as scratch:
            data = model_bytes_or_path(model, scratch)
            path: Optional[str] = None
            if isinstance(data, str):  # over 2 GiB: weights beside the file
                path = data
                with open(data, "rb") as f:
                    data = f.read()
            network = self.builder.create_network(self._flags)
            parser = self.trt.OnnxParser(network, self.logger)
            self.logger.messages.mark()
            try:
                if self.features.supports_model_v2:  # i.e. self.api == API_V2
                    ok = parser.supports_model_v2(data, path) if path else parser.supports_model_v2(data)
                    subgraphs = subgraphs_from_parser(parser)
                else:
                    ok, subgraphs = parser.supports_model(data, path) if path else parser.supports_model(data)
                    subgraphs = [([int(i) for i in idx], bool(flag)) for idx, flag in subgraphs]
            except Exception as exc:  # noqa: BLE001 - the bindings raise for malformed input
                detail = self.logger.messages.error_text(str(exc))
                raise BackendError(f"TensorRT's ONNX parser failed while checking support: {detail}") from exc
            errors = parser_issues(parser)
            del parser, network
        return SupportCheck(supported=bool(ok), subgraphs=subgraphs, errors=errors)
