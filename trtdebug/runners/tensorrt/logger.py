"""A TensorRT logger that keeps TensorRT's own words.

Parse and build failures are reported with the messages TensorRT logged at ERROR severity,
so the subclass of ``trt.ILogger`` records them (and forwards everything to Python's
``logging``).  It is defined inside :func:`make_logger` so that importing this module never
imports TensorRT.  ``log`` must not raise (TensorRT calls it from C++).
"""
from __future__ import annotations

import contextlib
import logging
import threading
from typing import Callable, Iterator, List, Tuple

log = logging.getLogger("trtdebug.tensorrt")

_SEVERITY_LEVELS = {
    "INTERNAL_ERROR": logging.ERROR,
    "ERROR": logging.ERROR,
    "WARNING": logging.WARNING,
    "INFO": logging.DEBUG,  # TensorRT's INFO is chatty; it is debug detail for us
    "VERBOSE": logging.DEBUG - 1,
}


class MessageLog:
    """The messages a logger captured; shared by the TensorRT logger and its users."""

    def __init__(self, limit: int = 2000) -> None:
        self._lock = threading.Lock()
        self.messages: List[Tuple[str, str]] = []
        self.limit = limit
        self._mark = 0

    def add(self, severity: str, msg: str) -> None:
        with self._lock:
            if severity in ("ERROR", "INTERNAL_ERROR") or len(self.messages) < self.limit:
                self.messages.append((severity, msg))

    def mark(self) -> None:
        """Start a new window: :meth:`errors` returns only what came after the mark."""
        with self._lock:
            self._mark = len(self.messages)

    def errors(self) -> List[str]:
        with self._lock:
            return [m for s, m in self.messages[self._mark:] if s in ("ERROR", "INTERNAL_ERROR")]

    def error_text(self, default: str = "") -> str:
        errs = _dedupe(self.errors())
        return "; ".join(errs) if errs else default


def _dedupe(items: List[str]) -> List[str]:
    seen, out = set(), []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def severity_name(severity) -> str:
    from trtdebug.runners.tensorrt.compat import enum_name

    name = enum_name(severity).upper()
    return name[1:] if name.startswith("K") and name[1:] in _SEVERITY_LEVELS else name


def make_logger(trt, *, verbose: bool = False, messages: MessageLog = None):
    """A ``trt.ILogger`` subclass instance that records messages into ``logger.messages``."""
    record = messages or MessageLog()

    class CapturingLogger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages = record
            self.verbose = verbose
            self.listeners: List[Callable[[str, str], None]] = []

        @contextlib.contextmanager
        def listen(self, callback: Callable[[str, str], None]) -> Iterator[None]:
            """Call ``callback(severity, message)`` for every line (VERBOSE too) while inside."""
            self.listeners.append(callback)
            try:
                yield
            finally:
                self.listeners.remove(callback)

        def log(self, severity, msg) -> None:  # called by TensorRT; must never raise
            try:
                name = severity_name(severity)
                text = str(msg)
                for listener in list(self.listeners):
                    listener(name, text)
                if name == "VERBOSE" and not self.verbose:
                    return
                self.messages.add(name, text)
                log.log(_SEVERITY_LEVELS.get(name, logging.DEBUG), "[TensorRT] %s", text)
            except Exception:  # noqa: BLE001 - a logger that raises would abort TensorRT
                pass

    return CapturingLogger()


_SHARED = {}


def shared_logger(trt, *, verbose: bool = False):
    """One logger per process: TensorRT warns when builders and runtimes get different loggers.

    Callers take a window of its messages with ``logger.messages.mark()`` before an operation
    and read ``logger.messages.error_text()`` after it.
    """
    logger = _SHARED.get(id(trt))
    if logger is None:
        logger = make_logger(trt, verbose=verbose)
        _SHARED[id(trt)] = logger
    logger.verbose = verbose
    return logger
