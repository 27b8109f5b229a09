"""Compare two runs tensor by tensor, in topological order, and find where divergence starts.

Tensors are matched by exact name.  Each tensor is read, measured and dropped (tensors may
be memory-mapped files); a few worker threads measure several at once, so comparing a
model with thousands of tensors holds a handful of tensor pairs in memory, never all of
them, and keeps only statistics.  With several iterations a tensor keeps
the statistics of its worst iteration: a failure beats a pass, then the larger
``error_ratio`` (how far over tolerance), then the larger maximum absolute error; its
``atol_to_pass`` / ``rtol_to_pass`` are those that pass every iteration.
"""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Set, Tuple, TypeVar

from trtdebug.comparison.metrics import TensorStats, compare_arrays
from trtdebug.comparison.report import Comparison, TensorComparison
from trtdebug.comparison.tolerances import Tolerances
from trtdebug.results import RunResult, TensorSet

Topology = Dict[str, Dict[str, Any]]
ProgressFn = Callable[[int, int, str], None]
R = TypeVar("R")
DEFAULT_WORKERS = 4


def compare_runs(reference: RunResult, test: RunResult, *, tolerances: Optional[Tolerances] = None,
                 topology: Optional[Topology] = None, progress: Optional[ProgressFn] = None,
                 workers: Optional[int] = None) -> Comparison:
    """Compare ``test`` against ``reference``; ``progress(done, total, name)`` is called after each tensor.

    ``topology`` is :func:`trtdebug.results.topology_of` output (may be empty): it orders the
    tensors (unknown names go last, in the reference's order) and names their producers.
    ``workers`` threads measure tensors concurrently (numpy releases the GIL in its loops);
    the default is up to 4, and 1 measures on the calling thread.
    """
    tolerances = tolerances or Tolerances()
    topology = topology or {}
    n_iter = min(len(reference.iterations), len(test.iterations))
    comparison = Comparison(reference=reference.runner, test=test.runner, tolerances=tolerances, iterations=n_iter)
    if len(reference.iterations) != len(test.iterations):
        comparison.warnings.append(
            f"{reference.runner} has {len(reference.iterations)} iterations and {test.runner} has "
            f"{len(test.iterations)}; compared the first {n_iter}")
    ref_sets, test_sets = reference.iterations[:n_iter], test.iterations[:n_iter]
    ref_names, test_names = _names(ref_sets), _names(test_sets)
    common = {n for r, t in zip(ref_sets, test_sets) for n in r if n in t}
    comparison.only_in_reference = [n for n in ref_names if n not in common]
    comparison.only_in_test = [n for n in test_names if n not in common]
    _warn_missing_outputs(comparison, topology)

    names = _topological(ref_names, common, topology)
    if not names:
        comparison.warnings.append(f"{reference.runner} and {test.runner} have no tensor in common; nothing was compared")

    def measure(name: str) -> Tuple[int, TensorStats]:
        return _worst_iteration(name, ref_sets, test_sets, tolerances)

    workers = workers if workers is not None else min(DEFAULT_WORKERS, os.cpu_count() or 1)
    for done, (name, (iteration, stats)) in enumerate(zip(names, _in_order(measure, names, workers)), 1):
        facts = topology.get(name, {})
        comparison.tensors.append(TensorComparison(
            name=name, stats=stats, producer=facts.get("producer"), producer_op=facts.get("producer_op"),
            topo_index=facts.get("topo_index"), is_graph_output=facts.get("is_graph_output"), iteration=iteration))
        if progress is not None:
            progress(done, len(names), name)
    return comparison


def _in_order(fn: Callable[[str], R], names: List[str], workers: int) -> Iterator[R]:
    """``fn`` over ``names`` on ``workers`` threads, results in order.

    At most ``2 * workers`` tensors are in flight, so memory stays bounded by a few tensor
    pairs however many tensors the model has.
    """
    if workers <= 1:
        yield from map(fn, names)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="trtdebug-compare") as pool:
        pending: Deque[Future] = deque()
        for name in names:
            pending.append(pool.submit(fn, name))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _names(sets: List[TensorSet]) -> List[str]:
    """Every name of any iteration, in first-seen order."""
    seen: Dict[str, None] = {}
    for tensors in sets:
        seen.update(dict.fromkeys(tensors))
    return list(seen)


def _topological(ref_names: List[str], common: Set[str], topology: Topology) -> List[str]:
    """Common names by topo_index; names the topology does not know keep the reference order, last."""
    def key(item: Tuple[int, str]) -> Tuple[int, int]:
        position, name = item
        index = topology.get(name, {}).get("topo_index")
        return (0, index) if isinstance(index, int) and index >= 0 else (1, position)

    return [n for _, n in sorted(((i, n) for i, n in enumerate(ref_names) if n in common), key=key)]


def _worst_iteration(name: str, ref_sets: List[TensorSet], test_sets: List[TensorSet],
                     tolerances: Tolerances) -> Tuple[int, TensorStats]:
    """The iteration with the most severe statistics among those where both sides have ``name``."""
    atol, rtol = tolerances.for_tensor(name)
    worst: Optional[Tuple[int, TensorStats]] = None
    failed: List[TensorStats] = []
    for i, (ref, tst) in enumerate(zip(ref_sets, test_sets)):
        if name not in ref or name not in tst:
            continue
        stats = compare_arrays(ref[name], tst[name], atol=atol, rtol=rtol,
                               check_error_stat=tolerances.check_error_stat, error_quantile=tolerances.error_quantile)
        if not stats.passed:
            failed.append(stats)
        if worst is None or _severity(stats) > _severity(worst[1]):
            worst = (i, stats)
    assert worst is not None, name  # callers pass names common to some iteration
    for key in ("atol", "rtol"):
        _needed_over_iterations(worst[1], failed, key)
    return worst


def _needed_over_iterations(worst: TensorStats, failed: List[TensorStats], key: str) -> None:
    """Give ``worst`` the ``{key}_to_pass`` that passes every failing iteration (passing ones need no more)."""
    blocked = next((s for s in failed if getattr(s, f"{key}_to_pass") is None), None)
    if blocked is not None:
        setattr(worst, f"{key}_to_pass", None)
        setattr(worst, f"{key}_to_pass_reason", getattr(blocked, f"{key}_to_pass_reason"))
    elif failed:
        setattr(worst, f"{key}_to_pass", max(getattr(s, f"{key}_to_pass") for s in failed))


def _severity(stats: TensorStats) -> Tuple[bool, float, float]:
    return (not stats.passed, stats.error_ratio, stats.max_abs if stats.max_abs is not None else 0.0)


def _warn_missing_outputs(comparison: Comparison, topology: Topology) -> None:
    for side, names in ((comparison.reference, comparison.only_in_reference), (comparison.test, comparison.only_in_test)):
        outputs = [n for n in names if topology.get(n, {}).get("is_graph_output")]
        if outputs:
            comparison.warnings.append(f"graph output(s) produced only by {side}: {', '.join(outputs)}")
