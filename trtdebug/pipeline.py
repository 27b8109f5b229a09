"""Run several backends over the same inputs into one store.

Runners are activated one at a time (a TensorRT build and an ONNX Runtime session never hold
memory together), and each runner's tensors are moved to disk as soon as they exceed
``spill_threshold`` bytes (or at once when outputs are being saved), so a model with thousands
of tensors never needs two full copies in RAM.  Every result records the digests of the feeds
it was made from, so a later comparison can tell "different inputs" from "different answers".
Where the store lives, and what happens to it afterwards, is the caller's business
(:mod:`trtdebug.api`).
"""
from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from trtdebug.results import OutputStore, RunResult, TensorSet

DEFAULT_SPILL_THRESHOLD = 512 << 20


def execute(runners: Sequence, feeds: Sequence[Dict[str, np.ndarray]], store: OutputStore, *,
            save_all: bool = False, save_inputs: bool = False, spill_threshold: int = DEFAULT_SPILL_THRESHOLD,
            status: Optional[Callable[[str], None]] = None) -> List[RunResult]:
    """Run every runner over every feed; return their results, registered in ``store``.

    ``save_all`` writes every tensor to the store at once (saved outputs); ``save_inputs`` also
    writes the feeds there.
    """
    status = status or (lambda msg: None)
    digests = store.record_inputs(feeds, save=save_inputs)
    results = []
    for runner in runners:
        status(f"{runner.name}: loading")
        with runner:
            result = store.register(RunResult(runner=runner.name, input_digests=list(digests)))
            for i, feed in enumerate(feeds):
                status(f"{runner.name}: iteration {i + 1}/{len(feeds)}")
                result.iterations.append(TensorSet(runner.infer(feed)))
                result.runtimes.append(runner.last_inference_time or 0.0)
                if save_all or result.iterations[-1].nbytes_in_memory > spill_threshold:
                    store.spill(result, i)
            result.extra.update(runner.extra)
        results.append(result)
    return results
