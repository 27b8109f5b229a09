"""A user's accuracy metric for ``debug precision --metric SPEC`` (``metric=`` in the API).

atol/rtol on every output element is the wrong question for many models: a classifier whose
top-1 class never changes is fine in FP16 even where its logits move by 1e-2.  A metric lets the
user say what "passes" means, and the keep-FP32 search then asks only that.

**Contract.** ``metric(reference, test)`` where both are ``{graph output name: numpy array}``
with the same keys (the FP32 reference and the candidate's outputs, float outputs widened to
float32), returning either

* a ``bool`` - passed or not; or
* a pair ``(score, passed)``: a number for the report (e.g. top-1 agreement 0.998) and the verdict.

It is called once per candidate the search evaluates (and once on the all-reduced model), in
this process, never concurrently.  Anything else it returns (None, a string, a 3-tuple, a NaN
where a bool belongs) or any exception it raises stops the search with :class:`MetricError`
(exit 3): a judge that breaks mid-search gives no verdict to continue from.

**SPEC** is ``package.module:function`` (imported like any module, so it must be on
``sys.path``) or ``path/to/file.py:function`` (loaded from that file).  A malformed spec, a
module that does not import, or a name that is not a callable is a :class:`UsageError` (exit 2).
"""
from __future__ import annotations

import importlib
import importlib.util
import math
import numbers
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional, Tuple, Union

from trtdebug.errors import MetricError, UsageError

MetricFn = Callable[[Mapping[str, object], Mapping[str, object]], object]


@dataclass(frozen=True)
class Metric:
    """A loaded metric and the name reports show for it."""

    name: str
    func: MetricFn

    def __call__(self, reference: Mapping[str, object], test: Mapping[str, object]) -> Tuple[Optional[float], bool]:
        """``(score or None, passed)``; :class:`MetricError` if the function raises or answers nonsense."""
        try:
            answer = self.func(dict(reference), dict(test))
        except Exception as exc:  # noqa: BLE001 - the user's code: any failure is theirs, said in one line
            first = next((ln for ln in str(exc).splitlines() if ln.strip()), "")
            raise MetricError(f"--metric {self.name} raised {type(exc).__name__}" + (f": {first}" if first else "")) from exc
        return _verdict(self.name, answer)


def _verdict(name: str, answer: object) -> Tuple[Optional[float], bool]:
    if _is_bool(answer):
        return None, bool(answer)
    if isinstance(answer, tuple) and len(answer) == 2 and _is_bool(answer[1]) and _is_number(answer[0]):
        return float(answer[0]), bool(answer[1])
    raise MetricError(f"--metric {name} returned {_describe(answer)}; a metric returns a bool (passed) or a pair "
                      "(score, passed)")


def _is_bool(x: object) -> bool:
    return isinstance(x, bool) or type(x).__name__ == "bool_"  # numpy.bool_ from np.all(...)


def _is_number(x: object) -> bool:
    return isinstance(x, numbers.Real) and not _is_bool(x) and not math.isnan(float(x))


def _describe(answer: object) -> str:
    text = repr(answer)
    return f"{type(answer).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def as_metric(metric: Union[None, str, MetricFn, Metric]) -> Optional[Metric]:
    """None, a loaded :class:`Metric`, a callable (the API's ``metric=``) or a SPEC string, as a Metric."""
    if metric is None or isinstance(metric, Metric):
        return metric
    if isinstance(metric, str):
        return load_metric(metric)
    if callable(metric):
        return Metric(getattr(metric, "__qualname__", None) or repr(metric), metric)
    raise UsageError(f"metric must be a callable or a 'module:function' string, got {type(metric).__name__}")


def load_metric(spec: str) -> Metric:
    """The metric named by SPEC (see the module docstring); UsageError naming what is wrong."""
    where, sep, attr = spec.strip().rpartition(":")
    if not sep or not where or not attr or not attr.replace(".", "_").isidentifier():
        raise UsageError(f"--metric {spec!r}: expected module:function or path/to/file.py:function")
    if where.endswith(".py"):
        module = _load_file(spec, Path(where))
    else:
        if not all(part.isidentifier() for part in where.split(".")):
            raise UsageError(f"--metric {spec!r}: {where!r} is neither a module name nor a .py file")
        try:
            module = importlib.import_module(where)
        except Exception as exc:  # noqa: BLE001 - ImportError, or whatever the module raises at import
            raise UsageError(f"--metric {spec!r}: cannot import {where}: {type(exc).__name__}: {_first(exc)}") from exc
    obj = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise UsageError(f"--metric {spec!r}: {where} has no {attr!r}")
    if not callable(obj):
        raise UsageError(f"--metric {spec!r}: {attr} is a {type(obj).__name__}, not a function")
    return Metric(spec.strip(), obj)


def _load_file(spec: str, path: Path):
    if not path.is_file():
        raise UsageError(f"--metric {spec!r}: no such file {path}")
    name = f"trtdebug_metric_{abs(hash(str(path.resolve())))}"
    loader_spec = importlib.util.spec_from_file_location(name, str(path))
    if loader_spec is None or loader_spec.loader is None:
        raise UsageError(f"--metric {spec!r}: {path} cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    try:
        loader_spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - a syntax error or a failing import in the user's file
        sys.modules.pop(name, None)
        raise UsageError(f"--metric {spec!r}: {path} failed to load: {type(exc).__name__}: {_first(exc)}") from exc
    return module


def _first(exc: BaseException) -> str:
    return next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
