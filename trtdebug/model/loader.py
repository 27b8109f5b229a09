"""Load and save ONNX models.

Loading does three things every later step relies on: it reads external data, it runs shape
inference (so marked outputs get dtypes), and it gives every unnamed node a stable name
(``<OpType>_<index>``), because reports, TensorRT layer metadata and bisection all speak in
node names.  The user's file is never modified: all of this happens in memory.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Union

from trtdebug.errors import ModelLoadError
from trtdebug.util.files import atomic_path

if TYPE_CHECKING:
    import onnx

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

# Protobuf cannot serialize messages over 2 GiB; bigger models must keep weights outside.
PROTOBUF_LIMIT = 2**31 - 1


def load_model(path: PathLike, *, infer_shapes: bool = True) -> "onnx.ModelProto":
    """Read an ONNX model (with its external data), infer shapes and name unnamed nodes."""
    import onnx
    from google.protobuf.message import DecodeError

    p = Path(path)
    if not p.exists():
        raise ModelLoadError(f"model file not found: {p}")
    if p.is_dir():
        raise ModelLoadError(f"expected an ONNX model file, got a directory: {p}")
    try:
        model = onnx.load(str(p), load_external_data=True)
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
        model = _infer_shapes(model)
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


def _infer_shapes(model):
    import onnx

    try:
        if model.ByteSize() < PROTOBUF_LIMIT:
            return onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception as exc:  # inference is a convenience: carry on without it
        log.warning("ONNX shape inference failed (%s); continuing without inferred shapes", exc)
    return model


def save_model(model, path: PathLike, *, external_data: bool | None = None) -> Path:
    """Write ``model`` atomically; weights go to ``<name>.data`` beside it when it is too big for protobuf."""
    import onnx

    p = Path(path)
    if external_data is None:
        external_data = model.ByteSize() >= PROTOBUF_LIMIT
    with atomic_path(p) as tmp:
        if external_data:
            onnx.save_model(model, str(tmp), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=p.name + ".data", size_threshold=1024)
            # external data was written beside the temporary name under its final location
        else:
            onnx.save_model(model, str(tmp))
    return p


def model_bytes_or_path(model, scratch_dir: PathLike) -> Union[bytes, str]:
    """Serialized bytes for backends that take them, or a file path when the model is over 2 GiB."""
    if model.ByteSize() < PROTOBUF_LIMIT:
        return model.SerializeToString()
    path = Path(scratch_dir) / "model.onnx"
    save_model(model, path, external_data=True)
    return str(path)
