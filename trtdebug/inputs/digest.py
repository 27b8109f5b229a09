"""Fingerprints of input feeds, so two runs can prove they saw the same data.

Saved outputs record, per iteration, a SHA-256 digest of every input (over its name, dtype,
shape and bytes).  ``trtdebug compare`` checks them before comparing: two runs made from
different seeds or input files differ everywhere, and a report of those differences would
blame the backend for what the data did.
"""
from __future__ import annotations

import hashlib
from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from trtdebug.errors import InputsDifferError

Digests = Dict[str, str]  # input name -> hex digest, for one iteration


def tensor_digest(name: str, array: np.ndarray) -> str:
    """SHA-256 over the name, dtype (with byte order), shape and C-order bytes of one input."""
    arr = np.ascontiguousarray(array)  # a view when already contiguous
    h = hashlib.sha256()
    h.update(name.encode("utf-8") + b"\0" + arr.dtype.str.encode("ascii") + b"\0")
    h.update(repr(tuple(int(d) for d in arr.shape)).encode("ascii") + b"\0")
    h.update(arr.reshape(-1).view(np.uint8))  # the bytes in place, for any dtype
    return h.hexdigest()


def feed_digests(feed: Mapping[str, np.ndarray]) -> Digests:
    """``{input name: digest}`` of one feed, sorted by name (the order of a feed is not its content)."""
    return {name: tensor_digest(name, np.asarray(feed[name])) for name in sorted(feed)}


def check_same_inputs(reference, test) -> None:
    """InputsDifferError (one line) when two RunResults record different inputs.

    Compares ``input_digests`` iteration by iteration over the iterations both have (the
    comparator notes a difference in count).  Results that record no digests (Polygraphy JSON,
    results made in memory) are taken on trust: nothing to check.
    """
    ref_digests: Sequence[Digests] = getattr(reference, "input_digests", None) or []
    test_digests: Sequence[Digests] = getattr(test, "input_digests", None) or []
    for k, (ref, tst) in enumerate(zip(ref_digests, test_digests)):
        problem = _difference(ref, tst)
        if problem:
            raise InputsDifferError(f"the two runs used different inputs: iteration {k}, {problem} "
                                    f"between {reference.runner} and {test.runner}; re-run one of them with "
                                    "--load-inputs <the other's --save-outputs directory>")


def _difference(ref: Digests, test: Digests) -> Optional[str]:
    if not ref or not test:
        return None
    for name in sorted(set(ref) | set(test)):
        if name not in test:
            return f"input {name!r} is only in the reference"
        if name not in ref:
            return f"input {name!r} is only in the test"
        if ref[name] != test[name]:
            return f"input {name!r} differs (digest {ref[name][:8]}.. vs {test[name][:8]}..)"
    return None
