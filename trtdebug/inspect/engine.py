"""``trtdebug inspect engine``: I/O tensors, optimization profiles, layers and device memory of an engine.

Needs TensorRT (imported when called).  Only the name-based I/O tensor API (TensorRT 8.5+) is
used; features that moved between versions are found by name (``device_memory_size_v2`` on 10.1+,
``get_tensor_profile_values`` for shape tensors).  Per-layer detail comes from ``IEngineInspector``
and is complete only for engines built with ``ProfilingVerbosity.DETAILED``; pass the ONNX model
to map layers to ONNX node names reliably.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from trtdebug.errors import BackendError, ModelLoadError
from trtdebug.util.files import file_size

_DTYPES = {
    "FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8", "INT32": "int32",
    "INT64": "int64", "BOOL": "bool", "UINT8": "uint8", "FP8": "float8_e4m3", "INT4": "int4",
    "FP4": "float4_e2m1", "DOUBLE": "float64", "E8M0": "float8_e8m0",
}


def trt_enum_name(value) -> str:
    """``FLOAT`` for ``tensorrt.DataType.FLOAT`` (works for any pybind enum or a plain string)."""
    name = getattr(value, "name", None)
    if isinstance(name, str):
        return name
    return str(value).split(".")[-1]


def trt_dtype_name(dtype) -> str:
    name = trt_enum_name(dtype)
    return _DTYPES.get(name.upper(), name.lower())


@dataclass(frozen=True)
class IOTensor:
    name: str
    mode: str  # input / output
    dtype: str
    shape: Tuple[int, ...]  # -1 where dynamic
    is_shape_tensor: bool = False
    format: Optional[str] = None
    location: Optional[str] = None
    # per profile: {"min": [...], "opt": [...], "max": [...]} (shapes, or values for shape tensors)
    profiles: Tuple[Dict[str, List[int]], ...] = ()

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "mode": self.mode, "dtype": self.dtype, "shape": list(self.shape),
                "is_shape_tensor": self.is_shape_tensor, "format": self.format, "location": self.location,
                "profiles": [dict(p) for p in self.profiles]}


@dataclass
class EngineSummary:
    path: Optional[str]
    tensorrt_version: Optional[str]
    name: Optional[str]
    num_layers: Optional[int]
    num_profiles: int
    device_memory_size: Optional[int]
    io: List[IOTensor]
    layer_info: Optional[Any] = None  # trtdebug.runners.tensorrt.inspector.EngineInfo
    profiling_verbosity: Optional[str] = None
    file_size: Optional[int] = None
    notes: List[str] = field(default_factory=list)

    @property
    def inputs(self) -> List[IOTensor]:
        return [t for t in self.io if t.mode == "input"]

    @property
    def outputs(self) -> List[IOTensor]:
        return [t for t in self.io if t.mode == "output"]

    def to_dict(self) -> Dict[str, Any]:
        return {
            "path": self.path, "tensorrt_version": self.tensorrt_version, "name": self.name,
            "num_layers": self.num_layers, "num_profiles": self.num_profiles,
            "device_memory_size": self.device_memory_size, "profiling_verbosity": self.profiling_verbosity,
            "file_size": self.file_size, "io": [t.to_dict() for t in self.io],
            "layer_info": self.layer_info.to_dict() if self.layer_info is not None else None,
            "notes": list(self.notes),
        }


def _attr(obj, name: str, default=None):
    try:
        value = getattr(obj, name)
    except Exception:  # noqa: BLE001 - deprecated accessors may raise
        return default
    return value


def _dims(d) -> List[int]:
    try:
        return [int(x) for x in d]
    except TypeError:
        return []


def _profile_entry(engine, name: str, profile: int, is_shape: bool) -> Optional[Dict[str, List[int]]]:
    # a shape tensor's profile holds values, not dims: 10.0+ names the getter get_tensor_profile_values,
    # 8.x get_profile_shape_input (its get_tensor_profile_shape would give the tensor's own dims)
    getter = getattr(engine, "get_tensor_profile_values", None) or getattr(engine, "get_profile_shape_input", None)
    if is_shape and getter is not None:
        for args in ((profile, name), (name, profile)):  # the argument order differs between versions
            try:
                values = getter(*args)
                return {k: _dims(v) for k, v in zip(("min", "opt", "max"), values)}
            except Exception:  # noqa: BLE001 - try the other order
                continue
    if hasattr(engine, "get_tensor_profile_shape"):
        try:
            shapes = engine.get_tensor_profile_shape(name, profile)
            return {k: _dims(v) for k, v in zip(("min", "opt", "max"), shapes)}
        except Exception:  # noqa: BLE001 - not an input of this profile
            return None
    return None


def summarize_engine(engine, trt, *, graph=None, profile: int = 0, path: Optional[os.PathLike] = None) -> EngineSummary:
    """Read what a deserialized engine says about itself.  ``trt`` is the tensorrt module (or a fake)."""
    notes: List[str] = []
    num_profiles = int(_attr(engine, "num_optimization_profiles", 1) or 1)
    io: List[IOTensor] = []
    if hasattr(engine, "num_io_tensors"):
        input_mode = trt.TensorIOMode.INPUT
        for i in range(int(engine.num_io_tensors)):
            name = engine.get_tensor_name(i)
            mode = engine.get_tensor_mode(name)
            is_input = mode == input_mode
            is_shape = False
            if hasattr(engine, "is_shape_inference_io") and is_input:
                try:
                    # 8.5+: True for shape-tensor inputs (their values, not shapes, have profiles)
                    is_shape = bool(engine.is_shape_inference_io(name)) and len(_dims(engine.get_tensor_shape(name))) <= 1 \
                        and trt_dtype_name(engine.get_tensor_dtype(name)) in ("int32", "int64")
                except Exception:  # noqa: BLE001
                    is_shape = False
            fmt = None
            if hasattr(engine, "get_tensor_format_desc"):
                try:
                    fmt = engine.get_tensor_format_desc(name) or None
                except Exception:  # noqa: BLE001
                    fmt = None
            location = None
            if hasattr(engine, "get_tensor_location"):
                try:
                    location = trt_enum_name(engine.get_tensor_location(name)).lower()
                except Exception:  # noqa: BLE001
                    location = None
            profiles: List[Dict[str, List[int]]] = []
            if is_input:
                for p in range(num_profiles):
                    entry = _profile_entry(engine, name, p, is_shape)
                    if entry is not None:
                        profiles.append(entry)
            io.append(IOTensor(name=name, mode="input" if is_input else "output",
                               dtype=trt_dtype_name(engine.get_tensor_dtype(name)),
                               shape=tuple(_dims(engine.get_tensor_shape(name))), is_shape_tensor=is_shape,
                               format=fmt, location=location, profiles=tuple(profiles)))
    else:
        notes.append("this TensorRT has no name-based I/O tensor API (8.5+ is needed to list I/O tensors)")

    memory = None
    for attr in ("device_memory_size_v2", "device_memory_size"):  # v2 on 10.1+, the other deprecated there
        if hasattr(engine, attr):
            value = _attr(engine, attr)
            if value is not None:
                memory = int(value)
                break
    verbosity = _attr(engine, "profiling_verbosity")
    verbosity_name = trt_enum_name(verbosity) if verbosity is not None else None

    layer_info = None
    if hasattr(engine, "create_engine_inspector"):
        from trtdebug.runners.tensorrt.inspector import parse_engine_info

        try:
            inspector = engine.create_engine_inspector()
            text = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
            layer_info = parse_engine_info(text, graph, profile=profile)
        except Exception as exc:  # noqa: BLE001 - keep the rest of the summary
            notes.append(f"could not read layer information: {exc}")
        if layer_info is not None and not layer_info.detailed:
            notes.append("the engine was not built with ProfilingVerbosity.DETAILED: layer types, precisions, tactics "
                         "and ONNX names are missing (rebuild with detailed profiling verbosity)")
    else:
        notes.append("this TensorRT has no engine inspector (8.2+)")
    if profile >= num_profiles:
        notes.append(f"the engine has {num_profiles} profile(s); profile {profile} does not exist")
    size = file_size(path)
    return EngineSummary(
        path=str(path) if path is not None else None, tensorrt_version=getattr(trt, "__version__", None),
        name=_attr(engine, "name"), num_layers=_attr(engine, "num_layers"), num_profiles=num_profiles,
        device_memory_size=memory, io=io, layer_info=layer_info, profiling_verbosity=verbosity_name,
        file_size=size, notes=notes,
    )


def _import_tensorrt(module: str = "tensorrt"):
    from trtdebug.runners.tensorrt.compat import import_tensorrt

    return import_tensorrt(module)


def load_engine(path: os.PathLike, *, module: str = "tensorrt"):
    """Deserialize an engine file: returns ``(runtime, engine)`` (keep the runtime alive with the engine).

    A missing or empty file is a :class:`ModelLoadError`; an engine this TensorRT cannot load (another
    version, another GPU, a corrupt file) is a :class:`~trtdebug.errors.BackendError` quoting TensorRT.
    """
    from trtdebug.runners.tensorrt.engine import deserialize, read_engine_file
    from trtdebug.runners.tensorrt.logger import shared_logger

    p = Path(path)
    if p.is_dir():
        raise ModelLoadError(f"expected a TensorRT engine file, got a directory: {p}")
    data = read_engine_file(p)
    if p.suffix.lower() == ".onnx":
        raise ModelLoadError(f"{p} is an ONNX model, not a TensorRT engine: use `trtdebug inspect model` "
                             "(or `trtdebug inspect capability`)")
    trt = _import_tensorrt(module)
    logger = shared_logger(trt)
    try:
        return deserialize(trt, logger, data, what=f"engine {p}")
    except BackendError:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. no GPU for trt.Runtime
        raise BackendError(f"TensorRT could not load the engine {p}: {exc}") from exc


def inspect_engine(path: os.PathLike, *, model: Optional[os.PathLike] = None, profile: int = 0,
                   module: str = "tensorrt") -> EngineSummary:
    """Summarize an engine file; ``model`` (the ONNX it was built from) validates the ONNX name map;
    ``module``: the library that built it (``tensorrt`` or ``tensorrt_rtx``)."""
    graph = None
    if model is not None:
        from trtdebug.model.graph import ModelGraph
        from trtdebug.model.loader import load_model

        graph = ModelGraph(load_model(model, infer_shapes=False))
    runtime, engine = load_engine(path, module=module)
    trt = _import_tensorrt(module)
    summary = summarize_engine(engine, trt, graph=graph, profile=profile, path=path)
    del engine, runtime
    return summary


# -- console -------------------------------------------------------------------------------------------
def _shape_text(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def render_engine_summary(summary: EngineSummary, console=None, *, max_nodes_shown: int = 6) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    from trtdebug.inspect.model import _human_bytes

    console = console or Console()
    title = f"TensorRT engine {summary.path}" if summary.path else "TensorRT engine"
    console.print(f"[bold]{escape(title)}[/bold]")
    console.print(f"  TensorRT {summary.tensorrt_version or '?'} | {summary.num_layers if summary.num_layers is not None else '?'} layers"
                  f" | {summary.num_profiles} optimization profile(s) | device memory {_human_bytes(summary.device_memory_size)}"
                  + (f" | profiling verbosity {summary.profiling_verbosity}" if summary.profiling_verbosity else "")
                  + (f" | file {_human_bytes(summary.file_size)}" if summary.file_size is not None else ""), markup=False)
    io = Table(title="I/O tensors", title_justify="left", show_edge=False)
    for col in ("mode", "name", "dtype", "shape", "profiles (min / opt / max)"):
        io.add_column(col, overflow="fold")
    for t in summary.io:
        profiles = "\n".join(
            f"{i}: {_shape_text(p.get('min', []))} / {_shape_text(p.get('opt', []))} / {_shape_text(p.get('max', []))}"
            + (" (values)" if t.is_shape_tensor else "") for i, p in enumerate(t.profiles))
        io.add_row(*[Text(v) for v in (t.mode, t.name, t.dtype, _shape_text(t.shape), profiles or "-")])
    console.print(io)
    info = summary.layer_info
    if info is not None and info.layers:
        layers = Table(title=f"Layers (profile {info.profile})", title_justify="left", show_edge=False)
        for col in ("#", "layer", "type", "precision", "tactic", "ONNX nodes"):
            layers.add_column(col, overflow="fold")
        for layer in info.layers:
            if layer.is_reformat:
                nodes = "(reformat" + (f" for {', '.join(layer.reformat_for[:2])}" if layer.reformat_for else "") + ")"
            else:
                shown = list(layer.onnx_nodes[:max_nodes_shown])
                extra = len(layer.onnx_nodes) - len(shown)
                nodes = ", ".join(shown) + (f" (+{extra} more)" if extra > 0 else "")
                if layer.mapping == "range":
                    nodes += " [range]"
            layers.add_row(*[Text(v) for v in (str(layer.index), layer.name, layer.type or "-", layer.precision or "-",
                                               layer.tactic or "-", nodes or "-")])
        console.print(layers)
        console.print(f"  {len(info.node_to_layers)} ONNX nodes mapped to layers; "
                      f"{len(info.boundary_tensors)} ONNX tensors at layer boundaries"
                      + (f"; {len(info.unmapped_nodes)} graph nodes in no layer (folded or removed)" if info.unmapped_nodes else ""),
                      markup=False)
    for note in summary.notes:
        console.print(f"  note: {note}", markup=False)
