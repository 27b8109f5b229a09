"""Compare runs tensor by tensor: metrics (pure numpy), tolerances, the comparator, the report."""
from trtdebug.compare.comparator import compare_runs
from trtdebug.compare.metrics import CHECK_ERROR_STATS, Histogram, TensorStats, WorstElement, compare_arrays
from trtdebug.compare.report import Comparison, Report, TensorComparison
from trtdebug.compare.tolerances import Tolerances, parse_tolerance_args

__all__ = [
    "CHECK_ERROR_STATS", "Comparison", "Histogram", "Report", "TensorComparison", "TensorStats", "Tolerances",
    "WorstElement", "compare_arrays", "compare_runs", "parse_tolerance_args",
]
