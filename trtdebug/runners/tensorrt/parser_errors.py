"""TensorRT ONNX-parser errors as plain data, for every TensorRT version.

Both the engine builder (a parse failure is a verdict with node names) and the capability
report (why a node is unsupported) need the same facts from ``IParserError``; 8.6 lacks
``node_name()``/``node_operator()`` and its ``ErrorCode.name`` is a method, so the accessors
are tried by name and the node is filled in from the model by index.

A parser error's text can span several lines, and the cause is usually *not* the first one:
TensorRT 8.6 reports a rejected ``If`` as ``Invalid Node - If_0`` followed, on the next line,
by ``IIfConditionalOutputLayer inputs must have the same shape``.  The CLI prints the first
line of an error, so :attr:`ParserIssue.reason` folds every line into one (dropping the
``Invalid Node - <name>`` header, which the node label already says), and
:func:`parse_failure` builds the one-line message and the full text kept for ``--verbose``.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from trtdebug.runners.tensorrt.compat import enum_name, optional_attr


def op_label(node) -> str:
    """``Op`` for standard ONNX ops, ``domain::Op`` for the others."""
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"


@dataclass(frozen=True)
class ParserIssue:
    """One error from the ONNX parser; ``node_index`` indexes the graph of the model that was checked."""

    desc: str
    code: Optional[str] = None
    node_index: Optional[int] = None
    node_name: Optional[str] = None
    op: Optional[str] = None
    func: Optional[str] = None

    @property
    def reason(self) -> str:
        """The error code and every line of the description, on one line."""
        text = " - ".join(self.cause_lines()) or "unknown parser error"
        return f"{self.code}: {text}" if self.code and self.code not in text else text

    def cause_lines(self) -> List[str]:
        """The description's non-empty lines, without a header that only repeats the node name."""
        lines = [ln.strip() for ln in self.desc.splitlines() if ln.strip()]
        if len(lines) > 1 and self.node_name and re.fullmatch(rf"Invalid Node - {re.escape(self.node_name)}:?", lines[0]):
            lines = lines[1:]
        return lines

    def describe(self) -> str:
        """``node 'name' (Op): reason`` - one line, for error messages."""
        where = f"node {self.node_name!r}" if self.node_name else (
            f"node #{self.node_index}" if self.node_index is not None else "model")
        if self.op:
            where += f" ({self.op})"
        return f"{where}: {self.reason}"

    def detail(self) -> str:
        """The node label and the description as TensorRT wrote it (several lines)."""
        head = self.describe().split(": ", 1)[0]
        code = f"{self.code}: " if self.code else ""
        return f"{head}: {code}{self.desc.strip() or 'unknown parser error'}"

    def to_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["reason"] = self.reason
        return d


def parser_issue(error) -> ParserIssue:
    """A ParserIssue from a TensorRT ``IParserError`` of any version."""
    code = optional_attr(error, "code")
    node = optional_attr(error, "node")
    try:
        node_index = int(node) if node is not None and int(node) >= 0 else None
    except (TypeError, ValueError):
        node_index = None
    desc = optional_attr(error, "desc") or str(error)
    return ParserIssue(desc=str(desc), code=None if code is None else enum_name(code), node_index=node_index,
                       node_name=optional_attr(error, "node_name") or None, op=optional_attr(error, "node_operator") or None,
                       func=optional_attr(error, "func") or None)


def resolve_issue(issue: ParserIssue, model) -> ParserIssue:
    """Fill node name and op from the checked model: by node index, else by node name.

    The parser's ``node_operator()`` is the bare op type; the model's node adds its domain
    (``com.example::MyOp``), which is what tells a custom op from a standard one.
    """
    nodes = model.graph.node
    name, op = issue.node_name, issue.op
    node = None
    if issue.node_index is not None and 0 <= issue.node_index < len(nodes):
        node = nodes[issue.node_index]
    elif name:
        node = next((n for n in nodes if n.name == name), None)
    if node is not None:
        name = name or node.name
        op = op_label(node) if not op or op == node.op_type else op
    if (name, op) == (issue.node_name, issue.op):
        return issue
    return ParserIssue(desc=issue.desc, code=issue.code, node_index=issue.node_index, node_name=name, op=op, func=issue.func)


def parser_issues(parser, model=None) -> list:
    """Every error the parser recorded, with node names resolved against ``model`` when given."""
    issues = [parser_issue(parser.get_error(i)) for i in range(int(getattr(parser, "num_errors", 0)))]
    return [resolve_issue(i, model) for i in issues] if model is not None else issues


# TensorRT's own error lines (``[graphShapeAnalyzer.cpp::...] Error Code 4: Internal Error (...)``)
# as opposed to the parser's echo of its own errors and its dump of the failing node.
_CORE_ERROR = re.compile(r"Error Code \d+:")


def parse_failure(issues: Sequence[ParserIssue], logged_errors: Sequence[str] = (),
                  default: str = "no details given") -> Tuple[str, str]:
    """``(one_line, full_text)`` for a failed parse.

    ``one_line`` names every failing node with its whole cause (issues joined by ``; ``); when
    a parser error is nothing but a header, TensorRT's own logged errors supply the cause.
    ``full_text`` is every issue as TensorRT wrote it, then every error line logged meanwhile.
    """
    described = list(dict.fromkeys(i.describe() for i in issues))
    core = [m.strip() for m in logged_errors if _CORE_ERROR.search(m)]
    if not all(_has_cause(i) for i in issues):  # a bare "Invalid Node" header: the log has the cause
        described += [c for c in dict.fromkeys(core) if not any(c in d for d in described)]
    if not described:
        described = [m for m in dict.fromkeys(core or [str(m).strip() for m in logged_errors]) if m]
    one_line = "; ".join(described) or default
    parts = [i.detail() for i in issues]
    if logged_errors:
        parts.append("TensorRT's log:\n" + "\n".join(f"  {m.rstrip()}" for m in logged_errors))
    return " ".join(one_line.split()), "\n".join(parts) or default


def _has_cause(issue: ParserIssue) -> bool:
    lines = issue.cause_lines()
    return bool(lines) and not (len(lines) == 1 and lines[0].startswith("Invalid Node - "))
