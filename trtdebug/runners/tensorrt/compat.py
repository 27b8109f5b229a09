"""The one place that knows how TensorRT versions - and TensorRT-RTX - differ.

Two Python modules implement the API: ``tensorrt`` (TensorRT 8.6, 10.x, 11.x) and ``tensorrt_rtx``
(TensorRT for RTX, the TensorRT 11 style API with just-in-time kernels); :func:`import_tensorrt` is
where either is imported, chosen by the user (``TrtBuildConfig.module``, ``--trt-rtx``).
Every difference between them is detected *by name* (``hasattr`` on
the module, its enums and its classes), never by version number or enum integer, so a
point release that adds or drops an API is handled the day it ships.  Every function takes
the ``trt`` module as an argument: the unit tests pass small fake modules, so CI (which has
no TensorRT) covers this logic.

What differs, and how we detect it:

====================================  ===================================================
feature                               detected by
====================================  ===================================================
explicit batch must be requested      ``NetworkDefinitionCreationFlag.EXPLICIT_BATCH`` and
(8.x; implicit by default)            ``Builder.max_batch_size`` (gone with implicit batch in 10)
strongly typed networks (9.1+/10)     ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``
strong typing required (11)           no ``BuilderFlag.FP16`` *and* STRONGLY_TYPED present
precision flags (gone in 11)          ``BuilderFlag.FP16/BF16/INT8/TF32``
per-layer precision (gone in 11)      ``ILayer.precision`` + ``ILayer.set_output_type``
precision constraints                 ``BuilderFlag.OBEY_PRECISION_CONSTRAINTS`` /
                                      ``PREFER_PRECISION_CONSTRAINTS`` / ``STRICT_TYPES``
optimization level (8.6+)             ``IBuilderConfig.builder_optimization_level``
workspace                             ``set_memory_pool_limit`` + ``MemoryPoolType.WORKSPACE``,
                                      else ``max_workspace_size``
timing cache                          ``IBuilderConfig.create_timing_cache``
editable timing cache (10.8+/11)      ``BuilderFlag.EDITABLE_TIMING_CACHE``
progress monitor (10.0+)              ``trt.IProgressMonitor`` + ``config.progress_monitor``
name-based I/O (8.5+)                 ``IExecutionContext.execute_async_v3`` /
                                      ``set_tensor_address``
output allocator                      ``trt.IOutputAllocator``
algorithm selector (gone in 11)       ``trt.IAlgorithmSelector``
debug tensors (10.0+)                 ``INetworkDefinition.mark_debug`` + ``trt.IDebugListener``
settable tensor types (gone in 11)    ``ITensor.dtype`` is a property with a setter
unfused debug tensors (10.12+)        ``INetworkDefinition.mark_unfused_tensors_as_debug_tensors``
capability query                      ``OnnxParser.supports_model_v2`` (10.1+; 10.3 is the
                                      first snapshotted) / ``supports_model`` (gone in 11)
kernels compiled just in time at the  ``IRuntimeConfig.create_runtime_cache`` + ``IRuntimeCache``
first inference, kept in a runtime    (TensorRT-RTX); the timing cache then has no effect
cache (RTX)                           (RTX accepts its calls as no-ops) and is not used
builds without a GPU, for chosen      ``IBuilderConfig.set_compute_capability`` +
compute capabilities (RTX)            ``ComputeCapability`` (its ``SM<nn>`` members)
"can this engine run here?" (RTX)     ``Runtime.get_engine_validity`` + ``EngineValidity``
====================================  ===================================================

``tests/test_trt_api_surfaces.py`` checks this table against the API of every snapshotted release.
"""
from __future__ import annotations

import importlib
import logging
import re
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from trtdebug.errors import BackendError, BackendUnavailableError, UsageError, missing_dependency

log = logging.getLogger(__name__)


# module name -> (product name, pip package, trtdebug extra)
MODULES = {"tensorrt": ("TensorRT", "tensorrt", "trt"), "tensorrt_rtx": ("TensorRT-RTX", "tensorrt-rtx", "rtx")}


def import_tensorrt(module: str = "tensorrt"):
    """Import ``module`` (``tensorrt`` or ``tensorrt_rtx``): the only place either is imported.

    Missing -> BackendUnavailableError with the install command; an unknown name -> UsageError.
    """
    if module not in MODULES:
        raise UsageError(f"unknown TensorRT module {module!r}; choose one of {', '.join(MODULES)}")
    what, package, extra = MODULES[module]
    try:
        trt = importlib.import_module(module)
    except ImportError as exc:
        if extra == "trt":  # NVIDIA's index is needed: the extra is the one command that works
            raise missing_dependency(package, extra, what=what) from exc
        raise BackendUnavailableError(f"{what} is not available: {package} is not installed "
                                      f"(pip install {package}, or pip install 'trtdebug[{extra}]')") from exc
    except OSError as exc:  # the wheel is there but a shared library (libnvinfer, CUDA) is not
        raise BackendUnavailableError(f"{what} is installed but cannot be loaded: {exc}") from exc
    return trt


def _has(obj: Any, *names: str) -> bool:
    for name in names:
        if obj is None or not hasattr(obj, name):
            return False
        obj = getattr(obj, name)
    return True


def _attr(obj: Any, *names: str) -> Any:
    for name in names:
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj


@dataclass(frozen=True)
class Features:
    """What the installed TensorRT offers, found by name."""

    version: str
    product: str  # "TensorRT" or "TensorRT-RTX" (from the module's name), for messages
    explicit_batch_flag: bool  # the network must be created with EXPLICIT_BATCH (8.x)
    strongly_typed: bool  # STRONGLY_TYPED network creation flag exists
    weak_typing: bool  # precision builder flags exist (False on 11.x)
    fp16_flag: bool
    bf16_flag: bool
    int8_flag: bool
    tf32_flag: bool
    obey_precision_flag: bool
    prefer_precision_flag: bool
    strict_types_flag: bool
    layer_precision: bool  # ILayer.precision + ILayer.set_output_type (per-layer FP32; gone in 11)
    optimization_level: bool
    memory_pool_limits: bool
    max_workspace_size: bool
    timing_cache: bool
    editable_timing_cache: bool
    progress_monitor: bool
    name_based_io: bool  # execute_async_v3 + set_tensor_address + set_input_shape
    output_allocator: bool
    algorithm_selector: bool
    mark_debug: bool  # INetworkDefinition.mark_debug + IDebugListener
    mark_unfused_debug: bool  # INetworkDefinition.mark_unfused_tensors_as_debug_tensors
    supports_model: bool
    supports_model_v2: bool
    layer_metadata: bool  # ILayer.metadata ("[ONNX Layer: ...]")
    tensor_dtype_settable: bool  # ITensor.dtype can be set (I/O types under weak typing; read-only in 11)
    engine_inspector: bool
    tensor_profile_shape: bool  # ICudaEngine.get_tensor_profile_shape (name-based)
    runtime_cache: bool  # kernels compiled just in time at the first inference, into an IRuntimeCache (RTX)
    engine_validity: bool  # Runtime.get_engine_validity: ask whether an engine can run here before loading it
    # Compute capabilities the builder can target ahead of time ("8.6", ...; RTX): it builds without a GPU.
    compute_capabilities: Tuple[str, ...] = ()

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @property
    def strong_typing_required(self) -> bool:
        """True on TensorRT 11: weak-typing precision flags are gone, networks are strongly typed."""
        return self.strongly_typed and not self.weak_typing

    @property
    def label(self) -> str:
        """``TensorRT 10.8.0.43`` / ``TensorRT-RTX 1.7.1.116``: how messages name this library."""
        return f"{self.product} {self.version}"

    @property
    def timing_cache_effective(self) -> bool:
        """A timing cache speeds up later builds; not where kernels are compiled at run time (RTX, whose
        timing-cache calls are accepted but do nothing - its own deprecation warning says so)."""
        return self.timing_cache and not self.runtime_cache

    @property
    def builds_without_gpu(self) -> bool:
        """The builder targets compute capabilities chosen ahead of time, so building needs no GPU (RTX)."""
        return bool(self.compute_capabilities)


def detect(trt) -> Features:
    """Probe ``trt`` (the real module or a fake) by attribute names."""
    flags = _attr(trt, "BuilderFlag")
    ncf = _attr(trt, "NetworkDefinitionCreationFlag")
    network_cls = _attr(trt, "INetworkDefinition")
    config_cls = _attr(trt, "IBuilderConfig")
    context_cls = _attr(trt, "IExecutionContext")
    engine_cls = _attr(trt, "ICudaEngine")
    parser_cls = _attr(trt, "OnnxParser")
    fp16 = _has(flags, "FP16")
    int8 = _has(flags, "INT8")
    return Features(
        version=str(getattr(trt, "__version__", "unknown")),
        product=MODULES.get(str(getattr(trt, "__name__", "")).split(".")[0], MODULES["tensorrt"])[0],
        # 10.x keeps the EXPLICIT_BATCH enum (deprecated, ignored) but dropped implicit batch and with it
        # IBuilder.max_batch_size; setting the flag there would be harmless, merely noisy.
        explicit_batch_flag=_has(ncf, "EXPLICIT_BATCH") and _has(_attr(trt, "Builder"), "max_batch_size"),
        strongly_typed=_has(ncf, "STRONGLY_TYPED"),
        weak_typing=fp16 or int8,
        fp16_flag=fp16,
        bf16_flag=_has(flags, "BF16"),
        int8_flag=int8,
        tf32_flag=_has(flags, "TF32"),
        obey_precision_flag=_has(flags, "OBEY_PRECISION_CONSTRAINTS"),
        prefer_precision_flag=_has(flags, "PREFER_PRECISION_CONSTRAINTS"),
        strict_types_flag=_has(flags, "STRICT_TYPES"),
        layer_precision=_has(_attr(trt, "ILayer"), "precision") and _has(_attr(trt, "ILayer"), "set_output_type"),
        optimization_level=_has(config_cls, "builder_optimization_level"),
        memory_pool_limits=_has(config_cls, "set_memory_pool_limit") and _has(trt, "MemoryPoolType", "WORKSPACE"),
        max_workspace_size=_has(config_cls, "max_workspace_size"),
        timing_cache=_has(config_cls, "create_timing_cache") and _has(config_cls, "set_timing_cache"),
        editable_timing_cache=_has(flags, "EDITABLE_TIMING_CACHE"),
        progress_monitor=_has(trt, "IProgressMonitor") and _has(config_cls, "progress_monitor"),
        name_based_io=_has(context_cls, "execute_async_v3") and _has(context_cls, "set_tensor_address")
        and _has(context_cls, "set_input_shape"),
        output_allocator=_has(trt, "IOutputAllocator") and _has(context_cls, "set_output_allocator"),
        algorithm_selector=_has(trt, "IAlgorithmSelector"),
        mark_debug=_has(network_cls, "mark_debug") and _has(trt, "IDebugListener")
        and _has(context_cls, "set_debug_listener"),
        mark_unfused_debug=_has(network_cls, "mark_unfused_tensors_as_debug_tensors"),
        supports_model=_has(parser_cls, "supports_model"),
        supports_model_v2=_has(parser_cls, "supports_model_v2"),
        layer_metadata=_has(_attr(trt, "ILayer"), "metadata"),
        tensor_dtype_settable=getattr(getattr(_attr(trt, "ITensor"), "dtype", None), "fset", None) is not None,
        engine_inspector=_has(engine_cls, "create_engine_inspector") and _has(trt, "LayerInformationFormat", "JSON"),
        tensor_profile_shape=_has(engine_cls, "get_tensor_profile_shape"),
        runtime_cache=_has(trt, "IRuntimeCache") and _has(_attr(trt, "IRuntimeConfig"), "create_runtime_cache"),
        engine_validity=_has(_attr(trt, "Runtime"), "get_engine_validity") and _has(trt, "EngineValidity", "VALID"),
        compute_capabilities=_target_compute_capabilities(trt, config_cls),
    )


def _target_compute_capabilities(trt, config_cls) -> Tuple[str, ...]:
    """``("7.5", "8.0", ...)`` from ``ComputeCapability.SM75...`` where the builder can target them."""
    if not _has(config_cls, "set_compute_capability"):
        return ()
    digits = [m.group(1) for m in (re.fullmatch(r"SM(\d\d+)", n) for n in dir(_attr(trt, "ComputeCapability"))) if m]
    return tuple(f"{major}.{minor}" for major, minor in sorted((int(d[:-1]), int(d[-1])) for d in digits))


def backend_notes(features: Features) -> List[str]:
    """What users must know about this library's behaviour, in plain words (for runner and report notes)."""
    notes = []
    if features.runtime_cache:
        notes.append(f"{features.product} compiles its kernels just in time on the GPU at the first inference (the "
                     "first run's time includes that compilation) and keeps them in a runtime cache")
    if features.timing_cache and not features.timing_cache_effective:
        notes.append(f"{features.product} has no timing cache (its timing-cache calls do nothing): --timing-cache "
                     "and the persistent cache are not used")
    if features.builds_without_gpu:
        notes.append(f"{features.product} builds without a GPU; its engines run only on GPUs of compute capability "
                     + ", ".join(features.compute_capabilities) + " (the builder's targets)")
    return notes


# -- network creation ------------------------------------------------------------------------

def network_flags(trt, features: Features, *, strongly_typed: bool) -> int:
    """The creation-flag bitmask for ``builder.create_network``."""
    flags = 0
    ncf = trt.NetworkDefinitionCreationFlag
    if features.explicit_batch_flag:
        flags |= 1 << int(ncf.EXPLICIT_BATCH)
    if strongly_typed:
        if not features.strongly_typed:
            raise UsageError(f"--strongly-typed needs TensorRT 9.1 or newer (STRONGLY_TYPED networks); "
                             f"this is {features.label}")
        flags |= 1 << int(ncf.STRONGLY_TYPED)
    return flags


def wants_strong_typing(features: Features, requested: bool) -> bool:
    """Strong typing is used when asked for, and always where TensorRT requires it (11.x)."""
    return requested or features.strong_typing_required


# -- builder configuration -------------------------------------------------------------------

_PRECISIONS = (("fp16", "FP16", "fp16_flag"), ("bf16", "BF16", "bf16_flag"), ("int8", "INT8", "int8_flag"))


def apply_precision_flags(trt, config, features: Features, build) -> List[str]:
    """Set FP16/BF16/INT8/TF32 as ``build`` (a TrtBuildConfig) asks; returns notes for the report.

    On TensorRT 11 (no precision flags) asking for one is a usage error that says what to do
    instead; on an older TensorRT that simply lacks one (BF16 before 9.0) it is too.
    """
    notes: List[str] = []
    for attr, flag, feature in _PRECISIONS:
        if not getattr(build, attr):
            continue
        if not getattr(features, feature):
            raise UsageError(_missing_precision_message(attr, features))
        if getattr(build, "strongly_typed", False) or features.strong_typing_required:
            raise UsageError(f"--{attr} cannot be combined with a strongly typed network: its types come from the "
                             "model itself; drop --strongly-typed or convert the model's types")
        config.set_flag(getattr(trt.BuilderFlag, flag))
        notes.append(f"{flag} enabled")
    tf32 = getattr(build, "tf32", None)
    if tf32 is not None:
        if not features.tf32_flag:
            if tf32:
                raise UsageError(f"--tf32 is not available on {features.label} (no BuilderFlag.TF32)")
            notes.append("TF32 flag not present in this TensorRT; --no-tf32 has no effect")
        elif tf32:
            config.set_flag(trt.BuilderFlag.TF32)
        else:
            config.clear_flag(trt.BuilderFlag.TF32)
            notes.append("TF32 disabled")
    return notes


def _missing_precision_message(attr: str, features: Features) -> str:
    if features.strong_typing_required:
        return (f"--{attr} is not available on {features.label}: it has no FP16/BF16/INT8 builder flags (removed in "
                "TensorRT 11, absent in TensorRT-RTX) and builds strongly typed networks only. Convert the model to the "
                "precision you want first (e.g. ModelOpt AutoCast for FP16/BF16, Q/DQ nodes for INT8) and build it as is, or use "
                "trtdebug's precision tools to find which layers need FP32.")
    return f"--{attr} is not available on {features.label} (no BuilderFlag.{attr.upper()})"


def precision_constraint_flag(trt, features: Features):
    """The flag that makes per-layer precisions binding: OBEY, else PREFER, else STRICT_TYPES; None on 11."""
    for name, present in (("OBEY_PRECISION_CONSTRAINTS", features.obey_precision_flag),
                          ("PREFER_PRECISION_CONSTRAINTS", features.prefer_precision_flag),
                          ("STRICT_TYPES", features.strict_types_flag)):
        if present:
            return getattr(trt.BuilderFlag, name)
    return None


def set_workspace(trt, config, features: Features, nbytes: Optional[int]) -> Optional[str]:
    if nbytes is None:
        return None
    if features.memory_pool_limits:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(nbytes))
    elif features.max_workspace_size:
        config.max_workspace_size = int(nbytes)
    else:
        return "this TensorRT has no workspace limit setting; --workspace ignored"
    return None


def set_optimization_level(config, features: Features, level: Optional[int]) -> Optional[str]:
    if level is None:
        return None
    if not features.optimization_level:
        return f"--builder-optimization-level needs TensorRT 8.6+; ignored on {features.version}"
    if not 0 <= int(level) <= 5:
        raise UsageError(f"--builder-optimization-level must be between 0 and 5, got {level}")
    config.builder_optimization_level = int(level)
    return None


def set_detailed_profiling(trt, config) -> bool:
    """DETAILED profiling verbosity (layer metadata and tactics in the inspector); True if set."""
    verbosity = _attr(trt, "ProfilingVerbosity")
    if verbosity is None or not hasattr(config, "profiling_verbosity"):
        return False
    detailed = getattr(verbosity, "DETAILED", None) or getattr(verbosity, "VERBOSE", None)
    if detailed is None:
        return False
    config.profiling_verbosity = detailed
    return True


# -- timing cache (the process-wide cache itself is in timing_cache.py) ------------------------

def enable_editable_timing_cache(trt, config, features: Features) -> bool:
    """Make the timing cache editable (10.8+/11: the replacement for IAlgorithmSelector when pinning
    tactics); False where this TensorRT has no editable cache."""
    if not features.editable_timing_cache:
        return False
    config.set_flag(trt.BuilderFlag.EDITABLE_TIMING_CACHE)
    return True


# -- run-time ----------------------------------------------------------------------------------

def require_name_based_io(features: Features) -> None:
    if not features.name_based_io:
        raise BackendError(f"{features.label} lacks the name-based I/O API (execute_async_v3); "
                           "trtdebug needs TensorRT 8.6 or newer")


def profile_shapes(engine, features: Features, name: str, profile: int):
    """(min, opt, max) shapes of input ``name`` in ``profile``."""
    if features.tensor_profile_shape:
        return tuple(tuple(int(d) for d in s) for s in engine.get_tensor_profile_shape(name, profile))
    raise BackendError("this TensorRT cannot report optimization profile shapes by tensor name")


# dtypes by enum *name*: TensorRT renumbers nothing in practice, but names are the contract.
_NUMPY_BY_TRT_NAME = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT8": np.int8,
    "INT32": np.int32,
    "INT64": np.int64,
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "BF16": np.uint16,  # raw bits; widened to float32 on the way out (numpy has no bfloat16)
}


def optional_attr(obj, name: str):
    """``obj.name`` or ``obj.name()``; None where this TensorRT version lacks it or it fails."""
    attr = getattr(obj, name, None)
    if attr is None:
        return None
    try:
        return attr() if callable(attr) else attr
    except Exception:  # noqa: BLE001 - an accessor missing in this version
        return None


def enum_name(value) -> str:
    """An enum member's name from a pybind11 enum (where ``name`` is a property on some classes
    and a method on others, e.g. 8.6's parser ErrorCode), a Python enum, or a fake."""
    name = getattr(value, "name", None)
    if callable(name):
        try:
            name = name()
        except Exception:  # noqa: BLE001
            name = None
    if isinstance(name, str) and name:
        return name
    return str(value).rsplit(".", 1)[-1].split(":", 1)[0].strip("<> ")


def dtype_name(trt_dtype) -> str:
    """The enum member's name (``FLOAT``, ``HALF``, ``BF16``...), from the real enum or a fake."""
    return enum_name(trt_dtype).upper()


def numpy_dtype(trt_dtype) -> np.dtype:
    """Host storage dtype for a TensorRT dtype; BF16 is stored as uint16 bits."""
    name = dtype_name(trt_dtype)
    if name not in _NUMPY_BY_TRT_NAME:
        raise BackendError(f"TensorRT dtype {name} has no numpy equivalent; trtdebug cannot read or feed it")
    return np.dtype(_NUMPY_BY_TRT_NAME[name])


def is_bf16(trt_dtype) -> bool:
    return dtype_name(trt_dtype) == "BF16"


def bf16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """Widen bfloat16 bit patterns (uint16) to float32 exactly."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def float32_to_bf16_bits(values: np.ndarray) -> np.ndarray:
    """Round float32 to the nearest bfloat16 (ties to even) and return its bits as uint16."""
    v = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounding = ((v >> 16) & 1) + np.uint32(0x7FFF)
    out = ((v + rounding) >> 16).astype(np.uint16)
    nan = np.isnan(values)
    if np.any(nan):
        out[nan] = np.uint16(0x7FC0)
    return out


def tensor_is_input(trt, engine, name: str) -> bool:
    return engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT


def io_tensor_names(engine) -> List[str]:
    return [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
