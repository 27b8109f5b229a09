"""ONNX model handling: loading, a topological view, and surgery (mark outputs, extract subgraphs)."""
from trtdebug.model.graph import ModelGraph, TensorInfo
from trtdebug.model.loader import load_model, save_model
from trtdebug.model.surgery import OutputSelection, extract_subgraph, mark_outputs

__all__ = [
    "ModelGraph",
    "TensorInfo",
    "OutputSelection",
    "load_model",
    "save_model",
    "mark_outputs",
    "extract_subgraph",
]
