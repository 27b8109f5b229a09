"""The TensorRT backend against the real Python API of every snapshotted release (tests/trt_api).

Three kinds of checks, none of which needs TensorRT:

* **feature detection**: ``compat.detect`` on each release's surface, against answers written down
  here per release (the table is the spec; a new snapshot without a row fails);
* **names the code uses exist where it uses them**: a static scan of ``trtdebug/runners/tensorrt``.
  Every ``trt.X`` / ``trt.X.Y`` chain, and every ``<receiver>.member`` where the receiver's name says
  which TensorRT class it is (``layer`` -> ILayer, ``config`` -> IBuilderConfig, see RECEIVERS) and
  the member is TensorRT API (a member of that class in at least one release), must exist in every
  release - unless it is **guarded** on each release that lacks it.  A use is guarded on a release when
  the path to it is closed there: an enclosing ``if``/``else``/conditional expression/``and``-``or``
  chain, or an earlier ``if ...: raise/return`` in the same block, has a condition that, evaluated
  from that release's :class:`compat.Features` fields (``not``/``and``/``or`` followed), keeps the
  path from running; or the condition probes with ``hasattr``/``getattr``; or every call site of the
  (outermost) function holding the use is guarded so.  ``getattr(obj, "name", default)`` is a probe,
  not a use.  Guards by data flow the scan cannot follow are listed in VETTED with the reason.  The dynamic counterpart - the strict fakes of tests/trt_fakes.py, where a
  missing name raises AttributeError - drives the builder, marking and capability paths on every
  release in test_trt_compat.py and test_capability.py;
* **enum members and method arities** the code relies on, per release.
"""
from __future__ import annotations

import ast
import functools
import re
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

import pytest

import trt_fakes
from trtdebug.runners.tensorrt import compat, logger, marking

RELEASES = trt_fakes.releases()
PACKAGE = Path(compat.__file__).parent

# -- 1. feature detection, per release ---------------------------------------------------------------------
COLUMNS = ("explicit_batch_flag", "strongly_typed", "strong_typing_required", "fp16_flag", "bf16_flag", "int8_flag",
           "obey_precision_flag", "strict_types_flag", "layer_precision", "max_workspace_size", "editable_timing_cache",
           "progress_monitor", "algorithm_selector", "mark_debug", "mark_unfused_debug", "supports_model",
           "supports_model_v2")
#                 EB ST REQ FP16 BF16 INT8 OBEY STRICT LPREC MAXWS ETC PROG ALGO DBG UNF SM SMV2
FEATURES = {
    "8.6.1":      "1  0  0   1    0    1    1    1      1     1     0   0    1    0   0   1  0",
    "10.0.1":     "0  1  0   1    1    1    1    0      1     0     0   1    1    1   0   1  0",
    "10.3.0":     "0  1  0   1    1    1    1    0      1     0     0   1    1    1   0   1  1",
    "10.7.0":     "0  1  0   1    1    1    1    0      1     0     0   1    1    1   0   1  1",
    "10.8.0.43":  "0  1  0   1    1    1    1    0      1     0     1   1    1    1   0   1  1",
    "10.12.0.36": "0  1  0   1    1    1    1    0      1     0     1   1    1    1   1   1  1",
    "10.13.3.9":  "0  1  0   1    1    1    1    0      1     0     1   1    1    1   1   1  1",
    "10.16.1.11": "0  1  0   1    1    1    1    0      1     0     1   1    1    1   1   1  1",
    "11.0.0.114": "0  1  1   0    0    0    0    0      0     0     1   1    0    1   1   0  1",
    "11.2.1.2":   "0  1  1   0    0    0    0    0      0     0     1   1    0    1   1   0  1",
    "11.4.0.106": "0  1  1   0    0    0    0    0      0     0     1   1    0    1   1   0  1",
    "rtx-1.7.1.116": "0  1  1   0    0    0    0    0      0     0     1   1    0    1   1   0  1",
}
ALWAYS = ("tf32_flag", "optimization_level", "memory_pool_limits", "timing_cache", "name_based_io", "output_allocator",
          "layer_metadata", "engine_inspector", "tensor_profile_shape")


def test_every_snapshot_has_a_row():
    assert sorted(FEATURES, key=trt_fakes._version_key) == RELEASES


@pytest.mark.parametrize("version", RELEASES)
def test_feature_detection_matches_the_release(version):
    f = compat.detect(trt_fakes.fake_trt(version))
    expected = dict(zip(COLUMNS, (bool(int(x)) for x in FEATURES[version].split())))
    got = {c: getattr(f, c) for c in COLUMNS}
    assert got == expected
    assert all(getattr(f, c) for c in ALWAYS), [c for c in ALWAYS if not getattr(f, c)]
    assert f.version == version.rpartition("-")[2] and f.weak_typing == f.fp16_flag
    rtx = version.startswith("rtx-")  # what only TensorRT-RTX has: JIT kernels, validity check, GPU-free builds
    assert (f.product == "TensorRT-RTX") == f.runtime_cache == f.engine_validity == f.builds_without_gpu == rtx
    assert f.timing_cache_effective != rtx


# -- 2. names the code uses --------------------------------------------------------------------------------
RECEIVERS = {  # variable name in trtdebug/runners/tensorrt -> the TensorRT class it holds
    "layer": "ILayer", "network": "INetworkDefinition", "config": "IBuilderConfig", "parser": "OnnxParser",
    "builder": "Builder", "engine": "ICudaEngine", "context": "IExecutionContext", "inspector": "EngineInspector",
    "cache": "ITimingCache", "profile": "IOptimizationProfile", "p": "IOptimizationProfile", "runtime": "Runtime",
    "tensor": "ITensor", "t": "ITensor", "out": "ITensor", "error": "ParserError", "err": "ParserError",
}
FEATURE_FIELDS = set(compat.Features.__dataclass_fields__) | {"strong_typing_required"}


@functools.lru_cache(maxsize=None)
def _api_members(cls: str) -> Set[str]:
    return {m for v in RELEASES if trt_fakes.has_member(v, cls) for m in trt_fakes._all_members(v, cls)}


def _lacking(cls: str, member: Optional[str]) -> List[str]:
    return [v for v in RELEASES if not trt_fakes.has_member(v, cls, member)]


def _exits(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.If) and bool(stmt.body) and isinstance(stmt.body[-1], (ast.Raise, ast.Return))


def _guards(parents: Dict[ast.AST, ast.AST], node: ast.AST) -> List[Tuple[ast.AST, bool]]:
    """(condition, value it must have for ``node`` to run): enclosing tests, earlier early-exit ifs."""
    found: List[Tuple[ast.AST, bool]] = []
    child = node
    while child in parents:
        parent = parents[child]
        if isinstance(parent, (ast.If, ast.IfExp, ast.While)) and child is not parent.test:
            in_body = child in parent.body if isinstance(parent.body, list) else child is parent.body
            found.append((parent.test, in_body))
        if isinstance(parent, ast.BoolOp) and child in parent.values:
            found.extend((v, isinstance(parent.op, ast.And)) for v in parent.values[:parent.values.index(child)])
        for block in ("body", "orelse", "finalbody"):
            stmts = getattr(parent, block, None)
            if isinstance(stmts, list) and child in stmts:
                found.extend((st.test, False) for st in stmts[:stmts.index(child)] if _exits(st))
        child = parent
    return found


def _evaluate(test: ast.AST, f: compat.Features):
    """A condition's value on a release: True/False from Features fields, "probe" for hasattr/getattr, else None."""
    if isinstance(test, ast.Attribute) and test.attr in FEATURE_FIELDS:
        return bool(getattr(f, test.attr))
    if isinstance(test, ast.Call) and isinstance(test.func, ast.Name) and test.func.id in ("hasattr", "getattr"):
        return "probe"
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        value = _evaluate(test.operand, f)
        return (not value) if isinstance(value, bool) else value
    if isinstance(test, ast.BoolOp):
        values = [_evaluate(v, f) for v in test.values]
        if "probe" in values:
            return "probe"
        if isinstance(test.op, ast.And) and False in values or isinstance(test.op, ast.Or) and True in values:
            return isinstance(test.op, ast.Or)
        return None if None in values else isinstance(test.op, ast.And)
    return None


def _not_taken(guards, f: compat.Features) -> bool:
    for test, needed in guards:
        value = _evaluate(test, f)
        if value == "probe" or (isinstance(value, bool) and value != needed):
            return True
    return False


def _features_table() -> Dict[str, compat.Features]:
    return {v: compat.detect(trt_fakes.fake_trt(v)) for v in RELEASES}


def _parse_package():
    trees = {}
    for path in sorted(PACKAGE.glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        trees[path.name] = (tree, {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)})
    return trees


def _uses(trees) -> List[Tuple[str, int, str, Optional[str], ast.AST]]:
    """(file, line, TensorRT class, member or None, node) for every TensorRT name the package reads."""
    out = []
    classes = {c for v in RELEASES for c in trt_fakes.api(v)["classes"]}
    for file, (tree, parents) in trees.items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            base = node.value
            if isinstance(base, ast.Name) and base.id == "trt" and node.attr in classes:
                member = parents.get(node)
                attr = member.attr if isinstance(member, ast.Attribute) and not member.attr.startswith("__") else None
                out.append((file, node.lineno, node.attr, attr, node))
            elif isinstance(base, ast.Name) and base.id in RECEIVERS and node.attr in _api_members(RECEIVERS[base.id]):
                out.append((file, node.lineno, RECEIVERS[base.id], node.attr, node))
    return out


def _guarded(trees, file: str, node: ast.AST, f: compat.Features, depth: int = 3) -> bool:
    """Is the path to ``node`` closed on this release - here, or at every call site of its function?"""
    tree, parents = trees[file]
    if _not_taken(_guards(parents, node), f):
        return True
    func, walk = None, node  # the outermost function: a factory, not the method of the class it defines
    while walk in parents:
        walk = parents[walk]
        func = walk if isinstance(walk, ast.FunctionDef) else func
    if func is None or depth == 0:
        return False
    calls = [(name, call) for name, (t, _) in trees.items() for call in ast.walk(t) if isinstance(call, ast.Call)
             and getattr(call.func, "id", getattr(call.func, "attr", None)) == func.name]
    return bool(calls) and all(_guarded(trees, name, call, f, depth - 1) for name, call in calls)


# Guards the scan cannot follow (data flow, not a condition), each checked by hand:
VETTED = {
    ("builder.py", "IBuilderConfig.progress_monitor"): "reset only when `monitor` was made, i.e. features.progress_monitor",
    ("boundaries.py", "IDebugListener"): "a listener is made only for debug tensors, which EngineBuilder._mark_debug "
                                         "marks only where features.mark_debug / mark_unfused_debug",
}


def test_every_tensorrt_name_the_code_uses_exists_where_the_code_uses_it():
    features = _features_table()
    trees = _parse_package()
    uses = _uses(trees)
    assert any(cls == "ILayer" and m == "precision" for _, _, cls, m, _ in uses)  # the scan sees object members
    problems = []
    for file, line, cls, member, node in uses:
        name = cls + ("." + member if member else "")
        open_on = [v for v in _lacking(cls, member) if not _guarded(trees, file, node, features[v])]
        if open_on and (file, name) not in VETTED:
            problems.append(f"{file}:{line}: {name} is missing in {', '.join(open_on)}, where this path is not closed "
                            "by a feature test")
    assert not problems, "\n".join(problems)


# -- 3. enum members and arities -----------------------------------------------------------------------------
ENUMS_NEEDED = {  # enum -> members the code names (by string), and the releases that may lack each
    "LayerType": {m: () for m in marking.LOOP_BOUNDARY + tuple(marking.NON_NUMERIC_LAYERS)},
    "DataType": {**{m: () for m in ("FLOAT", "HALF", "INT8", "INT32", "BOOL", "UINT8")},
                 "BF16": ("8.6.1",), "INT64": ("8.6.1",)},
    "ErrorCode": {"UNSUPPORTED_NODE": (), "SUCCESS": ()},
    "TensorIOMode": {"INPUT": (), "OUTPUT": ()},
    "TensorLocation": {"DEVICE": (), "HOST": ()},
    "LayerInformationFormat": {"JSON": (), "ONELINE": ()},
    "ProfilingVerbosity": {"DETAILED": ()},
    "MemoryPoolType": {"WORKSPACE": ()},
    "ILogger": {m: () for m in logger._SEVERITY_LEVELS},
}


@pytest.mark.parametrize("version", RELEASES)
def test_enum_members_the_code_names_exist(version):
    missing = [f"{cls}.{m}" for cls, members in ENUMS_NEEDED.items() for m, allowed in members.items()
               if version not in allowed and not trt_fakes.has_member(version, cls, m)]
    assert not missing
    unexpected = [f"{cls}.{m}" for cls, members in ENUMS_NEEDED.items() for m, allowed in members.items()
                  if version in allowed and trt_fakes.has_member(version, cls, m)]
    assert not unexpected  # the allowance table is exact: update it when a release adds the member
    readable = set(marking.READABLE_DTYPES) | set(compat._NUMPY_BY_TRT_NAME)
    assert readable <= set(ENUMS_NEEDED["DataType"])


CALLS = [  # (class, method, positional arguments the code passes)
    ("Builder", "create_network", 1), ("Builder", "create_builder_config", 0), ("Builder", "build_serialized_network", 2),
    ("Builder", "create_optimization_profile", 0), ("OnnxParser", "__init__", 2), ("OnnxParser", "parse", 1),
    ("OnnxParser", "parse_from_file", 1), ("OnnxParser", "get_error", 1), ("OnnxParser", "supports_model", 1),
    ("OnnxParser", "supports_model", 2), ("OnnxParser", "supports_model_v2", 1), ("OnnxParser", "supports_model_v2", 2),
    ("OnnxParser", "get_subgraph_nodes", 1), ("OnnxParser", "is_subgraph_supported", 1),
    ("IBuilderConfig", "set_flag", 1), ("IBuilderConfig", "clear_flag", 1), ("IBuilderConfig", "set_memory_pool_limit", 2),
    ("IBuilderConfig", "create_timing_cache", 1), ("IBuilderConfig", "set_timing_cache", 2),
    ("IBuilderConfig", "get_timing_cache", 0), ("IBuilderConfig", "add_optimization_profile", 1),
    ("ITimingCache", "combine", 2), ("ITimingCache", "serialize", 0), ("IOptimizationProfile", "set_shape", 4),
    ("INetworkDefinition", "mark_output", 1), ("INetworkDefinition", "unmark_output", 1),
    ("INetworkDefinition", "mark_debug", 1), ("INetworkDefinition", "mark_unfused_tensors_as_debug_tensors", 0),
    ("ILayer", "get_input", 1), ("ILayer", "get_output", 1), ("ILayer", "set_output_type", 2),
    ("ICudaEngine", "get_tensor_profile_shape", 2), ("ICudaEngine", "get_tensor_name", 1),
    ("ICudaEngine", "get_tensor_mode", 1), ("ICudaEngine", "get_tensor_dtype", 1), ("ICudaEngine", "get_tensor_shape", 1),
    ("ICudaEngine", "create_engine_inspector", 0), ("EngineInspector", "get_engine_information", 1),
    ("IExecutionContext", "set_input_shape", 2), ("IExecutionContext", "set_tensor_address", 2),
    ("IExecutionContext", "execute_async_v3", 1), ("IExecutionContext", "set_optimization_profile_async", 2),
    ("IExecutionContext", "set_output_allocator", 2), ("IExecutionContext", "set_debug_listener", 1),
    ("IExecutionContext", "get_tensor_shape", 1), ("Runtime", "deserialize_cuda_engine", 1),
    ("ParserError", "node", 0), ("ParserError", "desc", 0), ("ParserError", "code", 0), ("ParserError", "func", 0),
    ("ParserError", "node_name", 0), ("ParserError", "node_operator", 0),
]
_SIG = re.compile(r"^\w+\((.*)\)(?: -> .*)?$")


def _arity(sig: str) -> Optional[Tuple[int, int]]:
    """(required, total) parameters after ``self``; None for ``(*args, **kwargs)`` (overloaded: unknown)."""
    m = _SIG.match(sig.strip())
    if not m or "*args" in m.group(1):
        return None
    params, depth, cur = [], 0, ""
    for ch in m.group(1):
        depth += ch in "[(" and 1 or (ch in "])" and -1 or 0)
        if ch == "," and depth == 0:
            params.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        params.append(cur.strip())
    params = [p for p in params if not p.startswith("self")]
    return sum(1 for p in params if "=" not in p), len(params)


def test_arity_parser():
    assert _arity("parse(self: X, model: buffer, path: str = None) -> bool") == (1, 2)
    assert _arity("f(self: X, a: Tuple[int, int], b: int) -> None") == (2, 2)
    assert _arity("set_input_shape(*args, **kwargs)") is None


@pytest.mark.parametrize("version", RELEASES)
def test_methods_the_code_calls_take_that_many_arguments(version):
    checked, wrong = 0, []
    for cls, method, nargs in CALLS:
        if not trt_fakes.has_member(version, cls, method):
            continue  # whether the code may call it there is the name check's business
        sigs = [s for s in trt_fakes.signature(version, cls, method).split("\n") if "(" in s]
        arities = [a for a in (_arity(re.sub(r"^\d+\. ", "", s.strip())) for s in sigs) if a is not None]
        checked += bool(arities)
        if arities and not any(lo <= nargs <= hi for lo, hi in arities):
            wrong.append(f"{cls}.{method}({nargs} args) vs {sigs}")
    assert not wrong
    assert checked >= 25
