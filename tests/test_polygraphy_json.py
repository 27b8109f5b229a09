"""Interop with Polygraphy's JSON files: files written by the real Polygraphy are read by our
code (and ours by Polygraphy); older encodings and unreadable content are covered by hand."""
from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest

from trtdebug.errors import FeedError, OutputsFormatError
from trtdebug.inputs import load_inputs, load_polygraphy_inputs, load_polygraphy_outputs, save_polygraphy_inputs
from trtdebug.inputs.polygraphy_json import decode_array, encode_array
from trtdebug.results import load_outputs


@pytest.fixture
def pg():
    """The installed Polygraphy's JSON and comparator modules (the test skips without them)."""
    json_mod = pytest.importorskip("polygraphy.json")
    comparator = pytest.importorskip("polygraphy.comparator")
    return json_mod, comparator


ARRAYS = {
    "logits": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4),
    "half/out:0": np.array([[1.5, -2.25]], dtype=np.float16),
    "ids": np.arange(5, dtype=np.int64),
    "mask": np.array([True, False, True]),
    "scalar": np.array(7.0, dtype=np.float64),
    "ünï": np.zeros((0, 2), dtype=np.uint8),
    "fortran": np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3)),
}


def iteration_arrays(k):
    return {name: np.asarray(arr + k if arr.dtype != np.bool_ else ~arr if k % 2 else arr) for name, arr in ARRAYS.items()}


def assert_same_arrays(got, expected):
    assert list(got) == list(expected)
    for name in expected:
        a, b = np.asarray(got[name]), np.asarray(expected[name])
        assert a.dtype == b.dtype and a.shape == b.shape, name
        np.testing.assert_array_equal(a, b)


def polygraphy_run_results(pg):
    """Two runners, the second twice under the same name, two iterations each."""
    _, comparator = pg
    results = comparator.RunResults()
    for runner, base_time in (("onnxrt-runner-N0", 0.25), ("trt-runner-N0", 1.5), ("trt-runner-N0", 2.5)):
        iterations = [comparator.IterationResult(iteration_arrays(k), runtime=base_time + k, runner_name=runner)
                      for k in range(2)]
        results.append((runner, iterations))
    return results


def check_results(results, pg_results):
    assert [r.runner for r in results] == [name for name, _ in pg_results]
    for ours, (_, theirs) in zip(results, pg_results):
        assert len(ours.iterations) == len(theirs)
        assert ours.runtimes == [it.runtime for it in theirs]
        for tensors, it in zip(ours.iterations, theirs):
            assert_same_arrays(tensors, dict(it.items()))


# -- outputs written by Polygraphy -------------------------------------------------------------

def test_outputs_written_by_polygraphy(pg, tmp_path):
    pg_results = polygraphy_run_results(pg)
    path = tmp_path / "outputs.json"
    pg_results.save(str(path))
    check_results(load_polygraphy_outputs(path), pg_results)
    loaded = load_outputs(path)
    check_results(loaded.results, pg_results)
    assert loaded.topology == {} and loaded.source == str(path)


def test_outputs_with_plain_arrays_via_save_json(pg, tmp_path):
    json_mod, comparator = pg
    path = tmp_path / "outputs.json"
    doc = {"lst": [["r", [{"outputs": ARRAYS, "runtime": 0.1, "runner_name": "r", "polygraphy_class": "IterationResult"}]]],
           "polygraphy_class": "RunResults"}
    json_mod.save_json(doc, str(path))
    assert isinstance(json_mod.load_json(str(path)), comparator.RunResults)  # Polygraphy agrees it is valid
    (result,) = load_polygraphy_outputs(path)
    assert_same_arrays(result.iterations[0], ARRAYS)


def test_outputs_directory_of_iterations(pg, tmp_path):
    """Polygraphy 0.53 writes one file per iteration for a path without an extension."""
    json_mod, comparator = pg
    pg_results = comparator.RunResults()
    for runner in ("onnxrt", "trt"):
        pg_results.append((runner, [comparator.IterationResult(iteration_arrays(k), runtime=float(k), runner_name=runner)
                                    for k in range(3)]))
    out_dir = tmp_path / "outs"
    out_dir.mkdir()
    for k, single in enumerate(pg_results.split()):
        json_mod.save_json(single, str(out_dir / f"{k:010d}.json"))
    check_results(load_polygraphy_outputs(out_dir), pg_results)
    check_results(load_outputs(out_dir).results, pg_results)


# -- inputs ------------------------------------------------------------------------------------

def test_inputs_written_by_polygraphy(pg, tmp_path):
    json_mod, _ = pg
    feeds = [iteration_arrays(k) for k in range(3)]
    path = tmp_path / "inputs.json"
    json_mod.save_json(feeds, str(path))
    for got in (load_polygraphy_inputs(path), load_inputs(path)):
        assert len(got) == 3
        for g, f in zip(got, feeds):
            assert_same_arrays(g, f)


def test_single_feed_file_and_directory(pg, tmp_path):
    json_mod, _ = pg
    d = tmp_path / "feeds"
    d.mkdir()
    json_mod.save_json(iteration_arrays(0), str(d / "0000000000.json"))  # a single feed
    json_mod.save_json([iteration_arrays(1), iteration_arrays(2)], str(d / "0000000001.json"))
    got = load_inputs(d)
    assert len(got) == 3
    for k, g in enumerate(got):
        assert_same_arrays(g, iteration_arrays(k))


def test_our_inputs_read_by_polygraphy(pg, tmp_path):
    json_mod, _ = pg
    feeds = [iteration_arrays(k) for k in range(2)]
    path = save_polygraphy_inputs(tmp_path / "in.json", feeds)
    theirs = json_mod.load_json(str(path))
    assert isinstance(theirs, list) and len(theirs) == 2
    for t, f in zip(theirs, feeds):
        assert_same_arrays(t, f)
    for g, f in zip(load_polygraphy_inputs(path), feeds):
        assert_same_arrays(g, f)
    assert [p.name for p in tmp_path.iterdir()] == ["in.json"]


def test_encode_array_matches_polygraphy(pg):
    json_mod, _ = pg
    for arr in ARRAYS.values():
        ours = json.dumps(encode_array(arr))
        theirs = json.loads(json_mod.to_json(arr))
        assert json.loads(ours) == theirs
        np.testing.assert_array_equal(decode_array(theirs), arr)


# -- older encodings (hand-built; the installed Polygraphy must read them the same way) -----------

def npy_bytes(arr):
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def npz_bytes(arr):
    buf = io.BytesIO()
    np.savez(buf, arr)
    return buf.getvalue()


ARR = np.arange(6, dtype=np.float32).reshape(2, 3)
LEGACY_ARRAYS = {
    "legacy marker": {"array": base64.b64encode(npy_bytes(ARR)).decode(),
                      "__polygraphy_encoded_ndarray": "polygraphy_serialized_json_type"},
    "latin-1 payload": {"array": npy_bytes(ARR).decode("latin-1"), "polygraphy_class": "ndarray"},
    "npz payload": {"array": base64.b64encode(npz_bytes(ARR)).decode(), "polygraphy_class": "ndarray"},
}


@pytest.mark.parametrize("kind", sorted(LEGACY_ARRAYS))
def test_legacy_array_encodings(kind, tmp_path):
    np.testing.assert_array_equal(decode_array(LEGACY_ARRAYS[kind]), ARR)
    path = tmp_path / "in.json"
    path.write_text(json.dumps([{"x": LEGACY_ARRAYS[kind]}]))
    np.testing.assert_array_equal(load_polygraphy_inputs(path)[0]["x"], ARR)


def legacy_outputs_doc(lazy_class):
    it = {"outputs": {"y": {"values": LEGACY_ARRAYS["legacy marker"], **lazy_class}},
          "runtime": 0.5, "runner_name": "old", "__polygraphy_encoded_IterationResult": "polygraphy_serialized_json_type"}
    return {"lst": [["old", [it]]], "__polygraphy_encoded_RunResults": "polygraphy_serialized_json_type"}


@pytest.mark.parametrize("lazy_class", [{"polygraphy_class": "LazyNumpyArray"},
                                        {"__polygraphy_encoded_LazyNumpyArray": "polygraphy_serialized_json_type"},
                                        {"polygraphy_class": "LazyArray"}])
def test_legacy_outputs(lazy_class, tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps(legacy_outputs_doc(lazy_class)))
    (result,) = load_polygraphy_outputs(path)
    assert result.runner == "old" and result.runtimes == [0.5]
    np.testing.assert_array_equal(result.iterations[0]["y"], ARR)


def test_polygraphy_reads_the_legacy_documents_alike(pg, tmp_path):
    json_mod, _ = pg
    for kind, enc in LEGACY_ARRAYS.items():
        np.testing.assert_array_equal(json_mod.from_json(json.dumps(enc)), ARR, err_msg=kind)
    theirs = json_mod.from_json(json.dumps(legacy_outputs_doc({"polygraphy_class": "LazyNumpyArray"})))
    np.testing.assert_array_equal(theirs["old"][0]["y"], ARR)


# -- unreadable files ----------------------------------------------------------------------------

def outputs_doc(array_obj):
    return {"lst": [["r", [{"outputs": {"y": array_obj}, "runtime": 1.0, "runner_name": "r",
                             "polygraphy_class": "IterationResult"}]]], "polygraphy_class": "RunResults"}


def pickled_payload():
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    return {"array": base64.b64encode(buf.getvalue()).decode(), "polygraphy_class": "ndarray"}


@pytest.mark.parametrize("content,expected", [
    (json.dumps(outputs_doc({"tensor": "AAAA", "polygraphy_class": "Tensor"})), "torch.Tensor"),
    (json.dumps(outputs_doc({"x": 1, "polygraphy_class": "FormattedArray"})), "FormattedArray"),
    (json.dumps(outputs_doc(pickled_payload())), "Object arrays cannot be loaded"),
    (json.dumps(outputs_doc({"array": "QUJD", "polygraphy_class": "ndarray"})), "not .npy data"),
    (json.dumps(outputs_doc({"array": base64.b64encode(npy_bytes(ARR)[:-4]).decode(), "polygraphy_class": "ndarray"})),
     "cannot be read"),
    (json.dumps(outputs_doc({"array": "\u20ac", "polygraphy_class": "ndarray"})), "neither base64 nor latin-1"),
    (json.dumps(outputs_doc({"polygraphy_class": "ndarray"})), "no 'array'"),
    (json.dumps(outputs_doc({"values": [1, 2], "polygraphy_class": "LazyArray"})), "expected an array in 'values'"),
    (json.dumps({"lst": [["r", [{"runtime": 1, "polygraphy_class": "IterationResult"}]]], "polygraphy_class": "RunResults"}), "no 'outputs'"),
    (json.dumps([{"x": encode_array(ARR)}]), "not a Polygraphy RunResults file"),
    (json.dumps({"lst": [["r", "nope"]], "polygraphy_class": "RunResults"}), "not a Polygraphy RunResults file"),
    ("{\"lst\": [", "not a JSON file"),
    ("\udcff", "not a JSON file"),
])
def test_unreadable_outputs(tmp_path, content, expected):
    path = tmp_path / "outputs.json"
    if content == "\udcff":
        path.write_bytes(b"\xff\xfe\x00garbage")
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(OutputsFormatError, match=expected) as info:
        load_polygraphy_outputs(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_outputs_and_empty_directory(tmp_path):
    with pytest.raises(OutputsFormatError, match="not found"):
        load_polygraphy_outputs(tmp_path / "nope.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(OutputsFormatError, match="without Polygraphy"):
        load_polygraphy_outputs(tmp_path / "empty")


@pytest.mark.parametrize("content", [json.dumps(outputs_doc(encode_array(ARR))), json.dumps([{"x": [1, 2]}]),
                                     json.dumps({"x": {"tensor": "AA", "polygraphy_class": "Tensor"}}), "[", "[]"])
def test_unreadable_inputs(tmp_path, content):
    path = tmp_path / "in.json"
    path.write_text(content)
    with pytest.raises(FeedError) as info:
        load_inputs(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
