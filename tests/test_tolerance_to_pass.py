"""The smallest atol / rtol that would pass a failing tensor: exact under every pass rule.

Each suggestion is checked the way a user would use it: compare again with the suggested
value (the tensor passes) and with a value 1% smaller (it fails).
"""
from __future__ import annotations

import numpy as np
import pytest

from trtdebug.comparison import CHECK_ERROR_STATS, Tolerances, compare_arrays, compare_runs
from trtdebug.comparison import metrics
from trtdebug.results import RunResult, TensorSet

RNG = np.random.default_rng(11)


def _pair(n=4000, scale=1e-3, dtype=np.float32):
    ref = RNG.standard_normal(n).astype(dtype)
    test = (ref + scale * RNG.standard_normal(n) * (1 + np.abs(ref))).astype(dtype)
    return ref, test


def _passes(ref, test, stat, **tol):
    return compare_arrays(ref, test, check_error_stat=stat, **tol).passed


@pytest.mark.parametrize("stat", CHECK_ERROR_STATS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_suggested_tolerances_pass_and_one_percent_less_fails(stat, dtype):
    ref, test = _pair(dtype=dtype)
    atol, rtol = 1e-5, 1e-4
    s = compare_arrays(ref, test, atol=atol, rtol=rtol, check_error_stat=stat)
    assert not s.passed
    assert s.atol_to_pass > atol and s.rtol_to_pass > rtol
    assert s.atol_to_pass_reason is None and s.rtol_to_pass_reason is None
    assert _passes(ref, test, stat, atol=s.atol_to_pass, rtol=rtol)
    assert not _passes(ref, test, stat, atol=s.atol_to_pass * 0.99, rtol=rtol)
    assert _passes(ref, test, stat, atol=atol, rtol=s.rtol_to_pass)
    assert not _passes(ref, test, stat, atol=atol, rtol=s.rtol_to_pass * 0.99)


@pytest.mark.parametrize("stat", CHECK_ERROR_STATS)
def test_streamed_over_several_chunks(monkeypatch, stat):
    monkeypatch.setattr(metrics, "CHUNK", 1000)
    ref, test = _pair(n=5500)
    s = compare_arrays(ref, test, check_error_stat=stat)
    assert _passes(ref, test, stat, atol=s.atol_to_pass, rtol=1e-5)
    assert not _passes(ref, test, stat, atol=s.atol_to_pass * 0.99, rtol=1e-5)
    assert _passes(ref, test, stat, atol=1e-5, rtol=s.rtol_to_pass)
    assert not _passes(ref, test, stat, atol=1e-5, rtol=s.rtol_to_pass * 0.99)


def test_elementwise_values_are_the_exact_formulas():
    ref = np.array([1.0, 2.0, -4.0, 0.5])
    test = np.array([1.0, 2.1, -4.0, 0.45])
    s = compare_arrays(ref, test, atol=0.01, rtol=0.0)
    assert s.atol_to_pass == pytest.approx(0.1)  # the largest |error|, rtol being 0
    assert s.rtol_to_pass == pytest.approx(max((0.1 - 0.01) / 2.0, (0.05 - 0.01) / 0.5))


def test_rounding_is_accounted_for():
    """err - rtol*|ref| rounds down for some elements; the suggestion must still pass them."""
    ref = RNG.uniform(0.5, 2.0, 100_000)
    test = ref * (1 + 3e-7) + 1e-9
    for rtol in (1e-7, 2.9e-7, 1e-6 / 3):
        s = compare_arrays(ref, test, atol=0.0, rtol=rtol)
        assert s.passed or compare_arrays(ref, test, atol=s.atol_to_pass, rtol=rtol).passed
    s = compare_arrays(ref, test, atol=1e-10, rtol=0.0)
    assert compare_arrays(ref, test, atol=1e-10, rtol=s.rtol_to_pass).passed
    assert not compare_arrays(ref, test, atol=1e-10, rtol=float(np.nextafter(s.rtol_to_pass, 0))).passed


def test_zero_reference_means_no_rtol_passes():
    s = compare_arrays(np.array([0.0, 1.0]), np.array([0.1, 1.0]))
    assert s.atol_to_pass == pytest.approx(0.1)
    assert s.rtol_to_pass is None and "reference of 0" in s.rtol_to_pass_reason


@pytest.mark.parametrize("stat", ["max", "mean", "median", "quantile"])
def test_zero_reference_statistic_means_no_rtol_passes(stat):
    s = compare_arrays(np.zeros(10), np.full(10, 0.5), check_error_stat=stat)
    assert s.atol_to_pass == 0.5 and s.rtol_to_pass is None and s.rtol_to_pass_reason


@pytest.mark.parametrize("stat", CHECK_ERROR_STATS)
def test_nan_mismatch_has_no_tolerance(stat):
    s = compare_arrays(np.array([1.0, 2.0, 3.0]), np.array([1.5, np.nan, 3.0]), check_error_stat=stat)
    assert s.atol_to_pass is None and s.rtol_to_pass is None
    assert "NaN/Inf" in s.atol_to_pass_reason and "NaN/Inf" in s.rtol_to_pass_reason


def test_identical_nonfinite_values_do_not_block():
    s = compare_arrays(np.array([np.nan, np.inf, 1.0]), np.array([np.nan, np.inf, 1.5]))
    assert s.atol_to_pass == pytest.approx(0.5, rel=1e-4) and s.rtol_to_pass == pytest.approx(0.5, rel=1e-4)


def test_passing_and_unmeasurable_tensors():
    a = np.arange(4.0)
    assert compare_arrays(a, a).atol_to_pass is None  # nothing needed
    shape = compare_arrays(a, a.reshape(2, 2)[:1])
    assert shape.atol_to_pass is None and shape.atol_to_pass_reason == "the shapes differ"
    text = compare_arrays(np.array(["a"]), np.array(["b"]))
    assert text.rtol_to_pass is None and "equal" in text.rtol_to_pass_reason


def test_several_iterations_take_the_largest_need():
    rng = np.random.default_rng(3)
    a = rng.standard_normal(64).astype(np.float32)
    big = a + np.float32(1e-2) * np.sign(a)  # the worst iteration by error ratio ...
    wide = a.copy()
    wide[np.argmax(np.abs(a))] += np.float32(3e-2)  # ... needs less rtol-free atol than this one
    ref = RunResult("ref", [TensorSet({"a": a}), TensorSet({"a": a})])
    test = RunResult("trt", [TensorSet({"a": big}), TensorSet({"a": wide})])
    t = compare_runs(ref, test).tensors[0]
    needed = t.stats.atol_to_pass
    assert compare_runs(ref, test, tolerances=Tolerances(atol=needed)).passed
    assert not compare_runs(ref, test, tolerances=Tolerances(atol=needed * 0.99)).passed


def test_comparison_tolerances_make_every_tensor_pass():
    names = ["a", "b", "c"]
    ref_set, test_set = TensorSet(), TensorSet()
    for i, name in enumerate(names):
        r = RNG.standard_normal(50).astype(np.float32)
        ref_set.set_array(name, r)
        test_set.set_array(name, r + np.float32(10.0 ** -(i + 2)) * RNG.standard_normal(50).astype(np.float32))
    ref, test = RunResult("ref", [ref_set]), RunResult("trt", [test_set])
    tol = Tolerances(per_tensor_atol={"c": 1e-6})
    cmp = compare_runs(ref, test, tolerances=tol)
    need = cmp.tolerances_to_pass()
    assert set(need["atol_per_tensor"]) == {"c"} and need["atol"] >= cmp.tensors[0].stats.atol_to_pass
    fixed = Tolerances(atol=need["atol"], per_tensor_atol=need["atol_per_tensor"])
    assert compare_runs(ref, test, tolerances=fixed).passed
    assert compare_runs(ref, test, tolerances=Tolerances(rtol=need["rtol"], per_tensor_atol={"c": 1e-6})).passed
    assert not compare_runs(ref, test, tolerances=Tolerances(rtol=need["rtol"] * 0.99, per_tensor_atol={"c": 1e-6})).passed


def test_minimal_tolerances_are_tight_to_the_last_bit():
    """Over random magnitudes: the value passes every element and the float below it does not."""
    rng = np.random.default_rng(5)
    for _ in range(200):
        n = int(rng.integers(1, 50))
        ref_abs = 10.0 ** rng.uniform(-8, 3, n)
        err = ref_abs * 10.0 ** rng.uniform(-9, 1, n)
        rtol, atol = 10.0 ** rng.uniform(-9, -1), 10.0 ** rng.uniform(-12, -4)
        a = metrics.min_atol_to_pass(err, ref_abs * rtol)
        assert np.all(ref_abs * rtol + a >= err)
        assert a == 0 or np.any(ref_abs * rtol + np.nextafter(a, 0) < err)
        r = metrics.min_rtol_to_pass(err, ref_abs, atol)
        assert np.all(ref_abs * r + atol >= err)
        assert r == 0 or np.any(ref_abs * np.nextafter(r, 0) + atol < err)


@pytest.mark.parametrize("seed", range(6))
def test_streamed_values_equal_the_exact_search_over_every_element(monkeypatch, seed):
    """The per-chunk shortcut (only elements near the largest estimate are searched) loses nothing."""
    monkeypatch.setattr(metrics, "CHUNK", 997)
    rng = np.random.default_rng(seed)
    ref = rng.standard_normal(5000) * 10.0 ** rng.uniform(-3, 3, 5000)
    ref[rng.integers(0, 5000, 50)] = 0.0
    test = ref + rng.choice([0.0, 1e-4, 3e-3], 5000) * (1 + np.abs(ref))  # ties: many equal offsets
    test[ref == 0] = 1e-7  # below atol: a zero reference must not block rtol
    atol, rtol = 1e-6, 1e-5
    s = compare_arrays(ref, test, atol=atol, rtol=rtol)
    err, ref_abs = np.abs(test - ref), np.abs(ref)
    assert s.atol_to_pass == metrics.min_atol_to_pass(err, ref_abs * rtol)
    assert s.rtol_to_pass == metrics.min_rtol_to_pass(err, ref_abs, atol)
