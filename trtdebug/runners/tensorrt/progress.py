"""Show that an engine build is alive: TensorRT's phases where it reports them, else a timer.

Builds take seconds to minutes and print nothing.  Where TensorRT offers ``IProgressMonitor``
the current phase and step are shown; otherwise a spinner with the elapsed time.  Display is
on stderr through rich, only when stderr is a terminal unless asked for explicitly, and never
lets an exception escape into TensorRT (a monitor that raises would abort the build).
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Dict, List, Optional, Tuple


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
