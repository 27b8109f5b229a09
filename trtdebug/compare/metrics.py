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

The relative error is ``|test - ref| / |ref|``; elements whose reference is exactly 0 are
left out of the relative statistics, because the ratio is undefined there (the ``atol``
term of the pass rule covers them).  Integers and booleans are compared as float64 (a bool
mismatch is an absolute error of 1); a dtype difference (float16 vs float32) is recorded,
never a failure.  Shapes that are equal once size-1 dimensions are dropped are compared
with a note; other shape differences fail.  Strings and complex numbers are compared for
exact equality only.

Memory and speed: everything is computed in float64 over chunks of ``CHUNK`` elements, so
a huge (possibly memory-mapped) tensor costs one float64 buffer (for the exact median and
p99) plus a few chunk-sized work arrays, which are kept per thread between calls (see
:class:`_Workspace`).  A non-contiguous input is copied once when it is flattened.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

DEFAULT_ATOL = 1e-5
DEFAULT_RTOL = 1e-5
DEFAULT_ERROR_QUANTILE = 0.99
CHECK_ERROR_STATS = ("elemwise", "max", "mean", "median", "quantile")

CHUNK = 1 << 19  # elements per chunk: large enough to amortise Python overhead, small enough to cache
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
    return stats


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
    three float64 copies; a tensor of one chunk keeps pass 1's arrays instead.
    """

    def __init__(self, ref: np.ndarray, tst: np.ndarray, stats: TensorStats, quantile: float) -> None:
        self.ref = ref.reshape(-1)
        self.tst = tst.reshape(-1)
        self.s = stats
        self.q = quantile
        self.ws = _WORKSPACE
        self.buf = self.ws.get("buf", ref.size)
        self.n = 0  # finite pairs
        self.sum_abs = self.max_abs = 0.0
        self.ref_min, self.ref_max = np.inf, -np.inf
        self.rr = self.tt = self.rt = self.dd = 0.0
        self.any_nonfinite = False
        self.cache: Optional[Tuple[np.ndarray, np.ndarray, np.ndarray]] = None  # (ref, err, |ref|) of a single chunk
        self.worst: Optional[Tuple[float, float, int]] = None  # (ratio, error, flat index): largest wins

    def run(self) -> None:
        for start in range(0, self.ref.size, CHUNK):
            self._pass1(start, *self._read(start))
        s = self.s
        s.finite_pairs = self.n
        checked_quantile = None
        if self.n:
            s.max_abs, s.mean_abs = self.max_abs, self.sum_abs / self.n
            s.cosine, s.sqnr_db = self._cosine(), self._sqnr()
            errors = self.buf[:self.n]
            s.error_hist = _log_histogram(errors, self.ws)
            s.median_abs, s.p99_abs, checked_quantile = _quantiles(errors, [0.5, 0.99, self.q])
            self._pass2()
        self._verdict(checked_quantile)
        if self.worst is not None:
            self._set_worst()

    def _read(self, start: int) -> Tuple[np.ndarray, np.ndarray]:
        """A chunk of each side as float64 (a view when the input already is float64)."""
        return self._as_float64("ref", self.ref[start:start + CHUNK]), self._as_float64("test", self.tst[start:start + CHUNK])

    def _as_float64(self, key: str, chunk: np.ndarray) -> np.ndarray:
        if chunk.dtype == np.float64:
            return chunk
        out = self.ws.get(key, chunk.size)
        np.copyto(out, chunk)
        return out

    def _pass1(self, start: int, r: np.ndarray, t: np.ndarray) -> None:
        rt = float(np.einsum("i,i->", r, t))
        finite = None
        if not np.isfinite(rt):  # a NaN or Inf on either side (or an overflow) makes r.t non-finite
            finite = self._count_nonfinite(start, r, t)
            r, t = r[finite], t[finite]
            rt = float(np.einsum("i,i->", r, t))
        n = r.size
        if not n:
            return
        err = np.subtract(t, r, out=self.ws.get("err", n))
        self.rt += rt
        self.rr += float(np.einsum("i,i->", r, r))
        self.tt += float(np.einsum("i,i->", t, t))
        self.dd += float(np.einsum("i,i->", err, err))
        np.abs(err, out=err)
        ref_abs = np.abs(r, out=self.ws.get("ref_abs", n))
        allowed = np.multiply(ref_abs, self.s.rtol, out=self.ws.get("work", n))
        allowed += self.s.atol
        self.s.failing += int(np.count_nonzero(np.greater(err, allowed, out=self.ws.get("mask", n, np.bool_))))
        self._track_worst(start, err, allowed, finite)
        self.buf[self.n:self.n + n] = err
        self.n += n
        self.sum_abs += float(err.sum())
        self.max_abs = max(self.max_abs, float(err.max()))
        self.ref_min, self.ref_max = min(self.ref_min, float(r.min())), max(self.ref_max, float(r.max()))
        if self.ref.size <= CHUNK:
            self.cache = (r, err, ref_abs)

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
        n_rel, sum_rel, max_rel = 0, 0.0, 0.0
        for r, err, ref_abs in self._error_chunks():
            counts += _bin_counts(r, self.ref_min, self.ref_max, self.ws)
            if r.size and ref_abs.min() == 0:  # relative error is undefined where the reference is 0
                nonzero = ref_abs != 0
                err, ref_abs = err[nonzero], ref_abs[nonzero]
            rel = np.divide(err, ref_abs, out=self.buf[n_rel:n_rel + err.size])
            n_rel += rel.size
            if rel.size:
                sum_rel += float(rel.sum())
                max_rel = max(max_rel, float(rel.max()))
        s.value_hist = Histogram(edges=_edges(self.ref_min, self.ref_max), counts=counts.tolist())
        if n_rel:
            s.max_rel, s.mean_rel = max_rel, sum_rel / n_rel
            s.median_rel, s.p99_rel = _quantiles(self.buf[:n_rel], [0.5, 0.99])

    def _ref_abs_stat(self, stat: str) -> float:
        """``S(|ref|)`` over the finite pairs for a statistic check (another pass unless cached)."""
        if stat == "max":
            return max(float(a.max()) for _, _, a in self._error_chunks() if a.size)
        if stat == "mean":
            return sum(float(a.sum()) for _, _, a in self._error_chunks()) / self.n
        pos = 0
        for _, _, a in self._error_chunks():
            self.buf[pos:pos + a.size] = a
            pos += a.size
        return _quantiles(self.buf[:pos], [0.5 if stat == "median" else self.q])[0]

    def _verdict(self, checked_quantile: Optional[float]) -> None:
        s = self.s
        s.failing += s.nonfinite_mismatch
        if s.check_error_stat == "elemwise" or checked_quantile is None:
            s.passed = s.failing == 0
            s.error_ratio = self.worst[0] if self.worst is not None else 0.0
            return
        error = {"max": s.max_abs, "mean": s.mean_abs, "median": s.median_abs, "quantile": checked_quantile}[s.check_error_stat]
        ref = self._ref_abs_stat(s.check_error_stat)
        s.passed = s.nonfinite_mismatch == 0 and error <= s.atol + s.rtol * ref
        s.error_ratio = float("inf") if s.nonfinite_mismatch else tolerance_ratio(error, ref, s.atol, s.rtol)

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


def _quantiles(values: np.ndarray, qs: List[float]) -> List[float]:
    """numpy's default (linear) quantiles, exact, reordering ``values`` in place.

    np.quantile partitions at several indices in one call, which numpy serves with a generic
    selection; one index per call takes its SIMD selection, ~8x faster.  Quantiles go in
    ascending order, each partition working only above the previous index (the p99 after
    the median sorts half the array).
    """
    n = values.size
    found: Dict[float, float] = {}
    lower = 0  # values[lower:] may be in any order; everything before is <= all of it
    for q in sorted(set(qs)):
        position = q * (n - 1)
        k = int(position)
        if k >= lower:
            values[lower:].partition(k - lower)
            lower = k + 1
        low = float(values[k])
        frac = position - k
        found[q] = low if frac == 0 else low + (float(values[k + 1:].min()) - low) * frac
    return [found[q] for q in qs]


def _edges(lo: float, hi: float, bins: int = HIST_BINS) -> List[float]:
    if not lo < hi:
        return [lo, hi]
    return (np.linspace(lo * 0.5, hi * 0.5, bins + 1) * 2.0).tolist()  # halved: hi - lo may overflow


def _bin_counts(x: np.ndarray, lo: float, hi: float, ws: _Workspace, bins: int = HIST_BINS) -> np.ndarray:
    """Counts of ``x`` (all within [lo, hi]) in ``bins`` equal bins; one bin when lo == hi.

    np.histogram does the same several times slower; this is on the hot path.
    """
    if not lo < hi:
        return np.array([x.size], dtype=np.int64)
    if not np.isfinite(hi - lo):  # values near the float64 limits: halve everything so nothing overflows
        x, lo, hi = x * 0.5, lo * 0.5, hi * 0.5
    scaled = np.subtract(x, lo, out=ws.get("work", x.size))
    scaled *= bins / (hi - lo)
    idx = ws.get("index", x.size, np.intp)
    np.copyto(idx, scaled, casting="unsafe")  # truncation is floor here: scaled >= 0
    np.minimum(idx, bins - 1, out=idx)  # the maximum itself belongs to the last bin
    return np.bincount(idx, minlength=bins)


_EXPONENT_SHIFT = 50  # float64 bits >> 50: exponent and top two mantissa bits, i.e. quarter octaves


def _log_histogram(errors: np.ndarray, ws: _Workspace, max_bins: int = 16) -> Histogram:
    """Errors in log-spaced bins from the smallest non-zero to the largest error.

    For non-negative float64 the bit pattern read as an integer grows with the value, so
    ``bits >> 50`` numbers quarter-octave buckets exactly, without a logarithm per element;
    neighbouring buckets are merged to at most ``max_bins`` bins.  Bucket 0 holds zero and
    float64 subnormals (< 2.2e-308): it is reported as ``zeros``.
    """
    bucket = np.right_shift(errors.view(np.int64), _EXPONENT_SHIFT, out=ws.get("index", errors.size, np.int64))
    counts = np.bincount(bucket)
    zeros = int(counts[0])
    nonzero = np.flatnonzero(counts[1:]) + 1
    if not nonzero.size:
        return Histogram(edges=[], counts=[], log=True, zeros=zeros)
    first, last = int(nonzero[0]), int(nonzero[-1])
    group = -(-(last - first + 1) // max_bins)  # ceil
    bins = -(-(last - first + 1) // group)
    grouped = np.zeros(bins * group, dtype=np.int64)
    grouped[:last - first + 1] = counts[first:last + 1]
    edge_buckets = first + group * np.arange(bins + 1, dtype=np.int64)
    edges = np.left_shift(edge_buckets, _EXPONENT_SHIFT).view(np.float64)
    return Histogram(edges=edges.tolist(), counts=grouped.reshape(bins, group).sum(axis=1).tolist(), log=True, zeros=zeros)
