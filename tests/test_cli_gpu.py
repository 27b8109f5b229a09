"""`trtdebug run --trt` end to end on the GPU, as a user runs it (device machine: pytest -m gpu)."""
import json
import subprocess
import sys

import onnx
import pytest

from trtdebug import zoo
from trtdebug.model import ModelGraph

pytestmark = pytest.mark.gpu

FAST = ["--builder-optimization-level", "0"]


def trtdebug(*args):
    proc = subprocess.run([sys.executable, "-m", "trtdebug", *map(str, args)], capture_output=True, text=True, encoding="utf-8", timeout=600)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_gpu")
    onnx.save(zoo.transformer(), d / "transformer.onnx")
    onnx.save(zoo.conv_net(batch=2), d / "conv.onnx")  # static: dynamic shapes make TensorRT 8.6 fuse it whole
    return d


def test_mark_all_fp32_transformer_passes_and_saves_engine(work):
    proc = trtdebug("run", work / "transformer.onnx", "--trt", "--onnxrt", "--mark-all", "--input-shapes", "x:[2,16,64]",
                    "--no-tf32", *FAST, "--atol", "1e-4", "--rtol", "1e-3", "--report", work / "fp32.json",
                    "--save-engine", work / "t.engine", "--save-inputs", work / "in.npz", "--save-outputs", work / "fp32_out")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    comp = json.loads((work / "fp32.json").read_text())["comparisons"][0]
    names = {t["name"] for t in comp["tensors"]}
    graph = ModelGraph(zoo.transformer())
    assert names <= set(graph.tensor_order) and "block0/softmax_out" in names and "y" in names
    assert len(names) >= 25  # nearly every tensor of the block (TensorRT may refuse a few; they are listed)
    assert (work / "t.engine").stat().st_size > 0


def test_saved_engine_runs_against_saved_onnxrt_outputs(work):
    proc = trtdebug("run", work / "t.engine", "--trt", "--load-inputs", work / "in.npz", "--load-outputs", work / "fp32_out",
                    "--atol", "1e-4", "--rtol", "1e-3", "--report", work / "engine.json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    comps = json.loads((work / "engine.json").read_text())["comparisons"]
    assert comps[0]["reference"] == "onnxrt" and len(comps[0]["tensors"]) >= 25


def test_inspect_engine_names_onnx_nodes(work):
    proc = trtdebug("inspect", "engine", work / "t.engine", "--model", work / "transformer.onnx", "--json", work / "eng.json")
    assert proc.returncode == 0, proc.stderr
    text = (work / "eng.json").read_text()
    assert "block0/" in text


def test_fp16_mark_all_builds_and_names_first_failing_onnx_tensor(work):
    proc = trtdebug("run", work / "transformer.onnx", "--trt", "--onnxrt", "--mark-all", "--fp16", "--input-shapes",
                    "x:[2,16,64]", *FAST, "--atol", "1e-6", "--rtol", "1e-6", "--report", work / "fp16.json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    comp = json.loads((work / "fp16.json").read_text())["comparisons"][0]
    graph = ModelGraph(zoo.transformer())
    assert comp["first_failing"] in graph.tensor_order
    assert len(comp["tensors"]) >= 20
    assert "first failing" in proc.stdout


def test_fused_boundaries_compares_fewer_tensors_and_keeps_fusion(work):
    proc = trtdebug("run", work / "conv.onnx", "--trt", "--onnxrt", "--fused-boundaries", "--no-tf32", *FAST, "--atol", "1e-4", "--rtol", "1e-3", "--report", work / "fb.json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((work / "fb.json").read_text())
    tensors = data["comparisons"][0]["tensors"]
    assert 1 < len(tensors) < len(ModelGraph(zoo.conv_net()).tensor_order) - 1
    assert "probs" in {t["name"] for t in tensors}


def test_parse_failure_is_exit_3_with_node_name(work):
    m = onnx.parser.parse_model(
        """<ir_version: 8, opset_import: ["" : 17, "com.example" : 1]>
        g (float[2,4] x) => (float[2,4] y) { a = Relu(x)  y = com.example.Mystery <domain_attr = 1> (a) }"""
    )
    m.graph.node[1].name = "my_mystery_node"
    onnx.save(m, work / "custom.onnx")
    proc = trtdebug("run", work / "custom.onnx", "--trt")
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "my_mystery_node" in lines[0] and "Mystery" in lines[0], proc.stderr
