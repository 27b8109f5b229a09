import numpy as np
import pytest

from trtdebug.comparison import metrics
from trtdebug.comparison.metrics import compare_arrays


@pytest.mark.parametrize("kind", ["abs_normal", "mostly_zero", "discrete", "one_bucket", "with_inf", "subnormal", "negative"])
def test_radix_quantiles_match_numpy_on_large_arrays(kind):
    """Above _SELECT_DIRECT values the quantiles come from the radix selection: still exact."""
    rng = np.random.default_rng(3)
    n = 50_001
    values = {
        "abs_normal": np.abs(rng.standard_normal(n)),
        "mostly_zero": np.where(rng.random(n) < 0.7, 0.0, rng.random(n)),
        "discrete": rng.integers(0, 4, n) * 1e-7,
        "one_bucket": 1 + rng.random(n) * 1e-3,
        "with_inf": np.concatenate([rng.random(n), [np.inf] * 7]),
        "subnormal": np.abs(rng.standard_normal(n)) * 1e-310,
        "negative": rng.standard_normal(n),
    }[kind]
    qs = [0.5, 0.99, 0.0, 1.0, 0.37, 0.999999]
    before = values.copy()
    got = metrics._quantiles(values, qs)
    assert np.array_equal(values, before)  # left as it is
    with np.errstate(invalid="ignore"):
        expected = np.quantile(values, qs)  # numpy's own (linear) quantile is the judge...
    for i, q in enumerate(qs):  # ...except where it interpolates inf - inf into NaN at an exact order statistic
        k = q * (values.size - 1)
        if k == int(k):
            expected[i] = np.partition(values, int(k))[int(k)]
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0, equal_nan=True)
    assert got[2] == values.min() and got[3] == values.max()  # order statistics themselves: exact


def test_equal_tensors_take_the_shortcut_with_the_same_statistics():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(70_000).astype(np.float32)
    s = compare_arrays(ref, ref.copy())
    assert s.passed and s.max_abs == s.median_abs == s.p99_abs == s.max_rel == 0.0
    assert s.cosine == 1.0 and s.sqnr_db == float("inf") and s.error_hist.zeros == ref.size
    assert sum(s.value_hist.counts) == ref.size and s.worst.index == (0,)


def test_subnormal_reference_range_does_not_crash():
    ref = np.array([1e-310, 2e-310, 3e-310])
    s = compare_arrays(ref, ref * 1.5)
    assert sum(s.value_hist.counts) == 3
