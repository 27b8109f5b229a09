"""``debug tactics`` and ``debug fusion`` through their build workers, on CPU.

The whole public path runs (:func:`debug_tactics` / :func:`debug_fusion`: reference run, workers,
search, bundle): each build worker is a spawned process that imports ``tensorrt`` and finds a
fake of a real release there (a package written to a temporary directory on ``sys.path``, built
by :func:`fake_module` from ``tests/trt_fakes.py``), whose *build function* has planted faults:
a segfault, an ``os._exit`` and a hang on chosen candidates.  The tests prove that such a fault
is that candidate's verdict, that the search goes on and finds the culprit, that the worker is
restarted, that a hang is killed at ``timeout``, that verdicts are journalled (resume asks
nothing again), and that two devices give the one-device answer.  One test runs the real
TensorRT-RTX builder in the worker (it builds on CPU).
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import dataclass

import numpy as np
import onnx
import pytest

import trt_fakes
from test_debug_fusion import fusing_build, mark_model_outputs
from test_debug_tactics import FakeBuilds, _network, chain_model
from trtdebug.debug.search import Judgement, Verdict

SCRIPT_ENV = "TRTDEBUG_TEST_FAKE_SCRIPT"
HANG_SECONDS = 120


# -- what the worker's ``import tensorrt`` gets ---------------------------------------------------------

class FaultyBuilds(FakeBuilds):
    """The tactic fake's builder, with faults planted on chosen tactics: ``crash`` when layer A runs
    tactic 200 and layer B does not ({"when": A, "unless": B, "how": "segfault"|"exit"}), ``hang``
    likewise (sleeps far past any timeout)."""

    def __init__(self, trt, script):
        super().__init__(trt, noisy=())
        self.script = script

    def __call__(self, builder, network, config):
        engine = super().__call__(builder, network, config)
        chosen = json.loads(engine)
        for fault in ("crash", "hang"):
            plant = self.script.get(fault)
            if plant and all(chosen[n] == 200 for n in plant["when"]) and chosen[plant["unless"]] != 200:
                _fault(plant.get("how", "segfault") if fault == "crash" else "hang")
        return engine


def faulty_fusing_build(script):
    def build(builder, network, config):
        marked = {network.get_output(i).name for i in range(network.num_outputs)}
        plant = script.get("crash")
        if plant and set(plant["when"]) <= marked and plant["unless"] not in marked:
            _fault(plant.get("how", "segfault"))
        return fusing_build(builder, network, config)
    return build


def _fault(how):
    print(f"planted fault: {how}", file=sys.stderr, flush=True)
    if how == "segfault":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif how == "exit":
        os._exit(9)
    time.sleep(HANG_SECONDS)


def fake_module():
    """The fake ``tensorrt`` a worker imports: release and faults from the environment the test set."""
    script = json.loads(os.environ[SCRIPT_ENV])
    trt = trt_fakes.fake_trt(script["release"])
    trt._fake.network_factory = lambda: _network(trt)
    if script["kind"] == "tactics":
        FaultyBuilds(trt, script)
    else:
        trt._fake.build = faulty_fusing_build(script)
        trt._fake.on_parse = mark_model_outputs

        def deserialize(engine):  # the inspector reports the engine's layer groups, named by their nodes
            trt._fake.engine_json = {"Layers": [{"Name": " + ".join(g)} for g in json.loads(engine)]}
            return trt_fakes.engine(trt, {})
        trt._fake.deserialize = deserialize
    return trt


@pytest.fixture
def fake_tensorrt(tmp_path, monkeypatch):
    """Put a ``tensorrt`` package that is :func:`fake_module` on the path the workers are spawned with."""
    pkg = tmp_path / "fake-site" / "tensorrt"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("import sys\nfrom test_debug_workers import fake_module\n"
                                     "sys.modules[__name__] = fake_module()\n")
    monkeypatch.syspath_prepend(str(pkg.parent))

    def script(**kw):
        monkeypatch.setenv(SCRIPT_ENV, json.dumps(kw))
    yield script
    sys.modules.pop("tensorrt", None)  # nothing here imported it; a stray import must not outlive the test


# -- judges: they run in the workers, so they are picklable ----------------------------------------------

@dataclass
class FailsOn:
    """BAD when ``layer`` ran one of ``tactics`` (the fake engine lists every layer's tactic)."""

    layer: str
    tactics: tuple

    def __call__(self, engine):
        chosen = json.loads(engine)
        bad = chosen[self.layer] in self.tactics
        return Judgement(Verdict.BAD if bad else Verdict.GOOD,
                         f"{self.layer} ran {chosen[self.layer]} (device {os.environ.get('CUDA_VISIBLE_DEVICES')})")


@dataclass
class BadWhenFused:
    """BAD when ONNX nodes ``a`` and ``b`` share one engine layer (the fake engine lists its layer groups)."""

    a: str
    b: str

    def __call__(self, engine):
        together = any(self.a in g and self.b in g for g in json.loads(engine))
        return Judgement(Verdict.BAD if together else Verdict.GOOD, f"{self.a}+{self.b} fused: {together}")


def _journal(out):
    lines = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    return {tuple(r["candidate"]): r for r in lines[1:]}


# relu3's FP16 kernel is wrong; the build segfaults when conv1 runs FP16 but conv3 does not (the first
# half of the bisection), and hangs when conv3 and relu3 run FP16 but conv4 does not (a quarter)
TACTIC_FAULTS = {"crash": {"when": ["conv1"], "unless": "conv3", "how": "segfault"},
                 "hang": {"when": ["conv3", "relu3"], "unless": "conv4"}}


def _tactics(tmp_path, out, **kw):
    from trtdebug.debug.tactics import debug_tactics

    model = tmp_path / "chain.onnx"
    onnx.save(chain_model(), model)
    return debug_tactics(model, out, build_options={"fp16": True}, good="fp32", judge=FailsOn("relu3", (200,)),
                         timeout=kw.pop("timeout", 4), **kw)


def test_a_crash_and_a_hang_are_verdicts_and_the_culprit_is_still_found_then_resume_reasks_nothing(
        tmp_path, fake_tensorrt):
    fake_tensorrt(release="10.0.1", kind="tactics", **TACTIC_FAULTS)
    out = tmp_path / "out"
    start = time.monotonic()
    result = _tactics(tmp_path, out)
    r = result.report
    assert result.culprit_layers == ["relu3"] and r["replay_verdict"] == "good"
    assert r["worker_restarts"] == 2 and any("restarted 2 time(s)" in n for n in r["notes"])
    journal = _journal(out)
    crashed = [v for v in journal.values() if "crashed (signal SIGSEGV)" in v["detail"]]
    hung = [v for v in journal.values() if "timed out after" in v["detail"]]
    assert len(crashed) == 1 and crashed[0]["verdict"] == "skip" and crashed[0]["candidate"] == [0, 1, 2, 3]
    assert "planted fault: segfault" in crashed[0]["detail"]  # the worker's last words are in the verdict
    assert len(hung) == 1 and hung[0]["verdict"] == "skip" and hung[0]["candidate"] == [4, 5]
    assert 4 <= hung[0]["seconds"] < 30 and time.monotonic() - start < HANG_SECONDS  # killed, not waited for
    assert (out / "tactics.json").is_file() and "--load-tactics bad-tactics.json" in (out / "repro.sh").read_text()

    again = _tactics(tmp_path, out)  # the journal answers every candidate, faults included
    assert again.culprit_layers == ["relu3"] and again.report["oracle_calls"] == 0
    assert again.report["worker_restarts"] == 0 and again.report["reused_verdicts"] >= len(journal)


def test_crash_means_bad_when_the_user_says_so(tmp_path, fake_tensorrt):
    """With --on-crash bad the crash is the failure hunted: the layer whose build crashes is the culprit."""
    fake_tensorrt(release="8.6.1", kind="tactics", crash={"when": ["conv1"], "unless": "conv3", "how": "exit"})
    result = _tactics(tmp_path, tmp_path / "out", on_crash="bad")
    assert result.culprit_layers == ["conv1"]
    assert any("crashed (exit code 9)" in v["detail"] and v["verdict"] == "bad" for v in _journal(tmp_path / "out").values())


def test_two_devices_judge_in_parallel_and_agree_with_one(tmp_path, fake_tensorrt):
    fake_tensorrt(release="10.0.1", kind="tactics", crash=TACTIC_FAULTS["crash"])
    one = _tactics(tmp_path, tmp_path / "one")
    two = _tactics(tmp_path, tmp_path / "two", devices=[0, 1])
    assert one.culprit_layers == two.culprit_layers == ["relu3"] and two.report["workers"] == 2
    j1, j2 = _journal(tmp_path / "one"), _journal(tmp_path / "two")
    assert set(j1) <= set(j2)  # two workers ask both halves at once: more calls, the same answers
    for subset, answer in j1.items():
        assert j2[subset]["verdict"] == answer["verdict"], subset
    used = {d.split("device ")[1].rstrip(")") for v in j2.values() for d in [v["detail"]] if "device " in d}
    assert used == {"0", "1"}  # each worker saw its own CUDA_VISIBLE_DEVICES


def test_fusion_crash_is_a_verdict_and_the_workaround_model_is_rebuilt_in_the_worker(tmp_path, fake_tensorrt):
    from test_debug_tactics import NODES
    from trtdebug.debug.fusion import debug_fusion

    # marking conv1_out and conv2_out without relu3_out crashes the build (the first half of the search)
    fake_tensorrt(release="10.8.0.43", kind="fusion",
                  crash={"when": ["conv1_out", "conv2_out"], "unless": "relu3_out", "how": "exit"})
    model = tmp_path / "chain.onnx"
    onnx.save(chain_model(), model)
    out = tmp_path / "out"
    result = debug_fusion(model, out, judge=BadWhenFused("conv2", "relu2"), timeout=30)
    r = result.report
    assert result.tensors == ["conv2_out"] and result.nodes == NODES and r["worker_restarts"] == 1
    assert any("crashed (exit code 9)" in v["detail"] and v["verdict"] == "skip" for v in _journal(out).values())
    w = r["workaround"]
    assert w["onnx"] == str(out / "workaround.onnx") and w["verdict"] == "good"
    assert [o.name for o in onnx.load(out / "workaround.onnx").graph.output] == ["logits", "conv2_out"]
    assert "workaround.onnx" in (out / "repro.sh").read_text() and "fusion barrier" in (out / "repro.sh").read_text()
    assert w["onnx_command"].startswith("trtdebug run workaround.onnx --trt")


# -- the real TensorRT-RTX builder in the worker -----------------------------------------------------------

@dataclass
class NamesTensor:
    """GOOD when the engine names ``tensor``: a real engine names its I/O tensors, so this says whether it was
    marked as an output (the planted "miscompile": conv2 and relu2 fused, which hides conv2_out)."""

    tensor: str

    def __call__(self, engine):
        named = self.tensor.encode() in engine
        return Judgement(Verdict.GOOD if named else Verdict.BAD, f"{self.tensor} {'is' if named else 'is not'} an output")


def test_real_tensorrt_rtx_builds_run_in_the_worker(tmp_path):
    pytest.importorskip("tensorrt_rtx")
    from test_debug_tactics_gpu import conv_chain
    from trtdebug.debug.fusion import debug_fusion

    model = tmp_path / "convs.onnx"
    onnx.save(conv_chain(), model)
    out = tmp_path / "out"
    result = debug_fusion(model, out, build_options={"module": "tensorrt_rtx"}, judge=NamesTensor("conv2_out"),
                          timeout=120)
    r = result.report
    assert result.tensors == ["conv2_out"] and r["workaround"]["verdict"] == "good"
    # this machine has no GPU: the worker's engines cannot be inspected, so every tensor was a candidate
    assert any("layers could not be read" in n for n in r["notes"]) and r["candidates"] == 5
    assert r["builds"] >= 5 and r["worker_restarts"] == 0
    saved = onnx.load(out / "workaround.onnx")
    assert [o.name for o in saved.graph.output] == ["relu3_out", "conv2_out"]
    assert np.prod([d.dim_value for d in saved.graph.output[1].type.tensor_type.shape.dim]) == 8 * 32 * 32
