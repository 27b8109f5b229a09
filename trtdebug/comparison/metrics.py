"""Error statistics and the pass rule for one (reference, test) pair of arrays.  Pure numpy.

Pass rule
---------
An element passes when ``|test - ref| <= atol + rtol * |ref|``: numpy's ``isclose`` rule,
relative to the reference.  Users know it from ``np.allclose`` / ``torch.allclose``, it is
monotone (a larger tolerance never turns a pass into a failure), and with ``rtol=0`` or
``atol=0`` it is the pure absolute or relative check, which is also Polygraphy's rule in
those cases.  ``check_error_stat`` chooses how elements add up to a verdict for the tensor:

* ``elemwise`` (default): every element must pass;
* ``max`` / ``mean`` / ``median`` / ``quantile``: the tensor passes when
  ``S(|test - ref|) <= atol + rtol * S(|ref|)`` for that statistic ``S`` (``quantile`` uses
  ``error_quantile``, 0.99 by default).

An element where both sides hold the same non-finite value (both NaN, or the same infinity)
is equal.  Any other non-finite element (NaN or Inf on one side only, or opposite
infinities) fails, in every mode: a statistic must not average a NaN away.  All other
statistics are taken over the pairs where both sides are finite.

Tolerance that would pass
-------------------------
A failing tensor also gets the smallest ``atol`` that passes it at its ``rtol``
(``atol_to_pass``) and the smallest ``rtol`` that passes it at its ``atol``
(``rtol_to_pass``), exactly as the rule above computes in float64: re-comparing with
the value passes, and any smaller value fails.  Only failing elements can need more
than the given tolerance, so these cost nothing for tensors that pass (a few vectorized
checks over the failing elements for those that fail).  ``None`` with a
``*_reason`` when no value works: a NaN/Inf mismatch fails at any tolerance, and no
``rtol`` passes a failing element (or statistic) whose reference is 0.

The relative error is ``|test - ref| / |ref|``; elements whose reference is exactly 0 are
left out of the relative statistics, because the ratio is undefined there (the ``atol``
term of the pass rule covers them).  Integers and booleans are compared as float64 (a bool
mismatch is an absolute error of 1); a dtype difference (float16 vs float32) is recorded,
never a failure.  Shapes that are equal once size-1 dimensions are dropped are compared
with a note; other shape differences fail.  Strings and complex numbers are compared for
exact equality only.

Memory and speed: everything is computed in float64 over chunks of ``CHUNK`` elements, so
a big (possibly memory-mapped) tensor costs one float64 buffer (for the exact median and
p99) plus a few chunk-sized work arrays, which are kept per thread between calls (see
:class:`_Workspace`).  A tensor of more than ``BUFFER_LIMIT`` elements (512 MiB of float64)
gets no buffer at all: its exact quantiles are found by a streamed radix selection that
re-reads the inputs chunk by chunk (:func:`_streamed_select`, two to four more passes), so
its temporary memory is a few chunks whatever its size; every statistic is bit-identical to
the buffered path's (the same chunks are summed in the same order, and the order
statistics are exact either way).  A non-contiguous input is copied once when it is flattened.  The
median and p99 come from a radix selection on the float64 bit patterns (:func:`_select`),
exact like np.quantile at a fraction of np.partition's cost.  Chunks whose two sides are
equal element for element (every tensor upstream of a divergence, or a backend compared
with itself) skip the error arithmetic: only the reference's histogram is computed.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

DEFAULT_ATOL = 1e-5
DEFAULT_RTOL = 1e-5
DEFAULT_ERROR_QUANTILE = 0.99
CHECK_ERROR_STATS = ("elemwise", "max", "mean", "median", "quantile")

CHUNK = 1 << 19  # elements per chunk: large enough to amortise Python overhead, small enough to cache
# Tensors of more elements than this get no full-size float64 buffer: their quantiles are streamed
# (:func:`_streamed_select`), costing a few more passes over the inputs instead of 8 bytes an element.
BUFFER_LIMIT = 1 << 26
HIST_BINS = 12


@dataclass
class Histogram:
    """Counts per bin; ``edges`` has one more entry than ``counts``; bins are [lo, hi), the last one closed.

    Reference values get HIST_BINS equal bins over their range.  Errors span many decades,
    so their bins are log-spaced (``log=True``, whole quarter-octaves, at most 16 bins) over
    the non-zero errors, and ``zeros`` counts the errors a log axis cannot show: exact
    zeros (and float64 subnormals, below 2.2e-308).
    """

    edges: List[float]
    counts: List[int]
    log: bool = False
    zeros: int = 0


@dataclass
class WorstElement:
    """The element furthest past its tolerance: the largest ``ratio``, ties to the larger error."""

    index: Tuple[int, ...]
    reference: float
    test: float
    abs_error: float
    ratio: float  # abs_error / (atol + rtol * |reference|); inf for a non-finite mismatch


@dataclass
class TensorStats:
    """Everything measured about one pair of arrays, and the verdict.

    Statistics that are undefined (no finite pair, no non-zero reference for the relative
    error, shapes that cannot be compared) are ``None``.  ``error_ratio`` says how far over
    tolerance the tensor is: the checked quantity divided by its allowed value (for
    ``elemwise``, the worst element's ratio), so a passing tensor's is at most 1.
    """

    shape: Tuple[int, ...]
    test_shape: Tuple[int, ...]
    ref_dtype: str
    test_dtype: str
    atol: float
    rtol: float
    check_error_stat: str = "elemwise"
    elements: int = 0
    finite_pairs: int = 0
    max_abs: Optional[float] = None
    mean_abs: Optional[float] = None
    median_abs: Optional[float] = None
    p99_abs: Optional[float] = None
    max_rel: Optional[float] = None
    mean_rel: Optional[float] = None
    median_rel: Optional[float] = None
    p99_rel: Optional[float] = None
    cosine: Optional[float] = None
    sqnr_db: Optional[float] = None
    ref_nan: int = 0
    ref_inf: int = 0
    test_nan: int = 0
    test_inf: int = 0
    nonfinite_mismatch: int = 0
    failing: int = 0  # elements failing the element rule (whatever check_error_stat is)
    error_ratio: float = 0.0
    passed: bool = True
    atol_to_pass: Optional[float] = None  # failing tensors only (module docstring)
    rtol_to_pass: Optional[float] = None
    atol_to_pass_reason: Optional[str] = None  # why atol_to_pass is None for a failing tensor
    rtol_to_pass_reason: Optional[str] = None
    worst: Optional[WorstElement] = None
    value_hist: Optional[Histogram] = None
    error_hist: Optional[Histogram] = None
    notes: List[str] = field(default_factory=list)

    @property
    def failing_fraction(self) -> float:
        return self.failing / self.elements if self.elements else 0.0


def compare_arrays(reference, test, *, atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL,
                   check_error_stat: str = "elemwise", error_quantile: float = DEFAULT_ERROR_QUANTILE) -> TensorStats:
    """Statistics of ``test`` against ``reference`` and the verdict of the pass rule (module docstring)."""
    if check_error_stat not in CHECK_ERROR_STATS:
        raise ValueError(f"check_error_stat must be one of {', '.join(CHECK_ERROR_STATS)}, not {check_error_stat!r}")
    ref, tst = np.asarray(reference), np.asarray(test)
    stats = TensorStats(shape=tuple(ref.shape), test_shape=tuple(tst.shape), ref_dtype=str(ref.dtype),
                        test_dtype=str(tst.dtype), atol=float(atol), rtol=float(rtol),
                        check_error_stat=check_error_stat, elements=int(ref.size))
    if ref.dtype != tst.dtype:
        stats.notes.append(f"dtypes differ (reference {ref.dtype}, test {tst.dtype}); compared as float64")
    if ref.shape != tst.shape:
        if _squeezed(ref.shape) != _squeezed(tst.shape):
            stats.notes.append(f"shape mismatch: reference {ref.shape}, test {tst.shape}")
            stats.passed, stats.error_ratio = False, float("inf")
            stats.atol_to_pass_reason = stats.rtol_to_pass_reason = "the shapes differ"
            return stats
        stats.notes.append(f"shapes differ only in size-1 dimensions (reference {ref.shape}, test {tst.shape})")
        tst = tst.reshape(ref.shape)
    if not (_is_real(ref.dtype) and _is_real(tst.dtype)):
        return _compare_exact(ref, tst, stats)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):  # inf/nan results are reported, not warned
        _Measure(ref, tst, stats, error_quantile).run()
    return stats


def tolerance_ratio(error: float, ref_magnitude: float, atol: float, rtol: float) -> float:
    """``error / (atol + rtol * ref_magnitude)``, with 0/0 = 0 and x/0 = inf: <= 1 means within tolerance."""
    allowed = atol + rtol * ref_magnitude
    if allowed > 0:
        return error / allowed
    return 0.0 if error == 0 else float("inf")


def _squeezed(shape: Tuple[int, ...]) -> Tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def _is_real(dtype: np.dtype) -> bool:
    """Bools, ints, floats and ml_dtypes' bfloat16/float8: all convert to float64 without loss of meaning."""
    return np.can_cast(dtype, np.float64, casting="same_kind")


def _compare_exact(ref: np.ndarray, tst: np.ndarray, stats: TensorStats) -> TensorStats:
    stats.notes.append(f"{stats.ref_dtype} tensors are compared for exact equality only")
    stats.failing = int(np.count_nonzero(ref != tst))
    stats.passed = stats.failing == 0
    stats.error_ratio = 0.0 if stats.passed else float("inf")
    if not stats.passed:
        stats.atol_to_pass_reason = stats.rtol_to_pass_reason = f"{stats.ref_dtype} tensors must be equal"
    return stats


def min_atol_to_pass(err: np.ndarray, rtol_term: np.ndarray) -> float:
    """The smallest ``a >= 0`` with ``err <= rtol_term + a`` for every element, as float64 computes it.

    ``rtol_term`` is ``|ref| * rtol``.  The answer is the largest ``err - rtol_term`` up to
    the rounding of the sum (a float or two at the magnitude of ``err``):
    :func:`_smallest_passing` settles it.
    """
    if not err.size:
        return 0.0
    slack = 4 * float(np.spacing(max(float(err.max()), float(rtol_term.max()))))
    return _smallest_passing(lambda a: bool((rtol_term + a >= err).all()),
                             max(float((err - rtol_term).max()), 0.0), slack)


def min_rtol_to_pass(err: np.ndarray, ref_abs: np.ndarray, atol: float) -> Optional[float]:
    """The smallest ``r >= 0`` with ``err <= ref_abs * r + atol`` for every element; None if none exists.

    None when an element over ``atol`` has a reference of 0 (or so small that ``r`` overflows).
    """
    over = err > atol
    err, ref_abs = err[over], ref_abs[over]
    if not err.size:
        return 0.0
    if (ref_abs == 0).any():
        return None
    guess = float(((err - atol) / ref_abs).max())
    if not np.isfinite(guess):
        return None
    slack = 4 * (float(np.spacing(float(err.max()))) / float(ref_abs.min()) + float(np.spacing(guess)))
    need = _smallest_passing(lambda r: bool((ref_abs * r + atol >= err).all()), guess, slack)
    return need if np.isfinite(need) else None


def _smallest_passing(passes: Callable[[float], bool], guess: float, slack: float) -> float:
    """The smallest float ``>= 0`` for which the monotone ``passes`` holds, near ``guess``.

    The answer lies within ``slack`` below the guess, or a float or two above it (rounding).
    A bisection over the float64 bit patterns between the two ends (for values >= 0 they
    are ordered like the values) settles it in a few checks; a wrong ``slack`` costs only
    a longer search from 0.
    """
    hi = guess
    for _ in range(4):
        if passes(hi):
            break
        hi = float(np.nextafter(hi, np.inf))
    else:
        while not passes(hi):
            hi = hi * 2.0 if hi > 0 else 5e-324  # inf passes any finite error
    if hi == 0 or not passes(float(np.nextafter(hi, 0))):
        return hi
    lo = max(hi - slack, 0.0)
    if passes(lo):
        if passes(0.0):
            return 0.0
        lo = 0.0
    lo_bits, hi_bits = int(np.float64(lo).view(np.int64)), int(np.float64(hi).view(np.int64))
    while hi_bits - lo_bits > 1:  # passes(lo) is False, passes(hi) True
        mid = (lo_bits + hi_bits) // 2
        if passes(float(np.int64(mid).view(np.float64))):
            hi_bits = mid
        else:
            lo_bits = mid
    return float(np.int64(hi_bits).view(np.float64))


class _Workspace(threading.local):
    """Work arrays kept between calls, one set per thread.

    Comparing hundreds of mid-sized tensors is dominated by page faults when every call
    allocates fresh temporaries (the allocator hands them back to the OS after each call):
    60% of the time on a 600-tensor model.  Arrays of up to ``CHUNK`` elements are kept and
    reused instead, so the memory held is bounded by a few chunk-sized arrays.
    """

    def __init__(self) -> None:
        self.arrays: Dict[str, np.ndarray] = {}

    def get(self, key: str, n: int, dtype=np.float64) -> np.ndarray:
        """An uninitialised array of ``n`` elements; valid until the next ``get`` of the same key."""
        if n > CHUNK:
            return np.empty(n, dtype)
        a = self.arrays.get(key)
        if a is None or a.size < n or a.dtype != dtype:
            a = self.arrays[key] = np.empty(min(CHUNK, 1 << max(n - 1, 0).bit_length()), dtype)
        return a[:n]


_WORKSPACE = _Workspace()


class _Measure:
    """The streaming computation behind :func:`compare_arrays`.

    Pass 1 reads the inputs chunk by chunk, accumulates sums, counts, the verdict and the
    worst element, and writes the absolute errors into one float64 buffer (exact median and
    p99, error histogram).  Pass 2 reuses that buffer for the relative errors and bins the
    reference values, whose range pass 1 found.  ``median`` / ``quantile`` checks reuse it
    once more for ``|ref|``.  Later passes re-read the inputs, which is cheaper than holding
    three float64 copies; a tensor of one chunk keeps pass 1's arrays instead, its error
    array standing in for the buffer.  When every finite pair is equal, :meth:`_all_equal`
    replaces the error statistics and pass 2.
    """

    def __init__(self, ref: np.ndarray, tst: np.ndarray, stats: TensorStats, quantile: float) -> None:
        self.ref = ref.reshape(-1)
        self.tst = tst.reshape(-1)
        self.s = stats
        self.q = quantile
        self.ws = _WORKSPACE
        streamed = ref.size > BUFFER_LIMIT  # no full-size buffer: error keys are counted instead
        self.buf = None if streamed else self.ws.get("buf", ref.size)
        self.err_counts = np.zeros(_TOP_KEYS, np.int64) if streamed else None
        self.n = 0  # finite pairs
        self.sum_abs = self.max_abs = 0.0
        self.ref_min, self.ref_max = np.inf, -np.inf
        self.rr = self.tt = self.rt = self.dd = 0.0
        self.any_nonfinite = False
        # (ref, |err|, |ref|) of a tensor of one chunk; (ref, None, None) when its two sides are equal
        self.cache: Optional[Tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]] = None
        self.worst: Optional[Tuple[float, float, int]] = None  # (ratio, error, flat index): largest wins
        self.tolerant = stats.atol >= 0 and stats.rtol >= 0  # then an error of 0 always passes
        # smallest tolerances that pass the failing elements seen so far; rtol None: no rtol can
        self.need_atol: float = 0.0
        self.need_rtol: Optional[float] = 0.0

    def run(self) -> None:
        for start in range(0, self.ref.size, CHUNK):
            self._pass1(start, *self._raw(start))
        s = self.s
        s.finite_pairs = self.n
        checked_quantile = None
        if self.n:
            s.max_abs, s.mean_abs = self.max_abs, self.sum_abs / self.n
            s.cosine, s.sqnr_db = self._cosine(), self._sqnr()
            if self.max_abs == 0 and self.tolerant:
                s.cosine = 1.0  # the sums may be skipped (see _equal_chunk), or rr * tt overflow
                self._all_equal()
                checked_quantile = 0.0
            elif self.err_counts is not None:
                s.error_hist = _log_histogram(self.err_counts, 0)
                s.median_abs, s.p99_abs, checked_quantile = _streamed_quantiles(
                    lambda: (e for _, e, _ in self._error_chunks()), self.n, [0.5, 0.99, self.q], self.err_counts)
                self._pass2()
            else:
                errors = self.cache[1] if self.cache is not None else self.buf[:self.n]
                keys, counts, low = _radix_keys(errors, self.ws)
                s.error_hist = _log_histogram(counts, low)
                s.median_abs, s.p99_abs, checked_quantile = _quantiles(errors, [0.5, 0.99, self.q], self.ws, (keys, counts, low))
                self._pass2()
        self._verdict(checked_quantile)
        if self.worst is not None:
            self._set_worst()

    def _all_equal(self) -> None:
        """Every finite pair is equal (the common case upstream of a divergence): all errors are 0.

        Only the reference values still need a look, for their histogram and for how many
        are non-zero (the relative error is defined, and 0, there).
        """
        s = self.s
        s.median_abs = s.p99_abs = 0.0
        s.error_hist = Histogram(edges=[], counts=[], log=True, zeros=self.n)
        counts = np.zeros(HIST_BINS if self.ref_min < self.ref_max else 1, dtype=np.int64)
        for r in self._finite_refs():
            counts += _bin_counts(r, self.ref_min, self.ref_max, self.ws)
        s.value_hist = Histogram(edges=_edges(self.ref_min, self.ref_max), counts=counts.tolist())
        if self.ref_min != 0 or self.ref_max != 0:  # some reference value is not 0
            s.max_rel = s.mean_rel = s.median_rel = s.p99_rel = 0.0

    def _finite_refs(self) -> Iterator[np.ndarray]:
        """The reference's values over the finite pairs, as float64, chunk by chunk."""
        if self.cache is not None:
            yield self.cache[0]
            return
        for start in range(0, self.ref.size, CHUNK):
            r, t = self._read(start)
            if self.any_nonfinite:
                r = r[np.isfinite(r) & np.isfinite(t)]
            yield r

    def _raw(self, start: int) -> Tuple[np.ndarray, np.ndarray]:
        """A chunk of each side as given (any dtype)."""
        return self.ref[start:start + CHUNK], self.tst[start:start + CHUNK]

    def _read(self, start: int) -> Tuple[np.ndarray, np.ndarray]:
        """A chunk of each side as float64 (a view when the input already is float64)."""
        return self._as_float64("ref", self.ref[start:start + CHUNK]), self._as_float64("test", self.tst[start:start + CHUNK])

    def _as_float64(self, key: str, chunk: np.ndarray) -> np.ndarray:
        if chunk.dtype == np.float64:
            return chunk
        out = self.ws.get(key, chunk.size)
        np.copyto(out, chunk)
        return out

    def _pass1(self, start: int, raw_r: np.ndarray, raw_t: np.ndarray) -> None:
        r = self._as_float64("ref", raw_r)
        if self.tolerant and raw_r.dtype == raw_t.dtype and np.array_equal(raw_r, raw_t) and self._equal_chunk(start, r):
            return
        t = self._as_float64("test", raw_t)
        rt = _dot(r, t)
        finite = None
        if not np.isfinite(rt):  # a NaN or Inf on either side (or an overflow) makes r.t non-finite
            finite = self._count_nonfinite(start, r, t)
            r, t = r[finite], t[finite]
            rt = _dot(r, t)
        n = r.size
        if not n:
            return
        err = np.subtract(t, r, out=self.ws.get("err", n))
        self.rt += rt
        self.rr += _dot(r, r)
        self.tt += _dot(t, t)
        self.dd += _dot(err, err)
        np.abs(err, out=err)
        ref_abs = np.abs(r, out=self.ws.get("ref_abs", n))
        allowed = np.multiply(ref_abs, self.s.rtol, out=self.ws.get("work", n))
        allowed += self.s.atol
        failing = np.greater(err, allowed, out=self.ws.get("mask", n, np.bool_))
        count = int(np.count_nonzero(failing))
        self.s.failing += count
        err_max, r_lo, r_hi = float(err.max()), float(r.min()), float(r.max())
        if count and self.s.check_error_stat == "elemwise":
            self._track_needed(err, ref_abs, err_max, r_lo, r_hi)
        self._track_worst(start, err, allowed, finite)
        if self.ref.size <= CHUNK:
            self.cache = (r, err, ref_abs)  # one chunk: its errors are the error buffer
        elif self.buf is not None:
            self.buf[self.n:self.n + n] = err
        else:
            self.err_counts += _top_key_counts(err, self.ws)
        self.n += n
        self.sum_abs += float(err.sum())
        self.max_abs = max(self.max_abs, err_max)
        self.ref_min, self.ref_max = min(self.ref_min, r_lo), max(self.ref_max, r_hi)

    def _equal_chunk(self, start: int, r: np.ndarray) -> bool:
        """Account for a chunk whose two sides are equal element for element; False if it holds NaN/Inf.

        The same work as the general path with every error 0, without computing the errors:
        nothing fails, and the worst element is the chunk's first, as argmax would pick.  A
        tensor of one chunk skips the sums for the cosine too: run() knows it is 1.
        """
        lo, hi = float(r.min()), float(r.max())
        if not (np.isfinite(lo) and np.isfinite(hi)):
            return False
        n = r.size
        if self.ref.size > CHUNK:  # other chunks may differ: the cosine needs this one's share
            rr = _dot(r, r)
            self.rt += rr
            self.rr += rr
            self.tt += rr
        if self.worst is None:
            self.worst = (0.0, 0.0, start)
        if self.ref.size <= CHUNK:
            self.cache = (r, None, None)  # run() takes the all-equal path, which needs only r
        elif self.buf is not None:
            self.buf[self.n:self.n + n] = 0.0
        else:
            self.err_counts[0] += n  # zeros have key 0
        self.n += n
        self.ref_min, self.ref_max = min(self.ref_min, lo), max(self.ref_max, hi)
        return True

    def _track_needed(self, err: np.ndarray, ref_abs: np.ndarray, err_max: float, r_lo: float, r_hi: float) -> None:
        """Raise the tolerances that would pass to cover this chunk (of which some elements fail).

        The smallest tolerance passing a set of elements is the largest of their own, so a
        chunk's can be settled on its own.  Only elements whose estimate (``err - rtol*|ref|``,
        ``(err - atol) / |ref|``) is within rounding of the chunk's largest can hold it: those
        few go to the exact search.  A margin of 8 floats at the chunk's largest magnitude
        bounds that rounding.  Work arrays come from the workspace: fresh temporaries cost
        more in page faults than the arithmetic (see :class:`_Workspace`).
        """
        s, n = self.s, err.size
        est = np.multiply(ref_abs, s.rtol, out=self.ws.get("need", n))
        np.subtract(err, est, out=est)
        margin = 8 * float(np.spacing(max(err_max, max(-r_lo, r_hi) * s.rtol)))
        near = np.flatnonzero(np.greater_equal(est, float(est.max()) - margin, out=self.ws.get("near", n, np.bool_)))
        e, a = err[near], ref_abs[near]
        self.need_atol = max(self.need_atol, min_atol_to_pass(e, a * s.rtol))
        if self.need_rtol is None:
            return
        if r_lo <= 0 <= r_hi and bool(np.any(err[ref_abs == 0] > s.atol)):
            self.need_rtol = None  # a failing element with a reference of 0: no rtol passes it
            return
        np.subtract(err, s.atol, out=est)
        np.divide(est, ref_abs, out=est)  # 0/0 (NaN) where an element with a zero reference passes anyway
        guess = float(np.fmax.reduce(est))
        # err - guess * |ref| >= atol - margin: within rounding of needing the guess (error units)
        np.multiply(ref_abs, guess, out=est)
        np.subtract(err, est, out=est)
        near = np.flatnonzero(np.greater_equal(est, s.atol - 8 * float(np.spacing(err_max)),
                                               out=self.ws.get("near", n, np.bool_)))
        rtol = min_rtol_to_pass(err[near], ref_abs[near], s.atol) if np.isfinite(guess) else None
        self.need_rtol = None if rtol is None else max(self.need_rtol, rtol)

    def _count_nonfinite(self, start: int, r: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Count NaN/Inf on each side and the non-finite mismatches; return the mask of finite pairs."""
        s = self.s
        r_nan, t_nan, r_inf, t_inf = np.isnan(r), np.isnan(t), np.isinf(r), np.isinf(t)
        finite = ~(r_nan | r_inf | t_nan | t_inf)
        s.ref_nan += int(np.count_nonzero(r_nan))
        s.ref_inf += int(np.count_nonzero(r_inf))
        s.test_nan += int(np.count_nonzero(t_nan))
        s.test_inf += int(np.count_nonzero(t_inf))
        bad = np.flatnonzero(~finite & ~((r_nan & t_nan) | (r_inf & (r == t))))
        s.nonfinite_mismatch += bad.size
        if bad.size and (self.worst is None or self.worst[:2] != (np.inf, np.inf)):
            self.worst = (np.inf, np.inf, start + int(bad[0]))  # a mismatched NaN/Inf is the worst there is
        self.any_nonfinite = self.any_nonfinite or not finite.all()
        return finite

    def _track_worst(self, start: int, err: np.ndarray, allowed: np.ndarray, finite: Optional[np.ndarray]) -> None:
        """Update the worst element with this chunk's; overwrites ``allowed`` with the ratios."""
        ratio = np.divide(err, allowed, out=allowed)
        if self.s.atol == 0:
            ratio[np.isnan(ratio)] = 0.0  # 0/0: an exact element whose tolerance is zero
        i = int(ratio.argmax())
        if ratio[i] == np.inf:  # several elements infinitely over: the largest error is the worst
            candidates = np.flatnonzero(ratio == np.inf)
            i = int(candidates[err[candidates].argmax()])
        key = (float(ratio[i]), float(err[i]))
        if self.worst is None or key > self.worst[:2]:
            flat = int(np.flatnonzero(finite)[i]) if finite is not None else i
            self.worst = (key[0], key[1], start + flat)

    def _error_chunks(self) -> Iterator[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """``(ref, |test - ref|, |ref|)`` over the finite pairs, chunk by chunk, for the later passes."""
        if self.cache is not None:
            yield self.cache
            return
        for start in range(0, self.ref.size, CHUNK):
            r, t = self._read(start)
            if self.any_nonfinite:
                finite = np.isfinite(r) & np.isfinite(t)
                r, t = r[finite], t[finite]
            err = np.subtract(t, r, out=self.ws.get("err", r.size))
            yield r, np.abs(err, out=err), np.abs(r, out=self.ws.get("ref_abs", r.size))

    def _pass2(self) -> None:
        """Relative errors into ``buf`` (sums, max, quantiles) and the histogram of reference values."""
        s = self.s
        counts = np.zeros(HIST_BINS if self.ref_min < self.ref_max else 1, dtype=np.int64)
        rel_counts = np.zeros(_TOP_KEYS, np.int64) if self.buf is None else None
        n_rel, sum_rel, max_rel = 0, 0.0, 0.0
        for r, err, ref_abs in self._error_chunks():
            counts += _bin_counts(r, self.ref_min, self.ref_max, self.ws)
            rel = self._relative(err, ref_abs, n_rel)
            n_rel += rel.size
            if rel.size:
                sum_rel += float(rel.sum())
                max_rel = max(max_rel, float(rel.max()))
                if rel_counts is not None:
                    rel_counts += _top_key_counts(rel, self.ws)
        s.value_hist = Histogram(edges=_edges(self.ref_min, self.ref_max), counts=counts.tolist())
        if n_rel:
            s.max_rel, s.mean_rel = max_rel, sum_rel / n_rel
            if rel_counts is None:
                s.median_rel, s.p99_rel = _quantiles(self.buf[:n_rel], [0.5, 0.99])
            else:
                s.median_rel, s.p99_rel = _streamed_quantiles(
                    lambda: (self._relative(e, a) for _, e, a in self._error_chunks()), n_rel, [0.5, 0.99], rel_counts)

    def _relative(self, err: np.ndarray, ref_abs: np.ndarray, at: Optional[int] = None) -> np.ndarray:
        """``err / ref_abs`` where the reference is not 0 (undefined there): into ``buf[at:]``
        when there is a buffer, else into a work array."""
        if err.size and ref_abs.min() == 0:
            nonzero = ref_abs != 0
            err, ref_abs = err[nonzero], ref_abs[nonzero]
        out = self.buf[at:at + err.size] if self.buf is not None and at is not None else self.ws.get("rel", err.size)
        return np.divide(err, ref_abs, out=out)

    def _ref_abs_stat(self, stat: str) -> float:
        """``S(|ref|)`` over the finite pairs for a statistic check (another pass unless cached)."""
        if stat == "max":
            return max(float(a.max()) for _, _, a in self._error_chunks() if a.size)
        if stat == "mean":
            return sum(float(a.sum()) for _, _, a in self._error_chunks()) / self.n
        q = 0.5 if stat == "median" else self.q
        if self.buf is None:
            return _streamed_quantiles(lambda: (a for _, _, a in self._error_chunks()), self.n, [q])[0]
        pos = 0
        for _, _, a in self._error_chunks():
            self.buf[pos:pos + a.size] = a
            pos += a.size
        return _quantiles(self.buf[:pos], [q])[0]

    def _verdict(self, checked_quantile: Optional[float]) -> None:
        s = self.s
        s.failing += s.nonfinite_mismatch
        if s.check_error_stat == "elemwise" or checked_quantile is None:
            s.passed = s.failing == 0
            s.error_ratio = self.worst[0] if self.worst is not None else 0.0
            self._set_needed(self.need_atol, self.need_rtol, "element")
            return
        error = {"max": s.max_abs, "mean": s.mean_abs, "median": s.median_abs, "quantile": checked_quantile}[s.check_error_stat]
        if error == 0 and self.tolerant:  # passes whatever S(|ref|) is; the ratio is 0
            s.passed = s.nonfinite_mismatch == 0
            s.error_ratio = float("inf") if s.nonfinite_mismatch else 0.0
            self._set_needed(0.0, 0.0, "statistic")
            return
        ref = self._ref_abs_stat(s.check_error_stat)
        s.passed = s.nonfinite_mismatch == 0 and error <= s.atol + s.rtol * ref
        s.error_ratio = float("inf") if s.nonfinite_mismatch else tolerance_ratio(error, ref, s.atol, s.rtol)
        if not s.passed and not s.nonfinite_mismatch:
            err, ref_stat = np.array([error]), np.array([ref])
            self._set_needed(min_atol_to_pass(err, ref_stat * s.rtol), min_rtol_to_pass(err, ref_stat, s.atol), "statistic")
        else:
            self._set_needed(0.0, 0.0, "statistic")

    def _set_needed(self, atol: float, rtol: Optional[float], what: str) -> None:
        """Record the tolerances that would pass a failing tensor, or why none would."""
        s = self.s
        if s.passed:
            return
        if s.nonfinite_mismatch:
            s.atol_to_pass_reason = s.rtol_to_pass_reason = (
                f"{s.nonfinite_mismatch} NaN/Inf element(s) differ between the runners; no tolerance passes them")
            return
        if np.isfinite(atol):
            s.atol_to_pass = atol
        else:
            s.atol_to_pass_reason = "the error overflows float64"
        if rtol is not None:
            s.rtol_to_pass = rtol
        else:
            s.rtol_to_pass_reason = (f"a failing {what} has a reference of 0 (or too small): "
                                     f"no rtol passes it, only atol")

    def _set_worst(self) -> None:
        ratio, _, flat = self.worst
        ref, tst = float(self.ref[flat]), float(self.tst[flat])
        error = float(abs(np.float64(tst) - np.float64(ref)))
        self.s.worst = WorstElement(index=tuple(int(i) for i in np.unravel_index(flat, self.s.shape)),
                                    reference=ref, test=tst, abs_error=error, ratio=ratio)

    def _cosine(self) -> float:
        if self.rr == 0 and self.tt == 0:
            return 1.0
        if self.rr == 0 or self.tt == 0:
            return 0.0
        return float(np.clip(self.rt / np.sqrt(self.rr * self.tt), -1.0, 1.0))

    def _sqnr(self) -> float:
        if self.dd == 0:
            return float("inf")
        if self.rr == 0:
            return float("-inf")
        return float(10.0 * np.log10(self.rr / self.dd))


def _quantiles(values: np.ndarray, qs: List[float], ws: Optional[_Workspace] = None,
               keyed: Optional[Tuple[np.ndarray, np.ndarray, int]] = None) -> List[float]:
    """numpy's default (linear) quantiles, exact; ``values`` is left as it is.

    The order statistics come from :func:`_select` (a radix selection), not from
    ``np.partition``, which costs ~10 ns per element per quantile: on a model's worth of
    tensors it was three quarters of the comparison.  ``keyed`` is :func:`_radix_keys` of
    ``values`` when the caller has it already.
    """
    ranks, where = _quantile_ranks(qs, values.size)
    return _interpolate(qs, where, _select(values, ranks, ws or _WORKSPACE, keyed))


def _streamed_quantiles(chunks: Callable[[], Iterator[np.ndarray]], n: int, qs: List[float],
                        counts: Optional[np.ndarray] = None) -> List[float]:
    """:func:`_quantiles` of ``n`` non-negative values that ``chunks()`` yields anew on each call."""
    ranks, where = _quantile_ranks(qs, n)
    return _interpolate(qs, where, _streamed_select(chunks, ranks, counts))


def _quantile_ranks(qs: List[float], n: int) -> Tuple[List[int], Dict[float, Tuple[int, float]]]:
    """The order statistics numpy's linear quantiles of ``n`` values need, and where each q lies."""
    where: Dict[float, Tuple[int, float]] = {}
    ranks = set()
    for q in qs:
        position = q * (n - 1)
        k = int(position)
        where[q] = (k, position - k)
        ranks.add(k)
        if position - k:
            ranks.add(k + 1)
    return sorted(ranks), where


def _interpolate(qs: List[float], where: Dict[float, Tuple[int, float]], found: Dict[int, float]) -> List[float]:
    out = []
    for q in qs:
        k, frac = where[q]
        low = found[k]
        out.append(low if frac == 0 else low + (found[k + 1] - low) * frac)
    return out


_RADIX_SHIFT = 46  # float64 bits >> 46: sign, exponent and 6 mantissa bits, i.e. 1/64 octaves
_RADIX_STEP = 12  # each further level tells apart 12 more mantissa bits
_SELECT_DIRECT = 4096  # below this many values np.partition is cheaper than another level


def _radix_keys(values: np.ndarray, ws: Optional[_Workspace] = None,
                shift: int = _RADIX_SHIFT) -> Tuple[np.ndarray, np.ndarray, int]:
    """``(keys, counts, low)``: ``keys = (bits >> shift) - low``, ``counts = bincount(keys)``.

    For non-negative float64 the bit pattern read as an integer grows with the value, so
    the keys are ordered like the values.  ``low`` is negative when some value is negative
    (or -0.0); then the keys are not ordered, and are not counted.  ``keys`` is the
    workspace's array when ``ws`` is given, else a new one.
    """
    keys = np.right_shift(values.view(np.int64), shift, out=ws.get("keys", values.size, np.int64) if ws else None)
    low = int(keys.min()) if keys.size else 0
    if low < 0:
        return keys, np.zeros(1, np.int64), low
    if low:
        keys -= low
    return keys, np.bincount(keys), low


def _select(values: np.ndarray, ranks: List[int], ws: _Workspace,
            keyed: Optional[Tuple[np.ndarray, np.ndarray, int]] = None, shift: int = _RADIX_SHIFT) -> Dict[int, float]:
    """The values at sorted ``ranks`` of ``values`` (exact order statistics), ``values`` untouched.

    A radix selection on the float64 bit patterns: count the values per key (the top bits),
    find the key holding each rank, and go on with only the values of that key, whose next
    bits become the keys.  Each level costs one pass and the values it keeps are few, so
    two quantiles cost a few ns per element instead of two full ``np.partition``.  Small
    arrays, and arrays with negative values, go to ``np.partition`` (on a copy).
    """
    n = values.size
    if n <= _SELECT_DIRECT or shift < 0:
        return _partition_select(values.copy(), ranks)
    if keyed is None:  # the workspace's keys at the top level only: one level down, they are still in use
        keyed = _radix_keys(values, ws if shift == _RADIX_SHIFT else None, shift)
    keys, counts, low = keyed
    if low < 0:
        return _partition_select(values.copy(), ranks)
    used = np.flatnonzero(counts != 0)  # keys in use, ascending; != 0 first: ~5x faster than on int64
    if used.size == 1:  # one key: all values are equal, or the next bits tell them apart
        lo, hi = float(values.min()), float(values.max())
        if lo == hi:
            return {k: lo for k in ranks}
        return _select(values, ranks, ws, None, shift - _RADIX_STEP)
    ends = np.cumsum(counts[used])
    where = np.searchsorted(ends, ranks, side="right").tolist()
    found: Dict[int, float] = {}
    for i in sorted(set(where)):
        b = int(used[i])
        first = int(ends[i] - counts[b])
        local = [k - first for k, ki in zip(ranks, where) if ki == i]
        if b == 0 and low == 0 and counts[0] == values.size - np.count_nonzero(values):
            found.update({k + first: 0.0 for k in local})  # the lowest key holds exactly the zeros
            continue
        subset = values[np.equal(keys, b, out=ws.get("mask", n, np.bool_))]
        for k, v in _select(subset, local, ws, None, shift - _RADIX_STEP).items():
            found[k + first] = v
    return found


def _partition_select(values: np.ndarray, ranks: List[int]) -> Dict[int, float]:
    """Order statistics by np.partition, one index per call (numpy's fast single-kth path)."""
    found: Dict[int, float] = {}
    lower = 0  # values[lower:] may be in any order; everything before is <= all of it
    for k in ranks:
        if k >= lower:
            values[lower:].partition(k - lower)
            lower = k + 1
        found[k] = float(values[k])
    return found


# Keys of non-negative float64 at the top level: bits >> _RADIX_SHIFT, from 0 (zero) to +inf's.
_TOP_KEYS = (int(np.float64(np.inf).view(np.int64)) >> _RADIX_SHIFT) + 1


def _top_key_counts(values: np.ndarray, ws: _Workspace) -> np.ndarray:
    """How many of ``values`` (non-negative float64) have each top-level radix key."""
    keys = np.right_shift(values.view(np.int64), _RADIX_SHIFT, out=ws.get("skeys", values.size, np.int64))
    return np.bincount(keys, minlength=_TOP_KEYS)


def _streamed_select(chunks: Callable[[], Iterator[np.ndarray]], ranks: List[int],
                     counts: Optional[np.ndarray] = None) -> Dict[int, float]:
    """Exact order statistics of non-negative values that ``chunks()`` yields chunk by chunk.

    :func:`_select` without holding the values: a *bucket* is the set of values whose bit
    patterns agree above some bit (``bits >> shift == key``).  The top-level counts (``counts``,
    from :func:`_top_key_counts`; counted here if not given) tell which bucket holds each rank.
    Each further pass over the chunks either gathers a bucket's values (when at most ``CHUNK``
    of them: then ``np.partition`` finishes) or counts its values by their next 12 bits, which
    splits it 4096 ways; a bucket whose values are all equal (its minimum is its maximum) is
    settled at once.  Memory: a few chunk-sized arrays per bucket, whatever the size of the data.
    """
    if counts is None:
        counts = np.zeros(_TOP_KEYS, np.int64)
        for chunk in chunks():
            counts += _top_key_counts(chunk, _WORKSPACE)
    found: Dict[int, float] = {}
    # levels still to resolve: (key of the parent bucket, shift of the counts' keys, counts, rank of the first value)
    levels = [(0, _RADIX_SHIFT, counts, 0, list(ranks))]
    while levels:
        buckets = []  # (key, shift, size, rank of its first value, ranks in it)
        for parent, shift, cnt, first, wanted in levels:
            ends = np.cumsum(cnt)
            where = np.searchsorted(ends, [r - first for r in wanted], side="right").tolist()
            for j in sorted(set(where)):
                start = first + int(ends[j] - cnt[j])
                key = parent + j
                in_bucket = [r for r, w in zip(wanted, where) if w == j]
                if shift == 0:  # every value of the bucket has this very bit pattern
                    found.update({r: float(np.int64(key).view(np.float64)) for r in in_bucket})
                else:
                    buckets.append((key, shift, int(cnt[j]), start, in_bucket))
        levels = []
        if not buckets:
            break
        gathered: List[List[np.ndarray]] = [[] for _ in buckets]
        refine = [np.zeros(1 << min(_RADIX_STEP, shift), np.int64) if size > CHUNK else None
                  for _, shift, size, _, _ in buckets]
        lows, highs = [np.inf] * len(buckets), [-np.inf] * len(buckets)
        for chunk in chunks():
            bits = chunk.view(np.int64)
            for i, (key, shift, _, _, _) in enumerate(buckets):
                inside = bits[np.right_shift(bits, shift) == key]
                if not inside.size:
                    continue
                if refine[i] is None:
                    gathered[i].append(inside.view(np.float64).copy())
                    continue
                step = min(_RADIX_STEP, shift)
                refine[i] += np.bincount(np.right_shift(inside, shift - step) - (key << step), minlength=1 << step)
                lows[i], highs[i] = min(lows[i], int(inside.min())), max(highs[i], int(inside.max()))
        for i, (key, shift, _, start, in_bucket) in enumerate(buckets):
            if refine[i] is None:
                values = np.concatenate(gathered[i])
                found.update({start + k: v for k, v in _partition_select(values, [r - start for r in in_bucket]).items()})
            elif lows[i] == highs[i]:
                found.update({r: float(np.int64(lows[i]).view(np.float64)) for r in in_bucket})
            else:
                step = min(_RADIX_STEP, shift)
                levels.append((key << step, shift - step, refine[i], start, in_bucket))
    return found


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """``a . b`` by einsum, not np.dot: BLAS would start its thread pool, whose spinning threads
    slow every other numpy call down (measured 1.5x on the whole comparison with 2 cores)."""
    return float(np.einsum("i,i->", a, b))


def _edges(lo: float, hi: float, bins: int = HIST_BINS) -> List[float]:
    if not lo < hi:
        return [lo, hi]
    return (np.linspace(lo * 0.5, hi * 0.5, bins + 1) * 2.0).tolist()  # halved: hi - lo may overflow


def _bin_counts(x: np.ndarray, lo: float, hi: float, ws: _Workspace, bins: int = HIST_BINS) -> np.ndarray:
    """Counts of ``x`` (all within [lo, hi]) in ``bins`` equal bins; one bin when lo == hi.

    Element ``v`` goes to bin ``min(floor((v - lo) * bins / (hi - lo)), bins - 1)``.  With the
    bin numbers as uint8, ``count(bin >= k)`` for each k is a byte compare and a count, ~4x
    cheaper than np.bincount (itself several times cheaper than np.histogram); this is on the
    hot path, once per tensor.
    """
    if not lo < hi:
        return np.array([x.size], dtype=np.int64)
    if not np.isfinite(hi - lo):  # values near the float64 limits: halve everything so nothing overflows
        x, lo, hi = x * 0.5, lo * 0.5, hi * 0.5
    scaled = np.subtract(x, lo, out=ws.get("work", x.size))
    scale = bins / (hi - lo)
    if np.isfinite(scale):
        scaled *= scale  # in [0, bins]; bins itself only for the maximum
    else:  # a subnormal range: bins / range overflows (and 0 * inf would be NaN)
        scaled /= (hi - lo) / bins
    idx = ws.get("bin", x.size, np.uint8 if bins < 255 else np.intp)
    np.copyto(idx, scaled, casting="unsafe")  # truncation is floor here: scaled >= 0
    mask = ws.get("mask", x.size, np.bool_)
    # at_least[k] = count(bin >= k); the last bin's count(bin >= bins - 1) takes in bin == bins
    at_least = [x.size] + [int(np.count_nonzero(np.greater_equal(idx, k, out=mask))) for k in range(1, bins)] + [0]
    return np.array([at_least[k] - at_least[k + 1] for k in range(bins)], dtype=np.int64)


_EXPONENT_SHIFT = 50  # float64 bits >> 50: exponent and top two mantissa bits, i.e. quarter octaves


def _log_histogram(counts: np.ndarray, low: int, max_bins: int = 16) -> Histogram:
    """Errors in log-spaced bins from the smallest non-zero to the largest error.

    ``counts, low`` come from :func:`_radix_keys` of the errors: ``counts[j]`` values have
    ``bits >> 46 == low + j``.  For non-negative float64 the bit pattern read as an integer
    grows with the value, so ``bits >> 50`` numbers quarter-octave buckets exactly, without a
    logarithm per element; neighbouring buckets are merged to at most ``max_bins`` bins.
    Bucket 0 holds zero and float64 subnormals (< 2.2e-308): it is reported as ``zeros``.
    Only the keys in use are looked at: with exact zeros among the errors, ``counts`` spans
    tens of thousands of keys, nearly all empty.
    """
    used = np.flatnonzero(counts != 0)
    bucket = (used + low) >> (_EXPONENT_SHIFT - _RADIX_SHIFT)  # ascending, with repeats
    starts = np.flatnonzero(np.diff(bucket, prepend=-1))
    bucket, in_bucket = bucket[starts], np.add.reduceat(counts[used], starts)
    zeros = int(in_bucket[0]) if bucket[0] == 0 else 0
    if bucket[0] == 0:
        bucket, in_bucket = bucket[1:], in_bucket[1:]
    if not bucket.size:
        return Histogram(edges=[], counts=[], log=True, zeros=zeros)
    first, last = int(bucket[0]), int(bucket[-1])
    group = -(-(last - first + 1) // max_bins)  # ceil
    bins = -(-(last - first + 1) // group)
    grouped = np.zeros(bins, dtype=np.int64)
    np.add.at(grouped, (bucket - first) // group, in_bucket)
    edge_buckets = first + group * np.arange(bins + 1, dtype=np.int64)
    edges = np.left_shift(edge_buckets, _EXPONENT_SHIFT).view(np.float64)
    return Histogram(edges=edges.tolist(), counts=grouped.tolist(), log=True, zeros=zeros)
