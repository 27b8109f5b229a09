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

Memory: everything is computed in float64 over chunks of ``CHUNK`` elements, so a huge
(possibly memory-mapped) tensor costs one float64 buffer (for the exact median and p99)
plus chunk-sized temporaries.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Tuple

import numpy as np

DEFAULT_ATOL = 1e-5
DEFAULT_RTOL = 1e-5
DEFAULT_ERROR_QUANTILE = 0.99
CHECK_ERROR_STATS = ("elemwise", "max", "mean", "median", "quantile")

CHUNK = 1 << 22
HIST_BINS = 12


@dataclass
class Histogram:
    """Counts per bin; ``edges`` has one more entry than ``counts``.

    Error histograms use log-spaced bins (``log=True``) over the non-zero errors, since
    errors span many decades; ``zeros`` counts the exact elements a log axis cannot show.
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
    tolerance the tensor is: the checked quantity divided by its allowed value, so the
    tensor passes exactly when it is <= 1.
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


class _Measure:
    """The streaming computation behind :func:`compare_arrays`, in three passes over chunks.

    Pass 1 accumulates sums, counts, the verdict and the worst element, and writes the
    absolute errors into one float64 buffer (exact median/p99, error histogram).  Pass 2
    reuses that buffer for the relative errors and histograms the reference values, whose
    range pass 1 found.  Pass 3 (only for ``median`` / ``quantile`` checks) reuses it again
    for ``|ref|``.  Re-reading the inputs is cheaper than holding three float64 copies.
    """

    def __init__(self, ref: np.ndarray, tst: np.ndarray, stats: TensorStats, quantile: float) -> None:
        self.ref = ref.reshape(-1)
        self.tst = tst.reshape(-1)
        self.s = stats
        self.q = quantile
        self.buf = np.empty(ref.size, dtype=np.float64)
        self.n = 0  # finite pairs
        self.n_rel = 0
        self.sum_abs = self.sum_rel = self.sum_ref_abs = 0.0
        self.max_abs = self.max_rel = self.max_ref_abs = 0.0
        self.ref_min, self.ref_max = np.inf, -np.inf
        self.rr = self.tt = self.rt = self.dd = 0.0
        self.worst: Optional[Tuple[float, float, int]] = None  # (ratio, error, flat index): largest wins

    def run(self) -> None:
        for start, r, t in self._chunks():
            self._pass1(start, r, t)
        s = self.s
        s.finite_pairs = self.n
        checked_quantile = None
        if self.n:
            s.max_abs, s.mean_abs = self.max_abs, self.sum_abs / self.n
            s.cosine, s.sqnr_db = self._cosine(), self._sqnr()
            s.median_abs, s.p99_abs, checked_quantile = self._quantiles(self.n, [0.5, 0.99, self.q])
            s.error_hist = _log_histogram(self.buf[:self.n])
            self._pass2()
        self._verdict(checked_quantile)
        if self.worst is not None:
            self._set_worst()

    def _chunks(self) -> Iterator[Tuple[int, np.ndarray, np.ndarray]]:
        for start in range(0, self.ref.size, CHUNK):
            r = np.asarray(self.ref[start:start + CHUNK], dtype=np.float64)
            t = np.asarray(self.tst[start:start + CHUNK], dtype=np.float64)
            yield start, r, t

    def _finite(self, r: np.ndarray, t: np.ndarray, start: Optional[int] = None) -> Optional[np.ndarray]:
        """Mask of pairs finite on both sides, or None when all are (the common, fast case).

        With ``start`` (pass 1) it also counts NaN/Inf and the non-finite mismatches.
        """
        if np.isfinite(r.sum() + t.sum()):  # a NaN or Inf anywhere makes the sum non-finite
            return None
        r_nan, t_nan, r_inf, t_inf = np.isnan(r), np.isnan(t), np.isinf(r), np.isinf(t)
        finite = ~(r_nan | r_inf | t_nan | t_inf)
        if start is not None:
            s = self.s
            s.ref_nan += int(r_nan.sum())
            s.ref_inf += int(r_inf.sum())
            s.test_nan += int(t_nan.sum())
            s.test_inf += int(t_inf.sum())
            bad = np.flatnonzero(~finite & ~((r_nan & t_nan) | (r_inf & (r == t))))
            s.nonfinite_mismatch += bad.size
            if bad.size and (self.worst is None or self.worst[:2] != (np.inf, np.inf)):
                self.worst = (np.inf, np.inf, start + int(bad[0]))  # a mismatched NaN/Inf is the worst there is
        return finite

    def _pass1(self, start: int, r: np.ndarray, t: np.ndarray) -> None:
        finite = self._finite(r, t, start)
        if finite is not None:
            r, t = r[finite], t[finite]
        if not r.size:
            return
        d = t - r
        self.rr += float(np.dot(r, r)); self.tt += float(np.dot(t, t))
        self.rt += float(np.dot(r, t)); self.dd += float(np.dot(d, d))
        err = np.abs(d, out=d)
        ref_abs = np.abs(r)
        allowed = ref_abs * self.s.rtol
        allowed += self.s.atol
        self.s.failing += int(np.count_nonzero(err > allowed))
        self._track_worst(err, allowed, finite, start)

        self.buf[self.n:self.n + err.size] = err
        self.n += err.size
        self.sum_abs += float(err.sum()); self.max_abs = max(self.max_abs, float(err.max()))
        self.sum_ref_abs += float(ref_abs.sum()); self.max_ref_abs = max(self.max_ref_abs, float(ref_abs.max()))
        self.ref_min, self.ref_max = min(self.ref_min, float(r.min())), max(self.ref_max, float(r.max()))
        rel = _relative(err, ref_abs)
        if rel.size:
            self.n_rel += rel.size
            self.sum_rel += float(rel.sum()); self.max_rel = max(self.max_rel, float(rel.max()))

    def _track_worst(self, err: np.ndarray, allowed: np.ndarray, finite: Optional[np.ndarray], start: int) -> None:
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = err / allowed
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

    def _quantiles(self, n: int, qs: List[float]) -> List[float]:
        """Exact quantiles (numpy's linear method) of ``buf[:n]``, partitioning it in place."""
        return [float(v) for v in np.quantile(self.buf[:n], qs, overwrite_input=True)]

    def _pass2(self) -> None:
        s = self.s
        counts = np.zeros(HIST_BINS, dtype=np.int64)
        lo, hi = self.ref_min, self.ref_max
        pos = 0
        for _, r, t in self._chunks():
            finite = self._finite(r, t)
            if finite is not None:
                r, t = r[finite], t[finite]
            if lo < hi:
                counts += np.histogram(r, bins=HIST_BINS, range=(lo, hi))[0]
            rel = _relative(np.abs(t - r), np.abs(r))
            self.buf[pos:pos + rel.size] = rel
            pos += rel.size
        s.value_hist = (Histogram(edges=np.linspace(lo, hi, HIST_BINS + 1).tolist(), counts=counts.tolist())
                        if lo < hi else Histogram(edges=[lo, hi], counts=[self.n]))
        if self.n_rel:
            s.max_rel, s.mean_rel = self.max_rel, self.sum_rel / self.n_rel
            s.median_rel, s.p99_rel = self._quantiles(self.n_rel, [0.5, 0.99])

    def _ref_abs_quantile(self, q: float) -> float:
        """Pass 3: the exact ``q`` quantile of ``|ref|`` over finite pairs."""
        pos = 0
        for _, r, t in self._chunks():
            finite = self._finite(r, t)
            a = np.abs(r[finite] if finite is not None else r)
            self.buf[pos:pos + a.size] = a
            pos += a.size
        return self._quantiles(pos, [q])[0]

    def _verdict(self, error_quantile: Optional[float]) -> None:
        s = self.s
        s.failing += s.nonfinite_mismatch
        if s.check_error_stat == "elemwise" or error_quantile is None:
            s.passed = s.failing == 0
            s.error_ratio = self.worst[0] if self.worst is not None else 0.0
            return
        error, ref = {
            "max": lambda: (s.max_abs, self.max_ref_abs),
            "mean": lambda: (s.mean_abs, self.sum_ref_abs / self.n),
            "median": lambda: (s.median_abs, self._ref_abs_quantile(0.5)),
            "quantile": lambda: (error_quantile, self._ref_abs_quantile(self.q)),
        }[s.check_error_stat]()
        s.passed = s.nonfinite_mismatch == 0 and error <= s.atol + s.rtol * ref
        s.error_ratio = float("inf") if s.nonfinite_mismatch else tolerance_ratio(error, ref, s.atol, s.rtol)

    def _set_worst(self) -> None:
        ratio, _, flat = self.worst
        ref, tst = float(self.ref[flat]), float(self.tst[flat])
        with np.errstate(invalid="ignore"):
            error = abs(np.float64(tst) - np.float64(ref))
        self.s.worst = WorstElement(index=tuple(int(i) for i in np.unravel_index(flat, self.s.shape)),
                                    reference=ref, test=tst, abs_error=float(error), ratio=ratio)

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


def _relative(err: np.ndarray, ref_abs: np.ndarray) -> np.ndarray:
    """``err / |ref|`` where the reference is non-zero (see the module docstring)."""
    nonzero = ref_abs != 0
    if nonzero.all():
        return err / ref_abs
    return err[nonzero] / ref_abs[nonzero]


def _log_histogram(errors: np.ndarray) -> Histogram:
    """Errors in HIST_BINS log-spaced bins between the smallest non-zero and the largest error."""
    positive = errors[errors > 0]
    zeros = errors.size - positive.size
    if not positive.size:
        return Histogram(edges=[], counts=[], log=True, zeros=zeros)
    lo, hi = np.log10(positive.min()), np.log10(positive.max())
    if lo == hi:
        return Histogram(edges=[float(positive.min())] * 2, counts=[positive.size], log=True, zeros=zeros)
    counts, edges = np.histogram(np.log10(positive), bins=HIST_BINS, range=(lo, hi))
    return Histogram(edges=(10.0 ** edges).tolist(), counts=counts.tolist(), log=True, zeros=zeros)
