"""trtdebug: find out why a model gives different answers in TensorRT than in its reference, and where.

    import trtdebug
    outcome = trtdebug.run("model.onnx", backends=("ref", "onnxrt"), mark_all=True)
    print(outcome.passed, outcome.first_failing)

``run``, ``compare``, ``load_report`` and ``render_report`` are :mod:`trtdebug.api`'s; they are
loaded on first use, so importing this package imports neither TensorRT nor ONNX Runtime (nor
NumPy): backends load their libraries when they are activated.
"""
__version__ = "0.1.0"

__all__ = ["Outcome", "Tolerances", "TrtBuildConfig", "compare", "load_report", "render_report", "run"]

_LAZY = {
    "run": "trtdebug.api", "compare": "trtdebug.api", "load_report": "trtdebug.api", "render_report": "trtdebug.api",
    "Outcome": "trtdebug.api", "Tolerances": "trtdebug.comparison.tolerances",
    "TrtBuildConfig": "trtdebug.runners.tensorrt.config",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trtdebug' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
