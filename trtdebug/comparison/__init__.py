"""Compare runs tensor by tensor: metrics (pure numpy), tolerances, the comparator, the report."""
from trtdebug.comparison.comparator import compare_runs
from trtdebug.comparison.metrics import CHECK_ERROR_STATS, Histogram, TensorStats, WorstElement, compare_arrays
from trtdebug.comparison.report import Comparison, Report, TensorComparison
from trtdebug.comparison.tolerances import Tolerances, parse_tolerance_args

__all__ = [
    "CHECK_ERROR_STATS", "Comparison", "Histogram", "Report", "TensorComparison", "TensorStats", "Tolerances",
    "WorstElement", "compare_arrays", "compare_runs", "parse_tolerance_args",
]
