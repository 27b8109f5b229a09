"""Oracles: judge one candidate model GOOD (passes), BAD (the failure reproduces) or SKIP.

A candidate arrives as a :class:`Case`: the model file, and where the search has them, its true
inputs (``.npz``, every iteration) and the reference values of its outputs (a trtdebug outputs
directory).  Every oracle runs the candidate in a child process with a timeout - a spawned
interpreter through :func:`trtdebug.isolation.run_isolated`, or the user's command in its own
process group - so a segfault or a hang is a verdict (``on_crash``: "bad" or "skip"), never the
end of the search.  ``device`` (a GPU id from the worker pool) reaches the child as
``CUDA_VISIBLE_DEVICES``, set before anything imports CUDA.

Built-in oracles:

* :class:`CommandOracle` - Polygraphy's ``--check``: ``{model}``, ``{inputs}``, ``{reference}`` are
  replaced by the case's paths; a non-zero exit (or one of ``fail_codes``), optionally with
  ``fail_regex`` matching the output, means BAD;
* :class:`CallableOracle` - a Python function ``f(case) -> bool (True: fails) | Verdict``;
* :class:`OnnxRuntimeFails` - ONNX Runtime cannot load or run the model;
* :class:`AccuracyOracle` - the model's outputs, on the case's true inputs, differ from the
  reference values beyond tolerance (ONNX Runtime or TensorRT);
* :class:`TrtBuildFails` - TensorRT cannot parse or build the model.
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from trtdebug.debug.search import Judgement, Verdict, as_judgement
from trtdebug.errors import UsageError

_OUTPUT_TAIL = 2000


@dataclass(frozen=True)
class Case:
    """One candidate model on disk, with its true inputs and reference outputs where known."""

    model: str
    inputs: Optional[str] = None  # .npz, every iteration
    reference: Optional[str] = None  # trtdebug outputs directory


class ModelOracle:
    """Base: ``judge(case, device) -> Judgement``; ``builds`` says whether each call builds a TensorRT engine."""

    builds = False
    needs_reference = False  # True: the case must carry true inputs and reference outputs
    reference_backend = "onnxrt"  # what computes the true values when none are loaded

    def __init__(self, *, timeout: Optional[float] = 600.0, on_crash: str = "skip") -> None:
        if on_crash not in ("bad", "skip"):
            raise UsageError(f"on_crash must be 'bad' or 'skip', not {on_crash!r}")
        self.timeout, self.on_crash = timeout, on_crash

    def judge(self, case: Case, device: Optional[int] = None) -> Judgement:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def repro(self, case: Case) -> str:
        """A shell command that shows the failure on ``case`` (paths as given)."""
        raise NotImplementedError

    def _isolated(self, func: Callable[..., Tuple[str, str]], *args: Any, device: Optional[int]) -> Judgement:
        """Run ``func(*args)`` (returning ``(verdict, detail)``) in a child; crashes and hangs per ``on_crash``."""
        from trtdebug.isolation import OK, RAISED, run_isolated

        outcome = run_isolated(_with_device, func, device, *args, timeout=self.timeout)
        if outcome.kind == OK:
            verdict, detail = outcome.value
            return Judgement(Verdict(verdict), detail, outcome.seconds)
        if outcome.kind == RAISED:  # the oracle itself failed on this candidate: no evidence either way
            return Judgement(Verdict.SKIP, outcome.describe(), outcome.seconds)
        return Judgement(Verdict(self.on_crash), outcome.describe(), outcome.seconds)


def _with_device(func, device: Optional[int], *args):
    if device is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(device)
    return func(*args)


# -- a Python callable -------------------------------------------------------------------------

class CallableOracle(ModelOracle):
    """``func(case) -> bool (True: the failure reproduces) | Verdict | Judgement``.

    ``isolate=True`` (the default) runs it in a child process, so ``func`` must be a module-level
    function; ``isolate=False`` calls it in this process (for cheap checks that cannot crash).
    """

    def __init__(self, func: Callable[[Case], Any], *, isolate: bool = True, **kw: Any) -> None:
        super().__init__(**kw)
        self.func, self.isolate = func, isolate

    def judge(self, case: Case, device: Optional[int] = None) -> Judgement:
        if self.isolate:
            return self._isolated(_call_user, self.func, case, device=device)
        start = time.perf_counter()
        return as_judgement(self.func(case), time.perf_counter() - start)

    def describe(self) -> str:
        return f"python:{getattr(self.func, '__module__', '?')}.{getattr(self.func, '__qualname__', repr(self.func))}"

    def repro(self, case: Case) -> str:
        return f"python -c 'from {self.func.__module__} import {self.func.__qualname__} as f; from trtdebug.debug.oracle " \
               f"import Case; print(f(Case({case.model!r}, {case.inputs!r}, {case.reference!r})))'"


def _call_user(func, case: Case) -> Tuple[str, str]:
    j = as_judgement(func(case))
    return j.verdict.value, j.detail


# -- an external command -----------------------------------------------------------------------

class CommandOracle(ModelOracle):
    """An external command judges: Polygraphy's ``--check``, ``--fail-code``, ``--fail-regex``.

    BAD when the exit code is non-zero (or in ``fail_codes`` when given) *and*, if ``fail_regex``
    is given, the regex matches its stdout or stderr.  Death by a signal, or running past the
    timeout (the whole process group is killed), is a crash: ``on_crash``.
    """

    def __init__(self, check: str, *, fail_codes: Sequence[int] = (), fail_regex: Sequence[str] = (), **kw: Any) -> None:
        super().__init__(**kw)
        self.check = check
        try:
            if not shlex.split(check):
                raise ValueError("empty command")
        except ValueError as exc:
            raise UsageError(f"--check {check!r}: {exc}") from exc
        self.fail_codes = tuple(int(c) for c in fail_codes)
        try:
            self.fail_regex = [re.compile(r) for r in fail_regex]
        except re.error as exc:
            raise UsageError(f"--fail-regex: {exc}") from exc
        self.needs_reference = "{inputs}" in check or "{reference}" in check

    def command(self, case: Case) -> str:
        """The check with its placeholders filled in (``str.replace``: braces elsewhere are the user's)."""
        cmd = self.check
        for key, value in (("{model}", case.model), ("{inputs}", case.inputs), ("{reference}", case.reference)):
            if key in cmd:
                if value is None:
                    raise UsageError(f"--check uses {key}, but this search has no {key.strip('{}')}")
                cmd = cmd.replace(key, shlex.quote(value))
        return cmd

    def judge(self, case: Case, device: Optional[int] = None) -> Judgement:
        argv = shlex.split(self.command(case))
        env = dict(os.environ)
        if device is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(device)
        start = time.perf_counter()
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                    start_new_session=True)  # its own process group: a hang is killed whole
        except OSError as exc:
            raise UsageError(f"--check: cannot run {argv[0]!r}: {exc.strerror or exc}") from exc
        try:
            out, err = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            proc.communicate()
            return Judgement(Verdict(self.on_crash), f"check timed out after {self.timeout:g}s (process group killed)",
                             time.perf_counter() - start)
        except BaseException:
            _kill_group(proc)
            raise
        seconds = time.perf_counter() - start
        text = (out + err).decode("utf-8", "replace")
        tail = _last_line(text)
        if proc.returncode < 0:
            return Judgement(Verdict(self.on_crash), f"check died of {_signame(-proc.returncode)}" + (f": {tail}" if tail else ""),
                             seconds)
        code_fails = proc.returncode in self.fail_codes if self.fail_codes else proc.returncode != 0
        regex_fails = not self.fail_regex or any(r.search(text) for r in self.fail_regex)
        bad = code_fails and regex_fails
        detail = f"exit code {proc.returncode}" + (f": {tail}" if tail else "")
        return Judgement(Verdict.BAD if bad else Verdict.GOOD, detail, seconds)

    def describe(self) -> str:
        extra = "".join(f" --fail-code {c}" for c in self.fail_codes) + "".join(f" --fail-regex {r.pattern!r}" for r in self.fail_regex)
        return f"check: {self.check}{extra}"

    def repro(self, case: Case) -> str:
        return self.command(case)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass


def _signame(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text[-_OUTPUT_TAIL:].splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


# -- built-in judges ---------------------------------------------------------------------------

class OnnxRuntimeFails(ModelOracle):
    """BAD when ONNX Runtime cannot load or run the model (on the case's inputs, or synthetic ones)."""

    def __init__(self, *, providers: Sequence[str] = ("cpu",), **kw: Any) -> None:
        super().__init__(**kw)
        self.providers = tuple(providers)

    def judge(self, case: Case, device: Optional[int] = None) -> Judgement:
        return self._isolated(_ort_fails_child, case, self.providers, device=device)

    def describe(self) -> str:
        return f"onnxruntime fails ({', '.join(self.providers)})"

    def repro(self, case: Case) -> str:
        return "trtdebug run " + shlex.quote(case.model) + " --onnxrt" + _load_inputs_flag(case)


def _ort_fails_child(case: Case, providers) -> Tuple[str, str]:
    import trtdebug
    from trtdebug.errors import BackendError

    try:
        trtdebug.run(case.model, backends=("onnxrt",), inputs=case.inputs, onnxrt_providers=providers).close()
    except BackendError as exc:
        return Verdict.BAD.value, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return Verdict.GOOD.value, "onnxruntime ran it"


@dataclass
class _Tolerance:
    atol: Any = None
    rtol: Any = None
    check_error_stat: str = "elemwise"
    error_quantile: float = 0.99
    extra: Dict[str, Any] = field(default_factory=dict)


class AccuracyOracle(ModelOracle):
    """BAD when ``backend``'s outputs on the case's true inputs differ from the reference beyond tolerance.

    Every iteration of the inputs is run and compared (the worst one decides).  A candidate the
    backend cannot run at all is SKIP: it says nothing about accuracy.  ``trt_options`` are
    :class:`~trtdebug.runners.tensorrt.TrtBuildConfig` fields for ``backend="trt"``.
    """

    needs_reference = True

    def __init__(self, backend: str = "onnxrt", *, atol: Any = None, rtol: Any = None,
                 check_error_stat: str = "elemwise", error_quantile: float = 0.99,
                 trt_options: Optional[Dict[str, Any]] = None, **kw: Any) -> None:
        super().__init__(**kw)
        if backend not in ("onnxrt", "trt", "ref"):
            raise UsageError(f"--backend must be onnxrt or trt, not {backend!r}")
        self.backend = backend
        self.builds = backend == "trt"
        # judged against the CPU golden, ONNX Runtime must not be its own reference
        self.reference_backend = "ref" if backend == "onnxrt" else "onnxrt"
        self.tolerance = _Tolerance(atol, rtol, check_error_stat, error_quantile, dict(trt_options or {}))

    def judge(self, case: Case, device: Optional[int] = None) -> Judgement:
        if case.inputs is None or case.reference is None:
            raise UsageError("the accuracy oracle needs the candidate's true inputs and reference outputs")
        return self._isolated(_accuracy_child, case, self.backend, self.tolerance, device=device)

    def describe(self) -> str:
        t = self.tolerance
        return f"{self.backend} differs from the reference (atol {t.atol}, rtol {t.rtol}, {t.check_error_stat})"

    def repro(self, case: Case) -> str:
        t = self.tolerance
        flags = trt_flags(t.extra) if self.backend == "trt" else ""
        backend = "trt-rtx" if self.backend == "trt" and t.extra.get("module") == "tensorrt_rtx" else self.backend
        tol = "".join(f" --{k} {shlex.quote(str(v))}" for k, v in (("atol", t.atol), ("rtol", t.rtol)) if v is not None)
        return (f"trtdebug run {shlex.quote(case.model)} --{backend}{flags}{_load_inputs_flag(case)} "
                f"--load-outputs {shlex.quote(str(case.reference))}{tol} --check-error-stat {t.check_error_stat}")


def _accuracy_child(case: Case, backend: str, tol: _Tolerance) -> Tuple[str, str]:
    import trtdebug
    from trtdebug.errors import BackendError

    try:
        outcome = trtdebug.run(case.model, backends=(backend,), inputs=case.inputs, load_outputs=[case.reference],
                               atol=tol.atol, rtol=tol.rtol, check_error_stat=tol.check_error_stat,
                               error_quantile=tol.error_quantile, **tol.extra)
    except BackendError as exc:
        return Verdict.SKIP.value, f"{backend} could not run it: {str(exc).splitlines()[0] if str(exc) else exc!r}"
    with outcome:
        first = outcome.first_failing
        if outcome.passed:
            return Verdict.GOOD.value, "within tolerance"
        err = first.stats.max_abs if first is not None else None
        where = (first.name if first is not None else "a tensor") + (f" (max abs error {err:.3g})" if err is not None else "")
        return Verdict.BAD.value, f"{backend} differs at {where}"


class TrtBuildFails(ModelOracle):
    """BAD when TensorRT's parser rejects the model or the engine build fails.  Needs TensorRT and a GPU."""

    builds = True

    def __init__(self, *, trt_options: Optional[Dict[str, Any]] = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.trt_options = dict(trt_options or {})

    def judge(self, case: Case, device: Optional[int] = None) -> Judgement:
        return self._isolated(_trt_build_child, case, self.trt_options, device=device)

    def describe(self) -> str:
        return "tensorrt fails to parse or build" + (f" ({self.trt_options})" if self.trt_options else "")

    def repro(self, case: Case) -> str:
        backend = "--trt-rtx" if self.trt_options.get("module") == "tensorrt_rtx" else "--trt"
        return f"trtdebug run {shlex.quote(case.model)} {backend}{trt_flags(self.trt_options)}" + _load_inputs_flag(case)


def trt_flags(options: Dict[str, Any]) -> str:
    """``trtdebug run`` flags for TrtBuildConfig fields (the build flags a repro command needs)."""
    flags = ""
    for key, value in options.items():
        if key == "module" or value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if key == "tf32":
            flags += " --tf32" if value else " --no-tf32"
        elif value is True:
            flags += " " + flag
        elif isinstance(value, (int, float, str)) and not isinstance(value, bool):
            flags += f" {flag} {shlex.quote(str(value))}"
    return flags


def _trt_build_child(case: Case, trt_options: Dict[str, Any]) -> Tuple[str, str]:
    from trtdebug.errors import BuildError, ParseError
    from trtdebug.model import ModelGraph, load_model
    from trtdebug.runners.tensorrt.builder import EngineBuilder
    from trtdebug.runners.tensorrt.compat import import_tensorrt
    from trtdebug.runners.tensorrt.config import TrtBuildConfig

    trt = import_tensorrt(trt_options.get("module", "tensorrt"))
    model = load_model(case.model)
    feed_shapes = None
    if case.inputs is not None:
        from trtdebug.inputs.io import load_inputs

        feed_shapes = {k: tuple(v.shape) for k, v in load_inputs(case.inputs)[0].items()}
    builder = EngineBuilder(trt, model, ModelGraph(model), TrtBuildConfig(**trt_options), show_progress=False)
    try:
        builder.build(feed_shapes=feed_shapes)
    except (ParseError, BuildError) as exc:
        return Verdict.BAD.value, str(exc).splitlines()[0]
    builder.save_timing_cache()  # the next candidate's build (another child) starts from these timings
    return Verdict.GOOD.value, "built"


def _load_inputs_flag(case: Case) -> str:
    return f" --load-inputs {shlex.quote(case.inputs)}" if case.inputs else ""
