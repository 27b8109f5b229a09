"""Metrics and the pass rule on small arrays whose statistics are known exactly."""
from __future__ import annotations

import math

import numpy as np
import pytest

from trtdebug.comparison import metrics
from trtdebug.comparison.metrics import compare_arrays, tolerance_ratio

NEXT_ABOVE_1_5 = float(np.nextafter(1.5, 2.0))  # 1.5 + one ulp: an error just over 0.5 against 1.0


def test_known_values():
    ref = np.array([1.0, 2.0, 0.0, 4.0])
    test = np.array([1.0, 2.5, 0.1, 4.0])
    s = compare_arrays(ref, test)
    assert s.max_abs == pytest.approx(0.5)
    assert s.mean_abs == pytest.approx(0.15)
    assert s.median_abs == pytest.approx(0.05)
    assert s.p99_abs == pytest.approx(0.1 + 0.97 * 0.4)  # numpy's linear quantile over [0, 0, 0.1, 0.5]
    # relative errors leave out the element whose reference is 0: [0, 0.25, 0]
    assert s.max_rel == pytest.approx(0.25)
    assert s.mean_rel == pytest.approx(0.25 / 3)
    assert s.median_rel == 0.0
    assert s.p99_rel == pytest.approx(0.245)
    assert s.cosine == pytest.approx(22 / math.sqrt(21 * 23.26))
    assert s.sqnr_db == pytest.approx(10 * math.log10(21 / 0.26))
    assert (s.elements, s.finite_pairs, s.failing) == (4, 4, 2)
    assert s.failing_fraction == 0.5
    assert not s.passed
    assert s.worst.index == (1,)
    assert (s.worst.reference, s.worst.test, s.worst.abs_error) == (2.0, 2.5, 0.5)
    assert s.error_ratio == pytest.approx(0.5 / (1e-5 + 2e-5))
    assert (s.ref_dtype, s.test_dtype) == ("float64", "float64")


def test_histograms():
    s = compare_arrays(np.array([1.0, 2.0, 0.0, 4.0]), np.array([1.0, 2.5, 0.1, 4.0]))
    assert sum(s.value_hist.counts) == 4 and len(s.value_hist.edges) == len(s.value_hist.counts) + 1
    assert (s.value_hist.edges[0], s.value_hist.edges[-1]) == (0.0, 4.0)
    assert 10 <= len(s.value_hist.counts) <= 16
    err = s.error_hist
    assert err.log and err.zeros == 2 and sum(err.counts) == 2
    assert err.edges[0] <= 0.1 < err.edges[1] and err.edges[-2] <= 0.5 < err.edges[-1]
    assert err.counts[0] == 1 and err.counts[-1] == 1


def test_error_histogram_agrees_with_numpy_on_its_own_edges():
    rng = np.random.default_rng(7)
    ref = rng.standard_normal(5000)
    test = ref + rng.standard_normal(5000) * 10.0 ** rng.uniform(-9, -1, 5000)
    test[:100] = ref[:100]
    h = compare_arrays(ref, test).error_hist
    errors = np.abs(test - ref)
    assert h.zeros == 100 and sum(h.counts) == 4900
    assert 10 <= len(h.counts) <= 16
    assert h.edges[0] <= errors[errors > 0].min() and errors.max() < h.edges[-1]
    assert h.counts == np.histogram(errors[errors > 0], bins=h.edges)[0].tolist()
    widths = np.diff(np.log2(h.edges))
    assert widths.min() > 0 and widths.max() < 2 * widths.min()  # log-spaced (quarter-octave buckets merged)


def test_worst_element_is_furthest_past_its_tolerance_not_largest_error():
    ref = np.array([[1000.0, 0.0]])
    s = compare_arrays(ref, np.array([[1000.5, 0.1]]), atol=1e-3, rtol=1e-3)
    assert s.max_abs == pytest.approx(0.5)
    assert s.worst.index == (0, 1)
    assert s.worst.ratio == pytest.approx(100.0)
    assert s.failing == 1


def test_identical_tensors():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    s = compare_arrays(a, a.copy())
    assert s.passed and s.max_abs == 0.0 and s.failing == 0 and s.error_ratio == 0.0
    assert s.sqnr_db == math.inf and s.cosine == 1.0
    assert s.error_hist.counts == [] and s.error_hist.zeros == 12


def test_all_zero_on_both_sides():
    s = compare_arrays(np.zeros(5), np.zeros(5))
    assert s.passed and s.cosine == 1.0 and s.sqnr_db == math.inf
    assert s.max_rel is None and s.mean_rel is None  # every reference is 0: relative error undefined
    assert s.value_hist.counts == [5]


def test_zero_reference_against_nonzero_test():
    s = compare_arrays(np.zeros(4), np.array([0.0, 0.0, 0.0, 1e-3]))
    assert s.cosine == 0.0 and s.sqnr_db == -math.inf
    assert s.max_rel is None
    assert not s.passed and s.worst.index == (3,)
    assert compare_arrays(np.zeros(4), np.array([0.0, 0.0, 0.0, 1e-3]), atol=1e-3).passed


def test_nan_and_inf():
    ref = np.array([np.nan, np.inf, -np.inf, 1.0, 2.0], dtype=np.float32)
    test = np.array([np.nan, np.inf, np.inf, np.nan, 2.0], dtype=np.float32)
    s = compare_arrays(ref, test)
    assert (s.ref_nan, s.ref_inf, s.test_nan, s.test_inf) == (1, 2, 2, 2)
    assert s.nonfinite_mismatch == 2  # -inf vs inf, 1.0 vs nan; nan/nan and inf/inf are equal
    assert s.failing == 2 and s.finite_pairs == 1
    assert s.max_abs == 0.0  # finite statistics come from the one finite pair
    assert not s.passed and s.error_ratio == math.inf
    assert s.worst.index == (2,) and s.worst.ratio == math.inf


@pytest.mark.parametrize("stat", ["max", "mean", "median", "quantile"])
def test_nonfinite_mismatch_fails_every_mode(stat):
    s = compare_arrays(np.array([1.0, 1.0, 1.0]), np.array([1.0, 1.0, np.nan]), atol=1.0, check_error_stat=stat)
    assert not s.passed


def test_matching_nonfinite_values_pass():
    ref = np.array([np.nan, -np.inf, 3.0])
    s = compare_arrays(ref, ref.copy())
    assert s.passed and s.failing == 0 and s.finite_pairs == 1 and s.nonfinite_mismatch == 0


def test_all_nonfinite_mismatch_has_no_finite_statistics():
    s = compare_arrays(np.array([1.0, 2.0]), np.array([np.nan, np.inf]))
    assert not s.passed and s.finite_pairs == 0
    assert s.max_abs is None and s.cosine is None and s.sqnr_db is None
    assert s.worst.index == (0,)


def test_integers_and_dtype_difference():
    s = compare_arrays(np.array([1, 2, 3], dtype=np.int32), np.array([1, 2, 5], dtype=np.int64))
    assert s.max_abs == 2.0 and s.failing == 1 and not s.passed
    assert (s.ref_dtype, s.test_dtype) == ("int32", "int64")
    assert any("dtypes differ" in n for n in s.notes)


def test_bool_mismatch_is_an_error_of_one():
    s = compare_arrays(np.array([True, False, True]), np.array([True, True, True]))
    assert s.max_abs == 1.0 and s.failing == 1 and s.worst.index == (1,)


def test_dtype_difference_alone_is_not_a_failure():
    a = np.linspace(-1, 1, 10, dtype=np.float32)
    s = compare_arrays(a, a.astype(np.float16), atol=1e-3, rtol=1e-3)
    assert s.passed and s.test_dtype == "float16"


def test_shape_mismatch_fails_with_a_note():
    s = compare_arrays(np.zeros((2, 3)), np.zeros((3, 2)))
    assert not s.passed and s.max_abs is None
    assert any("shape mismatch" in n for n in s.notes)


def test_shapes_equal_after_squeezing_are_compared():
    s = compare_arrays(np.array([[1.0, 2.0, 3.0]]), np.array([1.0, 2.0, 4.0]))
    assert s.max_abs == 1.0 and s.worst.index == (0, 2)
    assert any("size-1" in n for n in s.notes)


def test_strings_compare_exactly():
    assert compare_arrays(np.array(["a", "b"]), np.array(["a", "b"])).passed
    s = compare_arrays(np.array(["a", "b"]), np.array(["a", "c"]))
    assert not s.passed and s.failing == 1


def test_empty_and_scalar_tensors():
    assert compare_arrays(np.zeros((0, 3)), np.zeros((0, 3))).passed
    s = compare_arrays(np.float32(2.0), np.float32(2.5))
    assert s.max_abs == 0.5 and s.worst.index == ()


# --- pass rule boundaries: ref 1.0, atol 0.25, rtol 0.25 -> an element may be off by exactly 0.5 ---

def test_elemwise_boundary():
    ones = np.ones(4)
    assert compare_arrays(ones, np.array([1.5, 1, 1, 1]), atol=0.25, rtol=0.25).passed
    s = compare_arrays(ones, np.array([NEXT_ABOVE_1_5, 1, 1, 1]), atol=0.25, rtol=0.25)
    assert not s.passed and s.failing == 1 and s.error_ratio > 1


def test_max_boundary():
    ones = np.ones(4)
    assert compare_arrays(ones, np.array([1.5, 1, 1, 1]), atol=0.25, rtol=0.25, check_error_stat="max").passed
    assert not compare_arrays(ones, np.array([NEXT_ABOVE_1_5, 1, 1, 1]), atol=0.25, rtol=0.25,
                              check_error_stat="max").passed


def test_mean_boundary():
    ones = np.ones(4)
    # errors [2, 0, 0, 0]: mean 0.5 <= 0.25 + 0.25 * mean|ref| although the element rule fails
    s = compare_arrays(ones, np.array([3.0, 1, 1, 1]), atol=0.25, rtol=0.25, check_error_stat="mean")
    assert s.passed and s.failing == 1 and s.error_ratio == pytest.approx(1.0)
    above = float(np.nextafter(3.0, 4.0))
    assert not compare_arrays(ones, np.array([above, 1, 1, 1]), atol=0.25, rtol=0.25, check_error_stat="mean").passed


def test_median_boundary():
    ones = np.ones(5)
    assert compare_arrays(ones, np.array([1.5, 1.5, 1.5, 1, 1]), atol=0.25, rtol=0.25, check_error_stat="median").passed
    assert not compare_arrays(ones, np.array([NEXT_ABOVE_1_5] * 3 + [1, 1]), atol=0.25, rtol=0.25,
                              check_error_stat="median").passed


def test_quantile_uses_error_quantile():
    ones = np.ones(5)
    test = np.array([1.0, 1.0, 1.0, 1.5, 6.0])  # errors [0, 0, 0, 0.5, 5]; the 0.75 quantile is 0.5
    assert compare_arrays(ones, test, atol=0.25, rtol=0.25, check_error_stat="quantile", error_quantile=0.75).passed
    assert not compare_arrays(ones, test, atol=0.25, rtol=0.25, check_error_stat="quantile", error_quantile=1.0).passed
    assert not compare_arrays(ones, test, atol=0.25, rtol=0.25, check_error_stat="max").passed


def test_statistic_modes_scale_with_reference_statistic():
    ref = np.array([10.0, 10.0, 10.0, 10.0])
    test = ref + 1.0
    # max |error| 1 <= 0 + 0.1 * max|ref| = 1: passes only because rtol scales with the reference
    assert compare_arrays(ref, test, atol=0.0, rtol=0.1, check_error_stat="max").passed
    assert not compare_arrays(ref, test, atol=0.0, rtol=0.09, check_error_stat="max").passed


def test_zero_tolerance_needs_exact_equality():
    a = np.array([0.0, 1.0, 2.0])
    s = compare_arrays(a, a.copy(), atol=0.0, rtol=0.0)
    assert s.passed and s.error_ratio == 0.0
    s = compare_arrays(a, np.array([0.0, 1.0, 2.5]), atol=0.0, rtol=0.0)
    assert not s.passed and s.worst.index == (2,) and s.error_ratio == math.inf


def test_unknown_check_error_stat():
    with pytest.raises(ValueError):
        compare_arrays(np.ones(2), np.ones(2), check_error_stat="p50")


def test_tolerance_ratio():
    assert tolerance_ratio(0.5, 1.0, 0.25, 0.25) == 1.0
    assert tolerance_ratio(0.0, 0.0, 0.0, 0.0) == 0.0
    assert tolerance_ratio(1.0, 0.0, 0.0, 0.0) == math.inf


@pytest.mark.parametrize("stat", ["elemwise", "mean", "median", "quantile"])
def test_chunked_streaming_matches_single_chunk(monkeypatch, stat):
    rng = np.random.default_rng(3)
    ref = rng.standard_normal((7, 11)).astype(np.float32)
    test = ref + rng.standard_normal(ref.shape).astype(np.float32) * 1e-3
    ref[2, 3] = 0.0
    test[4, 4], ref[5, 5], test[5, 5] = np.nan, np.inf, np.inf
    whole = compare_arrays(ref, test, check_error_stat=stat, atol=1e-3)
    monkeypatch.setattr(metrics, "CHUNK", 8)
    chunked = compare_arrays(ref, test, check_error_stat=stat, atol=1e-3)
    for name in ("max_abs", "mean_abs", "median_abs", "p99_abs", "max_rel", "mean_rel", "median_rel", "p99_rel",
                 "cosine", "sqnr_db", "error_ratio"):
        assert getattr(chunked, name) == pytest.approx(getattr(whole, name), rel=1e-12), name
    for name in ("failing", "finite_pairs", "ref_nan", "ref_inf", "test_nan", "test_inf", "nonfinite_mismatch", "passed"):
        assert getattr(chunked, name) == getattr(whole, name), name
    assert chunked.worst.index == whole.worst.index == (4, 4)  # the NaN where the reference is finite
    assert chunked.value_hist == whole.value_hist and chunked.error_hist == whole.error_hist


def test_finite_worst_element_in_later_chunk(monkeypatch):
    monkeypatch.setattr(metrics, "CHUNK", 4)
    ref = np.zeros(10)
    test = np.zeros(10)
    test[1], test[7] = 1e-3, 2e-3
    assert compare_arrays(ref, test).worst.index == (7,)


@pytest.mark.parametrize("n", [1, 2, 5, 100, 1001])
def test_quantiles_match_numpy(n):
    values = np.random.default_rng(n).standard_normal(n)
    qs = [0.5, 0.99, 0.0, 1.0, 0.37, 0.99]
    expected = np.quantile(values, qs)
    assert metrics._quantiles(values.copy(), qs) == pytest.approx(expected.tolist(), rel=1e-12, abs=1e-15)
