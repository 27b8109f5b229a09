"""Run several backends on the same inputs and compare each against the first.

This is the library behind ``trtdebug run``: it owns the order of work so the CLI stays
thin.  Runners are activated one at a time (a TensorRT build and an ONNX Runtime session
never hold memory together), and each runner's tensors are moved to disk as soon as they
exceed ``spill_threshold`` bytes (or immediately when outputs are being saved), so a model
with thousands of tensors never needs two full copies in RAM.
"""
from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np

from trtdebug.results import OutputStore, RunResult, TensorSet

DEFAULT_SPILL_THRESHOLD = 512 << 20

ProgressFn = Callable[[str], None]


@dataclass
class Execution:
    """Results of every runner plus the store holding any tensors on disk."""

    store: OutputStore

    @property
    def results(self) -> List[RunResult]:
        return self.store.results


@contextlib.contextmanager
def execute(runners: Sequence, feeds: Sequence[Dict[str, np.ndarray]], *, save_dir: Optional[Path] = None,
            graph=None, model_path: Optional[str] = None, spill_threshold: int = DEFAULT_SPILL_THRESHOLD,
            status: Optional[ProgressFn] = None, save_inputs: bool = True) -> Iterator[Execution]:
    """Run every runner over every feed; yield the results while their files still exist.

    With ``save_dir`` the tensors are written into a staging directory that replaces
    ``save_dir`` atomically when the block exits without error; the feeds are saved with them
    unless ``save_inputs`` is False.  Every result records the digests of its feeds either way.
    """
    from trtdebug.results import outputs_dir_problem
    from trtdebug.util.files import atomic_directory

    status = status or (lambda msg: None)
    with contextlib.ExitStack() as stack:
        if save_dir is not None:
            root = stack.enter_context(atomic_directory(save_dir, owned=outputs_dir_problem))
        else:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="trtdebug-spill-")))
        store = OutputStore(root, graph=graph, model_path=model_path)
        digests = store.record_inputs(feeds, save=save_dir is not None and save_inputs)
        for runner in runners:
            status(f"{runner.name}: loading")
            with runner:
                result = store.register(RunResult(runner=runner.name, input_digests=list(digests)))
                for i, feed in enumerate(feeds):
                    status(f"{runner.name}: iteration {i + 1}/{len(feeds)}")
                    result.iterations.append(TensorSet(runner.infer(feed)))
                    result.runtimes.append(runner.last_inference_time or 0.0)
                    if save_dir is not None or result.iterations[-1].nbytes_in_memory > spill_threshold:
                        store.spill(result, i)
                result.extra.update(runner.extra)
        if save_dir is not None:
            store.write_index()
        yield Execution(store)
        if save_dir is not None:
            store.root = Path(save_dir)  # the staging directory is about to be renamed there


def compare_all(results: Sequence[RunResult], *, tolerances, topology: Optional[dict] = None,
                progress=None, meta: Optional[dict] = None):
    """Compare the first result (the reference) against each of the others."""
    from trtdebug.compare.comparator import compare_runs
    from trtdebug.compare.report import Report
    from trtdebug.inputs.digest import check_same_inputs

    comparisons = []
    reference = results[0]
    for test in results[1:]:
        check_same_inputs(reference, test)
    for test in results[1:]:
        comparisons.append(compare_runs(reference, test, tolerances=tolerances, topology=topology, progress=progress))
    return Report(comparisons=comparisons, meta=dict(meta or {}))
