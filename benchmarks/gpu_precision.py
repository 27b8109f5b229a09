#!/usr/bin/env python3
"""Reduced-precision triage on the GPU: ``trtdebug debug precision --backend trt`` against Polygraphy's
``debug precision``, same model, same inputs, same tolerance, TF32 off for both, in one run.

Cases (issue 10 item 3's done-when):

* **fails**: a 12-block encoder (``trtdebug.zoo.transformer(blocks=12, batch=8, seq=128)``) with an FP16
  overflow planted in block 6 (``zoo.with_fp16_overflow``: x*3e4, identity MatMul, /3e4), at atol = rtol = 1e-2.
  trtdebug by both routes (``--route onnx``: the converted model built strongly typed where TensorRT has it;
  ``--route builder``: FP32 layer precisions + OBEY_PRECISION_CONSTRAINTS, TensorRT <= 10.x only), against

      polygraphy run MODEL --onnxrt --save-inputs IN.json --save-outputs GOLDEN.json           (its reference)
      polygraphy debug precision MODEL --fp16 -p float32 --mode bisect --dir forward \\
          --check polygraphy run polygraphy_debug.engine --trt --load-inputs IN.json \\
                  --load-outputs GOLDEN.json --atol 1e-2 --rtol 1e-2

  Polygraphy's time is both commands (trtdebug makes its reference inside its one command).
* **passes**: the plain 12-block encoder at 3e-2, where the all-FP16 engine should pass: trtdebug must
  take exactly one build.  Polygraphy has no "check the all-FP16 engine first" step; it is run too.

Recorded per tool: wall time and peak RSS (``os.wait4`` on the child), exit code, builds (trtdebug's
report; Polygraphy's "Finished N iteration(s)" - one build each), and the size of the FP32 set
(trtdebug: ONNX nodes in ``keep_fp32``; Polygraphy: "try running the first K layer(s)", TensorRT layers
in network order - not the same unit, both are recorded as they are).  TF32: trtdebug ``--no-tf32``,
Polygraphy's default (TF32 off unless ``--tf32``).  Both use ``--builder-optimization-level 0`` where
asked (``--opt0``).  Pass rules differ: trtdebug fails an element when |d| > atol + rtol*|ref|, Polygraphy
only when |d| > atol *and* |d|/|ref| > rtol (looser); at 1e-2 the planted overflow fails both anyway.

Run on a machine with TensorRT, Polygraphy and a GPU, from the repository root:
    python benchmarks/gpu_precision.py [--blocks 12] [--opt0] [--workdir DIR]
Results go to ``benchmarks/results/gpu_precision.json``.  Not yet run (written without a GPU).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import REPO, child, find_polygraphy, in_workdir, machine, portable, tool_env, write_json_atomic  # noqa: E402

OUTPUT = REPO / "benchmarks" / "results" / "gpu_precision.json"
SHAPE = (8, 128, 64)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--blocks", type=int, default=12)
    ap.add_argument("--opt0", action="store_true", help="--builder-optimization-level 0 for both tools")
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--output", type=Path, default=OUTPUT)
    ap.add_argument("--polygraphy")
    args = ap.parse_args()
    return in_workdir(args, run, "trtdebug-gpu-precision-")


def polygraphy_facts(log: Path) -> dict:
    """Builds (iterations) and the FP32 layer count Polygraphy printed."""
    text = log.read_text(errors="replace")
    done = re.findall(r"Finished (\d+) iteration\(s\)", text)
    marked = re.findall(r"try running the (?:first|last) (\d+) layer\(s\) in higher precision", text)
    return {"builds": int(done[-1]) if done else None, "fp32_layers": int(marked[-1]) if marked else None,
            "found": bool(marked)}


def trtdebug_facts(report: Path) -> dict:
    if not report.exists():
        return {"builds": None, "fp32_nodes": None, "passed": None}
    data = json.loads(report.read_text())
    return {"builds": data["builds"], "fp32_nodes": len(data["keep_fp32"]), "keep_fp32": data["keep_fp32"],
            "passed": data["passed"], "route": data["route"], "route_reason": data.get("route_reason"),
            "latency_ms": data["latency_ms"], "layer_precisions": data["layer_precisions"],
            "all_fp16_passed": data["before"]["passed"], "search_seconds": data["seconds"]}


def run(args, work: Path) -> int:
    sys.path.insert(0, str(REPO))
    import onnx

    from trtdebug import zoo

    env = tool_env()
    b, s, h = SHAPE
    models = {"fails": work / "encoder_overflow.onnx", "passes": work / "encoder.onnx"}
    onnx.save(zoo.with_fp16_overflow(zoo.transformer(blocks=args.blocks, batch=b, seq=s, hidden=h), block=args.blocks // 2),
              str(models["fails"]))
    onnx.save(zoo.transformer(blocks=args.blocks, batch=b, seq=s, hidden=h), str(models["passes"]))
    trtdebug = [sys.executable, "-m", "trtdebug"]
    polygraphy = find_polygraphy(args.polygraphy)
    opt0 = ["--builder-optimization-level", "0"] if args.opt0 else []
    results = []
    for case, tol in (("fails", "1e-2"), ("passes", "3e-2")):
        model = models[case]
        inputs, golden = work / f"{case}_inputs.json", work / f"{case}_golden.json"
        gold = child(polygraphy + ["run", str(model), "--onnxrt", "--save-inputs", str(inputs), "--save-outputs", str(golden)],
                     env, work / f"{case}_golden.log")
        if gold["exit_code"] != 0:
            raise SystemExit(f"Polygraphy's reference run failed: {(work / f'{case}_golden.log').read_text()[-2000:]}")
        check = polygraphy + ["run", "polygraphy_debug.engine", "--trt", "--load-inputs", str(inputs),
                              "--load-outputs", str(golden), "--atol", tol, "--rtol", tol]
        poly = polygraphy + ["debug", "precision", str(model), "--fp16", "-p", "float32", "--mode", "bisect",
                             "--dir", "forward", "--iter-artifact", str(work / "polygraphy_debug.engine")] + opt0
        poly += ["--check"] + [str(work / "polygraphy_debug.engine") if w == "polygraphy_debug.engine" else w for w in check]
        ran = child(poly, env, work / f"{case}_polygraphy.log")
        facts = polygraphy_facts(work / f"{case}_polygraphy.log")
        results.append({"case": case, "tool": "polygraphy", "tolerance": tol, "command": portable(poly, work),
                        "wall_s": round(ran["wall_s"] + gold["wall_s"], 3), "debug_wall_s": ran["wall_s"],
                        "reference_wall_s": gold["wall_s"], "peak_rss_mib": ran["peak_rss_mib"],
                        "exit_code": ran["exit_code"], **facts,
                        "log_tail": (work / f"{case}_polygraphy.log").read_text(errors="replace")[-1500:]})
        for route in ("onnx", "builder"):
            report = work / f"{case}_{route}.json"
            ours = trtdebug + ["debug", "precision", str(model), "--out", str(work / f"{case}_{route}"), "--backend", "trt",
                               "--route", route, "--no-tf32", "--atol", tol, "--rtol", tol, "--load-inputs", str(inputs),
                               "--report", str(report), "--html", str(work / f"{case}_{route}.html")] + opt0
            ran = child(ours, env, work / f"{case}_{route}.log")
            results.append({"case": case, "tool": f"trtdebug --route {route}", "tolerance": tol,
                            "command": portable(ours, work), "wall_s": ran["wall_s"], "peak_rss_mib": ran["peak_rss_mib"],
                            "exit_code": ran["exit_code"], **trtdebug_facts(report),
                            "log_tail": (work / f"{case}_{route}.log").read_text(errors="replace")[-1500:]})
    by = {(r["case"], r["tool"]): r for r in results}
    for r in results:
        base = by.get((r["case"], "polygraphy"))
        if r["tool"] != "polygraphy" and base and base["wall_s"]:
            r["wall_vs_polygraphy"] = round(r["wall_s"] / base["wall_s"], 3)
        size = r.get("fp32_nodes", r.get("fp32_layers"))
        print(f"{r['case']:6s} {r['tool']:26s} wall {r['wall_s']:8.1f} s  builds {r.get('builds')}  FP32 set {size}  "
              f"exit {r['exit_code']}" + (f"  x{r['wall_vs_polygraphy']} of Polygraphy" if "wall_vs_polygraphy" in r else ""),
              flush=True)
    checks = {
        "trtdebug at most half of Polygraphy's wall time (fails case, both routes)":
            all(by[("fails", t)].get("wall_vs_polygraphy", 9) <= 0.5 for t in ("trtdebug --route onnx", "trtdebug --route builder")),
        "all-FP16 passes case: trtdebug took one build":
            all(by[("passes", t)].get("builds") == 1 for t in ("trtdebug --route onnx", "trtdebug --route builder")),
        "fails case: the all-FP16 engine failed (the planted overflow was not fused away)":
            by[("fails", "trtdebug --route onnx")].get("all_fp16_passed") is False,
    }
    for what, ok in checks.items():
        print(f"{'met' if ok else 'NOT met'}: {what}")
    write_json_atomic(args.output, {"benchmark": "gpu_precision", "blocks": args.blocks, "input": list(SHAPE),
                                    "opt0": args.opt0, "machine": machine(), "checks": checks, "results": results})
    print(f"results written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
