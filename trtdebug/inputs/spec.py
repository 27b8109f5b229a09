"""Parse the shape and value-range flags, in Polygraphy's syntax so users can paste theirs.

``name:[1,3,224,224]`` gives a shape, ``[0,1]`` or ``name:[-1,1]`` a value range.  One
string may hold several items separated by spaces (``"x:[1,3] y:[1]"``), as Polygraphy users
write them.  Tensor names may contain ``:`` (``input:0``): a name ends at the last ``:``
before ``[``.  Names containing ``[`` or ``]`` cannot be written in this syntax.

Every malformed value raises :class:`~trtdebug.errors.UsageError` with one line naming the
flag and the offending text, so the CLI can print it as is.
"""
from __future__ import annotations

import math
import re
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from trtdebug.errors import UsageError

Range = Tuple[float, float]

# An optional name (anything but brackets, ending at the last ':' before '['), then [body].
_ITEM = re.compile(r"\s*(?:(?P<name>[^\[\]]*?):)?\[(?P<body>[^\[\]]*)\]\s*")
_DIGITS = re.compile(r"[0-9]+")


def format_shape(name: str, shape: Optional[Sequence[object]]) -> str:
    """``x:[B,S,64]`` - a shape as the user would type it; unknown dims print as ``?``."""
    if shape is None:
        return f"{name}:[?...]"
    dims = ("?" if d is None or (isinstance(d, int) and d < 0) else str(d) for d in shape)
    return f"{name}:[{','.join(dims)}]"


def _items(values: Iterable[str], flag: str, example: str) -> List[Tuple[Optional[str], str, str]]:
    """Split flag values into ``(name or None, bracket body, item text)``."""
    out = []
    for value in values:
        pos = 0
        if not value.strip():
            raise UsageError(f"{flag}: empty value (expected e.g. {example})")
        while pos < len(value):
            m = _ITEM.match(value, pos)
            if m is None:
                raise UsageError(f"{flag}: cannot parse {value[pos:].strip()!r} (expected e.g. {example})")
            name = m.group("name")
            if name is not None:
                name = name.strip()
                if not name:
                    raise UsageError(f"{flag}: missing tensor name in {m.group(0).strip()!r} (expected e.g. {example})")
            out.append((name, m.group("body"), m.group(0).strip()))
            pos = m.end()
    return out


def parse_input_shapes(values: Iterable[str], *, flag: str = "--input-shapes") -> Dict[str, Tuple[int, ...]]:
    """``["x:[1,3,224,224]", "mask:[1,128] len:[]"]`` -> ``{"x": (1, 3, 224, 224), ...}``.

    Reused for any per-tensor shape flag (``--trt-min-shapes`` ...): pass its ``flag`` so
    messages name it.  Dims are non-negative integers; ``name:[]`` is a scalar.
    """
    example = "x:[1,3,224,224]"
    shapes: Dict[str, Tuple[int, ...]] = {}
    for name, body, text in _items(values, flag, example):
        if name is None:
            raise UsageError(f"{flag}: {text!r} has no tensor name (expected e.g. {example})")
        if name in shapes:
            raise UsageError(f"{flag}: shape for {name!r} given twice")
        dims = []
        for part in (body.split(",") if body.strip() else []):
            part = part.strip()
            if not _DIGITS.fullmatch(part):
                raise UsageError(f"{flag}: dimension {part!r} in {text!r} is not a non-negative integer")
            dims.append(int(part))
        shapes[name] = tuple(dims)
    return shapes


def parse_val_ranges(values: Iterable[str], *, flag: str = "--val-range") -> Tuple[Optional[Range], Dict[str, Range]]:
    """``["[0,1]", "ids:[0,1000]"]`` -> ``((0.0, 1.0), {"ids": (0.0, 1000.0)})``.

    A range without a name is the default for every input; ``lo <= hi`` and both finite.
    """
    example = "[0,1] or x:[-1,1]"
    default: Optional[Range] = None
    per_input: Dict[str, Range] = {}
    for name, body, text in _items(values, flag, example):
        parts = [p.strip() for p in body.split(",")]
        try:
            if len(parts) != 2:
                raise ValueError
            lo, hi = float(parts[0]), float(parts[1])
        except ValueError:
            raise UsageError(f"{flag}: {text!r} is not a range of two numbers (expected e.g. {example})") from None
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise UsageError(f"{flag}: {text!r} has a non-finite bound")
        if lo > hi:
            raise UsageError(f"{flag}: {text!r} has its lower bound above its upper bound")
        if name is None:
            if default is not None:
                raise UsageError(f"{flag}: default range given twice")
            default = (lo, hi)
        else:
            if name in per_input:
                raise UsageError(f"{flag}: range for {name!r} given twice")
            per_input[name] = (lo, hi)
    return default, per_input
