"""TensorRT ONNX-parser errors as plain data, for every TensorRT version.

Both the engine builder (a parse failure is a verdict with node names) and the capability
report (why a node is unsupported) need the same facts from ``IParserError``; 8.6 lacks
``node_name()``/``node_operator()`` and its ``ErrorCode.name`` is a method, so the accessors
are tried by name and the node is filled in from the model by index.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Optional

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
        text = self.desc.strip() or "unknown parser error"
        return f"{self.code}: {text}" if self.code and self.code not in text else text

    def describe(self) -> str:
        """``node 'name' (Op): reason`` - one line, for error messages."""
        where = f"node {self.node_name!r}" if self.node_name else (
            f"node #{self.node_index}" if self.node_index is not None else "model")
        if self.op:
            where += f" ({self.op})"
        return f"{where}: {self.reason}"

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
    """Fill node name and op from the node index of the checked model."""
    nodes = model.graph.node
    name, op = issue.node_name, issue.op
    if issue.node_index is not None and 0 <= issue.node_index < len(nodes):
        node = nodes[issue.node_index]
        name = name or node.name
        op = op or op_label(node)
    elif name and not op:
        for node in nodes:
            if node.name == name:
                op = op_label(node)
                break
    if (name, op) == (issue.node_name, issue.op):
        return issue
    return ParserIssue(desc=issue.desc, code=issue.code, node_index=issue.node_index, node_name=name, op=op, func=issue.func)


def parser_issues(parser, model=None) -> list:
    """Every error the parser recorded, with node names resolved against ``model`` when given."""
    issues = [parser_issue(parser.get_error(i)) for i in range(int(getattr(parser, "num_errors", 0)))]
    return [resolve_issue(i, model) for i in issues] if model is not None else issues
