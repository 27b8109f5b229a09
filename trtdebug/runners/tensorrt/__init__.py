"""TensorRT backend.  Nothing here imports ``tensorrt`` at module level.

All version differences (8.6, 10.x, 11.x) are detected by name in ``compat.py`` and
stay inside this package.  Modules:

* ``config``   - what the user asked of a build (:class:`TrtBuildConfig`, :class:`Profile`) and CLI parsing helpers
* ``compat``   - feature detection and the version-adaptive calls
* ``cuda``     - cuda-python wrapper (device memory, copies, streams)
* ``logger``   - a TensorRT logger that keeps TensorRT's error text
* ``builder``  - parse ONNX, configure, build (:class:`EngineBuilder`)
* ``progress`` - build progress: IProgressMonitor (10+), else phases read from TensorRT 8.6's log
* ``timing_cache`` - one timing cache per process, persisted per GPU and TensorRT version
* ``variants`` - parse once, build variants (extra outputs, FP32-kept nodes) for searches
* ``marking``  - which tensors can and should be network outputs, and why others are skipped
* ``boundaries`` - compare only at fused-layer boundaries of the unmodified engine
* ``engine``   - engine save/load/deserialize, I/O description, inspector layer JSON
* ``runner``   - :class:`TrtRunner`
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from trtdebug.model.surgery import OutputSelection
from trtdebug.runners.tensorrt.config import Profile, TrtBuildConfig, parse_size, profiles_from_args

if TYPE_CHECKING:  # pragma: no cover
    from trtdebug.runners.tensorrt.runner import TrtRunner

__all__ = ["Profile", "TrtBuildConfig", "make_trt_runner", "parse_size", "profiles_from_args", "TrtRunner"]


def make_trt_runner(model_path_or_engine, *, config: TrtBuildConfig = TrtBuildConfig(),
                    outputs: OutputSelection = OutputSelection(), graph=None, model=None,
                    boundaries: bool = False, name: Optional[str] = None) -> "TrtRunner":
    """The TensorRT runner the CLI uses: builds ``model_path_or_engine`` (an ONNX path or ModelProto),
    or loads it when it is a serialized engine (``.engine``/``.plan``/``.trt``).

    ``model``/``graph``: the already-loaded ONNX model and its ModelGraph, to avoid loading twice.
    ``boundaries``: compare only at fused-layer boundaries of the unmodified engine (``--fused-boundaries``);
    the boundary tensors replace ``--mark-all``/``--trt-outputs`` on the TensorRT side (exclusions still apply).
    ``name``: the runner's name in results and reports; default the module's (``tensorrt`` / ``tensorrt_rtx``).
    Importing TensorRT happens at ``activate()``.
    """
    from trtdebug.errors import UsageError
    from trtdebug.runners.tensorrt.engine import is_engine_path
    from trtdebug.runners.tensorrt.runner import TrtRunner

    if is_engine_path(model_path_or_engine) and (config.save_engine or config.fp16 or config.bf16 or config.int8):
        raise UsageError("build options (--fp16/--bf16/--int8/--save-engine) do not apply to a serialized engine")
    return TrtRunner(model_path_or_engine, config=config, outputs=outputs, graph=graph, model=model,
                     boundaries=boundaries, name=name or config.module)


def __getattr__(name: str):  # lazy: `from trtdebug.runners.tensorrt import TrtRunner` without importing tensorrt
    if name == "TrtRunner":
        from trtdebug.runners.tensorrt.runner import TrtRunner

        return TrtRunner
    raise AttributeError(name)
