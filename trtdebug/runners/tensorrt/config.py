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
    fp16: bool = False
    bf16: bool = False
    int8: bool = False
    tf32: Optional[bool] = None  # None keeps TensorRT's default (on)
    strongly_typed: bool = False
    workspace: Optional[int] = None  # bytes for the workspace memory pool
    profiles: Sequence[Profile] = field(default_factory=tuple)
    builder_optimization_level: Optional[int] = None
    timing_cache: Optional[Path] = None  # loaded if present, saved (merged) after the build
    save_engine: Optional[Path] = None
    # Nodes (ONNX names) whose layers must run in FP32 - used by the precision tools.
    fp32_nodes: Sequence[str] = field(default_factory=tuple)
    verbose: bool = False
