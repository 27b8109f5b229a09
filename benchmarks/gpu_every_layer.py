#!/usr/bin/env python3
"""Every-layer TensorRT vs ONNX Runtime comparison on the GPU: trtdebug against Polygraphy.

Same work for both tools, same model, same inputs, same GPU, one run of this script:

    polygraphy run MODEL --trt --onnxrt --trt-outputs mark all --onnx-outputs mark all --load-inputs IN.json
    trtdebug   run MODEL --trt --onnxrt --mark-all                                  --load-inputs IN.json

plus the options that cut the build time, for both tools where both have them
(``--builder-optimization-level 0``), and trtdebug's own: a timing cache reused from an earlier
run (``--timing-cache``) and the fused-boundary comparison (``--fused-boundaries``), which
compares only the tensors at the unmodified engine's layer boundaries.  The model is a
12-block transformer encoder from ``trtdebug.zoo`` with a static input [8,128,64].
Each command runs ``--repeat`` times, the cases taking turns, and the median is reported; wall
time and peak RSS come from ``os.wait4`` on the child.  Results go to ``benchmarks/results/gpu_every_layer.json``.

Run on a machine with TensorRT and a GPU, from the repository root:
    python benchmarks/gpu_every_layer.py [--blocks 12] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import REPO, child, find_polygraphy, in_workdir, machine, median, portable, tool_env, write_json_atomic  # noqa: E402

OUTPUT = REPO / "benchmarks" / "results" / "gpu_every_layer.json"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--blocks", type=int, default=12)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--output", type=Path, default=OUTPUT)
    ap.add_argument("--polygraphy")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each case, taking turns; the median is reported")
    args = ap.parse_args()
    return in_workdir(args, run, "trtdebug-gpu-bench-")


def run(args, work: Path) -> int:
    sys.path.insert(0, str(REPO))
    import onnx

    from trtdebug import zoo

    env = tool_env()
    model, inputs, cache = work / "encoder.onnx", work / "inputs.json", work / "timing.cache"
    onnx.save(zoo.transformer(blocks=args.blocks, batch=8, seq=128), str(model))
    trtdebug = [sys.executable, "-m", "trtdebug"]
    polygraphy = find_polygraphy(args.polygraphy)
    setup = child(trtdebug + ["run", str(model), "--onnxrt", "--save-inputs", str(inputs)], env, work / "setup.log")
    if setup["exit_code"] != 0:
        raise SystemExit(f"setup failed: {(work / 'setup.log').read_text()[-2000:]}")

    poly = polygraphy + ["run", str(model), "--trt", "--onnxrt", "--trt-outputs", "mark", "all", "--onnx-outputs", "mark", "all",
                         "--load-inputs", str(inputs)]
    ours = trtdebug + ["run", str(model), "--trt", "--onnxrt", "--mark-all", "--load-inputs", str(inputs), "-q"]
    opt0 = ["--builder-optimization-level", "0"]
    # the warm-cache run needs a cache from an earlier run of the same model (untimed)
    child(ours + ["--timing-cache", str(cache)], env, work / "cache_fill.log")
    cases = [
        ("polygraphy", poly),
        ("trtdebug", ours + ["--report", str(work / "default.json")]),
        ("polygraphy opt-level 0", poly + opt0),
        ("trtdebug opt-level 0", ours + opt0 + ["--report", str(work / "opt0.json")]),
        ("trtdebug warm timing cache", ours + ["--timing-cache", str(cache), "--report", str(work / "cache.json")]),
        ("trtdebug fused boundaries", ours + ["--fused-boundaries", "--report", str(work / "boundaries.json")]),
    ]
    runs = {name: [] for name, _ in cases}
    for _ in range(args.repeat):
        for i, (name, cmd) in enumerate(cases):
            runs[name].append(child(cmd, env, work / f"case{i}.log"))
    results = []
    for i, (name, cmd) in enumerate(cases):
        r = dict(median(runs[name]), exit_code=runs[name][-1]["exit_code"], runs=runs[name])
        r.update(name=name, command=portable(cmd, work), log_tail=(work / f"case{i}.log").read_text(errors="replace")[-1500:])
        report = next((Path(w) for w in cmd if w.endswith(".json") and w != str(inputs)), None)
        if report is not None and report.exists():
            comp = json.loads(report.read_text())["comparisons"][0]
            r["tensors_compared"] = len(comp["tensors"])
            r["first_failing"] = comp["first_failing"]
        results.append(r)
        print(f"{name:32s} wall {r['wall_s']:8.2f} s   peak RSS {r['peak_rss_mib']:8.1f} MiB   exit {r['exit_code']}"
              + (f"   tensors {r.get('tensors_compared')}" if "tensors_compared" in r else ""), flush=True)
    base = results[0]
    for r in results[1:]:
        r["wall_vs_polygraphy"] = round(r["wall_s"] / base["wall_s"], 3)
        r["rss_vs_polygraphy"] = round(r["peak_rss_mib"] / base["peak_rss_mib"], 3)
    write_json_atomic(args.output, {"benchmark": "gpu_every_layer", "blocks": args.blocks, "input": [8, 128, 64], "repeat": args.repeat,
                                     "machine": machine(), "results": results})
    print(f"results written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
