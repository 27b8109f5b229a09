"""ModelGraph answers name lookups from dictionaries, never by scanning its node list."""
import time

from onnx import TensorProto, helper

from trtdebug import zoo
from trtdebug.model import ModelGraph


class _NoScan(list):
    def __iter__(self):
        raise AssertionError("a lookup scanned the node list")


def test_lookups_do_not_scan_the_nodes():
    graph = ModelGraph(zoo.transformer())
    names = list(graph.node_names)
    expected = {n: graph.node(n) for n in names}
    graph.nodes = _NoScan(graph.nodes)
    for name in names:
        assert graph.node(name) is expected[name]
    for name in graph.tensor_order:
        assert graph.tensor(name).name == name and name in graph and graph.get(name) is not None
        assert graph.topo_index(name) == graph.tensor(name).topo_index
    assert graph.node_names == names


def test_lookups_stay_fast_on_a_long_chain():
    n = 20000
    nodes = [helper.make_node("Relu", [f"t{i}"], [f"t{i + 1}"], name=f"relu{i}") for i in range(n)]
    model = helper.make_model(helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info(f"t{n}", TensorProto.FLOAT, [4])]))
    graph = ModelGraph(model)
    start = time.perf_counter()
    assert all(graph.node(f"relu{i}").output[0] == f"t{i + 1}" for i in range(n))
    assert time.perf_counter() - start < 1.0  # a scan per lookup takes minutes here


def test_first_node_of_a_duplicated_name_wins():
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="dup"), helper.make_node("Neg", ["a"], ["y"], name="dup")]
    model = helper.make_model(helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])]))
    assert ModelGraph(model).node("dup").op_type == "Relu"
