"""Inspection: what is in an ONNX model, in a TensorRT engine, and what TensorRT supports.

Each function returns a plain dataclass with ``to_dict()`` (for ``--json``) and has a matching
``render_*`` function that prints it with rich.  Nothing here imports TensorRT or ONNX Runtime at
module level: ``inspect_engine`` and ``inspect_capability`` import TensorRT when called.
"""
from trtdebug.inspect.capability import inspect_capability, render_capability
from trtdebug.inspect.engine import EngineSummary, IOTensor, inspect_engine, load_engine, render_engine_summary, summarize_engine
from trtdebug.inspect.model import ModelSummary, TensorSummary, inspect_model, render_model_summary, summarize_model

__all__ = [
    "ModelSummary",
    "TensorSummary",
    "inspect_model",
    "summarize_model",
    "render_model_summary",
    "EngineSummary",
    "IOTensor",
    "inspect_engine",
    "load_engine",
    "summarize_engine",
    "render_engine_summary",
    "inspect_capability",
    "render_capability",
]
