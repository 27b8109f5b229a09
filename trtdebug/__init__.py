"""trtdebug: find out why a model gives different answers in TensorRT than in its reference, and where.

    import trtdebug
    outcome = trtdebug.run("model.onnx", backends=("ref", "onnxrt"), mark_all=True)
    print(outcome.passed, outcome.first_failing)

``run``, ``compare``, ``load_report`` and ``render_report`` are :mod:`trtdebug.api`'s; ``reduce``
(shrink a failing model), ``convert_precision`` (FP16/BF16 with a keep-FP32 set) and
``attribute_precision`` (the error each node introduces) and ``debug_precision`` (the keep-FP32 search) are the debuggers'.  All are loaded on first use, so importing this package imports neither TensorRT nor ONNX Runtime (nor
NumPy): backends load their libraries when they are activated.
"""
__version__ = "0.1.0"

__all__ = ["Outcome", "Tolerances", "TrtBuildConfig", "attribute_precision", "compare", "convert_precision",
           "debug_precision", "load_report", "reduce", "render_report", "run"]

# public name -> (module, attribute)
_LAZY = {
    "run": ("trtdebug.api", "run"), "compare": ("trtdebug.api", "compare"),
    "load_report": ("trtdebug.api", "load_report"), "render_report": ("trtdebug.api", "render_report"),
    "Outcome": ("trtdebug.api", "Outcome"), "Tolerances": ("trtdebug.comparison.tolerances", "Tolerances"),
    "TrtBuildConfig": ("trtdebug.runners.tensorrt.config", "TrtBuildConfig"),
    "reduce": ("trtdebug.debug.reduce", "reduce_model"),
    "convert_precision": ("trtdebug.precision.convert", "convert"),
    "attribute_precision": ("trtdebug.precision.attribution", "attribute"),
    "debug_precision": ("trtdebug.precision.debug", "debug_precision"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'trtdebug' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))
