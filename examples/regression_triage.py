"""Regression triage: which node makes model v2 disagree with model v1?

    python examples/regression_triage.py --out out/triage

Builds a transformer block (v1) and a copy whose first FFN weights were changed (v2), saves
every layer's outputs of each with ONNX Runtime on the same inputs, then compares the two saved
sets.  The report names ``block0/fc1_out`` (made by node ``block0/fc1``) as the first failing
tensor: everything before it matches.  The same steps on the command line are
``trtdebug run ... --save-outputs`` twice and ``trtdebug compare``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from onnx import numpy_helper

import trtdebug
from trtdebug import zoo
from trtdebug.model import save_model


def changed_copy(model, initializer: str, scale: float = 1.05):
    """A copy of ``model`` with one initializer scaled, as a retrained or mis-exported layer would be."""
    v2 = type(model)()
    v2.CopyFrom(model)
    for init in v2.graph.initializer:
        if init.name == initializer:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * np.float32(scale), initializer))
            return v2
    raise KeyError(initializer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("out/triage"))
    args = parser.parse_args()
    v1 = zoo.transformer()
    save_model(v1, args.out / "v1.onnx")
    save_model(changed_copy(v1, "block0.ffn.fc1.weight"), args.out / "v2.onnx")
    for v in ("v1", "v2"):
        trtdebug.run(args.out / f"{v}.onnx", backends=["onnxrt"], mark_all=True, input_shapes={"x": (2, 16, 64)},
                     seed=7, save_outputs=args.out / f"{v}_outputs").close()
    outcome = trtdebug.compare(args.out / "v1_outputs", args.out / "v2_outputs",
                               report=args.out / "compare.json", html=args.out / "compare.html")
    first = outcome.first_failing
    print(f"passed: {outcome.passed}; first failing tensor: {first.name} (node {first.producer}, {first.producer_op})")
    print("\n".join(outcome.notes))


if __name__ == "__main__":
    main()
