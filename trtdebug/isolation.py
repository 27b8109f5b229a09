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

A fresh interpreter per candidate pays the set-up every time: importing TensorRT, creating a
builder (8-10 s on a GPU machine), parsing the network.  :class:`Worker` pays it once: a
persistent spawned child builds one object with ``factory(*args)`` (a parsed network and its
builder) and then serves many calls to it over a pipe, each with its own deadline.  A call that
kills the child or outlives its deadline comes back as ``crashed`` / ``timed_out`` exactly as
above, the child's process group is killed, and the next call starts a new child: the crash is
that call's verdict, not the end of the worker.  Calls and answers are small (plans, verdicts,
layer tables), so a pipe carries them; engines stay in the child or go to files.
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
from typing import Any, Callable, Dict, Optional, Tuple

OK = "ok"
RAISED = "raised"
CRASHED = "crashed"
TIMED_OUT = "timed_out"

_STDERR_TAIL = 4000  # characters of the child's output kept for a crash report
START_TIMEOUT = 300.0  # seconds a Worker's factory gets at least


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


# -- a persistent child serving many calls ---------------------------------------------------------

class Worker:
    """A persistent spawned child: ``factory(*args)`` builds an object there once, :meth:`call` runs
    its methods, each within ``timeout`` seconds (see the module docstring).

    ``device`` reaches the child as ``CUDA_VISIBLE_DEVICES``, set before the factory runs (so
    before anything there touches CUDA).  The factory gets ``start_timeout`` seconds (default:
    ``timeout``, but at least :data:`START_TIMEOUT`: importing TensorRT, creating a builder and
    parsing a large model are slow without being hung).  ``starts`` counts the children started (``restarts``:
    all but the first).  Calls are serialized: one at a time per worker, from any thread.  Use
    as a context manager or call :meth:`close`; the child also exits when this process dies
    (its end of the pipe closes).
    """

    def __init__(self, factory: Callable[..., Any], *args: Any, device: Optional[int] = None,
                 timeout: Optional[float] = None, start_timeout: Optional[float] = None, name: str = "worker") -> None:
        self.factory, self.args, self.device, self.timeout, self.name = factory, args, device, timeout, name
        if start_timeout is None and timeout is not None:
            start_timeout = max(timeout, START_TIMEOUT)
        self.start_timeout = start_timeout
        self.starts = 0
        self._proc = self._conn = None
        self._lock = threading.Lock()
        self._workdir = Path(tempfile.mkdtemp(prefix="trtdebug-worker-"))
        self._output = self._workdir / "output.txt"

    @property
    def restarts(self) -> int:
        return max(0, self.starts - 1)

    @property
    def pid(self) -> Optional[int]:
        return self._proc.pid if self._proc is not None else None

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> ChildOutcome:
        """Start the child if none runs; ``ok`` once the factory returned, else how it failed."""
        with self._lock:
            return self._start()

    def call(self, method: str, *args: Any, timeout: Optional[float] = None) -> ChildOutcome:
        """``obj.method(*args)`` in the child (started first if needed); ``value`` is its result.

        ``timeout`` (default: the worker's) covers this call; a child that has to be started
        first gets ``start_timeout`` for the factory before it.
        """
        limit = self.timeout if timeout is None else timeout
        with self._lock:
            started = self._start()
            if not started.ok:
                return started
            offset, start = _size(self._output), time.monotonic()
            try:
                self._conn.send((method, args))
            except (OSError, EOFError):  # the child died between calls: this call finds it dead
                pass
            return self._answer(limit, start, offset)

    def close(self) -> None:
        """Ask the child to exit, then kill its process group (grandchildren too); the output goes."""
        with self._lock:
            self._stop(graceful=True)
        shutil.rmtree(self._workdir, ignore_errors=True)

    # -- inside -------------------------------------------------------------------------------------
    def _start(self) -> ChildOutcome:
        if self._proc is not None:
            return ChildOutcome(OK, 0.0)
        ctx = multiprocessing.get_context("spawn")
        mine, theirs = ctx.Pipe()
        # daemonic: an interpreter that exits without close() still ends it (multiprocessing
        # terminates daemonic children at exit, where it would wait forever for a non-daemonic one)
        proc = ctx.Process(target=_worker_main, args=(theirs, self.factory, self.args, self.device),
                           name=f"trtdebug-{self.name}", daemon=True)
        offset, start = _size(self._output), time.monotonic()
        self._output.parent.mkdir(parents=True, exist_ok=True)
        _start_writing_to(proc, self._output)
        theirs.close()
        _own_group(proc.pid)
        self._proc, self._conn = proc, mine
        self.starts += 1
        return self._answer(self.start_timeout, start, offset, starting=True)

    def _answer(self, limit: Optional[float], start: float, offset: int, *, starting: bool = False) -> ChildOutcome:
        """Wait for the child's answer; a dead or late child is stopped and described."""
        proc, conn = self._proc, self._conn
        ready = wait([conn, proc.sentinel], limit)
        if conn in ready:
            try:
                kind, payload = conn.recv()
            except (EOFError, OSError):  # it died before (or while) answering
                pass
            else:
                seconds = time.monotonic() - start
                if kind == OK:
                    return ChildOutcome(OK, seconds, value=payload)
                exc_type, message, tb = payload
                if starting:  # the factory failed: that child has nothing to serve and exits
                    self._stop(graceful=False)
                return ChildOutcome(RAISED, seconds, exc_type=exc_type, message=message, traceback=tb,
                                    stderr_tail=_tail(self._output, offset))
        seconds = time.monotonic() - start
        self._stop(graceful=False)
        output = _tail(self._output, offset)
        if not ready:
            return ChildOutcome(TIMED_OUT, seconds, stderr_tail=output)
        code = proc.exitcode
        if code is not None and code < 0:
            return ChildOutcome(CRASHED, seconds, signal=-code, stderr_tail=output)
        return ChildOutcome(CRASHED, seconds, exit_code=code, stderr_tail=output)

    def _stop(self, *, graceful: bool) -> None:
        proc, conn = self._proc, self._conn
        if proc is None:
            return
        self._proc = self._conn = None
        if graceful and proc.exitcode is None:
            try:
                conn.send(None)
                proc.join(timeout=10)
            except (OSError, EOFError):
                pass
        _kill_group(proc)
        proc.join()
        conn.close()


def _worker_main(conn, factory, args, device: Optional[int]) -> None:
    """The worker's loop: build the object, answer ``(method, args)`` requests until ``None`` or EOF."""
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(device)
    try:
        target = factory(*args)
    except BaseException as exc:  # noqa: BLE001 - the parent reports it
        _send(conn, (RAISED, (_qualname(type(exc)), _first_line(str(exc)) or type(exc).__name__, traceback.format_exc())))
        return
    _send(conn, (OK, None))
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if request is None:
            return
        method, call_args = request
        try:
            answer: Tuple[str, Any] = (OK, getattr(target, method)(*call_args))
        except BaseException as exc:  # noqa: BLE001 - every failure becomes an answer
            answer = (RAISED, (_qualname(type(exc)), _first_line(str(exc)) or type(exc).__name__, traceback.format_exc()))
        _send(conn, answer)


def _send(conn, answer: Tuple[str, Any]) -> None:
    try:
        conn.send(answer)
    except (OSError, EOFError):
        return
    except Exception as exc:  # noqa: BLE001 - an unpicklable result (send pickles before writing)
        conn.send((RAISED, (_qualname(type(exc)), f"the result could not be sent back: {_first_line(str(exc))}",
                            traceback.format_exc())))


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


def _tail(path: Path, start: int = 0) -> str:
    """The last characters of ``path`` written after offset ``start``."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(start, size - _STDERR_TAIL))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


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
