"""save_model with external data leaves the caller's ModelProto as it was, and writes a model that loads back equal.

onnx's own external-data save empties the weights of the model it is given; the runners, the
TensorRT builder and the capability check reuse that object after a save (models over 2 GiB).
"""
import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from trtdebug import zoo
from trtdebug.model import load_model, save_model
from trtdebug.model.loader import model_bytes_or_path


def _weights(model):
    return {t.name: numpy_helper.to_array(t).tobytes() for t in model.graph.initializer}


def _with_subgraph_weight(model):
    """An If whose branch holds a 4 KiB initializer: onnx externalizes subgraph initializers too."""
    big = numpy_helper.from_array(np.arange(1024, dtype=np.float32), "branch_w")
    then_g = helper.make_graph([helper.make_node("Identity", ["branch_w"], ["bw"])], "then", [],
                               [helper.make_tensor_value_info("bw", onnx.TensorProto.FLOAT, [1024])], [big])
    else_g = helper.make_graph([helper.make_node("Identity", ["branch_w"], ["bw2"])], "else", [],
                               [helper.make_tensor_value_info("bw2", onnx.TensorProto.FLOAT, [1024])], [big])
    model.graph.initializer.append(numpy_helper.from_array(np.array(True), "cond"))
    model.graph.node.append(helper.make_node("If", ["cond"], ["branch_out"], then_branch=then_g, else_branch=else_g, name="if0"))
    model.graph.output.append(helper.make_tensor_value_info("branch_out", onnx.TensorProto.FLOAT, [1024]))
    return model


def test_external_data_save_keeps_the_callers_model(tmp_path):
    model = _with_subgraph_weight(zoo.transformer(hidden=256, heads=4))  # holds 1 MiB tensors: aligned path
    before, weights = model.SerializeToString(), _weights(model)
    assert any(len(w) >= 1 << 20 for w in weights.values())
    path = save_model(model, tmp_path / "m.onnx", external_data=True)
    assert model.SerializeToString() == before  # nothing moved out, nothing marked external

    on_disk = onnx.load(str(path), load_external_data=False)
    external = [t for t in on_disk.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert external and all(not t.raw_data for t in external)
    assert path.stat().st_size < 100_000 and (tmp_path / "m.onnx.data").stat().st_size >= sum(map(len, weights.values()))

    loaded = load_model(path, infer_shapes=False)
    assert _weights(loaded) == weights
    branch = next(n for n in loaded.graph.node if n.op_type == "If").attribute[0].g.initializer[0]
    assert numpy_helper.to_array(branch).tolist() == list(range(1024))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]  # no temporary left

    size = (tmp_path / "m.onnx.data").stat().st_size
    save_model(model, path, external_data=True)  # again: the data file is replaced, not appended to
    assert (tmp_path / "m.onnx.data").stat().st_size == size
    assert _weights(load_model(path, infer_shapes=False)) == weights


def test_a_failed_save_restores_the_model_and_leaves_nothing(tmp_path, monkeypatch):
    model = zoo.conv_net(batch=1)
    before = model.SerializeToString()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(onnx, "save_model", broken)
    with pytest.raises(OSError, match="disk full"):
        save_model(model, tmp_path / "m.onnx", external_data=True)
    assert model.SerializeToString() == before
    assert list(tmp_path.iterdir()) == []


def test_model_bytes_or_path_small_model_is_bytes(tmp_path):
    model = zoo.conv_net(batch=1)
    assert model_bytes_or_path(model, tmp_path) == model.SerializeToString()
