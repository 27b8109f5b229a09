"""Load and save ONNX models.

Loading does three things every later step relies on: it reads external data, it runs shape
inference (so marked outputs get dtypes), and it gives every unnamed node a stable name
(``<OpType>_<index>``), because reports, TensorRT layer metadata and bisection all speak in
node names.  The user's file is never modified: all of this happens in memory.
"""
from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import MutableSequence
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Optional, Sequence, Union

import numpy as np

from trtdebug.errors import ModelLoadError
from trtdebug.util.files import atomic_path

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

# Protobuf cannot serialize messages over 2 GiB; bigger models must keep weights outside.
PROTOBUF_LIMIT = 2**31 - 1


def load_model(path: PathLike, *, infer_shapes: bool = True, external_data: bool = True) -> "onnx.ModelProto":
    """Read an ONNX model (with its external data), infer shapes and name unnamed nodes.

    ``external_data=False`` leaves tensors stored outside the model file as references (relative
    to the model's directory): for surgery that only moves weights (``surgeon extract``), so a
    model of many gigabytes is never read into memory; :func:`save_model` with ``data_from``
    copies the referenced bytes.
    """
    import onnx
    from google.protobuf.message import DecodeError

    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"model file not found: {p}")
    if p.is_dir():
        raise ModelLoadError(f"expected an ONNX model file, got a directory: {p}")
    try:
        model = onnx.load(str(p), load_external_data=external_data)
    except DecodeError as exc:
        raise ModelLoadError(f"{p} is not an ONNX model (protobuf decode failed)") from exc
    except (OSError, ValueError, onnx.checker.ValidationError) as exc:
        raise ModelLoadError(f"cannot read ONNX model {p}: {exc}") from exc
    except Exception as exc:  # onnx raises assorted errors for corrupt files
        raise ModelLoadError(f"{p} is not a readable ONNX model: {exc}") from exc
    if not model.graph.node and not model.graph.output:
        raise ModelLoadError(f"{p} is not an ONNX model (no graph found)")
    if not model.opset_import:
        raise ModelLoadError(f"{p} is not an ONNX model (no opset_import)")
    name_unnamed_nodes(model)
    if infer_shapes:
        model = infer_model_shapes(model)
    return model


def name_unnamed_nodes(model) -> None:
    """Give every unnamed node of the main graph a unique ``<OpType>_<index>`` name, in place."""
    taken = {n.name for n in model.graph.node if n.name}
    for index, node in enumerate(model.graph.node):
        if node.name:
            continue
        name = f"{node.op_type}_{index}"
        while name in taken:
            name += "_"
        node.name = name
        taken.add(name)


def infer_model_shapes(model):
    """``model`` with ONNX shape inference (data propagation on) applied, in place; unchanged, with a
    warning, where inference fails.

    Inference runs on :func:`weightless_copy` (big weights as typed inputs): ``infer_shapes``
    serializes its argument and parses the result back, which on the model itself held the
    weights three times more (777 MiB at the peak for 256 MiB of weights) and refused models
    over protobuf's 2 GiB.  What it found (value_info, output types, the types inside If/Loop
    bodies) is copied into ``model``.
    """
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(weightless_copy(model), strict_mode=False, data_prop=True)
    except Exception as exc:  # inference is a convenience: carry on without it
        log.warning("ONNX shape inference failed (%s); continuing without inferred shapes", exc)
        return model
    g, found = model.graph, inferred.graph
    del g.value_info[:]
    g.value_info.extend(found.value_info)
    for out, typed in zip(g.output, found.output):
        out.CopyFrom(typed)
    for node, typed in zip(g.node, found.node):
        if any(a.HasField("g") or len(a.graphs) for a in node.attribute):
            node.CopyFrom(typed)
    return model


# Initializers at least this big become typed inputs of a weightless copy; smaller ones (Reshape
# targets, axes) stay, because shape inference's data propagation reads them.
WEIGHT_BYTES = 1024


def weightless_copy(model, input_shapes: Optional[Mapping[str, Sequence[int]]] = None):
    """A copy of ``model``'s structure for shape inference: big initializers as typed graph inputs.

    With ``input_shapes`` the named graph inputs get those shapes, and the original value_info is
    left out (its symbolic shapes would contradict the fixed ones).
    """
    import onnx
    from onnx import helper

    light = onnx.ModelProto(ir_version=model.ir_version)
    light.opset_import.extend(model.opset_import)
    light.functions.extend(model.functions)
    g, src = light.graph, model.graph
    g.name = src.name
    g.node.extend(src.node)
    g.output.extend(src.output)
    if not input_shapes:
        g.value_info.extend(src.value_info)
    init_names = set()
    for init in src.initializer:
        init_names.add(init.name)
        if _initializer_bytes(init) >= WEIGHT_BYTES:
            g.input.append(helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
        else:
            g.initializer.append(init)
    for inp in src.input:
        if inp.name in init_names:
            continue
        if input_shapes and inp.name in input_shapes and inp.type.HasField("tensor_type"):
            g.input.append(helper.make_tensor_value_info(inp.name, inp.type.tensor_type.elem_type,
                                                         list(input_shapes[inp.name])))
        else:
            g.input.append(inp)
    return light


def _initializer_bytes(init) -> int:
    from trtdebug.model.graph import onnx_dtype_to_numpy

    dtype = onnx_dtype_to_numpy(init.data_type)
    return int(np.prod(init.dims, dtype=np.int64)) * (dtype.itemsize if dtype is not None else 1)


def save_model(model, path: PathLike, *, external_data: bool | None = None,
               data_from: Optional[PathLike] = None) -> Path:
    """Write ``model`` atomically; weights go to ``<name>.data`` beside it when it is too big for protobuf.

    ``model`` is left exactly as it was: the runners, the TensorRT builder and the capability
    check reuse the caller's object after a save.  ``data_from``: the directory the model's
    external data references are relative to (a model loaded with ``external_data=False``):
    the referenced bytes are copied, a block at a time, into the new data file, which is then
    always written; the files read are not changed.
    """
    import onnx

    p = Path(path)
    if external_data is None:
        external_data = data_from is not None or model.ByteSize() >= PROTOBUF_LIMIT
    with atomic_path(p) as tmp:
        if external_data:
            _save_with_external_data(model, tmp, p.parent / (p.name + ".data"), data_from)
        else:
            onnx.save_model(model, str(tmp))
    return p


EXTERNAL_THRESHOLD = 1024  # bytes: smaller tensors stay in the model file (onnx's default)
_ALIGN_THRESHOLD, _ALIGNMENT = 1 << 20, 4096  # big tensors start on a page, so readers can map them
_COPY_BLOCK = 64 << 20  # external data is copied in blocks of this many bytes


def _save_with_external_data(model, model_file: Path, data_path: Path, data_from: Optional[PathLike] = None) -> None:
    """Write ``model`` to ``model_file`` with its big initializers in ``data_path``, changing nothing in ``model``.

    Not ``onnx.save_model(..., save_as_external_data=True)``: that moves the weights out of the
    caller's ModelProto in place (and appends to an existing data file).  Nor a deep copy: that
    holds the weights twice, and protobuf's arenas keep cleared bytes until the message dies.
    Instead a *light copy* is built field by field, in which each big initializer (of the main
    graph and of If/Loop/Scan bodies, as onnx does) is a reference into the data file, written
    one tensor at a time as the copy meets it (a tensor already external is copied from
    ``data_from``).  The data file replaces an older one only once the model file is written.
    """
    import onnx

    with atomic_path(data_path) as data_tmp:
        with open(data_tmp, "wb") as f:
            light = _LightCopy(data_path.name, f, data_from).model(model)
        onnx.save_model(light, str(model_file))


class _LightCopy:
    """Copies of ONNX messages whose big raw initializers are written to ``data_file`` and referenced."""

    def __init__(self, location: str, data_file, data_from: Optional[PathLike] = None) -> None:
        self.location = location
        self.data_file = data_file
        self.data_from = Path(data_from) if data_from is not None else None

    def model(self, model):
        import onnx

        out = onnx.ModelProto()
        _copy_fields(model, out, {"graph": lambda g, dst: dst.graph.CopyFrom(self.graph(g))})
        return out

    def graph(self, graph):
        import onnx

        out = onnx.GraphProto()
        _copy_fields(graph, out, {
            "initializer": lambda tensors, dst: dst.initializer.extend(self.tensor(t) for t in tensors),
            "node": lambda nodes, dst: dst.node.extend(self.node(n) for n in nodes),
        })
        return out

    def node(self, node):
        import onnx

        out = onnx.NodeProto()
        _copy_fields(node, out, {"attribute": lambda attrs, dst: dst.attribute.extend(self.attribute(a) for a in attrs)})
        return out

    def attribute(self, attr):
        import onnx

        out = onnx.AttributeProto()
        _copy_fields(attr, out, {"g": lambda g, dst: dst.g.CopyFrom(self.graph(g)),
                                 "graphs": lambda gs, dst: dst.graphs.extend(self.graph(g) for g in gs)})
        return out

    def tensor(self, tensor):
        import onnx
        from onnx.external_data_helper import set_external_data

        out = onnx.TensorProto()
        written = []

        def raw_data(raw: bytes, dst) -> None:
            if len(raw) < EXTERNAL_THRESHOLD:
                dst.raw_data = raw
            else:
                written.append(self._write(raw))

        special = {"raw_data": raw_data}
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            if self.data_from is None:
                raise ValueError(f"tensor {tensor.name!r} refers to external data: give data_from to copy it")
            special["external_data"] = lambda entries, dst: written.append(self._copy_external(entries))
            special["data_location"] = lambda value, dst: None
        _copy_fields(tensor, out, special)
        if written:
            offset, length = written[0]
            out.raw_data = b""  # set_external_data wants the field present; cleared below
            set_external_data(out, self.location, offset, length)
            out.ClearField("raw_data")
        return out

    def _write(self, raw: bytes):
        offset = self._start(len(raw))
        self.data_file.write(raw)
        return offset, len(raw)

    def _start(self, length: int) -> int:
        f = self.data_file
        if length >= _ALIGN_THRESHOLD:
            f.write(b"\0" * (-f.tell() % _ALIGNMENT))
        return f.tell()

    def _copy_external(self, entries):
        """Copy the bytes an external tensor refers to (``location``, ``offset``, ``length``) into the data file."""
        info = {e.key: e.value for e in entries}
        source = self.data_from / info["location"]
        start = int(info.get("offset", 0) or 0)
        with open(source, "rb") as src:
            length = int(info["length"]) if info.get("length") else src.seek(0, os.SEEK_END) - start
            src.seek(start)
            offset = self._start(length)
            left = length
            while left:
                block = src.read(min(left, _COPY_BLOCK))
                if not block:
                    raise ValueError(f"external data file {source} ends before the {length} bytes of a tensor")
                self.data_file.write(block)
                left -= len(block)
        return offset, length


def _copy_fields(src, dst, special) -> None:
    """Copy every set field of ``src`` into ``dst``; ``special[name](value, dst)`` copies the named ones."""
    for field, value in src.ListFields():
        if field.name in special:
            special[field.name](value, dst)
        elif isinstance(value, MutableSequence):  # a repeated field, of scalars or of messages
            getattr(dst, field.name).extend(value)
        elif field.message_type is not None:
            getattr(dst, field.name).CopyFrom(value)
        else:
            setattr(dst, field.name, value)


class SharedWeights:
    """The weights of a model written once to a private data file, and a weightless copy of it.

    Windowed runs (``windows.py``) create one session per window.  Each session made from the
    model itself would copy the weights twice on the Python side (the marked copy, its
    serialized bytes) before ONNX Runtime makes its own.  Instead every window marks
    :attr:`model`, whose big initializers are references into ``weights.data`` in
    ``directory``: the marked copy is a few kilobytes, and ONNX Runtime reads (on CPU,
    memory-maps: the file's big tensors start on a page) the weights from the file itself.
    The caller's model is not changed; the directory is the caller's to remove.
    """

    DATA = "weights.data"

    def __init__(self, model, directory: PathLike) -> None:
        self.directory = Path(directory)
        with open(self.directory / self.DATA, "wb") as f:
            self.model = _LightCopy(self.DATA, f).model(model)


def model_bytes_or_path(model, scratch_dir: PathLike, *, weights: "SharedWeights | None" = None) -> Union[bytes, str]:
    """Serialized bytes for backends that take them, or a file path when the model is over 2 GiB.

    With ``weights``, ``model`` is a marked copy of ``weights.model``: it is written beside the
    weights (its references are relative to its own file) under a unique name the caller removes.
    """
    if weights is not None:
        import onnx

        fd, path = tempfile.mkstemp(suffix=".onnx", dir=weights.directory)
        os.close(fd)
        onnx.save_model(model, path)
        return path
    if model.ByteSize() < PROTOBUF_LIMIT:
        return model.SerializeToString()
    path = Path(scratch_dir) / "model.onnx"
    save_model(model, path, external_data=True)
    return str(path)
