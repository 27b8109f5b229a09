"""What the user asked of a TensorRT build, independent of the TensorRT version.

The builder (``builder.py``) turns this into an ``IBuilderConfig`` with whatever the
installed TensorRT offers, and says clearly when a request cannot be honoured (e.g. ``fp16``
on TensorRT 11, where precision flags are gone).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple


@dataclass(frozen=True)
class Profile:
    """One optimization profile: per input name, min/opt/max shapes."""

    min: Dict[str, Tuple[int, ...]]
    opt: Dict[str, Tuple[int, ...]]
    max: Dict[str, Tuple[int, ...]]


@dataclass(frozen=True)
class TrtBuildConfig:
    # The Python module that is TensorRT: "tensorrt", or "tensorrt_rtx" (TensorRT for RTX: builds without a
    # GPU, runs on the compute capabilities it targets; see compat.py for how the two differ).
    module: str = "tensorrt"
    fp16: bool = False
    bf16: bool = False
    int8: bool = False
    tf32: Optional[bool] = None  # None keeps TensorRT's default (on)
    strongly_typed: bool = False
    workspace: Optional[int] = None  # bytes for the workspace memory pool
    profiles: Sequence[Profile] = field(default_factory=tuple)
    builder_optimization_level: Optional[int] = None
    timing_cache: Optional[Path] = None  # loaded if present, saved (merged) after the build
    # Without timing_cache: share measurements with earlier runs through the per-GPU file in the
    # user's cache directory (see timing_cache.py); False keeps them in this process only.
    persistent_cache: bool = True
    save_engine: Optional[Path] = None
    # Nodes (ONNX names) whose layers must run in FP32 - used by the precision tools.
    fp32_nodes: Sequence[str] = field(default_factory=tuple)
    verbose: bool = False
    show_progress: Optional[bool] = None  # build progress on stderr; None: only when stderr is a terminal
    # When a build fails only because of the extra outputs, mark fewer (the dropped ones are reported).
    reduce_marking_on_failure: bool = True
    # A tactics replay file ('trtdebug debug tactics' writes one): pin its tactic choices in the build.
    load_tactics: Optional[Path] = None
    # INT8 calibration (TensorRT 8.6-10.x, with int8): an .npz or a directory of them, one batch per input set;
    # "entropy" (IInt8EntropyCalibrator2) or "minmax"; a cache read if present (skipping calibration), else written.
    calibration_data: Optional[Path] = None
    calibrator: str = "entropy"
    calibration_cache: Optional[Path] = None


# -- parsing helpers for the CLI ---------------------------------------------------------------

_SIZE_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MB": 1 << 20,
               "MIB": 1 << 20, "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30, "T": 1 << 40, "TB": 1 << 40, "TIB": 1 << 40}


def parse_size(text: str, *, flag: str = "--workspace") -> int:
    """Bytes from ``1073741824``, ``4G``, ``512M``, ``1.5GiB`` (binary units)."""
    import re

    from trtdebug.errors import UsageError

    m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    unit = m.group(2).upper() if m else None
    if not m or unit not in _SIZE_UNITS:
        raise UsageError(f"{flag}: {text!r} is not a size (expected e.g. 4G, 512M or a number of bytes)")
    value = int(float(m.group(1)) * _SIZE_UNITS[unit])
    if value <= 0:
        raise UsageError(f"{flag}: size must be positive, got {text!r}")
    return value


def profiles_from_args(min_list: Sequence[Sequence[str]], opt_list: Sequence[Sequence[str]],
                       max_list: Sequence[Sequence[str]]) -> "list[Profile]":
    """Profiles from repeated ``--trt-min-shapes/--trt-opt-shapes/--trt-max-shapes`` groups.

    Each argument is the list of values of one occurrence of the flag (e.g.
    ``["x:[1,3,224,224]"]``); the i-th min, opt and max groups form the i-th profile.  A group
    may omit opt (taken as max) but min and max must both be there for every input named.
    """
    from trtdebug.errors import UsageError
    from trtdebug.inputs.spec import parse_input_shapes

    mins, opts, maxs = list(min_list or []), list(opt_list or []), list(max_list or [])
    if not mins and not opts and not maxs:
        return []
    if len(mins) != len(maxs) or (opts and len(opts) != len(mins)):
        raise UsageError("--trt-min-shapes, --trt-opt-shapes and --trt-max-shapes must be given the same number of "
                         f"times (one of each per profile); got {len(mins)} min, {len(opts)} opt, {len(maxs)} max")
    profiles = []
    for i in range(len(mins)):
        mn = parse_input_shapes(_as_list(mins[i]), flag="--trt-min-shapes")
        mx = parse_input_shapes(_as_list(maxs[i]), flag="--trt-max-shapes")
        op = parse_input_shapes(_as_list(opts[i]), flag="--trt-opt-shapes") if opts else dict(mx)
        if set(mn) != set(mx) or set(op) != set(mx):
            raise UsageError(f"profile {i}: --trt-min/opt/max-shapes must name the same inputs "
                             f"(min: {', '.join(mn)}; opt: {', '.join(op)}; max: {', '.join(mx)})")
        for name in mn:
            lo, mid, hi = mn[name], op[name], mx[name]
            if not (len(lo) == len(mid) == len(hi)):
                raise UsageError(f"profile {i}: min/opt/max shapes of {name!r} have different ranks")
            if any(not (a <= b <= c) for a, b, c in zip(lo, mid, hi)):
                raise UsageError(f"profile {i}: shapes of {name!r} must satisfy min <= opt <= max in every "
                                 f"dimension (min {list(lo)}, opt {list(mid)}, max {list(hi)})")
        profiles.append(Profile(min=mn, opt=op, max=mx))
    return profiles


def _as_list(value) -> list:
    return [value] if isinstance(value, str) else list(value)
