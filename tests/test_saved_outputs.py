"""Saved outputs: never clobber the user's files, never trust index.json, record the inputs a run saw.

Library tests drive ``trtdebug.api.run_runners`` with a small fake runner; the CLI tests run the
installed ``trtdebug`` console script on a real model with ONNX Runtime, like a user.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from trtdebug import zoo
from trtdebug.api import run_runners
from trtdebug.errors import FeedError, InputsDifferError, OutputsFormatError, UsageError
from trtdebug.inputs.digest import check_same_inputs, feed_digests, tensor_digest
from trtdebug.inputs.io import load_inputs
from trtdebug.results import INDEX, OutputStore, RunResult, TensorSet, load_outputs, outputs_dir_problem
from trtdebug.runners.base import Runner, TensorMeta
from trtdebug.util.files import atomic_directory, check_output_paths

TRTDEBUG = Path(sys.executable).with_name("trtdebug")  # the installed console script


class Doubler(Runner):
    """Two outputs per feed, as a backend would return them."""

    def _activate(self):
        pass

    def _input_metadata(self):
        return {"x": TensorMeta(np.dtype(np.float32), (2, 3)), "ids": TensorMeta(np.dtype(np.int64), (4,))}

    def _infer(self, feeds):
        return {"y": feeds["x"] * 2, "s": np.asarray(feeds["ids"].sum())}


def feeds(seed=0, iterations=2):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_normal((2, 3)).astype(np.float32), "ids": rng.integers(0, 9, 4)} for _ in range(iterations)]


def save_run(directory, runners=("a",), seed=0, save_inputs=True):
    return run_runners([Doubler(name) for name in runners], feeds(seed), save_outputs=directory,
                       record_inputs=save_inputs).results


def tree(directory):
    return sorted(p.relative_to(directory).as_posix() for p in Path(directory).rglob("*"))


# -- 1. replacing a directory ----------------------------------------------------------------------

def test_an_earlier_output_directory_is_replaced(tmp_path):
    out = tmp_path / "out"
    save_run(out, runners=("a", "b"))
    assert outputs_dir_problem(out) is None
    save_run(out, runners=("c",), seed=1)
    assert [r.runner for r in load_outputs(out).results] == ["c"]
    assert not (out / "a").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("intrude,why", [
    (lambda out: (out / "notes.txt").write_text("mine"), "it holds notes.txt, which trtdebug did not write"),
    (lambda out: (out / "a" / "0" / "mine.npy").write_text("mine"), "it holds a/0/mine.npy"),
    (lambda out: (out / "plots").mkdir(), "it holds plots"),
    (lambda out: os.symlink(out.parent, out / "link"), "it holds link"),
    (lambda out: (out / INDEX).write_text(json.dumps({"format": "not-ours", "runners": []})), "not a trtdebug outputs index"),
    (lambda out: (out / INDEX).unlink(), "it is not a trtdebug outputs directory (no index.json)"),
])
def test_a_directory_with_anything_else_is_refused(tmp_path, intrude, why):
    out = tmp_path / "out"
    save_run(out)
    intrude(out)
    before = tree(out)
    with pytest.raises(UsageError) as info:
        save_run(out, seed=1)
    message = str(info.value)
    assert f"refusing to replace {out}: " in message and why in message and "\n" not in message
    assert tree(out) == before  # nothing deleted, nothing added
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging left behind


def test_an_empty_directory_is_fine_and_a_file_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    save_run(tmp_path / "empty")
    assert load_outputs(tmp_path / "empty").results[0].runner == "a"
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        save_run(tmp_path / "f")


def test_a_directory_filled_while_we_worked_is_not_replaced(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(UsageError, match="refusing to replace"):
        with atomic_directory(out, owned=outputs_dir_problem) as staging:
            out.mkdir()
            (out / "notes.txt").write_text("written meanwhile")
            (staging / INDEX).write_text("{}")
    assert (out / "notes.txt").read_text() == "written meanwhile"


# -- 2. two artifacts, one path --------------------------------------------------------------------

def test_two_flags_on_one_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "real.html").write_text("")
    os.symlink(tmp_path / "real.html", tmp_path / "link.html")
    for report, html in [("x", "x"), ("x", "./x"), ("sub/../x", str(tmp_path / "x")), ("real.html", "link.html")]:
        with pytest.raises(UsageError, match="--report and --html both write to") as info:
            check_output_paths({"--report": report, "--html": html})
        assert "\n" not in str(info.value)
    check_output_paths({"--report": "r.json", "--html": "r.html", "--save-engine": None})


def test_an_output_on_or_around_an_input(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x")
    with pytest.raises(UsageError, match=r"refusing to write --report .*: it is one of the inputs"):
        check_output_paths({"--report": tmp_path / "." / "m.onnx"}, [model])
    with pytest.raises(UsageError, match=r"refusing to write --save-outputs .*: it holds the input"):
        check_output_paths({"--save-outputs": tmp_path}, [model])
    with pytest.raises(UsageError, match="--report .*r.json is inside --save-outputs"):
        check_output_paths({"--save-outputs": tmp_path / "out", "--report": tmp_path / "out" / "r.json"})
    check_output_paths({"--report": tmp_path / "r.json"}, [model, None])


# -- 4. index.json is not trusted --------------------------------------------------------------------

def _edit_index(root, change):
    index = json.loads((root / INDEX).read_text())
    change(index)
    (root / INDEX).write_text(json.dumps(index))


def _set_first_file(value):
    def change(index):
        index["runners"][0]["iterations"][0]["tensors"][0]["file"] = value
    return change


@pytest.mark.parametrize("entry", ["../../x.npy", "/etc/passwd", "a/../../outside.npy"])
def test_file_entries_outside_the_directory_are_refused(tmp_path, entry):
    out = tmp_path / "out"
    save_run(out)
    (tmp_path / "x.npy").write_bytes(b"")
    _edit_index(out, _set_first_file(entry))
    with pytest.raises(OutputsFormatError, match="points outside the directory") as info:
        load_outputs(out)
    assert repr(entry) in str(info.value) and "\n" not in str(info.value)


def test_a_link_leading_out_is_refused(tmp_path):
    out = tmp_path / "out"
    save_run(out)
    secret = tmp_path / "secret.npy"
    np.save(secret, np.arange(3))
    first = out / "a" / "0" / "t00000.npy"
    first.unlink()
    os.symlink(secret, first)
    with pytest.raises(OutputsFormatError, match="points outside the directory"):
        load_outputs(out)


@pytest.mark.parametrize("runner", ["..", ".", "../escape", "/abs/path", "index.json", "INPUTS.npz", ".hidden"])
def test_runner_names_stay_inside_the_store(tmp_path, runner):
    out = tmp_path / "out"
    save_run(out, runners=(runner, runner))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    loaded = load_outputs(out)
    assert [r.runner for r in loaded.results] == [runner, runner]
    np.testing.assert_array_equal(loaded.results[1].iterations[1]["y"], feeds()[1]["x"] * 2)
    index = json.loads((out / INDEX).read_text())
    assert index["format"] == "trtdebug-outputs" and outputs_dir_problem(out) is None
    assert all(not d.name.startswith(".") for d in out.iterdir())


@pytest.mark.parametrize("damage", [
    lambda p: p.write_bytes(p.read_bytes()[:-4]),  # truncated
    lambda p: p.write_bytes(b"garbage, not numpy"),
    lambda p: p.write_bytes(b""),
    lambda p: np.savez(open(p, "wb"), a=np.zeros(2)),  # an archive, not a .npy
])
def test_a_damaged_tensor_file_is_one_line_naming_it(tmp_path, damage):
    out = tmp_path / "out"
    save_run(out)
    damage(out / "a" / "0" / "t00000.npy")
    tensors = load_outputs(out).results[0].iterations[0]  # listing is fine: files are read when used
    with pytest.raises(OutputsFormatError) as info:
        tensors["y"]
    assert "a/0/t00000.npy" in str(info.value) and "'y'" in str(info.value) and "\n" not in str(info.value)


def test_malformed_entries_are_format_errors(tmp_path):
    changes = [lambda i: i["runners"][0].update(name=["x"]), lambda i: i["runners"][0].update(runtimes="fast"),
               lambda i: i["runners"][0]["iterations"][0].update(inputs=["nope"]),
               lambda i: i.update(inputs={"file": "../inputs.npz"}), lambda i: i.update(tensors=[1])]
    for k, change in enumerate(changes):
        out = tmp_path / str(k)
        save_run(out)
        _edit_index(out, change)
        with pytest.raises(OutputsFormatError, match="malformed") as info:
            load_outputs(out)
        assert "\n" not in str(info.value)


# -- 5. saved outputs record their inputs ----------------------------------------------------------

def test_digests_cover_name_dtype_shape_and_bytes():
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    base = tensor_digest("x", x)
    assert base == tensor_digest("x", x.copy()) == tensor_digest("x", np.asfortranarray(x))
    assert len({base, tensor_digest("y", x), tensor_digest("x", x.astype(np.float64)), tensor_digest("x", x.reshape(3, 2)),
                tensor_digest("x", x + 1)}) == 5
    assert list(feed_digests({"b": x, "a": x})) == ["a", "b"]  # the order of a feed is not its content


def test_a_run_records_input_digests_and_the_inputs(tmp_path):
    out = tmp_path / "out"
    results = save_run(out, runners=("a", "b"))
    expected = [feed_digests(f) for f in feeds()]
    assert [r.input_digests for r in results] == [expected, expected]
    loaded = load_outputs(out)
    assert [r.input_digests for r in loaded.results] == [expected, expected]
    recorded = loaded.feeds()
    for got, want in zip(recorded, feeds()):
        assert list(got) == list(want)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])
            assert got[name].dtype == want[name].dtype
    assert [feed_digests(f) for f in load_inputs(out)] == expected  # --load-inputs DIR


def test_without_saving_inputs_the_digests_stay(tmp_path):
    out = tmp_path / "out"
    save_run(out, save_inputs=False)
    assert not (out / "inputs.npz").exists()
    loaded = load_outputs(out)
    assert loaded.results[0].input_digests == [feed_digests(f) for f in feeds()] and loaded.feeds() is None
    with pytest.raises(FeedError, match="not the inputs they were made from"):
        load_inputs(out)


def test_check_same_inputs(tmp_path):
    a, b, c = (save_run(tmp_path / n, seed=s)[0] for n, s in (("a", 0), ("b", 0), ("c", 1)))
    check_same_inputs(a, b)
    with pytest.raises(InputsDifferError) as info:
        check_same_inputs(a, c)
    digest_a, digest_c = a.input_digests[0]["ids"][:8], c.input_digests[0]["ids"][:8]
    assert str(info.value).startswith(f"the two runs used different inputs: iteration 0, input 'ids' differs "
                                      f"(digest {digest_a}.. vs {digest_c}..)")
    assert info.value.exit_code == 2
    polygraphy_like = RunResult("pg", iterations=[TensorSet({"y": np.zeros(2)})])
    check_same_inputs(a, polygraphy_like)  # no digests: nothing to check
    check_same_inputs(polygraphy_like, c)
    missing = RunResult("m", input_digests=[{"x": a.input_digests[0]["x"]}])
    with pytest.raises(InputsDifferError, match="input 'ids' is only in the reference"):
        check_same_inputs(a, missing)


# -- 7b. a result moves into another store ------------------------------------------------------------

def test_a_loaded_result_can_be_added_to_another_store(tmp_path):
    save_run(tmp_path / "first", runners=("a", "b"))
    loaded = load_outputs(tmp_path / "first").results
    store = OutputStore(tmp_path / "second")
    for r in loaded:
        store.add(r)
    store.add(RunResult("fresh", iterations=[TensorSet({"y": np.ones(2)})]))
    store.write_index()
    for name in tree(tmp_path / "first"):  # the first store is untouched
        assert (tmp_path / "first" / name).exists()
    os.rename(tmp_path / "first", tmp_path / "gone")
    import shutil

    shutil.rmtree(tmp_path / "gone")
    again = load_outputs(tmp_path / "second")
    assert [r.runner for r in again.results] == ["a", "b", "fresh"]
    want = feeds()
    for r in again.results[:2]:
        for k, ts in enumerate(r.iterations):
            np.testing.assert_array_equal(ts["y"], want[k]["x"] * 2)
        assert r.input_digests == [feed_digests(f) for f in want]
    np.testing.assert_array_equal(loaded[0].iterations[1]["y"], want[1]["x"] * 2)  # the moved result reads from here
    assert outputs_dir_problem(tmp_path / "second") is None


def test_a_result_of_one_spill_store_survives_into_a_saved_one(tmp_path):
    first = OutputStore(tmp_path / "tmp")
    r = first.add(RunResult("a", iterations=[TensorSet({"y": np.arange(3)})]))
    second = OutputStore(tmp_path / "saved")
    second.add(r)
    second.write_index()
    (tmp_path / "tmp" / "a" / "0" / "t00000.npy").unlink()
    np.testing.assert_array_equal(load_outputs(tmp_path / "saved").results[0].iterations[0]["y"], np.arange(3))


# -- the command line ------------------------------------------------------------------------------------

def cli(*args):
    return subprocess.run([str(TRTDEBUG), *map(str, args)], capture_output=True, text=True, timeout=300)


def assert_one_line_error(proc, code, *fragments):
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("trtdebug: error")]
    assert len(errors) == 1, proc.stderr
    for f in fragments:
        assert f in errors[0], (f, errors[0])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three saved runs of a conv net: seed 1, seed 1 again from the first's recorded inputs, seed 2."""
    d = tmp_path_factory.mktemp("runs")
    onnx.save(zoo.conv_net(batch=2), d / "conv.onnx")
    for name, extra in [("a", ["--seed", "1"]), ("b", ["--load-inputs", d / "a"]), ("c", ["--seed", "2"])]:
        proc = cli("run", d / "conv.onnx", "--onnxrt", "--mark-all", "--save-outputs", d / name, *extra)
        assert proc.returncode == 0, proc.stderr
    return d


def test_cli_compare_refuses_runs_on_different_inputs(runs):
    proc = cli("compare", runs / "a", runs / "c")
    assert_one_line_error(proc, 2, "the two runs used different inputs: iteration 0, input 'image' differs (digest ")
    assert cli("compare", runs / "a", runs / "b").returncode == 0  # --load-inputs a reproduced a's inputs


def test_cli_run_against_loaded_outputs_made_on_other_inputs(runs):
    proc = cli("run", runs / "conv.onnx", "--onnxrt", "--mark-all", "--seed", "2", "--load-outputs", runs / "a")
    assert_one_line_error(proc, 2, "the two runs used different inputs")


def test_cli_damaged_outputs_are_exit_2(runs, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(runs / "a", broken)
    victim = next(broken.rglob("t00003.npy"))
    victim.write_bytes(victim.read_bytes()[:20])
    assert_one_line_error(cli("compare", runs / "a", broken), 2, "t00003.npy")
    _edit_index(broken, _set_first_file("../../etc/passwd"))
    assert_one_line_error(cli("compare", runs / "a", broken), 2, "points outside the directory")


def test_cli_refuses_to_replace_a_directory_holding_user_files(runs, tmp_path):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(runs / "a", out)
    (out / "notes.txt").write_text("mine")
    proc = cli("run", runs / "conv.onnx", "--onnxrt", "--save-outputs", out)
    assert_one_line_error(proc, 2, f"refusing to replace {out}", "notes.txt")
    assert (out / "notes.txt").read_text() == "mine"


def test_cli_report_and_html_on_one_path(runs, tmp_path):
    proc = cli("compare", runs / "a", runs / "b", "--report", tmp_path / "x", "--html", f"{tmp_path}/./x")
    assert_one_line_error(proc, 2, "--report and --html both write to")
    assert not (tmp_path / "x").exists()
