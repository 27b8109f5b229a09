"""Bad input and misuse, sent through the installed ``trtdebug`` console script as a user would.

Each case must end with its documented exit code, exactly one line on stderr (no traceback, no
usage block) and no file of the user's workspace created, changed or deleted - the workspace is
fingerprinted before and after every case.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

from trtdebug import zoo

SCRIPT = Path(sys.executable).with_name("trtdebug")


def trtdebug(*args, **kwargs) -> subprocess.CompletedProcess:
    exe = str(SCRIPT) if SCRIPT.exists() else shutil.which("trtdebug")
    assert exe, "the trtdebug console script is not installed (pip install -e .)"
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=120, **kwargs)


def fingerprint(root: Path) -> dict:
    """Every path under root with its type and content hash (symlinks by target, not followed)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if p.is_symlink():
                out[str(p)] = ("link", os.readlink(p))
            elif p.is_dir():
                out[str(p)] = ("dir",)
            else:
                out[str(p)] = ("file", hashlib.sha256(p.read_bytes()).hexdigest())
    return out


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A user's workspace: models, inputs, saved outputs, reports - and some broken files."""
    import trtdebug

    d = tmp_path_factory.mktemp("ws")
    onnx.save(zoo.conv_net(batch=1), d / "conv.onnx")
    onnx.save(zoo.transformer(), d / "transformer.onnx")
    (d / "text.onnx").write_text("hello, I am not a model")
    (d / "empty.onnx").write_bytes(b"")
    os.symlink(d / "loop.onnx", d / "loop.onnx")
    (d / "mine").mkdir()
    (d / "mine" / "precious.txt").write_text("keep me")
    np.savez(d / "inputs.npz", image=np.zeros((1, 3, 32, 32), np.float32))
    np.savez(d / "inputs64.npz", image=np.zeros((1, 3, 32, 32), np.float64))
    (d / "corrupt.npz").write_bytes(b"PK\x03\x04 not really a zip")
    (d / "engine.engine").write_bytes(b"\0" * 16)
    (d / "adir.json").mkdir()
    with trtdebug.run(d / "conv.onnx", backends=["onnxrt"], mark_all=True, save_outputs=d / "outs"):
        pass
    with trtdebug.run(d / "conv.onnx", backends=["ref", "onnxrt"], report=d / "report.json"):
        pass
    with trtdebug.run(d / "conv.onnx", backends=["onnxrt"], seed=2, save_outputs=d / "outs_seed2"):
        pass
    shutil.copytree(d / "outs", d / "truncated")
    victim = next((d / "truncated").rglob("*.npy"))
    victim.write_bytes(victim.read_bytes()[:40])
    shutil.copytree(d / "outs", d / "escaping")
    index = json.loads((d / "escaping" / "index.json").read_text())
    index["runners"][0]["iterations"][0]["tensors"][0]["file"] = "../../../../../../etc/hostname"
    (d / "escaping" / "index.json").write_text(json.dumps(index))
    shutil.copytree(d / "outs", d / "mixed")
    (d / "mixed" / "notes.txt").write_text("my notes, inside a directory trtdebug wrote")
    (d / "notreport.json").write_text(json.dumps({"format": "something-else", "passed": True}))
    return d


CONV = "{ws}/conv.onnx"
# (id, arguments, exit code, a fragment the one error line must contain)
CASES = [
    ("unknown-option", ["run", CONV, "--onnxrt", "--bogus"], 2, "--bogus"),
    ("typo-subcommand", ["runn", CONV], 2, "runn"),
    ("missing-argument", ["run"], 2, "model"),
    ("iterations-zero", ["run", CONV, "--onnxrt", "--iterations", "0"], 2, "--iterations"),
    ("seed-not-a-number", ["run", CONV, "--onnxrt", "--seed", "abc"], 2, "--seed"),
    ("seed-negative", ["run", CONV, "--onnxrt", "--seed", "-1"], 2, "--seed"),
    ("missing-model", ["run", "{ws}/nope.onnx", "--onnxrt"], 2, "nope.onnx"),
    ("model-is-a-directory", ["run", "{ws}/mine", "--onnxrt"], 2, "mine"),
    ("not-an-onnx-model", ["run", "{ws}/text.onnx", "--onnxrt"], 2, "not an ONNX model"),
    ("empty-model", ["run", "{ws}/empty.onnx", "--onnxrt"], 2, "empty.onnx"),
    ("symlink-loop-model", ["run", "{ws}/loop.onnx", "--onnxrt"], 2, "loop.onnx"),
    ("no-backend", ["run", CONV], 2, "--onnxrt"),
    ("trt-flag-without-trt", ["run", CONV, "--onnxrt", "--fp16"], 2, "--fp16"),
    ("timing-cache-without-trt", ["run", CONV, "--onnxrt", "--timing-cache", "{ws}/tc"], 2, "--timing-cache"),
    ("trt-outputs-without-trt", ["run", CONV, "--onnxrt", "--trt-outputs", "x"], 2, "--trt"),
    ("engine-with-onnxrt", ["run", "{ws}/engine.engine", "--onnxrt"], 2, "--trt"),
    ("seed-with-loaded-inputs", ["run", CONV, "--onnxrt", "--load-inputs", "{ws}/inputs.npz", "--seed", "3"], 2, "--seed"),
    ("shapes-disagree-with-loaded", ["run", CONV, "--onnxrt", "--load-inputs", "{ws}/inputs.npz",
                                     "--input-shapes", "image:[2,3,32,32]"], 2, "image"),
    ("iterations-beyond-loaded", ["run", CONV, "--onnxrt", "--load-inputs", "{ws}/inputs.npz", "--iterations", "3"], 2,
     "--iterations"),
    ("missing-loaded-inputs", ["run", CONV, "--onnxrt", "--load-inputs", "{ws}/nope.npz"], 2, "nope.npz"),
    ("corrupt-loaded-inputs", ["run", CONV, "--onnxrt", "--load-inputs", "{ws}/corrupt.npz"], 2, "corrupt.npz"),
    ("wrong-dtype-loaded-inputs", ["run", CONV, "--onnxrt", "--load-inputs", "{ws}/inputs64.npz"], 2, "dtype"),
    ("unknown-tensor-in-atol", ["run", CONV, "--onnxrt", "--ref", "--atol", "no_such_tensor:1e-3"], 2, "no_such_tensor"),
    ("atol-not-a-number", ["run", CONV, "--onnxrt", "--atol", "abc"], 2, "--atol"),
    ("atol-negative", ["run", CONV, "--onnxrt", "--atol", "-1"], 2, "--atol"),
    ("bad-order", ["run", CONV, "--onnxrt", "--order", "sideways"], 2, "--order"),
    ("bad-error-stat", ["run", CONV, "--onnxrt", "--check-error-stat", "mode"], 2, "--check-error-stat"),
    ("bad-quantile", ["run", CONV, "--onnxrt", "--check-error-stat", "quantile", "--error-quantile", "2"], 2,
     "--error-quantile"),
    ("negative-max-rows", ["run", CONV, "--onnxrt", "--max-rows", "-1"], 2, "--max-rows"),
    ("unknown-input-in-shapes", ["run", "{ws}/transformer.onnx", "--onnxrt", "--input-shapes", "nope:[1,2,64]"], 2,
     "nope"),
    ("malformed-shapes", ["run", "{ws}/transformer.onnx", "--onnxrt", "--input-shapes", "x:[2,,64"], 2,
     "--input-shapes"),
    ("dynamic-without-shapes", ["run", "{ws}/transformer.onnx", "--onnxrt"], 2, "--input-shapes x:["),
    ("malformed-val-range", ["run", CONV, "--onnxrt", "--val-range", "[1]"], 2, "--val-range"),
    ("bad-workspace", ["run", CONV, "--trt", "--workspace", "lots"], 2, "--workspace"),
    ("report-and-html-same-path", ["run", CONV, "--onnxrt", "--ref", "--report", "{ws}/r.out", "--html", "{ws}/r.out"],
     2, "--html"),
    ("report-over-the-model", ["run", CONV, "--onnxrt", "--ref", "--report", CONV], 2, "refusing"),
    ("report-is-a-directory", ["run", CONV, "--onnxrt", "--ref", "--report", "{ws}/adir.json"], 2, "adir.json"),
    ("report-in-unwritable-place", ["run", CONV, "--onnxrt", "--ref", "--report", "/proc/trtdebug/r.json"], 2, "/proc"),
    ("save-inputs-over-loaded", ["run", CONV, "--onnxrt", "--load-inputs", "{ws}/inputs.npz",
                                 "--save-inputs", "{ws}/inputs.npz"], 2, "refusing"),
    ("save-outputs-into-user-dir", ["run", CONV, "--onnxrt", "--save-outputs", "{ws}/mine"], 2, "mine"),
    ("save-outputs-over-mixed-dir", ["run", CONV, "--onnxrt", "--save-outputs", "{ws}/mixed"], 2, "mixed"),
    ("compare-missing", ["compare", "{ws}/a", "{ws}/b"], 2, "not found"),
    ("compare-truncated-npy", ["compare", "{ws}/outs", "{ws}/truncated"], 2, "truncated"),
    ("compare-escaping-index", ["compare", "{ws}/outs", "{ws}/escaping"], 2, "escaping"),
    ("compare-different-inputs", ["compare", "{ws}/outs", "{ws}/outs_seed2"], 2, "different inputs"),
    ("compare-unknown-runner", ["compare", "{ws}/outs", "{ws}/outs", "--ref-runner", "tensorrt"], 2, "tensorrt"),
    ("report-not-a-report", ["report", "{ws}/notreport.json"], 2, "notreport.json"),
    ("report-missing", ["report", "{ws}/nope.json"], 2, "nope.json"),
    ("report-html-over-report", ["report", "{ws}/report.json", "--html", "{ws}/report.json"], 2, "refusing"),
    ("inspect-missing-model", ["inspect", "model", "{ws}/nope.onnx"], 2, "nope.onnx"),
    ("inspect-json-over-model", ["inspect", "model", CONV, "--json", CONV], 2, "refusing"),
]


@pytest.mark.parametrize("args,code,fragment", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_misuse_is_one_line_and_touches_nothing(ws, args, code, fragment):
    before = fingerprint(ws)
    proc = trtdebug(*(a.format(ws=ws) for a in args))
    assert proc.returncode == code, (proc.returncode, proc.stderr, proc.stdout[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("trtdebug: error: "), proc.stderr
    assert fragment.format(ws=ws) in lines[0], (fragment, lines[0])
    assert fingerprint(ws) == before


def test_backend_missing_is_exit_3_in_one_line(ws):
    pytest.importorskip("onnxruntime")
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    proc = trtdebug("run", ws / "conv.onnx", "--trt")
    assert proc.returncode == 3 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "tensorrt" in proc.stderr.lower()


def test_help_version_and_bare_command_exit_0():
    for args in ([], ["-h"], ["run", "-h"], ["inspect"], ["--version"]):
        proc = trtdebug(*args)
        assert proc.returncode == 0 and not proc.stderr, (args, proc.stderr)
    assert trtdebug("--version").stdout.startswith("trtdebug ")


def test_closed_stdout_keeps_the_runs_exit_code(ws):
    """``trtdebug run ... | head -1`` of a passing run is a pass, with nothing on stderr."""
    exe = str(SCRIPT) if SCRIPT.exists() else shutil.which("trtdebug")
    proc = subprocess.run(["bash", "-c", f'"{exe}" run "{ws}/conv.onnx" --onnxrt --ref --mark-all --max-rows 0 '
                                         f'--atol 1e-3 --rtol 1e-3 | head -c 1 >/dev/null; echo "rc=${{PIPESTATUS[0]}}"'],
                          capture_output=True, text=True, timeout=120)
    assert "rc=0" in proc.stdout, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "Broken pipe" not in proc.stderr, proc.stderr


def test_ctrl_c_is_one_line_130_and_leaves_no_partial_artifact(tmp_path):
    onnx.save(zoo.transformer(blocks=12), tmp_path / "big.onnx")
    before = fingerprint(tmp_path)
    exe = str(SCRIPT) if SCRIPT.exists() else shutil.which("trtdebug")
    proc = subprocess.Popen([exe, "run", str(tmp_path / "big.onnx"), "--ref", "--onnxrt", "--mark-all",
                             "--input-shapes", "x:[8,128,64]", "--iterations", "3",
                             "--save-outputs", str(tmp_path / "outs"), "--report", str(tmp_path / "r.json")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (proc.returncode, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("trtdebug: interrupted") and "Traceback" not in err, err
    assert fingerprint(tmp_path) == before  # no outs/, no r.json, no staging leftovers


# A command that behaves as numpy's np.save does when Ctrl-C lands in its path check: the
# KeyboardInterrupt comes out as a TypeError (seen in CI as "internal error ... not BufferedWriter").
_INTERRUPT_TURNED_INTO_TYPEERROR = """
import os, signal, sys
from trtdebug import cli
from trtdebug.cli.typer_app import app

@app.command("interrupt-me")
def interrupt_me():
    try:
        os.kill(os.getpid(), signal.SIGINT)
        signal.pause()
    except KeyboardInterrupt:
        raise TypeError("expected str, bytes or os.PathLike object, not BufferedWriter")

cli.main(["interrupt-me"])
"""


def test_ctrl_c_that_a_library_turns_into_another_error_is_still_an_interrupt():
    proc = subprocess.run([sys.executable, "-c", _INTERRUPT_TURNED_INTO_TYPEERROR], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 130, (proc.returncode, proc.stderr)
    assert proc.stderr.strip() == "trtdebug: interrupted (nothing partial was written)", proc.stderr
