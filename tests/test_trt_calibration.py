"""INT8 calibration from user data (issue 10, item 4) on the release fakes: on 8.6 and 10.x the calibrator is
attached, serves every batch of the user's .npz files from device memory and writes its cache atomically
(a second build reads it and calibrates nothing); on 11.x, which has no calibrators, one usage line points
to Q/DQ models.  The fake build drives the calibrator as TensorRT does (tests/trt_fakes.py World.build)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import trt_fakes
from test_trt_build import conv_model, conv_net
from trtdebug.errors import UsageError
from trtdebug.model import ModelGraph
from trtdebug.runners.tensorrt import TrtBuildConfig
from trtdebug.runners.tensorrt import cuda as cuda_mod
from trtdebug.runners.tensorrt.builder import EngineBuilder

V86, V10, V11 = "8.6.1", "10.13.3.9", "11.0.0.114"
CACHE = b"TRT-CalibrationTable\nimage: 3c010a14\n"
SCRIPT = Path(sys.executable).with_name("trtdebug")


def calibrating_world(monkeypatch, trt):
    """The parser yields the conv net; a build calibrates through ``config.int8_calibrator`` like TensorRT:
    the cache first, else batches until None (read back from fake device memory), then the cache written."""
    seen = {"batches": [], "calibrators": []}
    runtime = trt_fakes.cuda_runtime(trt)
    monkeypatch.setattr(cuda_mod, "_import_runtime", lambda: runtime)
    monkeypatch.setattr(cuda_mod, "_CUDA", None)
    trt._fake.network_factory = lambda: conv_net(trt)

    def build(builder, network, config):
        calibrator = config.int8_calibrator
        seen["calibrators"].append(calibrator)
        assert config.get_flag(trt.BuilderFlag.INT8) and calibrator.get_batch_size() == 1
        if calibrator.read_calibration_cache() is None:
            while True:
                pointers = calibrator.get_batch(["image"])
                if pointers is None:
                    break
                seen["batches"].append(trt._fake.device.read(pointers[0], np.float32, (1, 8, 16, 16)))
            calibrator.write_calibration_cache(CACHE)
        return trt_fakes.engine_bytes(network)

    trt._fake.build = build
    return seen


def batches_file(path, n=3, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {f"it{k}/image": rng.random((1, 8, 16, 16), dtype=np.float32) for k in range(n)}
    np.savez(path, **arrays)
    return [arrays[f"it{k}/image"] for k in range(n)]


@pytest.mark.parametrize("version", [V86, V10])
@pytest.mark.parametrize("algorithm,base", [("entropy", "IInt8EntropyCalibrator2"), ("minmax", "IInt8MinMaxCalibrator")])
def test_calibrator_serves_every_batch_and_writes_the_cache(monkeypatch, tmp_path, version, algorithm, base):
    trt = trt_fakes.fake_trt(version)
    seen = calibrating_world(monkeypatch, trt)
    data = tmp_path / "calib"
    data.mkdir()
    first = batches_file(data / "a.npz", 2, seed=1)
    second = batches_file(data / "b.npz", 1, seed=2)
    cache = tmp_path / "calib.cache"
    cfg = TrtBuildConfig(int8=True, calibration_data=data, calibrator=algorithm, calibration_cache=cache,
                         persistent_cache=False)
    model = conv_model()
    result = EngineBuilder(trt, model, ModelGraph(model), cfg, show_progress=False).build()
    assert isinstance(seen["calibrators"][0], getattr(trt, base))
    assert len(seen["batches"]) == 3  # every input set of every file, in file order
    for got, want in zip(seen["batches"], first + second):
        np.testing.assert_array_equal(got, want)
    assert cache.read_bytes() == CACHE and not list(tmp_path.glob("*.tmp*"))
    assert f"INT8 calibration ({algorithm}): 3 batch(es) from {data}" in result.notes
    assert "calibration: 3 batch(es) served, cache written" in result.notes
    assert not trt._fake.device.allocations and trt._fake.device.freed  # the batch buffers were freed
    # the second build reads the cache and calibrates nothing (no data needed)
    again = TrtBuildConfig(int8=True, calibration_cache=cache, persistent_cache=False)
    result = EngineBuilder(trt, model, ModelGraph(model), again, show_progress=False).build()
    assert len(seen["batches"]) == 3 and "calibration: 0 batch(es) served, cache read" in result.notes


@pytest.mark.parametrize("version", [V86, V10])
def test_a_batch_that_does_not_fit_the_network_is_refused_before_building(monkeypatch, tmp_path, version):
    trt = trt_fakes.fake_trt(version)
    seen = calibrating_world(monkeypatch, trt)
    np.savez(tmp_path / "bad.npz", image=np.zeros((1, 3, 16, 16), np.float32))
    cfg = TrtBuildConfig(int8=True, calibration_data=tmp_path / "bad.npz", persistent_cache=False)
    with pytest.raises(UsageError, match=r"calibration batch 0: input 'image' has shape \[1, 3, 16, 16\]"):
        EngineBuilder(trt, conv_model(), ModelGraph(conv_model()), cfg, show_progress=False).build()
    assert not seen["calibrators"]


def test_tensorrt_11_has_no_calibrators_and_says_what_to_do(monkeypatch, tmp_path):
    trt = trt_fakes.fake_trt(V11)
    assert not hasattr(trt, "IInt8EntropyCalibrator2") and not hasattr(trt, "IInt8Calibrator")
    calibrating_world(monkeypatch, trt)
    batches_file(tmp_path / "c.npz", 1)
    cfg = TrtBuildConfig(int8=True, calibration_data=tmp_path / "c.npz", persistent_cache=False)
    with pytest.raises(UsageError) as info:
        EngineBuilder(trt, conv_model(), ModelGraph(conv_model()), cfg, show_progress=False).build()
    msg = str(info.value)
    assert "no INT8 calibrators" in msg and "quantize_static" in msg and "--precision int8" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("args,fragment", [
    (["--trt", "--calibration-data", "{data}"], "--calibration-data calibrates INT8: add --int8"),
    (["--onnxrt", "--calibration-data", "{data}"], "TensorRT option(s) given without --trt"),
    (["--trt", "--int8", "--calibration-data", "{missing}"], "no such file or directory"),
    (["--trt", "--int8", "--calibration-cache", "{missing}"], "does not exist; give --calibration-data"),
    (["--trt", "--int8", "--calibration-data", "{data}", "--calibrator", "percentile"], "is not one of entropy, minmax"),
])
def test_cli_misuse(tmp_path, args, fragment):
    import onnx

    from trtdebug import zoo

    model = tmp_path / "m.onnx"
    onnx.save(zoo.conv_net(batch=1), model)
    data = tmp_path / "d.npz"
    np.savez(data, image=np.zeros((1, 3, 32, 32), np.float32))
    args = [a.format(data=data, missing=tmp_path / "missing.npz") for a in args]
    done = subprocess.run([str(SCRIPT), "run", str(model), *args], capture_output=True, timeout=120)
    err = done.stderr.decode("utf-8")
    assert done.returncode == 2 and fragment in err and "Traceback" not in err, err
