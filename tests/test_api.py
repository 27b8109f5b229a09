"""The public API (``trtdebug.run`` / ``compare`` / ``load_report`` / ``render_report``) with real backends.

The CLI is a thin layer over it, so the first test holds the promise that matters: a few lines of
Python give the same report as the command line.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import trtdebug
from trtdebug import zoo
from trtdebug.errors import UsageError

SCRIPT = Path(sys.executable).with_name("trtdebug")


@pytest.fixture(scope="module")
def conv(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "conv.onnx"
    onnx.save(zoo.conv_net(batch=2), path)
    return path


def _stable(report: dict) -> dict:
    """The report without what legitimately differs between two runs (timings, file paths)."""
    report = json.loads(json.dumps(report))
    report["meta"].pop("runners", None)
    return report


def test_ten_line_script_gives_the_cli_report(conv, tmp_path):
    cli = subprocess.run([str(SCRIPT), "run", str(conv), "--onnxrt", "--ref", "--mark-all",
                          "--report", str(tmp_path / "cli.json")], capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    script = f"""
import trtdebug
outcome = trtdebug.run({str(conv)!r}, backends=["ref", "onnxrt"], mark_all=True, report={str(tmp_path / 'api.json')!r})
raise SystemExit(outcome.exit_code)
"""
    api = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert api.returncode == 0, api.stderr
    from_cli = json.loads((tmp_path / "cli.json").read_text())
    from_api = json.loads((tmp_path / "api.json").read_text())
    assert len(from_cli["comparisons"][0]["tensors"]) == 16
    assert _stable(from_api) == _stable(from_cli)


def test_outcome_holds_results_inputs_and_exit_code(conv):
    with trtdebug.run(conv, backends=("ref", "onnxrt"), mark_all=True, atol=0.0, rtol=0.0) as outcome:
        assert [r.runner for r in outcome.results] == ["reference", "onnxrt"]
        assert outcome.exit_code == 1 and not outcome.passed
        first = outcome.first_failing
        assert first is not None and first.name in outcome.results[0].iterations[0]
        ref = np.asarray(outcome.results[0].iterations[0][first.name])
        test = np.asarray(outcome.results[1].iterations[0][first.name])
        assert not np.array_equal(ref, test)
        assert list(outcome.feeds[0]) == ["image"] and outcome.feeds[0]["image"].shape == (2, 3, 32, 32)
    # tolerance per tensor: loosening exactly the failing tensors makes it pass
    failing = {t.name: 1e-3 for t in outcome.report.comparisons[0].failed}
    with trtdebug.run(conv, backends=("ref", "onnxrt"), mark_all=True, atol={"*": 0.0, **failing},
                      rtol=0.0, inputs=outcome.feeds) as again:
        assert again.passed and again.exit_code == 0


def test_results_live_until_the_outcome_is_closed(conv):
    outcome = trtdebug.run(conv, backends=["onnxrt"], mark_all=True)
    assert outcome.report is None and outcome.passed  # one backend: nothing to compare
    tensors = outcome.results[0].iterations[0]
    assert len(tensors) == 16
    outcome.close()
    assert outcome._scratch is None


def test_loaded_outputs_are_the_reference(conv, tmp_path):
    trtdebug.run(conv, backends=["ref"], mark_all=True, save_outputs=tmp_path / "ref").close()
    with trtdebug.run(conv, backends=["onnxrt"], mark_all=True, load_outputs=[tmp_path / "ref"],
                      atol=1e-4, rtol=1e-4) as outcome:
        comparison = outcome.report.comparisons[0]
        assert (comparison.reference, comparison.test) == ("reference", "onnxrt")
        assert outcome.passed and len(comparison.tensors) == 16


def test_compare_saved_runs(conv, tmp_path):
    for seed, name in ((1, "a"), (1, "b")):
        trtdebug.run(conv, backends=["onnxrt"], mark_all=True, seed=seed, save_outputs=tmp_path / name).close()
    outcome = trtdebug.compare(tmp_path / "a", tmp_path / "b", report=tmp_path / "r.json")
    assert outcome.passed and outcome.report.comparisons[0].test.startswith("onnxrt")
    assert json.loads((tmp_path / "r.json").read_text())["passed"] is True


def test_usage_errors_before_any_work(conv, tmp_path):
    with pytest.raises(UsageError, match="add --trt"):
        trtdebug.run(conv, backends=["onnxrt"], fp16=True)
    with pytest.raises(TypeError, match="fp61"):
        trtdebug.run(conv, backends=["onnxrt", "trt"], fp61=True)
    with pytest.raises(UsageError, match="unknown backend"):
        trtdebug.run(conv, backends=["tvm"])
    with pytest.raises(UsageError, match="both write"):
        trtdebug.run(conv, backends=["onnxrt"], report=tmp_path / "x", html=tmp_path / "x")
    with pytest.raises(UsageError, match="did you mean"):
        trtdebug.run(conv, backends=["ref", "onnxrt"], atol={"prob": 1e-3})
    assert not list(tmp_path.iterdir())


def test_import_trtdebug_is_light():
    code = "import sys, trtdebug; print(sorted(m for m in ('numpy', 'onnx', 'onnxruntime', 'tensorrt', 'typer') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_run_against_saved_outputs_reuses_their_recorded_inputs(conv, tmp_path):
    """The usual loop: save a reference once (any seed), then compare later runs against it without
    passing the inputs again; different inputs given explicitly are refused."""
    from trtdebug.errors import InputsDifferError

    trtdebug.run(conv, backends=["ref"], mark_all=True, seed=5, save_outputs=tmp_path / "ref").close()
    with trtdebug.run(conv, backends=["onnxrt"], mark_all=True, load_outputs=[tmp_path / "ref"],
                      atol=1e-4, rtol=1e-4) as outcome:
        assert outcome.passed and any("recorded" in n for n in outcome.notes)
    with pytest.raises(InputsDifferError, match="different inputs"):
        trtdebug.run(conv, backends=["onnxrt"], seed=6, load_outputs=[tmp_path / "ref"])
