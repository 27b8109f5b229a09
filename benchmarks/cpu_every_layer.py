#!/usr/bin/env python3
"""Every-layer comparison on the CPU: trtdebug against Polygraphy, same work, one run of this script.

Both tools run a transformer encoder stack with ONNX Runtime (CPU) with every tensor marked
as an output, and compare all of them against a saved reference of the same tensors made
beforehand by the same tool, from the same inputs, with each tool's default tolerances:

    polygraphy run MODEL --onnxrt --onnx-outputs mark all --load-inputs INPUTS.json --load-outputs REF.json
    trtdebug   run MODEL --onnxrt --mark-all              --load-inputs INPUTS.json --load-outputs REF_DIR

Set-up (not timed): the model is built with ``trtdebug.zoo.transformer``; Polygraphy makes the
inputs (``--save-inputs``, its own format, which trtdebug reads) and its reference
(``--save-outputs REF.json``); trtdebug makes its reference from those inputs
(``--save-outputs REF_DIR``).  Timed: each command ``--repeat`` times, the two tools taking
turns, each run a child process whose wall time (monotonic clock around start and reap) and
peak resident memory (``ru_maxrss`` of that child, from ``os.wait4``) are recorded.  The
medians are reported and written, with every run, to ``benchmarks/results/cpu_every_layer.json``
(atomically: a temporary file renamed over the old one).

``--breakdown`` also times, for the notes in ``benchmarks/README.md``: each tool's start-up
(``--help``), and each tool's every-layer run without a reference (what is left is loading the
reference and comparing).

Run from the repository root:  python benchmarks/cpu_every_layer.py [--repeat 3] [--breakdown]
Needs onnx, onnxruntime and polygraphy installed; trtdebug is run from this checkout.
"""
from __future__ import annotations

import argparse
import datetime
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import REPO, child, find_polygraphy, machine, median, portable, tool_env, write_json_atomic  # noqa: E402

DEFAULT_OUTPUT = REPO / "benchmarks" / "results" / "cpu_every_layer.json"
TARGET_WALL_RATIO = 0.10  # trtdebug at most a tenth of Polygraphy's wall time ...
TARGET_RSS_RATIO = 0.50  # ... and at most half its peak memory
MIN_INTERMEDIATES = 500


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blocks", type=int, default=16, help="encoder blocks (default 16: 528 intermediate tensors)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each tool (median reported; default 3)")
    ap.add_argument("--warmup", type=int, default=0, help="untimed runs of each tool before the timed ones (default 0)")
    ap.add_argument("--workdir", type=Path, help="keep model, inputs, references and logs here (default: a temporary directory, removed)")
    ap.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help=f"results JSON (default {DEFAULT_OUTPUT.relative_to(REPO)})")
    ap.add_argument("--breakdown", action="store_true", help="also time start-up and the runs without a reference")
    ap.add_argument("--polygraphy", help="polygraphy executable (default: the one next to this Python, else PATH)")
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")

    polygraphy = find_polygraphy(args.polygraphy)
    trtdebug = [sys.executable, "-m", "trtdebug"]
    env = tool_env()

    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        return _run(args, args.workdir.resolve(), polygraphy, trtdebug, env)
    with tempfile.TemporaryDirectory(prefix="trtdebug-bench-") as tmp:
        return _run(args, Path(tmp), polygraphy, trtdebug, env)


def _run(args, work: Path, polygraphy: List[str], trtdebug: List[str], env: Dict[str, str]) -> int:
    model, inputs = work / "model.onnx", work / "inputs.json"
    poly_ref, trt_ref = work / "polygraphy_ref.json", work / "trtdebug_ref"
    logs = work / "logs"
    logs.mkdir(exist_ok=True)

    model_info = _build_model(model, args)
    print(f"model: {model_info['nodes']} nodes, {model_info['intermediate_tensors']} intermediate tensors, "
          f"input x{model_info['input_shape']}  ({model})", flush=True)

    # -- set-up, not timed -------------------------------------------------------------------
    print("preparing references (not timed) ...", flush=True)
    _check(child(polygraphy + ["run", str(model), "--onnxrt", "--onnx-outputs", "mark", "all",
                                "--save-inputs", str(inputs), "--save-outputs", str(poly_ref)],
                  env, logs / "prepare_polygraphy.log"), "polygraphy reference")
    if trt_ref.exists():
        shutil.rmtree(trt_ref)
    _check(child(trtdebug + ["run", str(model), "--onnxrt", "--mark-all", "--load-inputs", str(inputs),
                              "--save-outputs", str(trt_ref)], env, logs / "prepare_trtdebug.log"), "trtdebug reference")

    commands = {
        "polygraphy": polygraphy + ["run", str(model), "--onnxrt", "--onnx-outputs", "mark", "all",
                                    "--load-inputs", str(inputs), "--load-outputs", str(poly_ref)],
        "trtdebug": trtdebug + ["run", str(model), "--onnxrt", "--mark-all",
                                "--load-inputs", str(inputs), "--load-outputs", str(trt_ref)],
    }
    extra = {}
    if args.breakdown:
        extra = {
            "polygraphy_startup": polygraphy + ["--help"],
            "trtdebug_startup": trtdebug + ["--help"],
            "polygraphy_no_reference": polygraphy + ["run", str(model), "--onnxrt", "--onnx-outputs", "mark", "all",
                                                     "--load-inputs", str(inputs)],
            "trtdebug_no_reference": trtdebug + ["run", str(model), "--onnxrt", "--mark-all", "--load-inputs", str(inputs)],
        }

    # -- timed: the tools take turns so a drift in machine speed hits both ---------------------
    runs: Dict[str, List[dict]] = {name: [] for name in [*commands, *extra]}
    for i in range(args.warmup + args.repeat):
        timed = i >= args.warmup
        for name, cmd in [*commands.items(), *extra.items()]:
            r = child(cmd, env, logs / f"{name}_{i}.log")
            label = f"run {i - args.warmup + 1}/{args.repeat}" if timed else f"warm-up {i + 1}/{args.warmup}"
            print(f"  {label:12s} {name:24s} {r['wall_s']:8.2f} s {r['peak_rss_mib']:8.0f} MiB  exit {r['exit_code']}", flush=True)
            if timed:
                runs[name].append(r)

    summary = {name: median(rs) for name, rs in runs.items()}
    for name in commands:
        summary[name]["verdict"] = _verdict(name, runs[name][-1]["log"])
    pg, td = summary["polygraphy"], summary["trtdebug"]
    wall_ratio = td["wall_s"] / pg["wall_s"]
    rss_ratio = td["peak_rss_mib"] / pg["peak_rss_mib"]
    codes = {name: sorted({r["exit_code"] for r in runs[name]}) for name in commands}
    consistent = codes["polygraphy"] == codes["trtdebug"] and len(codes["trtdebug"]) == 1
    both_pass = consistent and codes["trtdebug"] == [0]

    result = {
        "benchmark": "cpu_every_layer",
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": machine(),
        "versions": _versions(),
        "model": model_info,
        "reference_bytes": {"polygraphy": poly_ref.stat().st_size, "trtdebug": _tree_size(trt_ref)},
        "repeat": args.repeat,
        "warmup": args.warmup,
        "commands": {name: portable(cmd, work) for name, cmd in {**commands, **extra}.items()},
        "median": {name: {k: v for k, v in s.items()} for name, s in summary.items()},
        "runs": {name: [{k: v for k, v in r.items() if k != "log"} for r in rs] for name, rs in runs.items()},
        "ratios": {"wall": round(wall_ratio, 4), "peak_rss": round(rss_ratio, 4)},
        "targets": {"wall": TARGET_WALL_RATIO, "peak_rss": TARGET_RSS_RATIO,
                    "wall_met": wall_ratio <= TARGET_WALL_RATIO, "peak_rss_met": rss_ratio <= TARGET_RSS_RATIO},
        "exit_codes": codes,
        "consistent_verdicts": consistent,
        "both_passed": both_pass,
    }
    write_json_atomic(args.output, result)
    _print_table(result)
    print(f"results written to {args.output}")
    return 0 if both_pass else 1


# -- model ---------------------------------------------------------------------------------------
def _build_model(path: Path, args) -> dict:
    sys.path.insert(0, str(REPO))
    import onnx

    from trtdebug.zoo import transformer

    m = transformer(blocks=args.blocks, batch=args.batch, seq=args.seq, hidden=args.hidden)
    onnx.save(m, str(path))
    graph_outputs = {o.name for o in m.graph.output}
    produced = [o for n in m.graph.node for o in n.output if o]
    intermediates = [o for o in produced if o not in graph_outputs]
    if len(intermediates) < MIN_INTERMEDIATES:
        raise SystemExit(f"the model has {len(intermediates)} intermediate tensors, fewer than {MIN_INTERMEDIATES}: "
                         f"raise --blocks (each block adds {len(intermediates) // max(args.blocks, 1)})")
    dims = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    return {"builder": f"trtdebug.zoo.transformer(blocks={args.blocks}, batch={args.batch}, seq={args.seq}, hidden={args.hidden})",
            "nodes": len(m.graph.node), "tensors_compared": len(produced), "intermediate_tensors": len(intermediates),
            "input_shape": dims, "onnx_bytes": path.stat().st_size}


# -- child processes -----------------------------------------------------------------------------
def _check(r: dict, what: str) -> None:
    if r["exit_code"] != 0:
        tail = Path(r["log"]).read_text(errors="replace")[-3000:]
        raise SystemExit(f"{what} failed with exit code {r['exit_code']}; the end of {r['log']}:\n{tail}")


def _verdict(name: str, log: str) -> dict:
    """What each tool said about the comparison, read from its output."""
    text = Path(log).read_text(errors="replace")
    if name == "polygraphy":
        passed = len(re.findall(r"PASSED \| Output: ", text))
        failed = len(re.findall(r"FAILED \| Output: ", text))
        return {"tensors_passed": passed, "tensors_compared": passed + failed}
    m = re.search(r"(\d+)/(\d+) tensors passed", text)
    return {"tensors_passed": int(m.group(1)), "tensors_compared": int(m.group(2))} if m else {}


# -- reporting -----------------------------------------------------------------------------------
def _print_table(r: dict) -> None:
    med = r["median"]
    rows = [(name, med[name]) for name in med]
    print()
    print(f"{'command':26s} {'wall s (median)':>16s} {'min-max':>14s} {'peak RSS MiB':>13s} {'cpu s':>7s}")
    for name, m in rows:
        print(f"{name:26s} {m['wall_s']:16.2f} {m['wall_s_min']:6.2f}-{m['wall_s_max']:<7.2f} {m['peak_rss_mib']:13.0f} {m['cpu_s']:7.2f}")
    ra, t = r["ratios"], r["targets"]
    print(f"\ntrtdebug / polygraphy: wall {ra['wall']:.3f} (target <= {t['wall']}: {'met' if t['wall_met'] else 'MISSED'}), "
          f"peak RSS {ra['peak_rss']:.3f} (target <= {t['peak_rss']}: {'met' if t['peak_rss_met'] else 'MISSED'})")
    for name in ("polygraphy", "trtdebug"):
        v = med[name].get("verdict", {})
        print(f"{name}: exit codes {r['exit_codes'][name]}, "
              f"{v.get('tensors_passed', '?')}/{v.get('tensors_compared', '?')} tensors passed")
    print(f"verdicts consistent: {r['consistent_verdicts']}, both passed: {r['both_passed']}")


def _versions() -> dict:
    from importlib import metadata

    out = {}
    for dist in ("numpy", "onnx", "onnxruntime", "polygraphy", "rich", "typer"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    sys.path.insert(0, str(REPO))
    import trtdebug

    out["trtdebug"] = trtdebug.__version__
    return out


def _tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


if __name__ == "__main__":
    sys.exit(main())
