"""``trtdebug surgeon``: the model surgery the bisectors do, as commands of their own.

* :func:`sanitize_model` - freeze input shapes, fold constants (onnx-graphsurgeon evaluating
  constant subgraphs with ONNX Runtime), drop dead nodes: the same
  :func:`trtdebug.debug.subgraph.sanitize` a search starts from, so what a user runs is what
  the search saw;
* :func:`extract_model` - the subgraph computing some tensors from others, as a model ONNX
  Runtime runs: every tensor on the way from ``inputs`` to ``outputs`` must be computable from
  them (else a one-line error names the tensor to add), and inputs get their dtype and shape
  from shape inference or ``input_shapes``.  Weights stored as external data are never read
  into memory: the model is loaded with references, and the weights the piece keeps are
  copied block by block into ``OUT.data`` (so models over protobuf's 2 GiB extract too).

Both write atomically and refuse to write over the model they read.
"""
from __future__ import annotations

import copy
import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, List, Mapping, Optional, Sequence, Union

from trtdebug.errors import UsageError

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class SurgeryResult:
    path: Path
    nodes: int
    inputs: List[str]
    outputs: List[str]
    notes: List[str] = field(default_factory=list)


def sanitize_model(model: PathLike, out: PathLike, *, input_shapes: Optional[Mapping[str, Sequence[int]]] = None,
                   fold: bool = True) -> SurgeryResult:
    """Write ``model`` sanitized (shapes frozen where given, constants folded, dead nodes dropped) to ``out``."""
    from trtdebug.debug.subgraph import sanitize
    from trtdebug.model import load_model, save_model
    from trtdebug.util.files import check_output_paths

    check_output_paths({"-o": out}, [model])
    original = load_model(model)
    if input_shapes:
        _check_names(input_shapes, [i.name for i in original.graph.input], "--input-shapes", "an input of the model")
    sanitized, notes = sanitize(original, input_shapes=input_shapes, fold=fold)
    return _written(save_model(sanitized, out), sanitized, notes)


def extract_model(model: PathLike, out: PathLike, *, inputs: Sequence[str], outputs: Sequence[str],
                  input_shapes: Optional[Mapping[str, Sequence[int]]] = None) -> SurgeryResult:
    """Write the subgraph computing ``outputs`` from ``inputs`` (and the weights) to ``out``.

    ``input_shapes`` may name graph inputs (their shapes are frozen first, so shape inference
    reaches the cut) or the cut's inputs themselves (for tensors shape inference could not shape).
    """
    import onnx

    from trtdebug.debug.subgraph import freeze_input_shapes
    from trtdebug.model import extract_subgraph, load_model, save_model
    from trtdebug.model.graph import ModelGraph
    from trtdebug.model.loader import infer_model_shapes
    from trtdebug.util.files import check_output_paths

    check_output_paths({"-o": out}, [model])
    if not inputs or not outputs:
        raise UsageError("give the tensors to cut at: --inputs a,b and --outputs c")
    m = load_model(model, external_data=False)
    external = any(t.data_location == onnx.TensorProto.EXTERNAL for t in m.graph.initializer)
    graph = ModelGraph(m)
    names = list(graph.tensor_order) + sorted(graph.initializer_names)
    _check_names(inputs, names, "--inputs", "a tensor of the model")
    _check_names(outputs, names, "--outputs", "a tensor of the model")
    shapes = dict(input_shapes or {})
    _check_names(shapes, list(graph.input_names) + list(inputs), "--input-shapes", "a graph input or an --inputs tensor")
    notes: List[str] = []
    frozen = {k: v for k, v in shapes.items() if k in graph.input_names}
    if frozen:
        m = copy.deepcopy(m)
        freeze_input_shapes(m, frozen)
        m = infer_model_shapes(m)
        graph = ModelGraph(m)
    _check_computable(graph, inputs, outputs)
    own = {k: v for k, v in shapes.items() if k not in frozen}
    if own:
        m = _set_shapes(m, own, graph)
    sub = extract_subgraph(m, inputs, outputs, name=f"{m.graph.name}_extract" if m.graph.name else None)
    dynamic = [vi.name for vi in sub.graph.input
               if not vi.type.tensor_type.HasField("shape")
               or any(not d.HasField("dim_value") for d in vi.type.tensor_type.shape.dim)]
    if dynamic:
        notes.append(f"input(s) {', '.join(dynamic)} keep a dynamic or unknown shape; "
                     "give --input-shapes NAME:[dims] to fix them")
    saved = save_model(sub, out, data_from=Path(model).parent) if external else save_model(sub, out)
    return _written(saved, sub, notes)


def _check_names(given: Iterable[str], known: Sequence[str], flag: str, what: str) -> None:
    """One-line UsageError for the first name not in ``known``, with the closest one."""
    known_set = set(known)
    for name in given:
        if name not in known_set:
            same_but_case = [k for k in known if k.lower() == name.lower()]
            close = same_but_case or difflib.get_close_matches(name, list(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UsageError(f"{flag}: {name!r} is not {what}{hint}")


def _check_computable(graph, inputs: Sequence[str], outputs: Sequence[str]) -> None:
    """Every tensor the outputs need is an input, a weight, or computed from them."""
    from trtdebug.model.graph import _implicit_inputs

    given = set(inputs) | set(graph.initializer_names)
    seen = set()
    for out in outputs:
        todo = [(out, out)]
        while todo:
            name, via = todo.pop()
            if name in given or name in seen or not name:
                continue
            seen.add(name)
            node = graph.producers.get(name)
            if node is None:
                raise UsageError(f"--outputs {out!r} needs {name!r}"
                                 + (f" (read where {via!r} is computed)" if via not in (out, name) else "")
                                 + ", which is neither in --inputs nor computed from them: add it to --inputs")
            if node.op_type in ("Constant",):
                continue
            todo += [(t, name) for t in list(node.input) + _implicit_inputs(node)]


def _set_shapes(model, shapes: Mapping[str, Sequence[int]], graph):
    """A copy whose value_info gives ``shapes`` to those tensors (dtype from shape inference, which must know it)."""
    from onnx import helper

    from trtdebug.model.loader import infer_model_shapes

    model = copy.deepcopy(model)
    infos = {vi.name: vi for vi in model.graph.value_info}
    for name, dims in shapes.items():
        info = graph.get(name)
        if info is None or info.dtype is None:
            raise UsageError(f"--input-shapes {name}: its dtype is unknown (shape inference could not type it), "
                             "so it cannot become an input")
        vi = helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(info.dtype), list(dims))
        if name in infos:
            infos[name].CopyFrom(vi)
        else:
            model.graph.value_info.append(vi)
    return infer_model_shapes(model)


def _written(path: Path, model, notes: List[str]) -> SurgeryResult:
    return SurgeryResult(path, len(model.graph.node), [i.name for i in model.graph.input],
                         [o.name for o in model.graph.output], notes)
