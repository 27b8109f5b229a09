"""Backends that run a model and return every requested tensor by its ONNX name."""
from trtdebug.runners.base import Runner, TensorMeta

__all__ = ["Runner", "TensorMeta"]
