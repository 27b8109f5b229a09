"""ONNX -> TensorRT engine: parse, configure, build - with TensorRT's own words on failure.

:class:`EngineBuilder` holds what several builds of one command share (the TensorRT module,
its feature set, the logger, the process's timing cache), so the fused-boundary mode's second
build and the rebuild for new feed shapes are fast.  Each :meth:`EngineBuilder.build` parses
the model afresh, marks outputs, and builds; a search that builds many variants of one model
parses once with :class:`~trtdebug.runners.tensorrt.variants.NetworkVariants` instead.
"""
from __future__ import annotations

import contextlib
import logging
import re
import tempfile
import time
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from trtdebug.errors import BuildError, ParseError, UsageError
from trtdebug.model.surgery import OutputSelection
from trtdebug.runners.tensorrt import calibration, compat, marking
from trtdebug.runners.tensorrt import precision as precision_mod
from trtdebug.runners.tensorrt.config import Profile, TrtBuildConfig
from trtdebug.runners.tensorrt.logger import shared_logger
from trtdebug.runners.tensorrt.parser_errors import parse_failure, parser_issues
from trtdebug.runners.tensorrt.progress import BuildProgress, make_progress_monitor
from trtdebug.runners.tensorrt.timing_cache import TimingCache, shared_cache

log = logging.getLogger(__name__)

Shapes = Mapping[str, Tuple[int, ...]]


@dataclass
class ParsedNetwork:
    """A parsed network and what must outlive it (the parser owns the weights until the build)."""

    builder: object
    network: object
    parser: object
    scratch: Optional[tempfile.TemporaryDirectory] = None

    def input_shapes(self) -> Dict[str, Tuple[int, ...]]:
        out = {}
        for i in range(self.network.num_inputs):
            t = self.network.get_input(i)
            out[t.name] = tuple(int(d) for d in t.shape)
        return out


@dataclass
class BuildResult:
    engine_bytes: bytes
    marking: marking.MarkPlan
    seconds: float
    notes: List[str] = field(default_factory=list)
    profiles: List[Profile] = field(default_factory=list)
    debug_tensors: List[str] = field(default_factory=list)
    unfused_debug: bool = False


def parse_error_message(parser, model=None) -> str:
    """Every parser error on one line: node name, op type, reason (with TensorRT's error code)."""
    return parse_failure(parser_issues(parser, model), default="")[0]


class EngineBuilder:
    """Builds engines for one model with one build configuration (several builds allowed)."""

    def __init__(self, trt, model, graph, config: TrtBuildConfig, *, show_progress: Optional[bool] = None) -> None:
        self.trt = trt
        self.model = model
        self.graph = graph
        self.config = config
        self.features = compat.detect(trt)
        self.logger = shared_logger(trt, verbose=config.verbose)
        self.show_progress = show_progress
        # one per process and file: every build adds to it; memory-only and unused where it has no effect (RTX)
        self.timing_cache = shared_cache(trt, config) if self.features.timing_cache_effective else TimingCache(None)
        self.cache_loaded = self.timing_cache.loaded
        self.progress_events = 0
        self.last_phases: List[Tuple[str, float]] = []  # (phase, seconds) of the last build, from 8.6's log
        self._replay = None  # the --load-tactics file, read at the first build
        self._keep_alive: List[object] = []  # selectors and caches TensorRT uses during the current build
        self._calibrator = None  # the INT8 calibrator of the current build (calibration.py)

    # -- parsing ---------------------------------------------------------------------------
    def parse(self) -> ParsedNetwork:
        trt, f = self.trt, self.features
        strongly = compat.wants_strong_typing(f, self.config.strongly_typed)
        builder = trt.Builder(self.logger)
        if builder is None:
            raise BuildError(f"TensorRT could not create a builder: {self.logger.messages.error_text('unknown error')}")
        network = builder.create_network(compat.network_flags(trt, f, strongly_typed=strongly))
        parser = trt.OnnxParser(network, self.logger)
        self.logger.messages.mark()
        scratch = None
        from trtdebug.model.loader import PROTOBUF_LIMIT, save_model

        if self.model.ByteSize() < PROTOBUF_LIMIT:
            ok = parser.parse(self.model.SerializeToString())
        else:  # over protobuf's 2 GiB: weights go to external data, parsed from a file
            scratch = tempfile.TemporaryDirectory(prefix="trtdebug-trt-")
            path = f"{scratch.name}/model.onnx"
            save_model(self.model, path, external_data=True)
            ok = parser.parse_from_file(path)
        if not ok or int(getattr(parser, "num_errors", 0)) > 0:
            one_line, full = parse_failure(parser_issues(parser, self.model), self.logger.messages.errors())
            head = f"{f.label}'s ONNX parser rejected the model: "
            raise ParseError(head + one_line, details=head + "\n" + full)
        return ParsedNetwork(builder, network, parser, scratch)

    # -- configuration -----------------------------------------------------------------------
    def _make_config(self, parsed: ParsedNetwork, feed_shapes: Optional[Shapes], notes: List[str]):
        trt, f, c = self.trt, self.features, self.config
        config = parsed.builder.create_builder_config()
        self._calibrator = calibration.attach(trt, config, parsed.network, f, c, notes)  # alive for the build
        notes += compat.apply_precision_flags(trt, config, f, c)
        note = compat.set_workspace(trt, config, f, c.workspace)
        if note:
            notes.append(note)
        note = compat.set_optimization_level(config, f, c.builder_optimization_level)
        if note:
            notes.append(note)
        if not compat.set_detailed_profiling(trt, config):
            notes.append("DETAILED profiling verbosity unavailable: layer information will be sparse")
        if f.timing_cache_effective:
            self.timing_cache.attach(config)
        profiles = self._profiles(parsed, feed_shapes, notes)
        for k, prof in enumerate(profiles):
            p = parsed.builder.create_optimization_profile()
            for name in prof.min:
                try:
                    p.set_shape(name, prof.min[name], prof.opt[name], prof.max[name])
                except Exception as exc:  # noqa: BLE001 - TensorRT raises on bad min/opt/max
                    raise UsageError(f"optimization profile for {name!r} (min {list(prof.min[name])}, "
                                     f"opt {list(prof.opt[name])}, max {list(prof.max[name])}) was rejected: {exc}") from exc
            if config.add_optimization_profile(p) < 0:
                raise UsageError(f"TensorRT rejected an optimization profile: {self.logger.messages.error_text('invalid profile')}")
            if k == 0 and self._calibrator is not None and hasattr(config, "set_calibration_profile"):
                config.set_calibration_profile(p)  # dynamic shapes: calibrate in the first profile
        self._apply_fp32_nodes(parsed.network, config, notes)
        self._apply_tactics(config, notes)
        return config, profiles

    def _apply_tactics(self, config, notes: List[str]) -> None:
        """Pin the tactics of ``TrtBuildConfig.load_tactics`` (a replay file of 'trtdebug debug tactics')."""
        if self.config.load_tactics is None:
            return
        from trtdebug.runners.tensorrt import tactics

        if self._replay is None:
            self._replay = tactics.load_replay(self.config.load_tactics)
        misses: List[str] = []
        self._keep_alive = [tactics.apply_replay(self.trt, config, self.features, self._replay, misses), misses]
        pinned = len(self._replay.chosen) or len(self._replay.entries)
        notes.append(f"tactics pinned from {self.config.load_tactics} ({pinned} "
                     + ("layers)" if self._replay.chosen else "timing cache entries)"))

    def _profiles(self, parsed: ParsedNetwork, feed_shapes: Optional[Shapes], notes: List[str]) -> List[Profile]:
        shapes = parsed.input_shapes()
        dynamic = {n: s for n, s in shapes.items() if any(d < 0 for d in s)}
        given = list(self.config.profiles)
        for prof in given:
            unknown = [n for n in prof.min if n not in shapes]
            if unknown:
                raise UsageError(f"optimization profile names unknown input(s) {', '.join(unknown)}; "
                                 f"the network's inputs are {', '.join(shapes)}")
        if not dynamic:
            if given:
                notes.append("the model has static input shapes; optimization profiles ignored")
            if shapes and _has_data_dependent_outputs(parsed.network):
                # TensorRT 8.6 builds such an engine without a profile, then fails to create an
                # execution context for it ("vector<bool>::_M_range_check"); a static profile avoids it.
                return [Profile(min=dict(shapes), opt=dict(shapes), max=dict(shapes))]
            return []
        if not given:
            if feed_shapes is None:
                raise UsageError(f"input(s) {', '.join(dynamic)} have dynamic shapes: give --trt-min-shapes/"
                                 "--trt-opt-shapes/--trt-max-shapes, or input data to derive a profile from")
            given = [Profile(min={}, opt={}, max={})]
            notes.append("no optimization profile given: built one with min=opt=max = the feed shapes ("
                         + ", ".join(f"{n}:{'x'.join(map(str, feed_shapes[n]))}" for n in dynamic if n in feed_shapes)
                         + "); other shapes need --trt-min-shapes/--trt-opt-shapes/--trt-max-shapes")
        completed = []
        for prof in given:
            mn, op, mx = dict(prof.min), dict(prof.opt), dict(prof.max)
            for name in dynamic:
                if name in mn:
                    continue
                if feed_shapes is None or name not in feed_shapes:
                    raise UsageError(f"no optimization profile shapes for dynamic input {name!r} "
                                     f"(shape {list(dynamic[name])}); add it to --trt-min-shapes/--trt-opt-shapes/--trt-max-shapes")
                mn[name] = op[name] = mx[name] = tuple(feed_shapes[name])
            completed.append(Profile(min=mn, opt=op, max=mx))
        return completed

    def _apply_fp32_nodes(self, network, config, notes: List[str]) -> None:
        nodes = list(self.config.fp32_nodes)
        if not nodes:
            return
        if not self.features.layer_precision:  # TensorRT 11: no ILayer.precision / set_output_type
            raise UsageError(f"keeping ONNX nodes in FP32 needs per-layer precision, which {self.features.label} "
                             "does not have (removed in 11): keep them in FP32 in the ONNX graph itself (Cast nodes "
                             "around them), which a strongly typed network builds as written")
        trt = self.trt
        matched = layers_of_nodes(network, self.graph, nodes)
        for node_layers in matched.values():
            for layer in node_layers:
                force_fp32(layer, trt.float32)
        flag = compat.precision_constraint_flag(trt, self.features)
        if flag is not None:
            config.set_flag(flag)
        else:
            notes.append("this TensorRT has no precision-constraint flag; FP32 layer requests may be ignored")
        missing = [n for n in nodes if n not in matched]
        notes.append(f"FP32 forced on {len(matched)} ONNX node(s)" + (f"; no TensorRT layer found for {', '.join(missing[:5])}" if missing else ""))

    # -- building ------------------------------------------------------------------------------
    def build(self, selection: OutputSelection = OutputSelection(), *, feed_shapes: Optional[Shapes] = None,
              debug_names: Sequence[str] = (), unfused_debug: bool = False) -> BuildResult:
        """Parse, mark outputs for ``selection``, and build; ``debug_names`` become debug tensors.

        If the build fails only because of the extra outputs (TensorRT 8.6 fails to implement some
        fused FP16 regions when many of their tensors are outputs), the marked set is cut down to
        what builds: see :func:`marking.find_buildable_subset`.  Dropped tensors are listed as
        skipped, with TensorRT's error as the reason.
        """
        parsed = self.parse()
        plan = marking.plan_marking(parsed.network, self.graph, selection)
        plan.route = precision_mod.choose_route(self.features, self.config) if plan.mark else None
        if plan.route == precision_mod.ROUTE_DEBUG and not unfused_debug:
            # debug tensors keep the type TensorRT chose; outputs would force FP32 on their producers
            plan.as_debug, plan.mark = list(plan.mark), []
            debug_names = list(debug_names) + [n for n in plan.as_debug if n not in debug_names]
        try:
            return self._build_parsed(parsed, plan, feed_shapes, debug_names, unfused_debug)
        except BuildError as exc:
            if not plan.mark or not self.config.reduce_marking_on_failure:
                raise
            first_error = exc
        return self._build_fewer_outputs(plan, first_error, feed_shapes, debug_names, unfused_debug)

    def _build_parsed(self, parsed: ParsedNetwork, plan: marking.MarkPlan, feed_shapes, debug_names,
                      unfused_debug) -> BuildResult:
        notes: List[str] = []
        marking.apply_marking(parsed.network, plan)
        if plan.route == precision_mod.ROUTE_OUTPUT_TYPES:
            plan.reduced_outputs = precision_mod.set_output_types(
                self.trt, parsed.network, plan.mark, precision_mod.reduced_dtype_name(self.features, self.config))
        elif plan.route == precision_mod.ROUTE_NONE:
            notes.append(f"{self.features.label} can neither mark debug tensors nor set output types: marked "
                         "tensors are FP32 outputs, and their layers may not run in reduced precision")
        debug = self._mark_debug(parsed.network, debug_names, unfused_debug)
        config, profiles = self._make_config(parsed, feed_shapes, notes)
        start = time.perf_counter()
        try:
            engine_bytes = self._build_serialized(parsed, config)
        finally:
            if self._calibrator is not None:
                notes.append(f"calibration: {self._calibrator.served} batch(es) served"
                             + (", cache read" if self._calibrator.cache_read else "")
                             + (", cache written" if self._calibrator.cache_written else ""))
                self._calibrator.free()
        seconds = time.perf_counter() - start
        return BuildResult(engine_bytes, plan, seconds, notes, profiles, debug, unfused_debug)

    def _build_fewer_outputs(self, plan: marking.MarkPlan, first_error: BuildError, feed_shapes, debug_names,
                             unfused_debug) -> BuildResult:
        start = time.perf_counter()
        reason = str(first_error).replace("TensorRT engine build failed: ", "")

        def try_build(names):
            sub = marking.MarkPlan(mark=list(names), already_outputs=list(plan.already_outputs),
                                   skipped=list(plan.skipped), unmark=list(plan.unmark), route=plan.route)
            try:
                return self._build_parsed(self.parse(), sub, feed_shapes, debug_names, unfused_debug)
            except BuildError:
                return None

        log.warning("TensorRT could not build with %d extra outputs (%s); searching for a subset that builds",
                    len(plan.mark), reason)
        similar = marking.similar_roles(marking.tensor_roles(self.parse().network))
        accepted, dropped, result, probes = marking.find_buildable_subset(plan.mark, try_build, similar=similar)
        if result is None:
            raise first_error
        why = f"marking it as an output made TensorRT's build fail ({_first_sentence(reason)})"
        result.marking.skipped = list(plan.skipped) + [(n, why) for n in dropped]
        result.notes.insert(0, f"TensorRT could not build the engine with all {len(plan.mark)} requested tensors as "
                               f"outputs ({_first_sentence(reason)}); kept {len(accepted)}, dropped {len(dropped)} "
                               f"({', '.join(dropped[:5])}{', ...' if len(dropped) > 5 else ''}) after {probes} trial "
                               f"builds in {time.perf_counter() - start:.1f}s")
        result.seconds = time.perf_counter() - start
        return result

    def _mark_debug(self, network, names: Sequence[str], unfused: bool) -> List[str]:
        if unfused:
            if not self.features.mark_unfused_debug:
                raise UsageError(f"unfused debug tensors need TensorRT 10.12+; this is {self.features.version}")
            network.mark_unfused_tensors_as_debug_tensors()
        if not names:
            return []
        if not self.features.mark_debug:
            raise UsageError(f"debug tensors need TensorRT 10.0+; this is {self.features.version}")
        table = marking.tensors_by_name(network)
        marked = []
        for name in names:
            t = table.get(name)
            if t is not None and network.mark_debug(t) is not False:
                marked.append(name)
        return marked

    def _build_serialized(self, parsed: ParsedNetwork, config) -> bytes:
        progress = BuildProgress(enabled=self.show_progress)
        monitor = None
        if self.features.progress_monitor:
            monitor = make_progress_monitor(self.trt, progress)  # kept alive for the whole build
            config.progress_monitor = monitor
        self.logger.messages.mark()
        try:
            # Without a monitor (8.6) the phase comes from the log lines TensorRT writes meanwhile.
            listening = self.logger.listen(progress.on_log) if monitor is None else contextlib.nullcontext()
            with progress, listening:
                serialized = parsed.builder.build_serialized_network(parsed.network, config)
        except Exception as exc:  # noqa: BLE001 - pybind re-raises C++ failures as RuntimeError etc.
            raise BuildError(f"TensorRT engine build failed: {self.logger.messages.error_text(str(exc))}") from exc
        finally:
            self.progress_events += progress.events
            self.last_phases = list(progress.log_phases.timeline)
            if monitor is not None:
                try:
                    config.progress_monitor = None
                except Exception:  # noqa: BLE001 - some versions refuse None; the config is discarded anyway
                    pass
        if serialized is None:
            raise BuildError(f"TensorRT engine build failed: {self.logger.messages.error_text('TensorRT returned no engine')}")
        data = bytes(serialized)
        if not data:
            raise BuildError("TensorRT engine build failed: the serialized engine is empty")
        return data

    def save_timing_cache(self) -> bool:
        """Merge the process's timing cache into its file (``--timing-cache`` or the default); True if written."""
        return self.timing_cache.save()


def _first_sentence(text: str) -> str:
    text = text.split("; ")[0].strip()
    return text if len(text) <= 200 else text[:197] + "..."


def _has_data_dependent_outputs(network) -> bool:
    for i in range(network.num_outputs):
        shape = network.get_output(i).shape
        try:
            dims = list(shape)
        except ValueError:  # unknown rank: len() of the Dims is negative
            return True
        if any(int(d) < 0 for d in dims):
            return True
    return False


_ONNX_LAYER = re.compile(r"\[ONNX Layer: ([^\]]*)\]")


def layer_onnx_node(layer, wanted: set, all_nodes: set, producers: Optional[Dict[str, str]] = None) -> Optional[str]:
    """The ONNX node (among ``wanted``) a network layer implements, if any.

    Uses the parser's ``[ONNX Layer: name]`` metadata where present; else the layer name,
    which the parser sets to the node name (``name_<n>`` for a node's extra layers); else the
    layer's output tensor names (``producers``: ONNX tensor -> node).  The last catches the
    unnamed helper layers that finish a node - on TensorRT 8.6 Gemm's bias add, which writes
    the Gemm's output, carries neither a name nor metadata.
    """
    meta = getattr(layer, "metadata", None)
    if isinstance(meta, str) and meta:
        for node in _ONNX_LAYER.findall(meta):
            if node in wanted:
                return node
    name = getattr(layer, "name", "") or ""
    if name in wanted:
        return name
    m = re.fullmatch(r"(.*)_(\d+)", name)
    if m and m.group(1) in wanted and name not in all_nodes:
        return m.group(1)
    if producers:
        for j in range(layer.num_outputs):
            out = layer.get_output(j)
            if out is not None and out.name in producers:
                return producers[out.name]
    return None


def layers_of_nodes(network, graph, nodes: Sequence[str]) -> Dict[str, List[object]]:
    """ONNX node name -> the network layers that implement it (nodes without layers left out)."""
    wanted = set(nodes)
    all_nodes = set(graph.node_names) if graph is not None else set()
    producers: Dict[str, str] = {}  # ONNX tensor name -> wanted node that produces it
    if graph is not None:
        for name in graph.tensor_order:
            info = graph.tensor(name)
            if info.producer in wanted:
                producers[name] = info.producer
    found: Dict[str, List[object]] = {}
    for layer in marking.layers(network):
        node = layer_onnx_node(layer, wanted, all_nodes, producers)
        if node is not None:
            found.setdefault(node, []).append(layer)
    return found


def force_fp32(layer, fp32) -> None:
    """Run ``layer`` in FP32 and make its floating-point outputs FP32 (needs per-layer precision: not on 11)."""
    layer.precision = fp32
    for j in range(layer.num_outputs):
        out = layer.get_output(j)
        if out is not None and compat.dtype_name(out.dtype) in ("FLOAT", "HALF", "BF16"):
            layer.set_output_type(j, fp32)
