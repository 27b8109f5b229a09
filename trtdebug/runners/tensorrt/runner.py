"""TrtRunner: build (or load) a TensorRT engine and run it, tensors named by ONNX names.

Runs through the name-based I/O API (``set_input_shape``, ``set_tensor_address``,
``execute_async_v3``; TensorRT 8.6+), device memory through cuda-python.  Buffers grow as
shapes change; outputs whose shape is known only after running go through an
``IOutputAllocator``.  Results come back in the ONNX model's topological order.

Dynamic inputs with no optimization profile given are built for the first feed's shapes
(min = opt = max); a later feed of other shapes rebuilds, reusing the timing cache in memory.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np

from trtdebug.errors import BackendError, BackendUnavailableError, FeedError, InferenceError
from trtdebug.model.graph import ModelGraph
from trtdebug.model.surgery import OutputSelection
from trtdebug.runners.base import Runner, TensorMeta
from trtdebug.runners.tensorrt import boundaries as boundaries_mod
from trtdebug.runners.tensorrt import compat
from trtdebug.runners.tensorrt import engine as engine_mod
from trtdebug.runners.tensorrt import precision as precision_mod
from trtdebug.runners.tensorrt.config import TrtBuildConfig

log = logging.getLogger(__name__)


def make_output_allocator(trt, cuda):
    """An ``IOutputAllocator`` for data-dependent output shapes (defined here: imports stay lazy)."""
    from trtdebug.runners.tensorrt.cuda import DeviceBuffer

    class OutputAllocator(trt.IOutputAllocator):
        def __init__(self) -> None:
            trt.IOutputAllocator.__init__(self)
            self.buffers: Dict[str, DeviceBuffer] = {}
            self.shapes: Dict[str, Tuple[int, ...]] = {}
            self.errors: List[str] = []

        def reallocate_output(self, tensor_name, memory, size, alignment):
            try:
                buf = self.buffers.setdefault(str(tensor_name), DeviceBuffer(cuda))
                return buf.ensure(int(size))
            except Exception as exc:  # noqa: BLE001 - must not raise into TensorRT
                self.errors.append(f"{tensor_name}: {exc}")
                return 0

        def reallocate_output_async(self, tensor_name, memory, size, alignment, stream):  # TensorRT 10+
            return self.reallocate_output(tensor_name, memory, size, alignment)

        def notify_shape(self, tensor_name, shape):
            self.shapes[str(tensor_name)] = tuple(int(d) for d in shape)

        def free(self) -> None:
            for buf in self.buffers.values():
                buf.free()
            self.buffers.clear()

    return OutputAllocator()


class TrtRunner(Runner):
    """Build an ONNX model (path or ModelProto) or load a serialized engine, and run it."""

    def __init__(self, source, *, config: TrtBuildConfig = TrtBuildConfig(),
                 outputs: OutputSelection = OutputSelection(), name: str = "tensorrt",
                 graph: Optional[ModelGraph] = None, model=None, boundaries: bool = False) -> None:
        super().__init__(name)
        self._source = source
        self._config = config
        self._selection = outputs
        self._graph = graph
        self._model = model
        self._boundaries = boundaries
        self._engine_only = engine_mod.is_engine_path(source)
        self._reset_state()

    def _reset_state(self) -> None:
        self._trt = None
        self._features: Optional[compat.Features] = None
        self._cuda = None
        self._logger = None
        self._builder = None
        self._runtime = None
        self._engine = None
        self._context = None
        self._stream = None
        self._io: List[engine_mod.IOTensor] = []
        self._buffers: Dict[str, object] = {}
        self._allocator = None
        self._listener = None
        self._debug_names: List[str] = []
        self._unfused_debug = False
        self._profile = 0
        self._derived_shapes: Optional[Dict[str, Tuple[int, ...]]] = None  # profile built from feed shapes
        self._cast_notes: set = set()
        self._widen: set = set()  # tensors marked in reduced precision: widened to float32 on the host

    # -- activation ----------------------------------------------------------------------------
    def _activate(self) -> None:
        from trtdebug.runners.tensorrt.logger import shared_logger

        trt = compat.import_tensorrt(self._config.module)
        self._trt = trt
        self._features = compat.detect(trt)
        compat.require_name_based_io(self._features)
        self._logger = shared_logger(trt, verbose=self._config.verbose)
        self.extra.update({"tensorrt_version": self._features.version, "tensorrt_module": self._config.module,
                           "fused_boundaries": self._boundaries, "notes": []})
        for note in compat.backend_notes(self._features):
            self._note(note)
        try:
            if not self._features.builds_without_gpu:
                self._require_cuda()  # the builder needs the GPU: say so before a long parse
            if self._engine_only:
                self._activate_engine_file()
            else:
                self._activate_model()
        except BaseException:
            self._deactivate()
            raise

    def _require_cuda(self) -> None:
        """cuda-python and a device, once: before the build, or (where building needs no GPU) before running."""
        if self._stream is None:
            from trtdebug.runners.tensorrt.cuda import get_cuda

            self._cuda = self._cuda or get_cuda()
            self._stream = self._cuda.stream_create()

    def _activate_engine_file(self) -> None:
        path = Path(self._source)
        if self._boundaries or not self._selection.is_default:
            self._note("a serialized engine runs as built: output marking and --fused-boundaries do not apply")
        self.extra["engine_path"] = str(path)
        self._load(engine_mod.read_engine_file(path))

    def _activate_model(self) -> None:
        from trtdebug.model.loader import load_model
        from trtdebug.runners.tensorrt.builder import EngineBuilder

        if self._model is None:
            self._model = load_model(self._source) if isinstance(self._source, (str, Path)) else self._source
        if self._graph is None:
            if any(not n.name for n in self._model.graph.node):  # a ModelProto handed over as is
                from trtdebug.model.loader import name_unnamed_nodes

                named = type(self._model)()
                named.CopyFrom(self._model)
                name_unnamed_nodes(named)
                self._model = named
            self._graph = ModelGraph(self._model)
        self._builder = EngineBuilder(self._trt, self._model, self._graph, self._config,
                                      show_progress=self._config.show_progress)
        cache_path = self._builder.timing_cache.path  # --timing-cache, else the per-GPU default file
        self.extra["timing_cache"] = {"path": str(cache_path) if cache_path else None,
                                      "loaded": self._builder.cache_loaded, "saved": False}
        if self._boundaries and (self._selection.mark_all or self._selection.names):
            self._note("--fused-boundaries: TensorRT returns the fused-layer boundary tensors; "
                       "--mark-all/--trt-outputs do not apply to it")
        if self._needs_feed_shapes():
            self._note("dynamic input shapes and no optimization profile: the engine is built at the first "
                       "inference, for the shapes of that feed")
            return
        self._build(None)

    def _needs_feed_shapes(self) -> bool:
        if self._config.profiles:
            covered = set().union(*(set(p.min) for p in self._config.profiles))
        else:
            covered = set()
        return any(t.is_dynamic and t.name not in covered for t in self._graph.inputs)

    def _build(self, feed_shapes: Optional[Dict[str, Tuple[int, ...]]]) -> None:
        builder = self._builder
        start = time.perf_counter()
        if self._boundaries:
            result, extra = self._build_boundaries(feed_shapes)
            self.extra.update(extra)
        else:
            result = builder.build(self._selection, feed_shapes=feed_shapes)
        self.extra.update(result.marking.as_extra())
        self.extra["build_time_s"] = round(time.perf_counter() - start, 3)
        self.extra["engine_build_s"] = round(result.seconds, 3)
        self.extra["build_progress_events"] = builder.progress_events
        if builder.last_phases:  # TensorRT 8.6: when each build phase began, read from its log
            self.extra["build_phases"] = [{"phase": p, "start_s": t} for p, t in builder.last_phases]
        self.extra["profiles"] = [{"min": {k: list(v) for k, v in p.min.items()},
                                   "opt": {k: list(v) for k, v in p.opt.items()},
                                   "max": {k: list(v) for k, v in p.max.items()}} for p in result.profiles]
        for note in result.notes:
            self._note(note)
        if self._config.save_engine:
            engine_mod.save_engine(self._config.save_engine, result.engine_bytes)
            self.extra["engine_saved"] = str(self._config.save_engine)
        if builder.save_timing_cache():
            self.extra["timing_cache"]["saved"] = True
        self._derived_shapes = dict(feed_shapes) if feed_shapes is not None and not self._config.profiles else None
        self._debug_names = list(result.debug_tensors)
        if result.debug_tensors or result.unfused_debug:
            self.extra["debug_tensors"] = list(result.debug_tensors) if not result.unfused_debug else "unfused"
        self._unfused_debug = result.unfused_debug
        self._widen = set(result.marking.reduced_outputs) | set(result.marking.as_debug)
        unmodified = self._unmodified_layers(result, feed_shapes)
        try:
            self._load(result.engine_bytes)
        except BackendUnavailableError as exc:  # e.g. RTX: built here without a GPU, cannot run here
            saved = f" and saved to {self._config.save_engine}" if self._config.save_engine else ""
            raise BackendUnavailableError(f"{exc}; the engine was built{saved}") from exc
        self._report_precisions(result.marking.route, unmodified)

    def _unmodified_layers(self, result, feed_shapes) -> Optional[List[object]]:
        """Layer information of the engine without marked tensors, where marking may have changed
        layer precisions (reduced precision asked, tensors marked); one more build, from the timing cache."""
        plan = result.marking
        if "layers_unmodified" in self.extra:
            return self.extra["layers_unmodified"]
        if plan.route is None or plan.route == precision_mod.ROUTE_STRONGLY_TYPED or not (plan.mark or plan.as_debug):
            return None
        plain = self._builder.build(OutputSelection(), feed_shapes=feed_shapes)
        runtime, engine = engine_mod.deserialize(self._trt, self._logger, plain.engine_bytes)
        layers = engine_mod.layer_information(self._trt, engine, self._features)
        del engine, runtime
        self.extra["unmodified_build_s"] = round(plain.seconds, 3)
        return layers

    def _report_precisions(self, route: Optional[str], unmodified: Optional[List[object]]) -> None:
        compared = precision_mod.precision_counts(self.extra.get("layers", []), self._graph)
        self.extra["layer_precisions"] = compared
        before = precision_mod.precision_counts(unmodified, self._graph) if unmodified is not None else None
        if before is not None:
            self.extra["layer_precisions_unmodified"] = before
        if route == precision_mod.ROUTE_STRONGLY_TYPED:
            self.extra["precision_source"] = "the model's types (strongly typed network)"
        if compared or before:
            self._note(precision_mod.precision_note(compared, before, route))

    def _build_boundaries(self, feed_shapes):
        """Build unmodified, find fused-layer boundaries, expose them (see boundaries.py)."""
        builder = self._builder
        mode = boundaries_mod.choose_mode(self._features)
        extra: Dict[str, object] = {"boundary_mode": mode}
        if mode == boundaries_mod.MODE_UNFUSED_DEBUG:
            result = builder.build(OutputSelection(), feed_shapes=feed_shapes, unfused_debug=True)
            extra.update({"fusion_preserved": True, "changed_layers": {"removed": [], "added": []}})
            return result, extra
        first = builder.build(OutputSelection(), feed_shapes=feed_shapes)
        runtime, engine = engine_mod.deserialize(self._trt, self._logger, first.engine_bytes)
        layers_before = engine_mod.layer_information(self._trt, engine, self._features)
        del engine, runtime
        exclude = set(self._selection.exclude)
        names = [n for n in boundaries_mod.boundary_tensors(layers_before, self._graph) if n not in exclude]
        extra["boundary_tensors"] = names
        extra["first_build_s"] = round(first.seconds, 3)
        if mode == boundaries_mod.MODE_DEBUG:
            second = builder.build(OutputSelection(), feed_shapes=feed_shapes, debug_names=names)
        else:
            second = builder.build(OutputSelection(names=tuple(names)), feed_shapes=feed_shapes)
        runtime, engine = engine_mod.deserialize(self._trt, self._logger, second.engine_bytes)
        layers_after = engine_mod.layer_information(self._trt, engine, self._features)
        del engine, runtime
        check = boundaries_mod.compare_layers(layers_before, layers_after)
        extra.update(check.as_extra())
        extra["layers_unmodified"] = layers_before
        if not check.preserved:
            self._note(f"marking the fused-layer boundaries changed the engine: {len(check.removed)} layer(s) "
                       f"gone, {len(check.added)} new")
        second.seconds += first.seconds
        return second, extra

    def _load(self, data: bytes) -> None:
        self._release_engine()
        trt, f = self._trt, self._features
        self._runtime, self._engine = engine_mod.deserialize(trt, self._logger, data)
        self._require_cuda()
        self._logger.messages.mark()
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise BackendError("TensorRT could not create an execution context: "
                               + self._logger.messages.error_text("out of GPU memory?"))
        self._io = engine_mod.describe_io(trt, self._engine)
        self._profile = 0
        self.extra["layers"] = engine_mod.layer_information(trt, self._engine, f)
        self.extra["num_layers"] = len(self.extra["layers"])
        self.extra["num_optimization_profiles"] = int(getattr(self._engine, "num_optimization_profiles", 1))
        if self._engine_only:
            self.extra["marked"] = [t.name for t in self._io if not t.is_input]
        if self._debug_names or self._unfused_debug:
            from trtdebug.runners.tensorrt.boundaries import make_debug_listener

            keep = set(self._graph.tensor_order) if self._graph is not None else None
            self._listener = make_debug_listener(trt, self._cuda, keep)
            self._context.set_debug_listener(self._listener)
            for name in self._debug_names:
                self._context.set_tensor_debug_state(name, True)
            if self._unfused_debug:
                self._context.unfused_tensors_debug_state = True

    # -- metadata -----------------------------------------------------------------------------
    def _input_metadata(self) -> Dict[str, TensorMeta]:
        if self._graph is not None and not self._engine_only:
            return {t.name: TensorMeta(dtype=t.dtype, shape=t.shape) for t in self._graph.inputs}
        meta = {}
        for t in self._io:
            if not t.is_input:
                continue
            # int32 engine inputs accept int64 feeds (cast on the way in): TensorRT 8.6 has no int64
            dtype = None if t.dtype in (np.dtype(np.int32), np.dtype(np.int64)) or t.is_bf16 else t.dtype
            meta[t.name] = TensorMeta(dtype=dtype, shape=tuple(None if d < 0 else d for d in t.shape))
        return meta

    # -- inference ----------------------------------------------------------------------------
    def _prepare(self, feeds: Mapping[str, np.ndarray]) -> None:
        """Build now if the engine's profile comes from the feed shapes (kept out of inference time)."""
        shapes = {n: tuple(int(d) for d in np.shape(a)) for n, a in feeds.items()}
        if self._engine is None or (self._derived_shapes is not None and self._derived_shapes != shapes):
            if self._engine is not None:
                self._note(f"feed shapes changed ({_fmt_shapes(shapes)}): rebuilding the engine for them")
            self._build(shapes)

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        shapes = {n: tuple(int(d) for d in np.shape(a)) for n, a in feeds.items()}
        cuda, ctx, trt = self._cuda, self._context, self._trt
        self._select_profile(shapes)
        from trtdebug.runners.tensorrt.cuda import DeviceBuffer, stream_handle

        keep_alive = []
        for t in self._io:
            if not t.is_input:
                continue
            host = self._to_engine_dtype(t, np.asarray(feeds[t.name]))
            keep_alive.append(host)
            if not ctx.set_input_shape(t.name, host.shape):
                raise FeedError(f"{self.name}: input {t.name!r} has shape {list(host.shape)}, which the engine does not "
                                f"accept ({self._accepted_shapes(t.name)})")
            buf = self._buffers.setdefault(t.name, DeviceBuffer(cuda))
            ptr = buf.ensure(host.nbytes)
            cuda.htod_async(ptr, host, self._stream)
            ctx.set_tensor_address(t.name, ptr)
        outputs: List[Tuple[engine_mod.IOTensor, Optional[Tuple[int, ...]]]] = []
        for t in self._io:
            if t.is_input:
                continue
            shape = tuple(int(d) for d in ctx.get_tensor_shape(t.name))
            if any(d < 0 for d in shape):  # known only after running
                if self._allocator is None:
                    if not self._features.output_allocator:
                        raise InferenceError(f"output {t.name!r} has a data-dependent shape and this TensorRT has no "
                                             "IOutputAllocator")
                    self._allocator = make_output_allocator(trt, cuda)
                ctx.set_output_allocator(t.name, self._allocator)
                outputs.append((t, None))
                continue
            buf = self._buffers.setdefault(t.name, DeviceBuffer(cuda))
            ptr = buf.ensure(int(np.prod(shape, dtype=np.int64)) * t.dtype.itemsize)
            ctx.set_tensor_address(t.name, ptr)
            outputs.append((t, shape))
        if self._listener is not None:
            self._listener.captured.clear()
        self._logger.messages.mark()
        try:
            ok = ctx.execute_async_v3(stream_handle(self._stream))
        except Exception as exc:  # noqa: BLE001
            raise InferenceError(f"TensorRT inference failed: {self._logger.messages.error_text(str(exc))}") from exc
        if not ok:
            raise InferenceError(f"TensorRT inference failed: {self._logger.messages.error_text('execute_async_v3 returned False')}")
        cuda.stream_sync(self._stream)
        results: Dict[str, np.ndarray] = {}
        for t, shape in outputs:
            if shape is None:
                shape = self._allocator.shapes.get(t.name)
                buf = self._allocator.buffers.get(t.name)
                if shape is None or buf is None:
                    raise InferenceError(f"TensorRT produced no shape or memory for output {t.name!r}: "
                                         + "; ".join(self._allocator.errors))
                ptr = buf.ptr
            else:
                ptr = self._buffers[t.name].ptr
            host = np.empty(shape, dtype=t.dtype)
            cuda.dtoh_async(host, ptr, self._stream)
            results[t.name] = host
        cuda.stream_sync(self._stream)
        for t, _ in outputs:
            if t.is_bf16:
                results[t.name] = compat.bf16_bits_to_float32(results[t.name])
        if self._listener is not None:
            for name, value in self._listener.captured.items():
                results.setdefault(name, value)
        for name in self._widen:
            value = results.get(name)
            if value is not None and value.dtype == np.float16:
                results[name] = value.astype(np.float32)
        del keep_alive
        if self._graph is not None:
            results = dict(sorted(results.items(), key=lambda kv: self._graph.topo_index(kv[0])))
        return results

    def _to_engine_dtype(self, t: engine_mod.IOTensor, arr: np.ndarray) -> np.ndarray:
        if t.is_bf16:
            return compat.float32_to_bf16_bits(arr.astype(np.float32))
        if arr.dtype != t.dtype:
            if np.issubdtype(arr.dtype, np.integer) and np.issubdtype(t.dtype, np.integer) and arr.size:
                info = np.iinfo(t.dtype)
                if arr.min() < info.min or arr.max() > info.max:
                    raise FeedError(f"{self.name}: input {t.name!r} has values outside the range of {t.dtype}, "
                                    f"the engine's input type")
            key = (t.name, str(arr.dtype), str(t.dtype))
            if key not in self._cast_notes:
                self._cast_notes.add(key)
                self._note(f"input {t.name!r} cast from {arr.dtype} to {t.dtype} (the engine's input type)")
            arr = arr.astype(t.dtype)
        return np.ascontiguousarray(arr)

    def _select_profile(self, shapes: Mapping[str, Tuple[int, ...]]) -> None:
        count = int(getattr(self._engine, "num_optimization_profiles", 1))
        if count <= 1:
            return
        inputs = [t.name for t in self._io if t.is_input and any(d < 0 for d in t.shape)]
        for p in range(count):
            fits = True
            for name in inputs:
                lo, _, hi = compat.profile_shapes(self._engine, self._features, name, p)
                shape = shapes.get(name, ())
                if len(shape) != len(lo) or any(not (a <= s <= b) for a, s, b in zip(lo, shape, hi)):
                    fits = False
                    break
            if fits:
                if p != self._profile:
                    from trtdebug.runners.tensorrt.cuda import stream_handle

                    self._context.set_optimization_profile_async(p, stream_handle(self._stream))
                    self._cuda.stream_sync(self._stream)
                    self._profile = p
                return
        raise FeedError(f"{self.name}: no optimization profile accepts the feed shapes {_fmt_shapes(shapes)}; "
                        + "; ".join(f"{n}: {self._accepted_shapes(n)}" for n in inputs))

    def _accepted_shapes(self, name: str) -> str:
        try:
            count = int(getattr(self._engine, "num_optimization_profiles", 1))
            ranges = []
            for p in range(count):
                lo, _, hi = compat.profile_shapes(self._engine, self._features, name, p)
                ranges.append(f"profile {p}: {list(lo)} to {list(hi)}")
            return ", ".join(ranges)
        except Exception:  # noqa: BLE001
            return "see the engine's profiles"

    # -- teardown -------------------------------------------------------------------------------
    def _release_engine(self) -> None:
        for buf in self._buffers.values():
            try:
                buf.free()
            except Exception:  # noqa: BLE001
                pass
        self._buffers = {}
        if self._allocator is not None:
            try:
                self._allocator.free()
            except Exception:  # noqa: BLE001
                pass
            self._allocator = None
        self._listener = None
        self._context = None
        self._engine = None
        self._runtime = None

    def _deactivate(self) -> None:
        self._release_engine()
        if self._stream is not None and self._cuda is not None:
            try:
                self._cuda.stream_destroy(self._stream)
            except Exception:  # noqa: BLE001
                pass
        self._stream = None
        self._builder = None

    def _note(self, text: str) -> None:
        notes = self.extra.setdefault("notes", [])
        if text not in notes:
            notes.append(text)
        log.info("%s: %s", self.name, text)


def _fmt_shapes(shapes: Mapping[str, Tuple[int, ...]]) -> str:
    return ", ".join(f"{n}:{'x'.join(map(str, s))}" for n, s in shapes.items())
