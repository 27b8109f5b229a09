"""Report objects to and from strict JSON values.

``to_jsonable`` turns dataclasses, numpy scalars and non-finite floats into plain JSON
(non-finite floats as the strings "inf" / "-inf" / "nan"); ``from_jsonable`` goes back,
driven by each dataclass's type annotations, so a new statistic needs no reader code.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any, Dict, Optional

import numpy as np

from trtdebug.errors import ReportFormatError


def json_float(x: Optional[float]) -> Any:
    """A float for strict JSON: non-finite values become "inf" / "-inf" / "nan"; None stays None."""
    if x is None:
        return None
    x = float(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return x


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, tuples, numpy scalars and arrays as plain JSON values (floats via :func:`json_float`)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return json_float(obj)
    if obj is None or isinstance(obj, str):
        return obj
    return str(obj)


def from_json_float(x: Any, where: str = "value") -> float:
    """The inverse of :func:`json_float` for a defined value: a number, or "inf" / "-inf" / "nan"."""
    if isinstance(x, bool) or not isinstance(x, (int, float, str)):
        raise ReportFormatError(f"{where}: expected a number, found {x!r}")
    if isinstance(x, str):
        if x not in ("inf", "-inf", "nan"):
            raise ReportFormatError(f"{where}: expected a number, found {x!r}")
    return float(x)


def from_jsonable(cls: type, data: Any, where: str) -> Any:
    """A dataclass from :func:`to_jsonable` output, each field converted by its type annotation.

    Fields missing from ``data`` take their defaults (reports written before a field
    existed still load); a missing field without a default, or a value of the wrong type,
    raises ReportFormatError naming ``where``.
    """
    require_mapping(data, where)
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = typed(hints[f.name], data[f.name], f"{where}: {f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ReportFormatError(f"{where}: missing {f.name!r}")
    return cls(**kwargs)


def typed(tp: Any, value: Any, where: str) -> Any:
    """``value`` (JSON) as type ``tp``: Optional, List, Tuple[X, ...], Dict[str, X], float, int, bool, str, dataclasses."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:  # Optional[X]
        if value is None:
            return None
        return typed(next(a for a in args if a is not type(None)), value, where)
    if dataclasses.is_dataclass(tp):
        return from_jsonable(tp, value, where)
    if tp is float:
        return from_json_float(value, where)
    if origin in (list, tuple) or tp is list:
        if not isinstance(value, list):
            raise ReportFormatError(f"{where}: expected a list, found {value!r}")
        items = [typed(args[0], v, where) for v in value] if args else list(value)
        return tuple(items) if origin is tuple else items
    if origin is dict:
        require_mapping(value, where)
        return {str(k): typed(args[1], v, where) for k, v in value.items()}
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ReportFormatError(f"{where}: expected an integer, found {value!r}")
    if tp in (bool, str) and not isinstance(value, tp):
        raise ReportFormatError(f"{where}: expected {tp.__name__}, found {value!r}")
    return value


def field_of(data: Dict[str, Any], key: str, where: str) -> Any:
    if key not in data:
        raise ReportFormatError(f"{where}: missing {key!r}")
    return data[key]


def require_mapping(data: Any, where: str) -> None:
    if not isinstance(data, dict):
        raise ReportFormatError(f"{where}: expected an object, found {type(data).__name__}")
