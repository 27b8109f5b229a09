"""``trtdebug surgeon sanitize|extract`` through the installed console script, checked in ONNX Runtime."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from trtdebug import zoo
from trtdebug.model import save_model


def trtdebug(*args) -> subprocess.CompletedProcess:
    script = Path(sys.executable).parent / "trtdebug"
    exe = str(script) if script.exists() else shutil.which("trtdebug")
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=300)


def run(path, feeds, outputs=None):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(outputs, feeds)))


def _one_line_error(proc, code=2):
    assert proc.returncode == code, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    return proc.stderr


def exported_transformer():
    """The zoo transformer (dynamic B and S) as exporters write it: each Reshape's target shape computed at run
    time from the input's (Shape -> Slice -> Concat), and the output projection's weight transposed by a node."""
    from onnx import helper, numpy_helper

    model = zoo.transformer(seed=4)
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    nodes = []
    g.initializer.extend([numpy_helper.from_array(np.array([0], np.int64), "surgeon.start"),
                          numpy_helper.from_array(np.array([2], np.int64), "surgeon.end")])
    for i, node in enumerate(g.node):
        if node.op_type == "Reshape" and node.input[1] in inits:
            target = numpy_helper.to_array(inits[node.input[1]])
            tail = numpy_helper.from_array(target[2:].astype(np.int64), f"{node.name}.tail")
            g.initializer.append(tail)
            nodes += [helper.make_node("Shape", [node.input[0]], [f"{node.name}/shape"], name=f"{node.name}/Shape"),
                      helper.make_node("Slice", [f"{node.name}/shape", "surgeon.start", "surgeon.end"], [f"{node.name}/bs"],
                                       name=f"{node.name}/Slice"),
                      helper.make_node("Concat", [f"{node.name}/bs", tail.name], [f"{node.name}/target"],
                                       name=f"{node.name}/Concat", axis=0)]
            node.input[1] = f"{node.name}/target"
        if node.op_type == "MatMul" and node.input[1] == "block0.attn.out.weight":
            w = numpy_helper.to_array(inits[node.input[1]])
            inits[node.input[1]].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(w.T), node.input[1]))
            nodes.append(helper.make_node("Transpose", [node.input[1]], [f"{node.name}/wt"], name=f"{node.name}/weight_t"))
            node.input[1] = f"{node.name}/wt"
        nodes.append(node)
    del g.node[:]
    g.node.extend(nodes)
    return model


@pytest.fixture(scope="module")
def transformer(tmp_path_factory):
    d = tmp_path_factory.mktemp("surgeon")
    return save_model(exported_transformer(), d / "transformer.onnx")


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).standard_normal((2, 16, 64)).astype(np.float32)


def test_sanitize_folds_the_shape_arithmetic_and_freezes_shapes(transformer, x, tmp_path):
    out = tmp_path / "s.onnx"
    proc = trtdebug("surgeon", "sanitize", transformer, "-o", out, "--input-shapes", "x:[2,16,64]")
    assert proc.returncode == 0, proc.stderr
    before, after = onnx.load(str(transformer)), onnx.load(str(out))
    assert len(after.graph.node) < len(before.graph.node)
    assert not {"Shape", "Slice", "Concat"} & {n.op_type for n in after.graph.node}  # folded with the frozen shapes
    assert "block0/out_proj/weight_t" not in {n.name for n in after.graph.node}  # weight preprocessing folded
    assert [d.dim_value for d in after.graph.input[0].type.tensor_type.shape.dim] == [2, 16, 64]
    assert f"wrote {out}" in proc.stdout and "folded or removed" in proc.stderr
    np.testing.assert_allclose(run(out, {"x": x})["y"], run(transformer, {"x": x})["y"], rtol=1e-5, atol=1e-5)
    kept = tmp_path / "nofold.onnx"
    assert trtdebug("surgeon", "sanitize", transformer, "-o", kept, "--no-fold").returncode == 0
    assert {"Shape", "Transpose"} <= {n.op_type for n in onnx.load(str(kept)).graph.node}


def test_sanitize_never_overwrites_its_input_and_names_unknown_inputs(transformer, tmp_path):
    original = transformer.read_bytes()
    assert "it is one of the inputs" in _one_line_error(trtdebug("surgeon", "sanitize", transformer, "-o", transformer))
    assert transformer.read_bytes() == original
    err = _one_line_error(trtdebug("surgeon", "sanitize", transformer, "-o", tmp_path / "o.onnx", "--input-shapes", "X:[2,16,64]"))
    assert "'X' is not an input of the model (did you mean 'x'?)" in err
    assert not (tmp_path / "o.onnx").exists()


def test_extract_an_attention_core_that_runs_in_onnxruntime(transformer, x, tmp_path):
    """Cut at intermediate tensors: the piece gets the whole model's values for the same inputs."""
    ln, q, k = "block0/ln1_out", "block0/q_transpose_out", "block0/k_transpose_out"
    out = tmp_path / "qk.onnx"
    proc = trtdebug("surgeon", "extract", transformer, "--inputs", ln, "--outputs", f"{q},{k}", "-o", out)
    assert proc.returncode == 0, proc.stderr
    piece = onnx.load(str(out))
    assert [i.name for i in piece.graph.input] == [ln] and [o.name for o in piece.graph.output] == [q, k]
    assert {n.name.split("/")[1] for n in piece.graph.node} == {  # q and k paths only, with their shape arithmetic
        "q_proj", "q_bias", "q_reshape", "q_transpose", "k_proj", "k_bias", "k_reshape", "k_transpose"}
    from trtdebug.model.surgery import OutputSelection, mark_outputs

    full = tmp_path / "marked.onnx"
    save_model(mark_outputs(onnx.load(str(transformer)), OutputSelection(names=(ln, q, k))), full)
    truth = run(full, {"x": x})
    got = run(out, {ln: truth[ln]})
    np.testing.assert_allclose(got[q], truth[q], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got[k], truth[k], rtol=1e-6, atol=1e-6)


def test_extract_shapes_from_inference_or_input_shapes(transformer, tmp_path):
    ln, q = "block0/ln1_out", "block0/q_proj_out"
    dynamic = tmp_path / "d.onnx"
    proc = trtdebug("surgeon", "extract", transformer, "--inputs", ln, "--outputs", q, "-o", dynamic)
    assert proc.returncode == 0 and "keep a dynamic or unknown shape" in proc.stderr
    assert [d.dim_param or d.dim_value for d in onnx.load(str(dynamic)).graph.input[0].type.tensor_type.shape.dim] == ["B", "S", 64]
    for flag in (f"{ln}:[1,8,64]", "x:[1,8,64]"):  # the cut's own input, or the graph input shapes propagate from
        static = tmp_path / "s.onnx"
        proc = trtdebug("surgeon", "extract", transformer, "--inputs", ln, "--outputs", q, "-o", static, "--input-shapes", flag)
        assert proc.returncode == 0, proc.stderr
        piece = onnx.load(str(static))
        assert [d.dim_value for d in piece.graph.input[0].type.tensor_type.shape.dim] == [1, 8, 64]
        assert run(static, {ln: np.ones((1, 8, 64), np.float32)})[q].shape == (1, 8, 64)


def test_extract_misuse_is_one_line(transformer, tmp_path):
    out = tmp_path / "o.onnx"
    err = _one_line_error(trtdebug("surgeon", "extract", transformer, "--inputs", "block0/ln1_ot", "--outputs", "y", "-o", out))
    assert "--inputs: 'block0/ln1_ot' is not a tensor of the model (did you mean 'block0/ln1_out'?)" in err
    err = _one_line_error(trtdebug("surgeon", "extract", transformer, "--inputs", "block0/q_proj_out", "--outputs", "y", "-o", out))
    assert "needs 'x'" in err and "add it to --inputs" in err
    err = _one_line_error(trtdebug("surgeon", "extract", transformer, "--inputs", "x", "--outputs", "y", "-o", out,
                                   "--input-shapes", "block0/ln1_out:[1,8,64]"))
    assert "is not a graph input or an --inputs tensor" in err
    assert "it is one of the inputs" in _one_line_error(trtdebug("surgeon", "extract", transformer, "--inputs", "x",
                                                                 "--outputs", "y", "-o", transformer))
    assert not out.exists()


def _checksums(folder: Path) -> dict:
    import hashlib

    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def test_extract_from_external_data_copies_only_the_kept_weights(x, tmp_path, monkeypatch):
    """A model with external data: loaded as references (never all weights in memory), the piece's
    weights copied into OUT.data; the user's files untouched; the piece computes the model's values."""
    from trtdebug.debug.surgeon import extract_model

    user = tmp_path / "user"
    user.mkdir()
    onnx.save(exported_transformer(), user / "t.onnx", save_as_external_data=True, location="t.weights",
              size_threshold=1024)
    before = _checksums(user)
    ln, q = "block0/ln1_out", "block0/q_proj_out"

    def no_full_load(*a, **k):
        raise AssertionError("the external data were loaded into memory")

    monkeypatch.setattr(onnx.external_data_helper, "load_external_data_for_model", no_full_load)
    monkeypatch.setattr(onnx, "load_external_data_for_model", no_full_load)
    out = tmp_path / "piece" / "q.onnx"
    out.parent.mkdir()
    result = extract_model(user / "t.onnx", out, inputs=[ln], outputs=[q])
    monkeypatch.undo()
    assert result.path == out and (out.parent / "q.onnx.data").exists()
    piece = onnx.load(str(out), load_external_data=False)
    kept = {t.name for t in piece.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL}
    assert kept == {"block0.attn.q.weight"}  # the bias is under the 1 KiB threshold and stays inline
    assert (out.parent / "q.onnx.data").stat().st_size == 64 * 64 * 4
    assert _checksums(user) == before
    from trtdebug.model.surgery import OutputSelection, mark_outputs

    truth = run(save_model(mark_outputs(exported_transformer(), OutputSelection(names=(ln, q))), tmp_path / "m.onnx"),
                {"x": x})
    np.testing.assert_array_equal(run(out, {ln: truth[ln]})[q], truth[q])
