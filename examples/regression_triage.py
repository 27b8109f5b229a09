"""Regression triage: which node makes model v2 disagree with model v1?

    python examples/regression_triage.py --out out/triage

Builds a transformer block (v1) and a copy whose first FFN weights were changed (v2), saves
every layer's outputs of each with ONNX Runtime on the same inputs, then runs
``trtdebug compare`` on the two saved sets.  The report names ``block0/fc1_out`` (made by
node ``block0/fc1``) as the first failing tensor: everything before it matches.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np
from onnx import numpy_helper

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


def trtdebug(*args: str) -> int:
    cmd = [sys.executable, "-m", "trtdebug", *args]
    print("$ trtdebug " + " ".join(args), flush=True)
    return subprocess.call(cmd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("out/triage"))
    args = parser.parse_args()
    v1 = zoo.transformer()
    save_model(v1, args.out / "v1.onnx")
    save_model(changed_copy(v1, "block0.ffn.fc1.weight"), args.out / "v2.onnx")
    common = ["--onnxrt", "--mark-all", "--input-shapes", "x:[2,16,64]", "--seed", "7", "-q"]
    for v in ("v1", "v2"):
        trtdebug("run", str(args.out / f"{v}.onnx"), *common, "--save-outputs", str(args.out / f"{v}_outputs"))
    code = trtdebug("compare", str(args.out / "v1_outputs"), str(args.out / "v2_outputs"),
                    "--report", str(args.out / "compare.json"), "--html", str(args.out / "compare.html"))
    print(f"trtdebug compare exited with {code} (1 = accuracy failure, as expected here)")


if __name__ == "__main__":
    main()
