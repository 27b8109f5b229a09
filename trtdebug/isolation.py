"""Run one function in a child process with a timeout, and say how it ended.

A search (bisection over layers, tactics, precisions) builds and runs hundreds of candidate
engines, and TensorRT can segfault, abort or hang on some of them.  Each candidate therefore
runs here: in a fresh *spawned* interpreter (never ``fork``: a forked CUDA context is
unusable, and a parent that has touched CUDA cannot fork safely), in its own process group,
with a deadline.  What happened comes back as an :class:`ChildOutcome`, a verdict the search can
record in its journal - never an exception that ends the search:

* ``ok``        the function returned; ``value`` is its result
* ``raised``    it raised; the exception's type name and its first line
* ``crashed``   the child died (a signal such as SIGSEGV, or ``os._exit``/abort); the tail of its stderr
* ``timed_out`` it ran past the deadline; the whole process group was killed

The result travels through a pickle file in a private temporary directory, not a pipe, so a
large result (arrays of every tensor) neither fills a pipe buffer nor stalls the child.  The
child's stdout and stderr go to a file too: it is the only witness of a crash (TensorRT's
last words before an abort).  Nothing here imports TensorRT.
"""
from __future__ import annotations

import multiprocessing
import os
import pickle
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Callable, Dict, Optional

OK = "ok"
RAISED = "raised"
CRASHED = "crashed"
TIMED_OUT = "timed_out"

_STDERR_TAIL = 4000  # characters of the child's output kept for a crash report


@dataclass(frozen=True)
class ChildOutcome:
    """How one isolated call ended (see the module docstring for the four kinds)."""

    kind: str
    seconds: float
    value: Any = None
    exc_type: Optional[str] = None  # raised: qualified name of the exception's class
    message: Optional[str] = None  # raised: first line of the exception text
    traceback: Optional[str] = None  # raised: the child's formatted traceback
    signal: Optional[int] = None  # crashed by a signal
    exit_code: Optional[int] = None  # crashed with a non-zero exit and no result
    stderr_tail: str = ""

    @property
    def ok(self) -> bool:
        return self.kind == OK

    def describe(self) -> str:
        """One line for logs and journals."""
        if self.kind == OK:
            return f"ok in {self.seconds:.1f}s"
        if self.kind == RAISED:
            return f"raised {self.exc_type}: {self.message}"
        if self.kind == TIMED_OUT:
            return f"timed out after {self.seconds:.1f}s (process group killed)"
        how = f"signal {_signal_name(self.signal)}" if self.signal is not None else f"exit code {self.exit_code}"
        last = _last_line(self.stderr_tail)
        return f"crashed ({how})" + (f": {last}" if last else "")

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready, without ``value`` (a result is the caller's to store)."""
        return {"kind": self.kind, "seconds": round(self.seconds, 3), "exc_type": self.exc_type,
                "message": self.message, "signal": self.signal, "exit_code": self.exit_code,
                "stderr_tail": self.stderr_tail, "describe": self.describe()}


def run_isolated(func: Callable[..., Any], *args: Any, timeout: Optional[float] = None, **kwargs: Any) -> ChildOutcome:
    """Call ``func(*args, **kwargs)`` in a spawned child; wait at most ``timeout`` seconds.

    ``func`` must be picklable by reference (a module-level function) and so must the
    arguments and the result; an unpicklable function or argument raises here, in the
    parent, before anything runs.  An interrupt (Ctrl-C) in the parent kills the child's
    process group, removes the temporary files and propagates.
    """
    ctx = multiprocessing.get_context("spawn")
    workdir = Path(tempfile.mkdtemp(prefix="trtdebug-isolated-"))
    result_path, output_path = workdir / "result.pickle", workdir / "output.txt"
    proc = ctx.Process(target=_child_main, args=(func, args, kwargs, str(result_path), str(output_path)),
                       name=f"trtdebug-isolated-{getattr(func, '__name__', 'call')}", daemon=False)
    start = time.monotonic()
    try:
        _start_writing_to(proc, output_path)
        _own_group(proc.pid)
        # ``wait`` on the sentinel does not reap the child: its pid, and so its process
        # group id, stays reserved until join(), which makes the group kill below safe.
        finished = bool(wait([proc.sentinel], timeout))
        seconds = time.monotonic() - start
        _kill_group(proc)
        proc.join()
        output = _tail(output_path)
        if not finished:
            return ChildOutcome(TIMED_OUT, seconds, stderr_tail=output)
        return _read_outcome(result_path, proc.exitcode, seconds, output)
    except BaseException:
        if proc.pid is not None:
            _kill_group(proc)
            proc.join(timeout=5)
        raise
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _read_outcome(result_path: Path, exitcode: Optional[int], seconds: float, output: str) -> ChildOutcome:
    if result_path.is_file():
        try:
            with open(result_path, "rb") as fh:
                kind, payload = pickle.load(fh)
        except Exception as exc:  # noqa: BLE001 - a result the parent cannot unpickle is the child's failure
            return ChildOutcome(RAISED, seconds, exc_type=type(exc).__name__,
                           message=f"the result could not be read back: {_first_line(str(exc))}", stderr_tail=output)
        if kind == OK:
            return ChildOutcome(OK, seconds, value=payload, stderr_tail=output)
        exc_type, message, tb = payload
        return ChildOutcome(RAISED, seconds, exc_type=exc_type, message=message, traceback=tb, stderr_tail=output)
    if exitcode is not None and exitcode < 0:
        return ChildOutcome(CRASHED, seconds, signal=-exitcode, stderr_tail=output)
    return ChildOutcome(CRASHED, seconds, exit_code=exitcode, stderr_tail=output)


def _child_main(func, args, kwargs, result_path: str, output_path: str) -> None:
    """The child's entry point: own process group, result to a file (output already goes to one)."""
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    try:
        result = (OK, func(*args, **kwargs))
    except BaseException as exc:  # noqa: BLE001 - every failure becomes a verdict
        result = (RAISED, (_qualname(type(exc)), _first_line(str(exc)) or type(exc).__name__, traceback.format_exc()))
    tmp = result_path + ".tmp"
    try:
        with open(tmp, "wb") as fh:
            pickle.dump(result, fh, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 - e.g. an unpicklable result
        with open(tmp, "wb") as fh:
            pickle.dump((RAISED, (_qualname(type(exc)), f"the result could not be sent back: {_first_line(str(exc))}",
                                  traceback.format_exc())), fh)
    os.replace(tmp, result_path)  # the parent sees a whole result or none


_START_LOCK = threading.Lock()


def _start_writing_to(proc, output_path: Path) -> None:
    """Start ``proc`` with its stdout and stderr already on ``output_path``.

    The child inherits file descriptors 1 and 2 when it is spawned, so they point at the file
    for the instant of ``start()``: a child that dies while starting (its function's module
    cannot be imported there) leaves its traceback in the crash report, not on our terminal.
    """
    with _START_LOCK:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (AttributeError, OSError, ValueError):
                pass
        fd = os.open(output_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        saved = [os.dup(1), os.dup(2)]
        try:
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            proc.start()
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for f in saved + [fd]:
                os.close(f)


def _own_group(pid: int) -> None:
    """Put the child in its own process group from the parent side too (closes the race with the child)."""
    try:
        os.setpgid(pid, pid)
    except OSError:  # the child got there first (or has exec'd): it does it itself
        pass


def _kill_group(proc) -> None:
    """SIGKILL the child's process group (its grandchildren too), never our own group."""
    pid = proc.pid
    try:
        pgid = os.getpgid(pid)
    except OSError:
        pgid = None
    if pgid is not None and pgid == pid and pgid != os.getpgrp():
        try:
            os.killpg(pgid, signal.SIGKILL)
        except OSError:
            pass
    elif proc.exitcode is None:
        try:
            proc.kill()
        except OSError:
            pass


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - _STDERR_TAIL))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _qualname(cls) -> str:
    module = getattr(cls, "__module__", "")
    return cls.__qualname__ if module in ("builtins", "") else f"{module}.{cls.__qualname__}"


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def _signal_name(num: Optional[int]) -> str:
    try:
        return signal.Signals(num).name
    except (TypeError, ValueError):
        return str(num)
