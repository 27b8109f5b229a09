"""What both benchmark scripts share: run a child process and measure it, describe the machine,
write results atomically.  Wall time is a monotonic clock around start and reap; peak RSS is
that child's own ``ru_maxrss`` from ``os.wait4``."""
from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parent.parent


def tool_env() -> Dict[str, str]:
    """The environment both tools run in: this checkout first on PYTHONPATH, Polygraphy never installing."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.setdefault("POLYGRAPHY_AUTOINSTALL_DEPS", "0")
    return env


def in_workdir(args, run, prefix: str) -> int:
    """``run(args, work)`` in ``args.workdir`` (kept) or in a temporary directory (removed)."""
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        return run(args, args.workdir.resolve())
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        return run(args, Path(tmp))


def child(cmd: List[str], env: Dict[str, str], log: Path) -> dict:
    """Run ``cmd`` to completion; its own wall time and peak RSS (ru_maxrss of that child, via wait4)."""
    with open(log, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(REPO))
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: keep Popen from waiting again
    return {"wall_s": round(wall, 4), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),  # Linux: ru_maxrss in KiB
            "user_s": round(usage.ru_utime, 3), "sys_s": round(usage.ru_stime, 3),
            "exit_code": proc.returncode, "log": str(log)}


def median(rs: List[dict]) -> dict:
    return {"wall_s": round(statistics.median(r["wall_s"] for r in rs), 4),
            "wall_s_min": min(r["wall_s"] for r in rs), "wall_s_max": max(r["wall_s"] for r in rs),
            "peak_rss_mib": round(statistics.median(r["peak_rss_mib"] for r in rs), 1),
            "cpu_s": round(statistics.median(r["user_s"] + r["sys_s"] for r in rs), 3)}


def find_polygraphy(given: Optional[str]) -> List[str]:
    if given:
        return [given]
    beside = Path(sys.executable).parent / "polygraphy"  # the real script, not a version-manager shim
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("polygraphy")
    if not found:
        raise SystemExit("polygraphy not found: pip install polygraphy, or give --polygraphy PATH")
    return [found]


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        mem = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu, "cores": cores, "memory_gib": mem, "gpu": shutil.which("nvidia-smi") is not None,
            "os": platform.platform(), "python": platform.python_version()}


def portable(cmd: List[str], work: Path) -> str:
    """The command as a user would type it: tool names, WORK for the scratch directory."""
    words = list(cmd)
    if words[:3] == [sys.executable, "-m", "trtdebug"]:
        words = ["trtdebug"] + words[3:]
    elif words and Path(words[0]).name == "polygraphy":
        words[0] = "polygraphy"
    return " ".join(w.replace(str(work), "WORK") for w in words)


def write_json_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
