#!/usr/bin/env python3
"""Windows of a model whose *weights* dominate: are they held once, however many windows run? (CPU)

``--max-memory`` runs one ONNX Runtime session per window.  If each session were made from the
model itself, the weights would be copied per window (a marked copy, its serialized bytes, ONNX
Runtime's own), so peak memory would grow with the weights however small the budget.  trtdebug
writes the weights once to a private data file and gives every window a weightless copy
(``SharedWeights`` in ``trtdebug/model/loader.py``).

The model (onnx.helper): ``--blocks`` blocks of MatMul by a block's own [width, width] weight,
Add of a bias, Tanh, on a [rows, width] activation: 64 blocks of width 1024 hold 256 MiB of
weights and only 191 intermediate tensors of 32 KiB (6 MiB of activations).

Timed, each a child process (wall time, peak RSS from ``os.wait4``):

* ``unbounded``: ``trtdebug run M --onnxrt --mark-all --save-outputs REF``: one session;
* ``baseline``:  ``trtdebug run M --onnxrt --load-inputs REF``: graph outputs only (Python, ONNX
  Runtime, the model with its weights loaded once, one session);
* ``windowed``:  ``--mark-all --max-memory BUDGET --load-outputs REF`` (many windows, compared
  with the unbounded run's tensors).

Checked: windowed peak RSS <= baseline peak + budget + ``--slack-mib``: the weights are not held
again per window.  Results go to ``benchmarks/results/windowed_weights.json``.

Run from the repository root:  python benchmarks/windowed_weights.py [--blocks 64] [--width 1024] [--budget 256K]
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import REPO, child, in_workdir, machine, portable, tool_env, write_json_atomic  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "windowed_weights.json"


def build_model(blocks: int, rows: int, width: int):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits, nodes, x = [], [], "x"
    for i in range(blocks):
        w, b, p = f"W{i}", f"b{i}", f"blk{i}"
        inits.append(numpy_helper.from_array((rng.standard_normal((width, width), dtype=np.float32)
                                              / np.float32(np.sqrt(width))), w))
        inits.append(numpy_helper.from_array((rng.standard_normal(width) * 0.1).astype(np.float32), b))
        nodes += [helper.make_node("MatMul", [x, w], [f"{p}/mm"], name=f"{p}/matmul"),
                  helper.make_node("Add", [f"{p}/mm", b], [f"{p}/bias"], name=f"{p}/add_bias"),
                  helper.make_node("Tanh", [f"{p}/bias"], [f"{p}/out" if i < blocks - 1 else "y"], name=f"{p}/tanh")]
        x = nodes[-1].output[0]
    graph = helper.make_graph(nodes, "weight_stack", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, width])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def run(args, work: Path) -> int:
    import onnx

    from trtdebug.runners.tensorrt.config import parse_size

    budget = parse_size(args.budget, flag="--budget")
    model = work / "weights.onnx"
    proto = build_model(args.blocks, args.rows, args.width)
    onnx.save(proto, model)
    weights_mib = sum(len(t.raw_data) for t in proto.graph.initializer) / 2**20
    del proto
    trtdebug = [sys.executable, "-m", "trtdebug"]
    ref = str(work / "ref")
    common = ["run", str(model), "--onnxrt", "-q"]
    runs = {"unbounded": trtdebug + common + ["--mark-all", "--save-outputs", ref],
            "baseline": trtdebug + common + ["--load-inputs", ref],
            "windowed": trtdebug + common + ["--mark-all", "--max-memory", args.budget, "--load-inputs", ref,
                                             "--load-outputs", ref, "--report", str(work / "windowed.json")]}
    env = tool_env()
    results = {name: child(cmd, env, work / f"{name}.log") for name, cmd in runs.items()}
    for name, r in results.items():
        assert r["exit_code"] == 0, (work / f"{name}.log").read_text()[-2000:]
    report = json.loads((work / "windowed.json").read_text())
    windows = report["meta"]["windows"]["windows"]
    base = results["baseline"]["peak_rss_mib"]
    limit = base + budget / 2**20 + args.slack_mib
    summary = {"model": {"blocks": args.blocks, "weights_mib": round(weights_mib, 1), "intermediate_tensors": 3 * args.blocks - 1,
                         "tensor_bytes": args.rows * args.width * 4},
               "budget_mib": round(budget / 2**20, 3), "windows": len(windows), "fixed_overhead_mib": base,
               "slack_mib": args.slack_mib, "windowed_limit_mib": round(limit, 1),
               "windowed_within_limit": results["windowed"]["peak_rss_mib"] <= limit,
               "windowed_tensors_passed": all(t["passed"] for t in report["comparisons"][0]["tensors"]),
               "windowed_over_baseline_mib": round(results["windowed"]["peak_rss_mib"] - base, 1),
               "unbounded_over_baseline_mib": round(results["unbounded"]["peak_rss_mib"] - base, 1)}
    out = {"date": datetime.date.today().isoformat(), "machine": machine(), "summary": summary,
           "runs": {name: {**{k: v for k, v in r.items() if k != "log"}, "command": portable(runs[name], work)}
                    for name, r in results.items()}}
    write_json_atomic(args.out, out)
    print(json.dumps(out, indent=1))
    return 0 if summary["windowed_within_limit"] and summary["windowed_tensors_passed"] else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=64)
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--width", type=int, default=1024)
    ap.add_argument("--budget", default="256K")
    ap.add_argument("--slack-mib", type=float, default=64.0, help="allowance over baseline + budget")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the model and logs here (default: a temporary one)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    return in_workdir(ap.parse_args(), run, "trtdebug-weights-bench-")


if __name__ == "__main__":
    raise SystemExit(main())
