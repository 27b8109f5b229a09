"""trtdebug: find out why a model gives different answers in TensorRT than in its reference, and where.

Importing this package imports neither TensorRT nor ONNX Runtime; backends load them when
they are activated.
"""
__version__ = "0.1.0"
