#!/usr/bin/env python3
"""Every layer of a model whose activations do not fit the budget: ``--max-memory`` windows (CPU).

The model (built here with onnx.helper): ``--blocks`` residual blocks of five ops each
(MatMul with one shared weight, Add of a per-block bias, Tanh, residual Add, Mul by a per-block
scale) on a [rows, width] activation, so 1,000 blocks give 5,000 intermediate tensors of
``rows * width * 4`` bytes each (64 KiB by default: 312 MiB of activations in all).  Weights are
small on purpose: what is measured is the memory of marked tensors, not of weights.

Set-up (not timed): inputs and a reference of every tensor made by an unbounded trtdebug run
(``--save-outputs REF``, ONNX Runtime).  Timed, each a child process whose wall time and
peak RSS (``ru_maxrss`` via ``os.wait4``) are recorded:

* ``baseline``:  ``trtdebug run M --onnxrt --load-inputs REF``: graph outputs only - the fixed
  overhead (Python, ONNX Runtime, the model, the inputs) that any run pays;
* ``unbounded``: ``trtdebug run M --onnxrt --mark-all --load-inputs REF --load-outputs REF``;
* ``windowed``:  the same with ``--max-memory BUDGET``;
* ``first-failure``: windowed with ``--stop-at-first-failure`` against a reference in which one
  tensor halfway through was changed (how fast "where does it start?" is answered);
* ``polygraphy``: ``polygraphy run M --onnxrt --onnx-outputs mark all --load-inputs INPUTS.json``
  (marking and running only: its comparison would need its JSON reference of every tensor).

Checked: windowed peak RSS <= baseline peak + budget + ``--slack`` (a stated allowance for ONNX
Runtime's arena and the comparator's tensors in flight); windowed verdicts (tensor names, order,
pass/fail, first failing) identical to the unbounded run's.  Results go to
``benchmarks/results/windowed_every_layer.json``.

Run from the repository root:  python benchmarks/windowed_every_layer.py [--blocks 1000] [--budget 64M]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import REPO, child, find_polygraphy, machine, portable, write_json_atomic  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "windowed_every_layer.json"


def build_model(blocks: int, rows: int, width: int):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32), "W")]
    nodes, x = [], "x"
    for i in range(blocks):
        b, s = f"b{i}", f"s{i}"
        inits.append(numpy_helper.from_array((rng.standard_normal(width) * 0.1).astype(np.float32), b))
        inits.append(numpy_helper.from_array((1.0 + rng.standard_normal(width) * 0.01).astype(np.float32), s))
        p = f"blk{i}"
        nodes += [helper.make_node("MatMul", [x, "W"], [f"{p}/mm"], name=f"{p}/matmul"),
                  helper.make_node("Add", [f"{p}/mm", b], [f"{p}/bias"], name=f"{p}/add_bias"),
                  helper.make_node("Tanh", [f"{p}/bias"], [f"{p}/act"], name=f"{p}/tanh"),
                  helper.make_node("Add", [f"{p}/act", x], [f"{p}/res"], name=f"{p}/residual"),
                  helper.make_node("Mul", [f"{p}/res", s], [f"{p}/out" if i < blocks - 1 else "y"], name=f"{p}/scale")]
        x = nodes[-1].output[0]
    graph = helper.make_graph(nodes, "residual_stack", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", width])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def verdicts(report_path: Path):
    c = json.loads(report_path.read_text())["comparisons"][0]
    return {"first_failing": c["first_failing"], "tensors": [(t["name"], t["passed"]) for t in c["tensors"]]}


def tamper(saved: Path, name: str) -> None:
    index = json.loads((saved / "index.json").read_text())
    entry = next(t for t in index["runners"][0]["iterations"][0]["tensors"] if t["name"] == name)
    path = saved / entry["file"]
    array = np.load(path)
    array.flat[0] += 1.0
    np.save(path, array)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=1000)
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--budget", default="64M")
    ap.add_argument("--slack-mib", type=float, default=64.0,
                    help="allowance over baseline + budget (ONNX Runtime arena, tensors being compared)")
    ap.add_argument("--polygraphy", default=None)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    import onnx

    from trtdebug.runners.tensorrt.config import parse_size

    budget = parse_size(args.budget, flag="--budget")
    trtdebug = [sys.executable, "-m", "trtdebug"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with tempfile.TemporaryDirectory(prefix="trtdebug-bench-") as tmp:
        work = Path(tmp)
        model = work / "stack.onnx"
        onnx.save(build_model(args.blocks, args.rows, args.width), model)
        tensors = 5 * args.blocks
        activations = tensors * args.rows * args.width * 4
        shape = f"x:[{args.rows},{args.width}]"
        setup = child(trtdebug + ["run", str(model), "--onnxrt", "--mark-all", "--input-shapes", shape,
                                  "--save-outputs", str(work / "ref")], env, work / "setup.log")
        assert setup["exit_code"] == 0, (work / "setup.log").read_text()[-2000:]
        common = ["run", str(model), "--onnxrt", "--load-inputs", str(work / "ref"), "-q"]
        runs = {
            "baseline": trtdebug + common,
            "unbounded": trtdebug + common + ["--mark-all", "--load-outputs", str(work / "ref"),
                                              "--report", str(work / "unbounded.json")],
            "windowed": trtdebug + common + ["--mark-all", "--load-outputs", str(work / "ref"),
                                             "--max-memory", args.budget, "--report", str(work / "windowed.json")],
        }
        results = {name: child(cmd, env, work / f"{name}.log") for name, cmd in runs.items()}
        for name in ("unbounded", "windowed"):
            assert results[name]["exit_code"] == 0, (work / f"{name}.log").read_text()[-2000:]
        same = verdicts(work / "unbounded.json") == verdicts(work / "windowed.json")
        windows_meta = json.loads((work / "windowed.json").read_text())["meta"]["windows"]

        bad = f"blk{args.blocks // 2}/act"
        tamper(work / "ref", bad)
        runs["first-failure"] = trtdebug + common + ["--mark-all", "--load-outputs", str(work / "ref"),
                                                     "--max-memory", args.budget, "--stop-at-first-failure",
                                                     "--report", str(work / "first.json")]
        results["first-failure"] = child(runs["first-failure"], env, work / "first-failure.log")
        first = json.loads((work / "first.json").read_text())
        first_found = first["comparisons"][0]["first_failing"]

        onnx_json = work / "inputs.json"
        dump = child([sys.executable, "-c", "import numpy as np, sys; from trtdebug.inputs.io import load_inputs, save_inputs; "
                                     f"save_inputs({str(onnx_json)!r}, load_inputs({str(work / 'ref')!r}))"], env, work / "json.log")
        assert dump["exit_code"] == 0, (work / "json.log").read_text()[-2000:]
        runs["polygraphy"] = find_polygraphy(args.polygraphy) + ["run", str(model), "--onnxrt", "--onnx-outputs", "mark", "all",
                                                                 "--load-inputs", str(onnx_json)]
        results["polygraphy"] = child(runs["polygraphy"], env, work / "polygraphy.log")

        base = results["baseline"]["peak_rss_mib"]
        limit = base + budget / 2**20 + args.slack_mib
        summary = {
            "model": {"blocks": args.blocks, "intermediate_tensors": tensors - 1, "tensor_bytes": args.rows * args.width * 4,
                      "activations_mib": round(activations / 2**20, 1)},
            "budget_mib": round(budget / 2**20, 1), "activations_over_budget": round(activations / budget, 2),
            "windows": len(windows_meta["windows"]),
            "fixed_overhead_mib": base, "slack_mib": args.slack_mib, "windowed_limit_mib": round(limit, 1),
            "windowed_within_limit": results["windowed"]["peak_rss_mib"] <= limit,
            "verdicts_identical": same,
            "windowing_wall_overhead": round(results["windowed"]["wall_s"] / results["unbounded"]["wall_s"], 2),
            "first_failure": {"tampered": bad, "found": first_found,
                              "windows_run": sum(w["status"] == "ran" for w in first["meta"]["windows"]["windows"]),
                              "windows_skipped": sum(w["status"] == "skipped" for w in first["meta"]["windows"]["windows"])},
        }
        out = {"date": datetime.date.today().isoformat(), "machine": machine(), "summary": summary,
               "runs": {name: {**{k: v for k, v in r.items() if k != "log"}, "command": portable(runs[name], work)}
                        for name, r in results.items()}}
    write_json_atomic(args.out, out)
    print(json.dumps(out, indent=1))
    return 0 if summary["windowed_within_limit"] and summary["verdicts_identical"] and first_found == bad else 1


if __name__ == "__main__":
    raise SystemExit(main())
