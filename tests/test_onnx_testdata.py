"""The ONNX test-data layout (test_data_set_N/input_K.pb, output_K.pb) as inputs and outputs."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from trtdebug import zoo
from trtdebug.errors import FeedError, OutputsFormatError
from trtdebug.inputs.io import load_inputs
from trtdebug.inputs.onnx_testdata import load_testdata_inputs, load_testdata_outputs
from trtdebug.model import ModelGraph
from trtdebug.results import load_outputs

TRTDEBUG = str(Path(sys.executable).with_name("trtdebug"))


def _write(folder: Path, kind: str, arrays, named=True):
    folder.mkdir(parents=True, exist_ok=True)
    for k, (name, a) in enumerate(arrays):
        (folder / f"{kind}_{k}.pb").write_bytes(numpy_helper.from_array(a, name if named else "").SerializeToString())


@pytest.fixture
def conv(tmp_path):
    """conv_net (batch 2) with two data sets of named inputs and ONNX Runtime's outputs."""
    import onnxruntime as ort

    model = zoo.conv_net(batch=2)
    onnx.save(model, tmp_path / "model.onnx")
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for i in range(2):
        x = rng.random((2, 3, 32, 32), np.float32)
        _write(tmp_path / f"test_data_set_{i}", "input", [("image", x)])
        _write(tmp_path / f"test_data_set_{i}", "output", [("probs", sess.run(None, {"image": x})[0])])
    return tmp_path


def test_data_sets_become_iterations(conv):
    feeds = load_inputs(conv)
    assert len(feeds) == 2 and list(feeds[0]) == ["image"] and feeds[0]["image"].shape == (2, 3, 32, 32)
    (result,) = load_outputs(conv).results
    assert len(result.iterations) == 2 and list(result.iterations[1]) == ["probs"]
    single = load_inputs(conv / "test_data_set_1")  # one data set folder alone
    np.testing.assert_array_equal(single[0]["image"], feeds[1]["image"])


def test_unnamed_tensors_take_the_model_names_by_position(tmp_path):
    model = zoo.conv_net(batch=2)
    _write(tmp_path / "test_data_set_0", "input", [("", np.zeros((2, 3, 32, 32), np.float32))], named=False)
    _write(tmp_path / "test_data_set_0", "output", [("", np.zeros((2, 10), np.float32))], named=False)
    assert list(load_testdata_inputs(tmp_path, model)[0]) == ["image"]
    assert list(load_testdata_outputs(tmp_path, ModelGraph(model))[0]) == ["probs"]
    with pytest.raises(FeedError, match="unnamed tensor; give the model"):
        load_testdata_inputs(tmp_path)


@pytest.mark.parametrize("damage, message", [
    ("garbage", "not a serialized ONNX TensorProto"),
    ("mixed", "mixes test_data_set_\\* folders with loose .pb files"),
    ("gap", "input_1.pb is missing"),
    ("duplicate", "two input files hold tensor 'image'"),
])
def test_malformed_test_data_is_one_clear_error(conv, damage, message):
    folder = conv / "test_data_set_0"
    if damage == "garbage":
        (folder / "input_0.pb").write_bytes(b"\xff\xff\xff not a proto")
    elif damage == "mixed":
        shutil.copy(folder / "input_0.pb", conv / "input_0.pb")
    elif damage == "gap":
        shutil.copy(folder / "input_0.pb", folder / "input_2.pb")
    else:
        shutil.copy(folder / "input_0.pb", folder / "input_1.pb")
    with pytest.raises(FeedError, match=message):
        load_inputs(conv)


def test_missing_outputs_is_an_outputs_error(conv):
    for f in (conv / "test_data_set_1").glob("output_*.pb"):
        f.unlink()
    with pytest.raises(OutputsFormatError, match="holds no output_"):
        load_outputs(conv)


def test_cli_compares_against_the_shipped_outputs(conv, tmp_path):
    report = tmp_path / "r.json"
    proc = subprocess.run([TRTDEBUG, "run", conv / "model.onnx", "--onnxrt", "--load-inputs", conv,
                           "--load-outputs", conv, "--atol", "1e-5", "--report", report], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    (comparison,) = json.loads(report.read_text())["comparisons"]
    assert comparison["reference"] == "onnx-testdata" and [t["name"] for t in comparison["tensors"]] == ["probs"]


def test_cli_bad_pb_is_exit_2_one_line(conv):
    (conv / "test_data_set_0" / "input_0.pb").write_bytes(b"\x08\x01\x08garbage")
    proc = subprocess.run([TRTDEBUG, "run", conv / "model.onnx", "--onnxrt", "--load-inputs", conv],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "input_0.pb" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
