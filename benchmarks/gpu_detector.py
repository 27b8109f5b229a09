#!/usr/bin/env python3
"""Every-layer TensorRT vs ONNX Runtime on a real detector export: trtdebug (cold and warm) vs Polygraphy.

Same work for both tools (same model, inputs, GPU; TF32 off, as Polygraphy 0.53 defaults; every tensor
marked on both sides; default tolerances):

    polygraphy run MODEL --trt --onnxrt --trt-outputs mark all --onnx-outputs mark all --load-inputs IN.json
    trtdebug   run MODEL --trt --onnxrt --mark-all --no-tf32 --load-inputs IN.json

trtdebug runs twice: **cold** (an empty persistent timing cache: what the first run on a machine
costs) and **warm** (the cache the cold run left: every later run of the usual debug loop).  For a
like-for-like warm comparison Polygraphy also runs with ``--load-timing-cache`` of a cache it saved
in an untimed run.  The model comes from ``export_detector.py`` (torch.onnx, torchvision SSDlite).

    python benchmarks/gpu_detector.py MODEL.onnx [--workdir DIR] [--repeat 1]
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import REPO, child, find_polygraphy, in_workdir, machine, median, portable, tool_env, write_json_atomic  # noqa: E402

OUTPUT = REPO / "benchmarks" / "results" / "gpu_detector.json"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--output", type=Path, default=OUTPUT)
    ap.add_argument("--polygraphy")
    ap.add_argument("--repeat", type=int, default=1)
    args = ap.parse_args()
    return in_workdir(args, run, "trtdebug-detector-bench-")


def run(args, work: Path) -> int:
    env = tool_env()
    model, inputs = args.model.resolve(), work / "inputs.json"
    cache_home, poly_cache = work / "xdg-cache", work / "polygraphy.cache"
    env["XDG_CACHE_HOME"] = str(cache_home)
    trtdebug = [sys.executable, "-m", "trtdebug"]
    polygraphy = find_polygraphy(args.polygraphy)
    setup = child(trtdebug + ["run", str(model), "--onnxrt", "--save-inputs", str(inputs)], env, work / "setup.log")
    if setup["exit_code"] != 0:
        raise SystemExit(f"setup failed: {(work / 'setup.log').read_text()[-2000:]}")
    poly = polygraphy + ["run", str(model), "--trt", "--onnxrt", "--trt-outputs", "mark", "all",
                         "--onnx-outputs", "mark", "all", "--load-inputs", str(inputs)]
    ours = trtdebug + ["run", str(model), "--trt", "--onnxrt", "--mark-all", "--no-tf32", "--load-inputs", str(inputs),
                       "-q"]
    child(poly + ["--save-timing-cache", str(poly_cache)], env, work / "poly_cache_fill.log")  # untimed
    runs = {name: [] for name in ("polygraphy", "polygraphy warm timing cache", "trtdebug cold", "trtdebug warm")}
    logs = {}
    for _ in range(args.repeat):
        shutil.rmtree(cache_home, ignore_errors=True)
        for name, cmd in (("polygraphy", poly), ("polygraphy warm timing cache", poly + ["--load-timing-cache", str(poly_cache)]),
                          ("trtdebug cold", ours + ["--report", str(work / "cold.json")]),
                          ("trtdebug warm", ours + ["--report", str(work / "warm.json")])):
            logs[name] = (cmd, work / f"{name.replace(' ', '_')}.log")
            runs[name].append(child(cmd, env, logs[name][1]))
            print(f"{name:30s} {runs[name][-1]['wall_s']:8.2f} s  exit {runs[name][-1]['exit_code']}", flush=True)
    results = []
    for name, rs in runs.items():
        cmd, log = logs[name]
        r = dict(median(rs), name=name, exit_code=rs[-1]["exit_code"], runs=rs, command=portable(cmd, work),
                 log_tail=log.read_text(errors="replace")[-1500:])
        report = next((Path(w) for w in cmd if w.endswith(".json") and w != str(inputs)), None)
        if report is not None and report.exists():
            comp = json.loads(report.read_text())["comparisons"][0]
            r.update(tensors_compared=len(comp["tensors"]), first_failing=comp["first_failing"],
                     passed=comp["passed"])
        results.append(r)
    base = results[0]["wall_s"]
    for r in results:
        r["wall_vs_polygraphy"] = round(r["wall_s"] / base, 3)
        print(f"{r['name']:30s} wall {r['wall_s']:8.2f} s ({r['wall_vs_polygraphy']:.2f}x)  peak RSS "
              f"{r['peak_rss_mib']:8.1f} MiB  exit {r['exit_code']}"
              + (f"  tensors {r['tensors_compared']}" if "tensors_compared" in r else ""), flush=True)
    write_json_atomic(args.output, {"benchmark": "gpu_detector", "model": model.name, "repeat": args.repeat,
                                     "machine": machine(), "results": results})
    print(f"results written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
