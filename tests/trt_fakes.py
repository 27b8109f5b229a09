"""Fake ``tensorrt`` modules whose names are exactly those of a real release.

``fake_trt("10.8.0.43")`` reads ``tests/trt_api/tensorrt-10.8.0.43.json`` (the release's Python API,
snapshotted from NVIDIA's bindings) and builds a module in which every class, method, property and
enum member of that release exists - and nothing else: ``hasattr`` answers as on that release, and
code that touches a name the release lacks gets the AttributeError it would get there.

On top of the names sits just enough behaviour for the code under test (:class:`_Behaviour` mixins:
networks of layers and tensors, builder configs with flags and timing caches, an ONNX parser with
errors and ``supports_model[_v2]``, timing caches of entries that builds add to and that are tied
to a GPU (:func:`timing_cache_blob`), a runtime that deserializes to engines the test made, engines with
an inspector and execution contexts that run a numpy function on fake device memory).  A behaviour is attached only where
the release has the member, so the fakes cannot grant a release an API it does not have.  Members
without behaviour raise NotImplementedError naming the member and its real signature; classes that
have no Python constructor in the bindings raise TypeError when called, as pybind11 does.

What a test configures and observes lives on ``trt._fake`` (a :class:`World`): the network the
parser produces, parse and build outcomes, what was created, and every TensorRT name read
(``reads``, as ``"Class.member"`` or ``"name"`` for module attributes) - the recording that lets a
test assert which API a code path touched on a release.

The GPU side is fake too: :class:`DeviceMemory` (``trt._fake.device``) hands out host numpy buffers
whose addresses serve as device pointers, and :class:`CudaRuntime` is cuda-python's runtime module as
``trtdebug.runners.tensorrt.cuda`` calls it, so the real ``Cuda`` wrapper and ``DeviceBuffer`` run on
it; every device pointer is checked against a live allocation of the right size.
"""
from __future__ import annotations

import ctypes
import enum
import functools
import json
import types
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

API_DIR = Path(__file__).parent / "trt_api"


def _version_key(version: str) -> Tuple[int, ...]:
    """TensorRT releases oldest first, then TensorRT-RTX releases (``rtx-1.7.1.116``)."""
    product, _, number = version.rpartition("-")
    return (1 if product == "rtx" else 0,) + tuple(int(x) for x in number.split(".") if x.isdigit())


def releases() -> List[str]:
    """Every snapshotted release, oldest first; TensorRT-RTX's as ``rtx-VERSION`` (module ``tensorrt_rtx``)."""
    names = [p.stem.split("tensorrt-", 1)[1] for p in API_DIR.glob("tensorrt-*.json")]
    return sorted(names, key=_version_key)


@functools.lru_cache(maxsize=None)
def api(version: str) -> dict:
    """The raw snapshot of ``version``: ``{"version", "classes", "functions", "values"}``."""
    return json.loads((API_DIR / f"tensorrt-{version}.json").read_text())


def has_member(version: str, cls: str, member: Optional[str] = None) -> bool:
    spec = api(version)["classes"].get(cls)
    return spec is not None and (member is None or member in _all_members(version, cls))


@functools.lru_cache(maxsize=None)
def _all_members(version: str, cls: str) -> Dict[str, dict]:
    """A class's members with those of its bases (the snapshot lists each class's own view)."""
    classes = api(version)["classes"]
    members: Dict[str, dict] = {}
    for base in reversed(classes[cls]["bases"]):
        if base in classes:
            members.update(_all_members(version, base))
    members.update(classes[cls]["members"])
    return members


def signature(version: str, cls: str, member: str) -> str:
    return _all_members(version, cls)[member].get("signature", "")


# ----------------------------------------------------------------------------------------------
# the fake GPU
# ----------------------------------------------------------------------------------------------

NUMPY_OF = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
            "BOOL": np.bool_, "UINT8": np.uint8, "BF16": np.uint16}  # DataType name -> host storage


class DeviceMemory:
    """Device memory: host numpy buffers whose addresses are the "device pointers", so a copy is a
    memmove; any access outside one live allocation fails the test (buffers too small, use after free)."""

    def __init__(self) -> None:
        self.allocations: Dict[int, np.ndarray] = {}
        self.freed: List[int] = []

    def malloc(self, nbytes: int) -> int:
        buf = np.zeros(max(int(nbytes), 1), np.uint8)
        self.allocations[buf.ctypes.data] = buf
        return buf.ctypes.data

    def free(self, ptr: int) -> None:
        assert ptr in self.allocations, f"fake CUDA: free of {ptr:#x}, which is not a live allocation"
        del self.allocations[ptr]
        self.freed.append(ptr)

    def view(self, ptr: int, nbytes: int) -> np.ndarray:
        for base, buf in self.allocations.items():
            if base <= ptr and ptr + nbytes <= base + buf.size:
                return buf[ptr - base:ptr - base + nbytes]
        raise AssertionError(f"fake CUDA: {nbytes} bytes at {ptr:#x} are not inside one live allocation")

    def read(self, ptr: int, dtype, shape) -> np.ndarray:
        dtype = np.dtype(dtype)
        return self.view(ptr, int(np.prod(shape, dtype=np.int64)) * dtype.itemsize).view(dtype).reshape(shape).copy()

    def write(self, ptr: int, array: np.ndarray) -> None:
        data = np.ascontiguousarray(array)
        self.view(ptr, data.nbytes)[:] = data.reshape(-1).view(np.uint8)


class CudaRuntime:
    """cuda-python's runtime module (``cuda.bindings.runtime``) as far as trtdebug calls it: calls return
    ``(cudaError_t, *values)`` tuples, copies go through :class:`DeviceMemory`."""

    class cudaError_t(enum.IntEnum):  # noqa: N801 - cuda-python's names
        cudaSuccess = 0
        cudaErrorInvalidValue = 1
        cudaErrorNoDevice = 100
        cudaErrorInvalidResourceHandle = 400

    class cudaMemcpyKind(enum.IntEnum):  # noqa: N801
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    def __init__(self, memory: DeviceMemory, devices: int = 1) -> None:
        self.memory, self.devices = memory, devices
        self.streams: set = set()
        self.syncs = 0
        self._next_stream = 0x5700

    def cudaGetDeviceCount(self):  # noqa: N802
        return (self.cudaError_t.cudaSuccess if self.devices else self.cudaError_t.cudaErrorNoDevice, self.devices)

    def cudaMalloc(self, nbytes):  # noqa: N802
        return self.cudaError_t.cudaSuccess, self.memory.malloc(nbytes)

    def cudaFree(self, ptr):  # noqa: N802
        self.memory.free(ptr)
        return (self.cudaError_t.cudaSuccess,)

    def cudaMemcpyAsync(self, dst, src, count, kind, stream):  # noqa: N802
        if stream not in self.streams:
            return (self.cudaError_t.cudaErrorInvalidResourceHandle,)
        if kind == self.cudaMemcpyKind.cudaMemcpyHostToDevice:
            ctypes.memmove(self.memory.view(dst, count).ctypes.data, src, count)
        elif kind == self.cudaMemcpyKind.cudaMemcpyDeviceToHost:
            ctypes.memmove(dst, self.memory.view(src, count).ctypes.data, count)
        else:
            return (self.cudaError_t.cudaErrorInvalidValue,)
        return (self.cudaError_t.cudaSuccess,)

    def cudaStreamCreate(self):  # noqa: N802
        self._next_stream += 1
        self.streams.add(self._next_stream)
        return self.cudaError_t.cudaSuccess, self._next_stream

    def cudaStreamSynchronize(self, stream):  # noqa: N802
        self.syncs += 1
        return (self.cudaError_t.cudaSuccess if stream in self.streams else self.cudaError_t.cudaErrorInvalidResourceHandle,)

    def cudaStreamDestroy(self, stream):  # noqa: N802
        if stream not in self.streams:
            return (self.cudaError_t.cudaErrorInvalidResourceHandle,)
        self.streams.discard(stream)
        return (self.cudaError_t.cudaSuccess,)


def cuda_runtime(trt, devices: int = 1) -> CudaRuntime:
    """A fake cuda-python runtime on ``trt``'s device memory (what its execution contexts read and write)."""
    return CudaRuntime(trt._fake.device, devices)


# ----------------------------------------------------------------------------------------------
# the world a fake module lives in
# ----------------------------------------------------------------------------------------------

class World:
    """What a test sets up for, and reads back from, one fake module (``trt._fake``)."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.reads: set = set()  # "Class.member" / "name": TensorRT names the code read
        self.network_factory: Optional[Callable[[], object]] = None  # what OnnxParser.parse fills in
        # called with (network, model bytes) by a successful parse: what the real parser does with the model
        # beyond the scripted network, e.g. marking the ONNX graph outputs the model declares
        self.on_parse: Optional[Callable[[object, bytes], None]] = None
        self.parse_ok = True
        self.parser_errors: List[object] = []  # ParserError objects parse() reports
        self.support: Optional[Callable[[bytes], tuple]] = None  # bytes -> (ok, [(nodes, flag)], [errors])
        self.build: Optional[Callable] = None  # (builder, network, config) -> bytes or None
        self.engine_json: Optional[dict] = None  # what EngineInspector returns
        self.deserialize: Optional[Callable[[bytes], object]] = None  # Runtime: bytes -> ICudaEngine or None
        self.device = DeviceMemory()
        self.networks: List[object] = []
        self.configs: List[object] = []
        self.network_flags: List[int] = []
        self.gpu = FAKE_GPU  # the device timing caches are made on; a cache of another one is a mismatch
        # how create_timing_cache answers bytes it cannot read: "empty" (an empty cache, as TensorRT 8.6 did
        # on the H200), "none" (returns None) or "raise" (a RuntimeError)
        self.unreadable_timing_cache = "empty"
        self.engines_built = 0  # successful build_serialized_network calls; each adds a timing-cache entry

    def read(self, owner: str, name: str) -> None:
        self.reads.add(f"{owner}.{name}" if owner else name)


class _FakeType(type):
    """Metaclass: records class-level reads of the release's names (``trt.BuilderFlag.FP16``)."""

    def __getattribute__(cls, name):
        value = type.__getattribute__(cls, name)
        if name[:1] != "_" and name in type.__getattribute__(cls, "_members"):
            type.__getattribute__(cls, "_world").read(type.__getattribute__(cls, "_trt_name"), name)
        return value


class _Object(metaclass=_FakeType):
    """Base of every fake class: state in ``_p`` (property values) and other ``_`` names only."""

    _members: frozenset = frozenset()
    _trt_name = ""
    _world: World

    def __getattribute__(self, name):
        value = object.__getattribute__(self, name)
        if name[:1] != "_" and name in type(self)._members:
            type(self)._world.read(type(self)._trt_name, name)
        return value

    def _init(self, **props) -> "_Object":
        object.__setattr__(self, "_p", dict(props))
        return self


def _no_constructor(cls_name):
    def __init__(self, *args, **kwargs):
        if type(self).__name__ == cls_name:
            raise TypeError(f"tensorrt.{cls_name}: No constructor defined!")
        object.__setattr__(self, "_p", {})  # a Python subclass (a logger, a listener) calling up
    return __init__


def _python_constructor(self, *args, **kwargs):
    object.__setattr__(self, "_p", {})


def _placeholder(cls_name, member, sig):
    def method(self, *args, **kwargs):
        raise NotImplementedError(f"fake tensorrt: {cls_name}.{member} has no behaviour in tests/trt_fakes.py ({sig})")
    method.__name__ = member
    return method


def _plain_property(member, settable):
    def get(self):
        return self._p.get(member)

    def put(self, value):
        self._p[member] = value
    return property(get, put if settable else None)


class _EnumBase(_Object):
    """pybind11 enum member: ``name``, ``value``, ``int()``, hashable, compared by identity."""

    def __int__(self):
        return self._value

    __index__ = __int__

    def __repr__(self):
        return f"<{self._trt_name}.{self._name}: {self._value}>"

    def __hash__(self):
        return hash((self._trt_name, self._name))

    def __eq__(self, other):
        return isinstance(other, _EnumBase) and (other._trt_name, other._name) == (self._trt_name, self._name)


def _enum_name_property():
    return property(lambda self: self._name)


def _enum_name_method():  # TensorRT 8.6/10.x's parser ErrorCode: ``name`` is a method there
    return lambda self: self._name


# ----------------------------------------------------------------------------------------------
# behaviour, attached only to members the release has
# ----------------------------------------------------------------------------------------------

class _Behaviour:
    """Per TensorRT class name, a mixin whose public attributes implement that class's members."""

    registry: Dict[str, type] = {}

    @classmethod
    def of(cls, trt_name):
        def register(mixin):
            cls.registry[trt_name] = mixin
            return mixin
        return register


@_Behaviour.of("ITensor")
class _Tensor:
    is_network_output = property(lambda self: self._p.get("is_network_output", False))
    is_network_input = property(lambda self: self._p.get("is_network_input", False))
    is_shape_tensor = property(lambda self: self._p.get("is_shape_tensor", False))
    is_execution_tensor = property(lambda self: self._p.get("is_execution_tensor", True))


@_Behaviour.of("ILayer")
class _Layer:
    """Per-layer precision as 8.6/10.x have it: ``precision`` reads FLOAT until set, ``reset_*`` undo a set."""

    num_inputs = property(lambda self: len(self._p["inputs"]))
    num_outputs = property(lambda self: len(self._p["outputs"]))
    precision_is_set = property(lambda self: self._p.get("precision") is not None)

    @property
    def precision(self):
        value = self._p.get("precision")
        return _module_of(self).DataType.FLOAT if value is None else value

    @precision.setter
    def precision(self, dtype):
        self._p["precision"] = dtype

    def reset_precision(self):
        self._p["precision"] = None

    def get_input(self, index):
        return self._p["inputs"][index]

    def get_output(self, index):
        return self._p["outputs"][index]

    def set_output_type(self, index, dtype):
        self._p.setdefault("output_types", {})[index] = dtype

    def get_output_type(self, index):
        return self._p.get("output_types", {}).get(index, self._p["outputs"][index].dtype)

    def output_type_is_set(self, index):
        return index in self._p.get("output_types", {})

    def reset_output_type(self, index):
        self._p.get("output_types", {}).pop(index, None)


@_Behaviour.of("INetworkDefinition")
class _Network:
    num_inputs = property(lambda self: len(self._p["inputs"]))
    num_layers = property(lambda self: len(self._p["layers"]))
    num_outputs = property(lambda self: len(self._p["outputs"]))

    def get_input(self, index):
        return self._p["inputs"][index]

    def get_layer(self, index):
        return self._p["layers"][index]

    def get_output(self, index):
        return self._p["outputs"][index]

    def mark_output(self, tensor):
        tensor._p["is_network_output"] = True
        self._p["outputs"].append(tensor)

    def unmark_output(self, tensor):
        tensor._p["is_network_output"] = False
        self._p["outputs"].remove(tensor)

    def mark_debug(self, tensor):
        self._p.setdefault("debug", []).append(tensor.name)
        return True

    def is_debug_tensor(self, tensor):
        return tensor.name in self._p.get("debug", [])

    def mark_unfused_tensors_as_debug_tensors(self):
        self._p["unfused_debug"] = True
        return True


@_Behaviour.of("ITimingCache")
class _TimingCache:
    """``_p["entries"]``: the measurements (bytes), ``_p["gpu"]``: the device they were made on;
    ``_p["edits"]``: the editable cache's view (10.8+), key text -> (tacticHash, timingMSec)."""

    def serialize(self):
        return timing_cache_blob(self._p["entries"], self._p["gpu"])

    def combine(self, input_cache, ignore_mismatch):
        if input_cache._p["gpu"] != self._p["gpu"] and not ignore_mismatch:
            return False
        self._p["entries"] |= input_cache._p["entries"]
        self._p.setdefault("edits", {}).update(input_cache._p.get("edits", {}))
        return True

    def reset(self):
        self._p["entries"].clear()
        self._p.setdefault("edits", {}).clear()
        return True

    # editable timing cache (10.8+): a builder fake fills the edits
    def queryKeys(self):  # noqa: N802 - TensorRT's name
        return [_make(self, "TimingCacheKey", text=k) for k in self._p.setdefault("edits", {})]

    def query(self, key):
        h, ms = self._p.setdefault("edits", {}).get(key._p["text"], (2 ** 64 - 1, -1.0))
        return _make(self, "TimingCacheValue", tacticHash=h, timingMSec=ms)

    def update(self, key, value):
        self._p.setdefault("edits", {})[key._p["text"]] = (value.tacticHash, value.timingMSec)
        return True


@_Behaviour.of("TimingCacheKey")
class _TimingCacheKey:
    """``parse("0x" + 32 hex digits)``; ``str(key)`` gives that text back (TensorRT's documented form)."""

    parse = classmethod(lambda cls, text: cls.__new__(cls)._init(text=str(text).lower()))

    def __str__(self):
        return self._p["text"]


@_Behaviour.of("TimingCacheValue")
class _TimingCacheValue:
    def __init__(self, tactic_hash, timing_msec):
        object.__setattr__(self, "_p", {"tacticHash": int(tactic_hash), "timingMSec": float(timing_msec)})


@_Behaviour.of("IAlgorithm")
class _Algorithm:
    def get_algorithm_io_info(self, index):
        return self._p["io"][index]


@_Behaviour.of("IBuilderConfig")
class _BuilderConfig:
    num_optimization_profiles = property(lambda self: len(self._p.setdefault("profiles", [])))

    def set_flag(self, flag):
        self._p.setdefault("flags", set()).add(flag.name)

    def clear_flag(self, flag):
        self._p.setdefault("flags", set()).discard(flag.name)

    def get_flag(self, flag):
        return flag.name in self._p.setdefault("flags", set())

    def set_memory_pool_limit(self, pool, size):
        self._p.setdefault("pools", {})[pool.name] = size

    def get_memory_pool_limit(self, pool):
        return self._p.setdefault("pools", {}).get(pool.name, 0)

    def create_timing_cache(self, serialized_timing_cache):
        world, data = type(self)._world, bytes(serialized_timing_cache)
        gpu, entries = world.gpu, set()
        if data:
            read = _read_timing_cache(data)
            if read is not None:
                gpu, entries = read
            elif world.unreadable_timing_cache == "none":
                return None
            elif world.unreadable_timing_cache == "raise":
                raise RuntimeError("Error Code 1: Serialization (Serialization assertion magicTagRead failed)")
        return _make(self, "ITimingCache", entries=entries, gpu=gpu)

    def set_timing_cache(self, cache, ignore_mismatch):
        if cache._p["gpu"] != type(self)._world.gpu and not ignore_mismatch:
            return False  # TensorRT: the cache was made on another device; not attached
        self._p["cache"] = cache
        return True

    def get_timing_cache(self):
        return self._p.get("cache")

    def add_optimization_profile(self, profile):
        profiles = self._p.setdefault("profiles", [])
        profiles.append(profile)
        return len(profiles) - 1


@_Behaviour.of("IOptimizationProfile")
class _OptimizationProfile:
    def set_shape(self, input, min, opt, max):  # noqa: A002 - TensorRT's parameter names
        self._p.setdefault("shapes", {})[input] = (tuple(min), tuple(opt), tuple(max))

    def get_shape(self, input):  # noqa: A002
        return self._p.setdefault("shapes", {}).get(input)


@_Behaviour.of("Builder")
class _Builder:
    def __init__(self, logger):
        object.__setattr__(self, "_p", {"logger": logger})

    def create_network(self, flags=0):
        world = type(self)._world
        world.network_flags.append(int(flags))
        net = world.network_factory() if world.network_factory else network(_module_of(self), [], [], [])
        world.networks.append(net)
        return net

    def create_builder_config(self):
        config = _make(self, "IBuilderConfig", builder_optimization_level=3)
        type(self)._world.configs.append(config)
        return config

    def create_optimization_profile(self):
        return _make(self, "IOptimizationProfile")

    def build_serialized_network(self, network, config):
        world = type(self)._world
        result = world.build(self, network, config) if world.build is not None else engine_bytes(network)
        if result is not None:
            cache = config._p.get("cache")
            if cache is not None:  # what the build measured joins the attached timing cache
                cache._p["entries"].add(f"build{world.engines_built}".encode())
            world.engines_built += 1
        return result


@_Behaviour.of("OnnxParser")
class _OnnxParser:
    def __init__(self, network, logger):
        object.__setattr__(self, "_p", {"network": network, "logger": logger, "errors": []})

    num_errors = property(lambda self: len(self._p["errors"]))
    num_subgraphs = property(lambda self: len(self._p.get("subgraphs", [])))

    def get_error(self, index):
        return self._p["errors"][index]

    def clear_errors(self):
        self._p["errors"] = []

    def parse(self, model, path=None):
        world = type(self)._world
        if not world.parse_ok:
            self._p["errors"] = list(world.parser_errors)
        elif world.on_parse is not None:
            world.on_parse(self._p["network"], bytes(model) if model else Path(path).read_bytes())
        return world.parse_ok

    def parse_from_file(self, model):
        return self.parse(b"", model)

    def _support(self, model):
        ok, subgraphs, errors = type(self)._world.support(bytes(model))
        self._p["errors"] = list(errors)
        self._p["subgraphs"] = [(list(nodes), bool(flag)) for nodes, flag in subgraphs]
        return ok

    def supports_model(self, model, path=None):
        ok = self._support(model)
        return ok, [(nodes, flag) for nodes, flag in self._p["subgraphs"]]

    def supports_model_v2(self, model, path=None):
        return self._support(model)

    def is_subgraph_supported(self, index):
        return self._p["subgraphs"][index][1]

    def get_subgraph_nodes(self, index):
        return self._p["subgraphs"][index][0]


@_Behaviour.of("ParserError")
class _ParserError:
    def code(self):
        return self._p["code"]

    def desc(self):
        return self._p["desc"]

    def node(self):
        return self._p["node"]

    def node_name(self):
        return self._p.get("node_name") or ""

    def node_operator(self):
        return self._p.get("node_operator") or ""

    def func(self):
        return self._p.get("func", "")

    def file(self):
        return self._p.get("file", "ModelImporter.cpp")

    def line(self):
        return self._p.get("line", 0)


@_Behaviour.of("EngineInspector")
class _EngineInspector:
    def get_engine_information(self, format):  # noqa: A002 - TensorRT's parameter name
        trt = _module_of(self)
        if format != trt.LayerInformationFormat.JSON:
            return "\n".join(layer.get("Name", "") for layer in type(self)._world.engine_json.get("Layers", []))
        return json.dumps(type(self)._world.engine_json)


@_Behaviour.of("Runtime")
class _Runtime:
    def __init__(self, logger):
        object.__setattr__(self, "_p", {"logger": logger})

    def deserialize_cuda_engine(self, serialized_engine):
        world = type(self)._world
        return world.deserialize(bytes(serialized_engine)) if world.deserialize else None  # None: TensorRT's failure


@_Behaviour.of("ICudaEngine")
class _Engine:
    """``_p["tensors"]``: name -> (mode name, dtype name, shape); ``_p["profiles"]``: per profile,
    name -> (min, opt, max); ``_p["shape_inputs"]``: shape-tensor input -> per profile (min, opt, max)
    *values*; ``_p["run"]``: inputs -> outputs (numpy), what a context computes."""

    num_io_tensors = property(lambda self: len(self._p["tensors"]))
    num_optimization_profiles = property(lambda self: max(1, len(self._p.get("profiles", []))))

    def _enum(self, cls, name):
        return getattr(getattr(_module_of(self), cls), name)

    def get_tensor_name(self, index):
        return list(self._p["tensors"])[index]

    def get_tensor_mode(self, name):
        return self._enum("TensorIOMode", self._p["tensors"][name][0])

    def get_tensor_dtype(self, name):
        return self._enum("DataType", self._p["tensors"][name][1])

    def get_tensor_shape(self, name):
        return tuple(self._p["tensors"][name][2])

    def get_tensor_profile_shape(self, name, profile_index):
        if name in self._p.get("shape_inputs", {}):  # a shape tensor's profile is of its values, not its dims
            return [self.get_tensor_shape(name)] * 3
        profile = self._p["profiles"][profile_index]
        if name not in profile:
            raise RuntimeError(f"{name} is not an input with an optimization profile")
        return [tuple(s) for s in profile[name]]

    def get_tensor_profile_values(self, profile_index, name):  # the bindings' names are swapped; this order
        return self._profile_values(profile_index, name)

    def get_profile_shape_input(self, profile_index, binding):  # 8.x: a shape tensor's values, by binding
        return self._profile_values(profile_index, binding)

    def _profile_values(self, profile_index, name):
        if not isinstance(profile_index, int) or not isinstance(name, str):
            raise TypeError("incompatible function arguments: (profile_index: int, name: str)")
        return [list(v) for v in self._p["shape_inputs"][name][profile_index]]

    def is_shape_inference_io(self, name):
        return name in self._p.get("shape_inputs", {})

    def get_tensor_location(self, name):
        return self._enum("TensorLocation", "DEVICE")

    def get_tensor_format_desc(self, name, *profile_index):
        return "Row major linear FP32 format (kLINEAR)"

    def create_engine_inspector(self):
        return _make(self, "EngineInspector")

    def create_execution_context(self, *strategy):
        return _make(self, "IExecutionContext", engine=self, active_optimization_profile=0, shapes={}, addresses={},
                     allocators={}, debug=set())

    def _inputs(self):
        return [n for n, (mode, _, _) in self._p["tensors"].items() if mode == "INPUT"]

    def _outputs(self):
        return [n for n, (mode, _, _) in self._p["tensors"].items() if mode == "OUTPUT"]

    def _dtype(self, name):
        return np.dtype(NUMPY_OF[self._p["tensors"][name][1]])


@_Behaviour.of("IExecutionContext")
class _ExecutionContext:
    """Name-based I/O as TensorRT 8.5+ has it: shapes checked against the active profile, inputs read from
    and outputs written to :class:`DeviceMemory`, data-dependent outputs through the IOutputAllocator,
    marked debug tensors (anything else ``run`` returns) handed to the IDebugListener (10.0+)."""

    def set_optimization_profile_async(self, profile_index, stream_handle):
        if not 0 <= profile_index < self._p["engine"].num_optimization_profiles:
            return False
        self._p["active_optimization_profile"] = profile_index
        self._p["shapes"] = {}
        return True

    def set_input_shape(self, name, shape):
        engine, shape = self._p["engine"], tuple(int(d) for d in shape)
        if name not in engine._inputs():
            return False
        declared = engine.get_tensor_shape(name)
        profiles = engine._p.get("profiles") or [{}]
        lo, _, hi = profiles[self._p["active_optimization_profile"]].get(name, (declared, declared, declared))
        if len(shape) != len(declared) or any(not (a <= d <= b) for a, d, b in zip(lo, shape, hi)) \
                or any(0 <= c != d for c, d in zip(declared, shape)):
            return False
        self._p["shapes"][name] = shape
        return True

    def get_tensor_shape(self, name):
        engine = self._p["engine"]
        if name in engine._inputs():
            return self._p["shapes"].get(name, engine.get_tensor_shape(name))
        if any(n not in self._p["shapes"] for n in engine._inputs()):
            return engine.get_tensor_shape(name)
        shapes = engine._p.get("output_shapes")
        if shapes is not None:
            return tuple(shapes(dict(self._p["shapes"]))[name])
        zeros = {n: np.zeros(self._p["shapes"][n], engine._dtype(n)) for n in engine._inputs()}
        return tuple(np.shape(engine._p["run"](zeros)[name]))

    def set_tensor_address(self, name, memory):
        self._p["addresses"][name] = int(memory)
        return True

    def get_tensor_address(self, name):
        return self._p["addresses"].get(name, 0)

    def set_output_allocator(self, name, output_allocator):
        self._p["allocators"][name] = output_allocator
        return True

    def get_output_allocator(self, name):
        return self._p["allocators"].get(name)

    def set_debug_listener(self, listener):
        self._p["listener"] = listener
        return True

    def get_debug_listener(self):
        return self._p.get("listener")

    def set_tensor_debug_state(self, name, flag):
        (self._p["debug"].add if flag else self._p["debug"].discard)(name)
        return True

    def get_debug_state(self, name):
        return name in self._p["debug"]

    def execute_async_v3(self, stream_handle):
        engine, world = self._p["engine"], type(self)._world
        device, addresses = world.device, self._p["addresses"]
        if any(n not in self._p["shapes"] or n not in addresses for n in engine._inputs()):
            return False  # TensorRT: "not all input dimensions/addresses are specified"
        feeds = {n: device.read(addresses[n], engine._dtype(n), self._p["shapes"][n]) for n in engine._inputs()}
        results = engine._p["run"](feeds)
        for name in engine._outputs():
            value = np.asarray(results[name]).astype(engine._dtype(name))
            shape = self.get_tensor_shape(name)
            if any(d < 0 for d in shape):  # data-dependent: memory from the allocator, shape told afterwards
                allocator = self._p["allocators"].get(name)
                if allocator is None:
                    return False
                # 8.x calls reallocate_output; 10.x's bindings list no methods, TensorRT calls the async one
                if has_member(world.version, "IOutputAllocator", "reallocate_output"):
                    ptr = allocator.reallocate_output(name, 0, value.nbytes, 256)
                else:
                    ptr = allocator.reallocate_output_async(name, 0, value.nbytes, 256, stream_handle)
                if not ptr:
                    return False
                device.write(int(ptr), value)
                allocator.notify_shape(name, value.shape)
                continue
            assert tuple(value.shape) == shape, f"fake engine: run() gave {name} shape {value.shape}, context says {shape}"
            if name not in addresses:
                return False
            device.write(addresses[name], value)
        listener = self._p.get("listener")
        unfused = bool(self._p.get("unfused_tensors_debug_state"))
        for name, value in results.items():
            if listener is None or name in engine._p["tensors"] or not (unfused or name in self._p["debug"]):
                continue
            value = np.ascontiguousarray(value)
            dtype = next(k for k, v in NUMPY_OF.items() if np.dtype(v) == value.dtype)
            ptr = device.malloc(value.nbytes)
            device.write(ptr, value)
            trt = _module_of(self)
            listener.process_debug_tensor(ptr, trt.TensorLocation.DEVICE, getattr(trt.DataType, dtype), value.shape,
                                          name, stream_handle)
            device.free(ptr)
        return True


# ----------------------------------------------------------------------------------------------
# building a module
# ----------------------------------------------------------------------------------------------

class _FakeModule(types.ModuleType):
    def __getattribute__(self, name):
        value = types.ModuleType.__getattribute__(self, name)
        if name[:1] != "_":
            types.ModuleType.__getattribute__(self, "_fake").read("", name)
        return value


def _module_of(obj) -> types.ModuleType:
    return type(obj)._module


def _make(obj, cls_name: str, **props):
    cls = getattr(_module_of(obj), cls_name)
    return cls.__new__(cls)._init(**props)


def _class_order(classes: Dict[str, dict]) -> List[str]:
    done: List[str] = []
    seen: set = set()

    def visit(name):
        if name in seen or name not in classes:
            return
        seen.add(name)
        for base in classes[name]["bases"]:
            visit(base)
        done.append(name)
    for name in classes:
        visit(name)
    return done


def fake_trt(version: str) -> types.ModuleType:
    """A fresh fake ``tensorrt`` module of ``version`` (one of :func:`releases`), with its own World."""
    spec = api(version)
    world = World(version)
    module = _FakeModule(spec.get("module", "tensorrt"))
    module._fake = world
    module.__version__ = spec["version"]
    for name, sig in spec["functions"].items():
        setattr(module, name, _placeholder("tensorrt", name, sig).__get__(module))
    classes = spec["classes"]
    for name in _class_order(classes):
        _add_class(module, world, version, name, classes[name])
    for name, value in spec.get("values", {}).items():  # float32 -> DataType.FLOAT
        cls_name, _, member = value.partition(".")
        cls = classes.get(cls_name)
        if cls is not None and member in cls["members"]:
            setattr(module, name, getattr(getattr(module, cls_name), member))
    world.reads.clear()
    return module


def _inherited(bases, member: str) -> bool:
    return any(member in vars(k) for b in bases for k in b.__mro__ if k not in (_Object, _EnumBase, object))


def _add_class(module, world: World, version: str, name: str, spec: dict) -> None:
    members = spec["members"]
    all_members = _all_members(version, name)
    enum_members = [(m, info) for m, info in members.items() if info["kind"] not in ("method", "property",
                                                                                     "pybind11_static_property")]
    is_enum = any(info["kind"] == "enum_member" for _, info in enum_members)
    bases = tuple(getattr(module, b) for b in spec["bases"] if b in api(version)["classes"]) or \
        ((_EnumBase,) if is_enum else (_Object,))
    mixin = _Behaviour.registry.get(name)
    attrs = {"_members": frozenset(m for m in all_members if not m.startswith("__")), "_trt_name": name,
             "_world": world, "_module": module, "__module__": "tensorrt"}
    for member, info in members.items():
        kind = info["kind"]
        if member == "__init__":
            if mixin is not None and "__init__" in vars(mixin):
                attrs["__init__"] = vars(mixin)["__init__"]
            elif info.get("signature", "").startswith("Initialize self"):
                attrs["__init__"] = _no_constructor(name)
            else:
                attrs["__init__"] = _python_constructor
            continue
        if member.startswith("__"):
            continue
        if is_enum and member in ("name", "value"):
            if member == "name":
                attrs["name"] = _enum_name_method() if kind == "method" else _enum_name_property()
            else:
                attrs["value"] = property(lambda self: self._value)
            continue
        if mixin is not None and member in vars(mixin):
            attrs[member] = vars(mixin)[member]
        elif _inherited(bases, member):  # a layer subclass listing ILayer's members again
            continue
        elif kind == "method":
            attrs[member] = _placeholder(name, member, info.get("signature", ""))
        elif kind in ("property", "pybind11_static_property"):
            attrs[member] = _plain_property(member, info.get("settable", False))
    if mixin is not None:  # private helpers of the behaviour, and how it prints
        attrs.update({k: v for k, v in vars(mixin).items() if k.startswith("_") and not k.startswith("__")})
        if "__str__" in vars(mixin):
            attrs["__str__"] = vars(mixin)["__str__"]
    cls = _FakeType(name, bases, attrs)
    setattr(module, name, cls)
    if enum_members:
        nested = cls
        if not is_enum:  # ILogger.ERROR etc. are members of ILogger.Severity
            nested = _FakeType(enum_members[0][1]["kind"], (_EnumBase,),
                               {"_members": frozenset(["name", "value"] + [m for m, _ in enum_members]),
                                "_trt_name": f"{name}.{enum_members[0][1]['kind']}", "_world": world,
                                "_module": module, "name": _enum_name_property(),
                                "value": property(lambda self: self._value)})
            type.__setattr__(cls, enum_members[0][1]["kind"], nested)
        for index, (member, info) in enumerate(enum_members):
            inst = object.__new__(nested)
            object.__setattr__(inst, "_name", member)
            value = info.get("value")
            object.__setattr__(inst, "_value", index if value is None else value)
            object.__setattr__(inst, "_p", {})
            type.__setattr__(nested, member, inst)
            if nested is not cls:
                type.__setattr__(cls, member, inst)


# ----------------------------------------------------------------------------------------------
# objects a test builds
# ----------------------------------------------------------------------------------------------

def _new(trt, cls_name: str, **props):
    cls = getattr(trt, cls_name)
    return cls.__new__(cls)._init(**props)


def tensor(trt, name: str, dtype: str = "FLOAT", shape: Sequence[int] = (2, 4), *, shape_tensor: bool = False,
           execution: bool = True):
    return _new(trt, "ITensor", name=name, dtype=getattr(trt.DataType, dtype), shape=tuple(shape),
                is_shape_tensor=shape_tensor, is_execution_tensor=execution)


def layer(trt, name: str, kind: str, inputs: Sequence[object], outputs: Sequence[object], metadata: str = ""):
    """An ILayer of LayerType ``kind``; ``metadata`` is dropped on releases without ILayer.metadata."""
    props = dict(name=name, type=getattr(trt.LayerType, kind), inputs=list(inputs), outputs=list(outputs))
    if has_member(trt._fake.version, "ILayer", "metadata"):
        props["metadata"] = metadata
    return _new(trt, "ILayer", **props)


def network(trt, inputs: Sequence[object], layers: Sequence[object], outputs: Sequence[object]):
    net = _new(trt, "INetworkDefinition", inputs=list(inputs), layers=list(layers), outputs=[])
    for t in inputs:
        t._p["is_network_input"] = True
    for t in outputs:
        net._p["outputs"].append(t)
        t._p["is_network_output"] = True
    return net


def parser_error(trt, node: int, desc: str, code: str = "UNSUPPORTED_NODE", *, node_name: Optional[str] = None,
                 node_operator: Optional[str] = None, func: str = ""):
    """A ParserError; ``node_name``/``node_operator`` exist as methods only on releases that have them (10.0+)."""
    return _new(trt, "ParserError", node=node, desc=desc, code=getattr(trt.ErrorCode, code), node_name=node_name,
                node_operator=node_operator, func=func)


FAKE_GPU = "fake-GPU-sm90"
_TIMING_CACHE_MAGIC = b"FAKE-TRT-TIMING-CACHE\n"


def timing_cache_blob(entries, gpu: str = FAKE_GPU) -> bytes:
    """A serialized fake ITimingCache: a header naming the GPU, then the sorted entries, one a line."""
    return _TIMING_CACHE_MAGIC + gpu.encode() + b"\n" + b"\n".join(sorted(entries))


def _read_timing_cache(data: bytes) -> Optional[Tuple[str, set]]:
    if not data.startswith(_TIMING_CACHE_MAGIC):
        return None
    gpu, _, body = data[len(_TIMING_CACHE_MAGIC):].partition(b"\n")
    return gpu.decode(), {line for line in body.split(b"\n") if line}


def timing_cache_entries(data: bytes) -> Optional[set]:
    """The entries of a serialized fake timing cache (a cache file's content), None if it is not one."""
    read = _read_timing_cache(bytes(data))
    return None if read is None else read[1]


def timing_entries(cache) -> set:
    """The live entry set of a fake ITimingCache: a test adds to it what a build would."""
    return cache._p["entries"]


def engine_bytes(network) -> bytes:
    """What the fake builder "serializes" by default: ``ENGINE:`` and the network's output names."""
    return b"ENGINE:" + ",".join(network.get_output(i).name for i in range(network.num_outputs)).encode()


def engine(trt, tensors: Dict[str, Tuple[str, str, Sequence[int]]], profiles: Sequence[dict] = (), *,
           shape_inputs: Optional[Dict[str, Sequence[tuple]]] = None, run: Optional[Callable] = None,
           output_shapes: Optional[Callable] = None, **props):
    """An ICudaEngine: ``tensors`` name -> (TensorIOMode name, DataType name, shape); ``profiles`` per profile
    name -> (min, opt, max); ``shape_inputs`` shape-tensor input -> per profile (min, opt, max) values.

    Its execution contexts compute ``run({input: array}) -> {name: array}`` (names beyond the engine's
    outputs are debug tensors); output shapes come from ``output_shapes({input: shape})`` (-1: known only
    after running) or else from ``run`` on zeros.  ``props`` (``name``, ``num_layers``,
    ``device_memory_size_v2``...) are kept only where the release has the property."""
    props = {k: v for k, v in props.items() if has_member(trt._fake.version, "ICudaEngine", k)}
    return _new(trt, "ICudaEngine", tensors=dict(tensors), profiles=list(profiles), shape_inputs=dict(shape_inputs or {}),
                run=run, output_shapes=output_shapes, **props)


def algorithm(trt, implementation: int, tactic: int, io: Sequence[str] = ("FLOAT", "FLOAT")):
    """An IAlgorithm (what ``select_algorithms`` is offered): ids and the DataType name of each I/O."""
    infos = [_new(trt, "IAlgorithmIOInfo", dtype=getattr(trt.DataType, d)) for d in io]
    variant = _new(trt, "IAlgorithmVariant", implementation=implementation, tactic=tactic)
    return _new(trt, "IAlgorithm", algorithm_variant=variant, io=infos, timing_msec=0.0)


def algorithm_context(trt, name: str, num_inputs: int = 1, num_outputs: int = 1):
    """An IAlgorithmContext: the engine layer ``name`` being given its algorithm."""
    return _new(trt, "IAlgorithmContext", name=name, num_inputs=num_inputs, num_outputs=num_outputs)
