"""Input flags, synthetic feeds, and feed files (.npz / .json) with their validation."""
from __future__ import annotations

import zipfile

import numpy as np
import pytest

from trtdebug.errors import FeedError, UsageError
from trtdebug.inputs import (
    generate_feeds,
    load_inputs,
    parse_input_shapes,
    parse_val_ranges,
    save_inputs,
    validate_feeds,
)
from trtdebug.runners.base import TensorMeta


def meta(dtype, shape):
    return TensorMeta(np.dtype(dtype) if dtype is not None else None, shape)


# -- parse_input_shapes ----------------------------------------------------------------------

def test_shapes_basic_and_several_per_string():
    got = parse_input_shapes(["x:[1,3,224,224]", "mask:[1,128] len:[]"])
    assert got == {"x": (1, 3, 224, 224), "mask": (1, 128), "len": ()}
    assert list(got) == ["x", "mask", "len"]


def test_shapes_names_with_colons_and_spaces_in_dims():
    got = parse_input_shapes(["input:0:[1, 3]", "scope/a:b:[0]"])
    assert got == {"input:0": (1, 3), "scope/a:b": (0,)}


@pytest.mark.parametrize("bad", ["x", "x:[1,a]", "x:[1,-1]", "x:[1,3", ":[1]", "[1,3]", "x:[1,,2]", "   ",
                                 "x:[1] junk", "x:[1.5]", "x:[²]"])
def test_shapes_bad_strings(bad):
    with pytest.raises(UsageError) as info:
        parse_input_shapes([bad])
    msg = str(info.value)
    assert msg.startswith("--input-shapes") and "\n" not in msg


def test_shapes_duplicate_name_and_custom_flag():
    with pytest.raises(UsageError, match="given twice"):
        parse_input_shapes(["x:[1]", "x:[2]"])
    with pytest.raises(UsageError, match=r"^--trt-min-shapes: .*'x:\[1,b\]'"):
        parse_input_shapes(["x:[1,b]"], flag="--trt-min-shapes")


# -- parse_val_ranges ------------------------------------------------------------------------

def test_val_ranges():
    default, per_input = parse_val_ranges(["[0,1]", "x:[-1,1] ids:[0,1000]", "in:0:[-2.5,2.5e0]"])
    assert default == (0.0, 1.0)
    assert per_input == {"x": (-1.0, 1.0), "ids": (0.0, 1000.0), "in:0": (-2.5, 2.5)}
    assert parse_val_ranges([]) == (None, {})


@pytest.mark.parametrize("bad", ["[1,0]", "x:[0]", "x:[0,1,2]", "x:[a,b]", "x:[0,inf]", "[0,1] [0,2]",
                                 "x:[0,1] x:[0,2]", "0,1", ":[0,1]"])
def test_val_ranges_bad(bad):
    with pytest.raises(UsageError) as info:
        parse_val_ranges([bad])
    assert str(info.value).startswith("--val-range") and "\n" not in str(info.value)


# -- generate_feeds --------------------------------------------------------------------------

def test_feeds_deterministic_and_per_iteration():
    m = {"x": meta(np.float32, (2, 3))}
    a = generate_feeds(m, seed=7, iterations=2)
    b = generate_feeds(m, seed=7, iterations=2)
    assert len(a) == 2
    np.testing.assert_array_equal(a[0]["x"], b[0]["x"])
    np.testing.assert_array_equal(a[1]["x"], b[1]["x"])
    assert not np.array_equal(a[0]["x"], a[1]["x"])
    assert not np.array_equal(a[0]["x"], generate_feeds(m, seed=8)[0]["x"])


def test_feeds_independent_per_input():
    one = generate_feeds({"x": meta(np.float32, (4,))})[0]
    two = generate_feeds({"a": meta(np.int64, (3,)), "x": meta(np.float32, (4,))})[0]
    np.testing.assert_array_equal(one["x"], two["x"])
    assert list(two) == ["a", "x"]


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64, np.int32, np.int64, np.uint8, np.int8, np.bool_])
def test_feeds_dtypes_and_default_ranges(dtype):
    arr = generate_feeds({"x": meta(dtype, (64, 64))})[0]["x"]
    assert arr.dtype == np.dtype(dtype) and arr.shape == (64, 64)
    if dtype == np.bool_:
        assert arr.any() and not arr.all()
    elif np.issubdtype(dtype, np.integer):
        assert set(np.unique(arr).tolist()) == {0, 1}  # inclusive [0, 1], like Polygraphy
    else:
        assert arr.min() >= 0 and arr.max() <= 1 and arr.std() > 0.1


def test_feeds_untyped_input_is_float32_and_scalars_work():
    feed = generate_feeds({"x": meta(None, (2,)), "s": meta(np.int64, ())})[0]
    assert feed["x"].dtype == np.float32
    assert isinstance(feed["s"], np.ndarray) and feed["s"].shape == () and feed["s"].dtype == np.int64


def test_feeds_ranges_honoured():
    m = {"x": meta(np.float32, (1000,)), "ids": meta(np.int32, (1000,)), "u": meta(np.uint8, (20000,))}
    feed = generate_feeds(m, val_range=(-1, 1), per_input_ranges={"ids": (5, 9), "u": (-10, 300)})[0]
    assert feed["x"].min() >= -1 and feed["x"].max() < 1 and feed["x"].min() < -0.9
    assert set(np.unique(feed["ids"]).tolist()) == {5, 6, 7, 8, 9}
    assert feed["u"].min() == 0 and feed["u"].max() == 255  # clipped to the dtype's limits


def test_feeds_range_without_integers():
    with pytest.raises(UsageError, match="no int32 value for input 'ids'"):
        generate_feeds({"ids": meta(np.int32, (2,))}, val_range=(0.2, 0.8))


def test_feeds_dynamic_dims_need_shapes():
    m = {"x": meta(np.float32, ("B", "S", 64)), "y": meta(np.float32, (None, 4))}
    with pytest.raises(UsageError) as info:
        generate_feeds(m)
    msg = str(info.value)
    assert "x:[B,S,64]" in msg and "--input-shapes x:[1,S_value,64]" in msg and "\n" not in msg
    feed = generate_feeds(m, shapes={"x": (2, 5, 64), "y": (3, 4)})[0]
    assert feed["x"].shape == (2, 5, 64) and feed["y"].shape == (3, 4)


def test_feeds_unknown_rank_needs_shape():
    with pytest.raises(UsageError, match="--input-shapes x:"):
        generate_feeds({"x": meta(np.float32, None)})
    assert generate_feeds({"x": meta(np.float32, None)}, shapes={"x": (2,)})[0]["x"].shape == (2,)


def test_feeds_bad_shapes():
    m = {"x": meta(np.float32, ("B", 64)), "y": meta(np.float32, (2,))}
    with pytest.raises(UsageError, match=r"unknown input\(s\) 'z'; the model's inputs are 'x', 'y'"):
        generate_feeds(m, shapes={"z": (1,), "x": (1, 64)})
    with pytest.raises(UsageError, match=r"x:\[1,64,1\] does not fit the model's input x:\[B,64\]"):
        generate_feeds(m, shapes={"x": (1, 64, 1)})
    with pytest.raises(UsageError, match=r"x:\[1,32\]"):
        generate_feeds(m, shapes={"x": (1, 32)})
    with pytest.raises(UsageError, match="--val-range"):
        generate_feeds(m, shapes={"x": (1, 64)}, per_input_ranges={"nope": (0, 1)})


def test_feeds_bad_arguments():
    m = {"x": meta(np.float32, (2,))}
    with pytest.raises(UsageError, match="--seed"):
        generate_feeds(m, seed=-1)
    with pytest.raises(UsageError, match="--iterations"):
        generate_feeds(m, iterations=0)
    with pytest.raises(UsageError, match="--load-inputs"):
        generate_feeds({"s": meta(np.str_, (2,))})


# -- save_inputs / load_inputs ---------------------------------------------------------------

ODD = {"x": np.arange(6, dtype=np.float16).reshape(2, 3), "in:0/a b": np.array([True, False]),
       "é": np.array(3, dtype=np.int64), "file": np.zeros((0, 2), np.uint8)}


def assert_feeds_equal(a, b):
    assert len(a) == len(b)
    for fa, fb in zip(a, b):
        assert list(fa) == list(fb)
        for name in fa:
            assert fa[name].dtype == fb[name].dtype and fa[name].shape == fb[name].shape
            np.testing.assert_array_equal(fa[name], fb[name])


@pytest.mark.parametrize("suffix", [".npz", ".json"])
@pytest.mark.parametrize("iterations", [1, 3])
def test_round_trip(tmp_path, suffix, iterations):
    feeds = [{k: np.asarray(v + i if v.dtype != np.bool_ else v) for k, v in ODD.items()} for i in range(iterations)]
    path = save_inputs(tmp_path / f"in{suffix}", feeds)
    assert path == tmp_path / f"in{suffix}"
    assert_feeds_equal(load_inputs(path), feeds)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"in{suffix}"]  # no temporary files left


def test_npz_layout(tmp_path):
    save_inputs(tmp_path / "one.npz", [{"x": np.zeros(2)}])
    save_inputs(tmp_path / "two.npz", [{"x": np.zeros(2)}, {"x": np.ones(2)}])
    with np.load(tmp_path / "one.npz") as z:
        assert z.files == ["x"]
    with np.load(tmp_path / "two.npz") as z:
        assert z.files == ["it0/x", "it1/x"]


def test_npz_single_iteration_with_prefix_like_name(tmp_path):
    feeds = [{"it0/x": np.zeros(2)}]
    save_inputs(tmp_path / "a.npz", feeds)
    assert_feeds_equal(load_inputs(tmp_path / "a.npz"), feeds)


def test_npz_written_by_numpy(tmp_path):
    np.savez(tmp_path / "plain.npz", x=np.ones(3), y=np.arange(2))
    assert_feeds_equal(load_inputs(tmp_path / "plain.npz"), [{"x": np.ones(3), "y": np.arange(2)}])
    np.savez(tmp_path / "multi.npz", **{"it1/x": np.ones(1), "it0/x": np.zeros(1)})
    assert_feeds_equal(load_inputs(tmp_path / "multi.npz"), [{"x": np.zeros(1)}, {"x": np.ones(1)}])


def test_failed_save_leaves_destination_untouched(tmp_path):
    dest = tmp_path / "in.npz"
    save_inputs(dest, [{"x": np.zeros(2)}])
    before = dest.read_bytes()
    with pytest.raises(ValueError):
        save_inputs(dest, [{"x": np.zeros(2)}, {"bad": np.array([object()])}])
    assert dest.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["in.npz"]


def test_save_rejects_unknown_suffix(tmp_path):
    with pytest.raises(UsageError, match=r"\.npz or \.json"):
        save_inputs(tmp_path / "in.bin", [{"x": np.zeros(1)}])


@pytest.mark.parametrize("name,content", [
    ("missing.npz", None),
    ("missing.json", None),
    ("text.npz", b"hello"),
    ("text.json", b"{not json"),
    ("truncated.npz", "truncate"),
    ("single.npz", "npy"),
    ("stray.npz", "stray"),
    ("data.bin", b"x"),
    ("pickled.npz", "pickle"),
    ("empty.npz", "empty"),
    ("empty.json", b"[]"),
])
def test_load_errors(tmp_path, name, content):
    path = tmp_path / name
    if content == "truncate":
        save_inputs(path, [{"x": np.zeros(100)}])
        path.write_bytes(path.read_bytes()[:60])
    elif content == "npy":
        with open(path, "wb") as f:
            np.save(f, np.zeros(2))
    elif content == "stray":
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("notes.txt", "hi")
    elif content == "empty":
        save_inputs(path, [])
    elif content == "pickle":
        np.savez(path, x=np.array([{"a": 1}], dtype=object))
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(FeedError) as info:
        load_inputs(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


# -- validate_feeds --------------------------------------------------------------------------

MODEL = {"x": meta(np.float32, ("B", 3)), "ids": meta(np.int64, (2,)), "any": meta(None, None)}


def good_feed():
    return {"x": np.zeros((5, 3), np.float32), "ids": np.zeros(2, np.int64), "any": np.zeros((1, 2, 3), np.float64)}


@pytest.mark.parametrize("change,expected", [
    (lambda f: f.update(extra=np.zeros(1)), r"unknown input\(s\) 'extra'; the model's inputs are 'x', 'ids', 'any'"),
    (lambda f: f.pop("ids"), r"missing input\(s\) 'ids'"),
    (lambda f: f.update(x=np.zeros((5, 3), np.float64)), r"'x' has dtype float64, the model expects float32"),
    (lambda f: f.update(x=np.zeros((5, 3, 1), np.float32)), r"'x' has shape \[5, 3, 1\], the model expects x:\[B,3\]"),
    (lambda f: f.update(ids=np.zeros(3, np.int64)), r"'ids' has shape \[3\], the model expects ids:\[2\]"),
    (lambda f: f.update(ids=[0, 1]), r"'ids' is a list, not a NumPy array"),
])
def test_validate_feeds_errors(change, expected):
    feeds = [good_feed(), good_feed()]
    validate_feeds(feeds, MODEL)
    change(feeds[1])
    with pytest.raises(FeedError, match=expected) as info:
        validate_feeds(feeds, MODEL)
    assert "iteration 1" in str(info.value) and "\n" not in str(info.value)


def test_generated_feeds_validate():
    shapes = parse_input_shapes(["x:[4,3]"])
    validate_feeds(generate_feeds({k: v for k, v in MODEL.items() if k != "any"}, shapes=shapes, iterations=2),
                   {k: v for k, v in MODEL.items() if k != "any"})
