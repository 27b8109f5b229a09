"""Tolerances: global atol/rtol, per-tensor overrides, and how the CLI spells them.

The pass rule they feed is documented in :mod:`trtdebug.comparison.metrics`.  On the command
line a tolerance is ``1e-3`` (every tensor) or ``NAME:1e-3`` (one tensor), the way
Polygraphy spells it, and the option may be repeated.  ONNX tensor names may contain
``:``, so the value is whatever follows the *last* colon.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from trtdebug.comparison.jsonable import from_jsonable
from trtdebug.comparison.metrics import CHECK_ERROR_STATS, DEFAULT_ATOL, DEFAULT_ERROR_QUANTILE, DEFAULT_RTOL
from trtdebug.errors import ReportFormatError, UsageError


@dataclass
class Tolerances:
    """What "close enough" means for a comparison.  Invalid values raise UsageError."""

    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL
    per_tensor_atol: Dict[str, float] = field(default_factory=dict)
    per_tensor_rtol: Dict[str, float] = field(default_factory=dict)
    check_error_stat: str = "elemwise"
    error_quantile: float = DEFAULT_ERROR_QUANTILE

    def __post_init__(self) -> None:
        for what, value in [("atol", self.atol), ("rtol", self.rtol)] + \
                [(f"atol for {n!r}", v) for n, v in self.per_tensor_atol.items()] + \
                [(f"rtol for {n!r}", v) for n, v in self.per_tensor_rtol.items()]:
            _check_tolerance(what, value)
        if self.check_error_stat not in CHECK_ERROR_STATS:
            raise UsageError(f"--check-error-stat must be one of {', '.join(CHECK_ERROR_STATS)}, "
                             f"not {self.check_error_stat!r}")
        if not 0.0 <= self.error_quantile <= 1.0:
            raise UsageError(f"--error-quantile must be between 0 and 1, not {self.error_quantile}")

    def for_tensor(self, name: str) -> Tuple[float, float]:
        """``(atol, rtol)`` for one tensor: its override where given, else the global value."""
        return self.per_tensor_atol.get(name, self.atol), self.per_tensor_rtol.get(name, self.rtol)

    @classmethod
    def from_cli(cls, atol: Optional[List[str]] = None, rtol: Optional[List[str]] = None, *,
                 check_error_stat: str = "elemwise", error_quantile: float = DEFAULT_ERROR_QUANTILE) -> "Tolerances":
        """Build from repeated ``--atol`` / ``--rtol`` strings (see :func:`parse_tolerance_args`)."""
        global_atol, per_atol = parse_tolerance_args(atol or [], "--atol")
        global_rtol, per_rtol = parse_tolerance_args(rtol or [], "--rtol")
        return cls(atol=DEFAULT_ATOL if global_atol is None else global_atol,
                   rtol=DEFAULT_RTOL if global_rtol is None else global_rtol,
                   per_tensor_atol=per_atol, per_tensor_rtol=per_rtol,
                   check_error_stat=check_error_stat, error_quantile=error_quantile)

    @classmethod
    def from_dict(cls, data: Any) -> "Tolerances":
        """The inverse of :meth:`to_dict` (as saved in a report); bad data raises ReportFormatError."""
        try:
            return from_jsonable(cls, data, "tolerances")
        except UsageError as exc:
            raise ReportFormatError(f"tolerances: {exc}") from exc

    def to_dict(self) -> Dict[str, Any]:
        return {"atol": self.atol, "rtol": self.rtol, "per_tensor_atol": dict(self.per_tensor_atol),
                "per_tensor_rtol": dict(self.per_tensor_rtol), "check_error_stat": self.check_error_stat,
                "error_quantile": self.error_quantile}


def parse_tolerance_args(values: List[str], name: str = "--atol") -> Tuple[Optional[float], Dict[str, float]]:
    """Split ``["1e-3", "out:0:1e-2"]`` into a global value and per-tensor values.

    A value without a colon is global (the last one given wins); otherwise the text after the
    last colon is the value and everything before it the tensor name.  Anything that is not
    a finite, non-negative number raises UsageError naming the option.
    """
    global_value: Optional[float] = None
    per_tensor: Dict[str, float] = {}
    for text in values:
        tensor, sep, number = text.rpartition(":")
        if sep and not tensor:
            raise UsageError(f"{name} {text!r}: the tensor name before ':' is empty")
        value = _to_float(number, f"{name} {text!r}")
        _check_tolerance(f"{name} {text!r}", value)
        if sep:
            per_tensor[tensor] = value
        else:
            global_value = value
    return global_value, per_tensor


def _to_float(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError as exc:
        raise UsageError(f"{where}: {text!r} is not a number (expected VALUE or TENSOR:VALUE)") from exc


def _check_tolerance(what: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise UsageError(f"{what}: a tolerance must be a finite number >= 0, not {value}")
