"""Tensors too big for a full-size float64 buffer (metrics.BUFFER_LIMIT): the streamed path.

The limits are lowered here, so small tensors take the path a tensor of gigabytes takes.  The
streamed statistics must be *identical* to the buffered ones (same chunks, exact order
statistics), and its temporary memory must not grow with the tensor.
"""
import dataclasses
import tracemalloc

import numpy as np
import pytest

from trtdebug.comparison import metrics
from trtdebug.comparison.metrics import compare_arrays

CHUNK = 1024


def _pair(kind, n=40_000):
    rng = np.random.default_rng(7)
    ref = rng.standard_normal(n).astype(np.float32)
    if kind == "noise":
        test = ref + rng.normal(0, 1e-4, n).astype(np.float32)
    elif kind == "one_bucket":  # every error in one radix bucket: the selection must refine, not gather
        ref = ref.astype(np.float64)
        test = ref + 1e-3 * (1 + rng.random(n) * 1e-9)
    elif kind == "equal_but_one_chunk":  # equal chunks skip the error arithmetic
        test = ref.copy()
        test[CHUNK * 5 + 3:CHUNK * 6] += 0.5
    elif kind == "zeros_and_nan":
        ref[::7] = 0
        test = ref + rng.normal(0, 1e-3, n).astype(np.float32)
        test[100], ref[200], ref[300], test[300] = np.nan, np.inf, np.nan, np.nan
    elif kind == "ints":
        ref = rng.integers(-50, 50, n).astype(np.int32)
        test = ref + (rng.random(n) < 0.01).astype(np.int32)
    elif kind == "all_equal":
        test = ref.copy()
    else:
        raise AssertionError(kind)
    return ref, test


def _stats(monkeypatch, ref, test, *, streamed, **kw):
    monkeypatch.setattr(metrics, "CHUNK", CHUNK)
    monkeypatch.setattr(metrics, "BUFFER_LIMIT", 2 * CHUNK if streamed else 1 << 40)
    return dataclasses.asdict(compare_arrays(ref, test, **kw))


@pytest.mark.parametrize("kind", ["noise", "one_bucket", "equal_but_one_chunk", "zeros_and_nan", "ints", "all_equal"])
@pytest.mark.parametrize("stat", ["elemwise", "median", "quantile"])
def test_streamed_statistics_are_identical_to_the_buffered_ones(monkeypatch, kind, stat):
    ref, test = _pair(kind)
    kw = dict(atol=1e-4, rtol=1e-3, check_error_stat=stat, error_quantile=0.9)
    buffered = _stats(monkeypatch, ref, test, streamed=False, **kw)
    streamed = _stats(monkeypatch, ref, test, streamed=True, **kw)
    # bit for bit (repr: a float's is exact, and NaN equals NaN): quantiles, histograms, sums, verdict, worst
    assert repr(streamed) == repr(buffered)


def test_streamed_quantiles_are_numpys(monkeypatch):
    ref, test = _pair("noise")
    s = _stats(monkeypatch, ref, test, streamed=True)
    err = np.abs(test.astype(np.float64) - ref.astype(np.float64))
    rel = err[ref != 0] / np.abs(ref[ref != 0].astype(np.float64))
    assert s["median_abs"] == np.quantile(err, 0.5) and s["p99_abs"] == pytest.approx(np.quantile(err, 0.99), rel=1e-15)
    assert s["median_rel"] == np.quantile(rel, 0.5) and s["p99_rel"] == pytest.approx(np.quantile(rel, 0.99), rel=1e-15)


def test_streamed_selection_of_repeated_values_refines_to_the_bit(monkeypatch):
    """Values that share every radix bucket down to the last bits: ranks land on exact values."""
    monkeypatch.setattr(metrics, "CHUNK", 64)
    values = np.repeat(np.array([1.0, np.nextafter(1.0, 2), np.nextafter(np.nextafter(1.0, 2), 2)]), [500, 300, 200])
    np.random.default_rng(0).shuffle(values)
    ranks = [0, 499, 500, 799, 800, 999]
    found = metrics._streamed_select(lambda: iter(np.array_split(values, 16)), ranks)
    assert found == {r: float(np.sort(values)[r]) for r in ranks}


def test_streamed_comparison_memory_does_not_grow_with_the_tensor(monkeypatch, tmp_path):
    """A memory-mapped tensor 64x the buffer limit: peak Python-side allocation stays a few chunks
    plus the fixed radix key counts (1 MiB each, a few alive at once), far below a 32 MiB buffer."""
    monkeypatch.setattr(metrics, "CHUNK", 1 << 14)
    monkeypatch.setattr(metrics, "BUFFER_LIMIT", 1 << 16)
    n = 1 << 22  # 4M elements: a buffer would be 32 MiB of float64
    rng = np.random.default_rng(1)
    paths = {}
    for name in ("ref", "test"):
        paths[name] = tmp_path / f"{name}.npy"
        a = np.lib.format.open_memmap(paths[name], mode="w+", dtype=np.float32, shape=(n,))
        a[:] = rng.standard_normal(n, dtype=np.float32)
        a.flush()
        del a
    ref, test = (np.load(paths[k], mmap_mode="r") for k in ("ref", "test"))
    compare_arrays(ref[:1000], test[:1000])  # warm the workspace
    tracemalloc.start()
    try:
        s = compare_arrays(ref, test, check_error_stat="median")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert s.median_abs == np.quantile(np.abs(test.astype(np.float64) - ref), 0.5)
    assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB for a {n * 8 / 2**20:.0f} MiB float64 tensor"
