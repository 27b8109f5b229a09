"""Show that an engine build is alive: elapsed time and what TensorRT is doing.

Builds take seconds to minutes and print nothing.  Where TensorRT offers ``IProgressMonitor``
(10.0+) its phases and steps are shown.  TensorRT 8.6 has no monitor, but its logger narrates
the build (INFO and VERBOSE lines: graph optimization, ``Computing costs for <layer>`` while
timing tactics, block assignment, ``Engine generation completed``); :class:`LogPhases` reads
the current phase and layer from those lines.  Display is one rich status line on stderr, only
when stderr is a terminal unless asked for explicitly, and never lets an exception escape into
TensorRT (a monitor or logger that raises would abort the build).
"""
from __future__ import annotations

import re
import sys
import threading
import time
from typing import Dict, List, Optional, Tuple

PHASE_START = "starting the builder"
PHASE_GRAPH = "optimizing the graph"
PHASE_TACTICS = "selecting tactics"
PHASE_ENGINE = "generating the engine"
PHASE_DONE = "serializing"

# TensorRT 8.6 log lines that mark a phase, first match wins; group 1 (if any) is the detail.
_PHASE_LINES: List[Tuple[re.Pattern, str]] = [(re.compile(p), phase) for p, phase in (
    (r"^\[MemUsageChange\] Init builder kernel library", PHASE_START),
    (r"^Original: \d+ layers", PHASE_GRAPH),
    (r"^Running: \w+ on (.+)", PHASE_GRAPH),
    (r"^Applying generic optimizations to the graph", PHASE_GRAPH),
    (r"^\[GraphReduction\]", PHASE_GRAPH),
    (r"^(?:Local|Global) timing cache in use", PHASE_TACTICS),
    (r"^Constructing optimization profile number \d+ \[(\d+/\d+)\]", PHASE_TACTICS),
    (r"^=+ Computing reformatting costs", PHASE_TACTICS),
    (r"^=+ Computing costs for (.+)", PHASE_TACTICS),
    (r"^-+ Timing Runner: (.+) \(\w+\)$", PHASE_TACTICS),
    (r"^Formats and tactics selection completed", PHASE_ENGINE),
    (r"^Detected \d+ inputs? and \d+ output network tensors", PHASE_ENGINE),
    (r"^\[BlockAssignment\]", PHASE_ENGINE),
    (r"^Total (?:Host|Device) Persistent Memory", PHASE_ENGINE),
    (r"^Engine generation completed in", PHASE_DONE),
)]
_ANY_PHASE = re.compile("|".join(f"(?:{pattern.pattern})" for pattern, _ in _PHASE_LINES))  # one test for most lines
_LAYER_COUNT = re.compile(r"^After [\w -]+: (\d+) layers")
_COSTS_FOR = re.compile(r"^=+ Computing costs for (.+)")
_MAX_DETAIL = 60


def phase_from_log(message: str) -> Optional[Tuple[str, Optional[str]]]:
    """``(phase, detail)`` a TensorRT log line announces, or None for the other lines."""
    text = message.strip()
    if not _ANY_PHASE.match(text):
        return None
    for pattern, phase in _PHASE_LINES:
        m = pattern.match(text)
        if m:
            return phase, (m.group(1).strip() if m.groups() else None)
    return None


class LogPhases:
    """The build's phase, read from TensorRT's log (for releases without IProgressMonitor).

    Also counts the layers whose tactics are being chosen (``Computing costs for``) against the
    network's layer count after graph optimization (the last ``After ...: N layers``), so the
    line reads ``selecting tactics: conv1 + relu1 (17 of ~40 layers)``.  ``timeline`` keeps
    when each phase began (seconds since the first line) for reports.
    """

    def __init__(self) -> None:
        self.phase: Optional[str] = None
        self.detail: Optional[str] = None
        self.layers_costed = 0
        self.layer_total: Optional[int] = None
        self.timeline: List[Tuple[str, float]] = []
        self._t0: Optional[float] = None

    def feed(self, message: str) -> bool:
        """Take one log line; True if it changed what the status line says."""
        now = time.perf_counter()
        if self._t0 is None:
            self._t0 = now
        text = message.strip()
        m = _LAYER_COUNT.match(text) if text.startswith("After ") else None
        if m:
            self.layer_total = int(m.group(1))
        found = phase_from_log(text)
        if found is None:
            return False
        phase, detail = found
        if _COSTS_FOR.match(text):
            self.layers_costed += 1
        if phase != self.phase:
            self.timeline.append((phase, round(now - self._t0, 3)))
            self.phase, self.detail = phase, None
        if detail is not None or phase != PHASE_TACTICS:
            self.detail = detail
        return True

    def text(self) -> str:
        if self.phase is None:
            return ""
        out = self.phase
        if self.detail:
            detail = self.detail if len(self.detail) <= _MAX_DETAIL else self.detail[:_MAX_DETAIL - 3] + "..."
            out += f": {detail}"
        if self.phase == PHASE_TACTICS and self.layers_costed:
            total = self.layer_total
            out += (f" ({self.layers_costed} of ~{total} layers)" if total and self.layers_costed <= total
                    else f" ({self.layers_costed} layers)")
        return out


class BuildProgress:
    """Tracks TensorRT's build phases and renders one status line (thread-safe)."""

    def __init__(self, title: str = "Building TensorRT engine", *, enabled: Optional[bool] = None, console=None) -> None:
        self.title = title
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._console = console
        self._lock = threading.Lock()
        self._phases: Dict[str, Tuple[int, int]] = {}  # name -> (step, steps)
        self._order: List[str] = []
        self._start = 0.0
        self._status = None
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.events = 0  # monitor callbacks received (tests check the monitor was wired)
        self.log_phases = LogPhases()  # fed by the logger where TensorRT has no IProgressMonitor

    # -- called from TensorRT's logger (any thread) -------------------------------------------
    def on_log(self, severity: str, message: str) -> None:
        with self._lock:
            self.log_phases.feed(message)

    # -- called from TensorRT's monitor --------------------------------------------------------
    def phase_start(self, name: str, steps: int) -> None:
        with self._lock:
            self.events += 1
            self._phases[name] = (0, int(steps))
            if name in self._order:
                self._order.remove(name)
            self._order.append(name)

    def step(self, name: str, step: int) -> bool:
        with self._lock:
            self.events += 1
            if name in self._phases:
                self._phases[name] = (int(step) + 1, self._phases[name][1])
        return True  # never cancel

    def phase_finish(self, name: str) -> None:
        with self._lock:
            self.events += 1
            self._phases.pop(name, None)
            if name in self._order:
                self._order.remove(name)

    # -- rendering ---------------------------------------------------------------------------
    def text(self) -> str:
        elapsed = time.perf_counter() - self._start if self._start else 0.0
        parts = []
        with self._lock:
            for name in self._order[-2:]:
                step, steps = self._phases.get(name, (0, 0))
                parts.append(f"{name} {step}/{steps}" if steps > 0 else name)
            if not parts and self.log_phases.phase:
                parts.append(self.log_phases.text())
        detail = f" - {' > '.join(parts)}" if parts else ""
        return f"{self.title} ({elapsed:.0f}s){detail}"

    def __enter__(self) -> "BuildProgress":
        self._start = time.perf_counter()
        if not self.enabled:
            return self
        try:
            from rich.console import Console

            console = self._console or Console(stderr=True)
            self._status = console.status(self.text(), spinner="dots")
            self._status.__enter__()
            self._thread = threading.Thread(target=self._refresh, name="trtdebug-build-progress", daemon=True)
            self._thread.start()
        except Exception:  # noqa: BLE001 - progress is cosmetic
            self._status = None
        return self

    def _refresh(self) -> None:
        while not self._stop.wait(0.25):
            try:
                if self._status is not None:
                    self._status.update(self.text())
            except Exception:  # noqa: BLE001
                return

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._status is not None:
            try:
                self._status.__exit__(None, None, None)
            except Exception:  # noqa: BLE001
                pass
        self._status = None

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._start if self._start else 0.0


def make_progress_monitor(trt, progress: BuildProgress):
    """A ``trt.IProgressMonitor`` forwarding to ``progress`` (defined here so imports stay lazy)."""

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)

        def phase_start(self, phase_name, parent_phase, num_steps) -> None:
            try:
                progress.phase_start(str(phase_name), int(num_steps))
            except Exception:  # noqa: BLE001
                pass

        def step_complete(self, phase_name, step) -> bool:
            try:
                return progress.step(str(phase_name), int(step))
            except Exception:  # noqa: BLE001
                return True

        def phase_finish(self, phase_name) -> None:
            try:
                progress.phase_finish(str(phase_name))
            except Exception:  # noqa: BLE001
                pass

    return Monitor()
