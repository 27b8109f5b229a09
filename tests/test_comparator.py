"""The comparator over RunResults, and tolerance parsing."""
from __future__ import annotations

import numpy as np
import pytest

from trtdebug.comparison import Tolerances, compare_runs, parse_tolerance_args
from trtdebug.errors import UsageError
from trtdebug.results import RunResult, TensorSet

RNG = np.random.default_rng(0)


def _run(name, *iterations):
    return RunResult(runner=name, iterations=[TensorSet(it) for it in iterations])


def _arr(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _topology(*names, outputs=()):
    return {n: {"producer": f"node_{n}", "producer_op": "Conv", "topo_index": i, "is_graph_output": n in outputs}
            for i, n in enumerate(names)}


def test_topological_order_and_first_failing():
    a, b, c, z = _arr(2, 3), _arr(2, 3), _arr(2, 3), _arr(4)
    # the reference lists tensors out of order; "z" is unknown to the topology
    ref = _run("reference", {"z": z, "c": c, "a": a, "b": b})
    test = _run("trt", {"z": z, "c": c + 1.0, "a": a, "b": b + 0.5})
    cmp = compare_runs(ref, test, tolerances=Tolerances(), topology=_topology("a", "b", "c", outputs=("c",)))
    assert [t.name for t in cmp.tensors] == ["a", "b", "c", "z"]
    assert cmp.first_failing.name == "b"
    assert cmp.first_failing.producer == "node_b" and cmp.first_failing.producer_op == "Conv"
    assert [t.topo_index for t in cmp.tensors] == [0, 1, 2, None]
    assert [t.is_graph_output for t in cmp.tensors] == [False, False, True, None]
    assert not cmp.passed
    summary = cmp.summary()
    assert summary["tensors"] == 4 and summary["failed"] == 2
    assert (summary["graph_outputs"], summary["graph_outputs_failed"]) == (1, 1)
    assert (summary["intermediates"], summary["intermediates_failed"]) == (2, 1)


def test_without_topology_keeps_reference_order():
    x, y = _arr(3), _arr(3)
    cmp = compare_runs(_run("ref", {"y": y, "x": x}), _run("ort", {"x": x, "y": y + 1}))
    assert [t.name for t in cmp.tensors] == ["y", "x"]
    assert cmp.first_failing.name == "y" and cmp.first_failing.producer is None


def test_names_on_one_side_only():
    x = _arr(3)
    ref = _run("ref", {"x": x, "fused_away": x})
    test = _run("trt", {"x": x, "trt_internal": x})
    cmp = compare_runs(ref, test, topology=_topology("x", "fused_away", outputs=("fused_away",)))
    assert [t.name for t in cmp.tensors] == ["x"]
    assert cmp.only_in_reference == ["fused_away"] and cmp.only_in_test == ["trt_internal"]
    assert cmp.passed
    assert any("fused_away" in w for w in cmp.warnings)  # a graph output missing from the test is worth a warning


def test_nothing_in_common_does_not_pass():
    cmp = compare_runs(_run("ref", {"a": _arr(2)}), _run("trt", {"b": _arr(2)}))
    assert not cmp.passed and cmp.tensors == [] and cmp.warnings


def test_per_tensor_tolerance_override():
    a, b = _arr(4), _arr(4)
    ref = _run("ref", {"a": a, "b": b})
    test = _run("trt", {"a": a + 1e-2, "b": b + 1e-2})
    cmp = compare_runs(ref, test, tolerances=Tolerances(per_tensor_atol={"b": 2e-2}))
    by_name = {t.name: t for t in cmp.tensors}
    assert not by_name["a"].passed and by_name["b"].passed
    assert by_name["b"].stats.atol == 2e-2 and by_name["a"].stats.atol == 1e-5


def test_worst_iteration_is_kept():
    a = _arr(2, 2)
    ref = _run("ref", {"a": a}, {"a": a}, {"a": a})
    test = _run("trt", {"a": a + 1e-3}, {"a": a + 1e-1}, {"a": a + 1e-2})
    t = compare_runs(ref, test).tensors[0]
    assert t.iteration == 1
    assert t.stats.max_abs == pytest.approx(1e-1, rel=1e-5)


def test_a_failing_iteration_beats_passing_ones():
    a = _arr(3)
    ref = _run("ref", {"a": a}, {"a": a})
    test = _run("trt", {"a": a}, {"a": np.where(np.arange(3) == 0, np.nan, a).astype(np.float32)})
    t = compare_runs(ref, test).tensors[0]
    assert t.iteration == 1 and not t.passed


def test_iteration_count_mismatch_warns_and_compares_the_common_ones():
    a = _arr(2)
    cmp = compare_runs(_run("ref", {"a": a}, {"a": a}), _run("trt", {"a": a}))
    assert cmp.iterations == 1 and cmp.passed
    assert any("iterations" in w for w in cmp.warnings)


def test_memory_mapped_tensor_sets(tmp_path):
    arrays = {"x:0": _arr(8, 16), "y/out": _arr(8, 16)}
    perturbed = {"x:0": arrays["x:0"], "y/out": arrays["y/out"] + 1e-2}
    sets = {}
    for runner, data in (("ref", arrays), ("trt", perturbed)):
        (tmp_path / runner).mkdir()
        ts = TensorSet(root=lambda: tmp_path)
        for i, (name, arr) in enumerate(data.items()):
            np.save(tmp_path / runner / f"t{i}.npy", arr)
            ts.set_file(name, f"{runner}/t{i}.npy")
        sets[runner] = RunResult(runner=runner, iterations=[ts])
    assert isinstance(sets["ref"].iterations[0]["x:0"], np.memmap)
    from_disk = compare_runs(sets["ref"], sets["trt"])
    in_memory = compare_runs(_run("ref", arrays), _run("trt", perturbed))
    assert [t.name for t in from_disk.tensors] == ["x:0", "y/out"]
    assert from_disk.first_failing.name == "y/out"
    for d, m in zip(from_disk.tensors, in_memory.tensors):
        assert (d.stats.max_abs, d.stats.median_abs, d.stats.failing) == (m.stats.max_abs, m.stats.median_abs, m.stats.failing)


def test_progress_callback():
    calls = []
    x = _arr(2)
    compare_runs(_run("ref", {"a": x, "b": x}), _run("trt", {"a": x, "b": x}), progress=lambda *a: calls.append(a))
    assert calls == [(1, 2, "a"), (2, 2, "b")]


def test_check_error_stat_reaches_the_metrics():
    ref = np.ones(4)
    test = np.array([3.0, 1.0, 1.0, 1.0])
    tol = Tolerances(atol=0.25, rtol=0.25, check_error_stat="mean")
    assert compare_runs(_run("ref", {"a": ref}), _run("trt", {"a": test}), tolerances=tol).passed
    assert not compare_runs(_run("ref", {"a": ref}), _run("trt", {"a": test}), tolerances=Tolerances(atol=0.25, rtol=0.25)).passed


# --- tolerances ---

def test_parse_tolerance_args():
    assert parse_tolerance_args([]) == (None, {})
    glob, per = parse_tolerance_args(["1e-3", "out0:1e-2", "scope/x:0:5e-4"])
    assert glob == 1e-3
    assert per == {"out0": 1e-2, "scope/x:0": 5e-4}  # split on the last ':'


@pytest.mark.parametrize("bad", ["abc", "out0:abc", "out0:", ":1e-3", "-1", "nan", "out:inf"])
def test_parse_tolerance_args_rejects(bad):
    with pytest.raises(UsageError) as info:
        parse_tolerance_args([bad], "--rtol")
    assert "--rtol" in str(info.value) and "\n" not in str(info.value)


def test_tolerances_from_cli_and_for_tensor():
    tol = Tolerances.from_cli(["1e-3", "a:0.5"], ["b:0.25"], check_error_stat="median")
    assert tol.for_tensor("a") == (0.5, 1e-5)
    assert tol.for_tensor("b") == (1e-3, 0.25)
    assert tol.for_tensor("c") == (1e-3, 1e-5)
    assert tol.check_error_stat == "median"


def test_tolerances_validation():
    with pytest.raises(UsageError):
        Tolerances(check_error_stat="p50")
    with pytest.raises(UsageError):
        Tolerances(error_quantile=1.5)
    with pytest.raises(UsageError):
        Tolerances(atol=-1.0)


def test_thread_count_does_not_change_results():
    names = [f"t{i}" for i in range(20)]
    ref = {n: _arr(5, 7) for n in names}
    test = {n: a + np.float32(i * 1e-4) for i, (n, a) in enumerate(ref.items())}
    runs = (_run("ref", ref), _run("trt", test))
    serial = compare_runs(*runs, workers=1)
    threaded = compare_runs(*runs, workers=3)
    assert [t.name for t in threaded.tensors] == names
    assert [(t.stats.max_abs, t.stats.p99_rel, t.passed) for t in serial.tensors] == \
        [(t.stats.max_abs, t.stats.p99_rel, t.passed) for t in threaded.tensors]
