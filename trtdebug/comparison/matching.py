"""Compare a Q/DQ (INT8) model with its FP32 model tensor by tensor, in the FP32 model's names.

Quantizing renames tensors: after ``quantize_static`` the value consumers read is no longer
``conv_out`` but ``conv_out_DequantizeLinear_Output``; a graph output's producer writes
``probs_QuantizeLinear_Input``; a weight ``w`` is read as ``w_DequantizeLinear_Output``.  Matching
by exact name would compare the float value *before* each quantizer (so every quantization error
would be invisible) or nothing at all.  Here every DequantizeLinear output takes the name of the
FP32 tensor its pair quantizes, replacing the pre-quantization value of that name: what is
compared is what the next layer of the INT8 model reads, which is also what TensorRT computes
when it fuses the pair into an INT8 kernel.  Which tensors were matched this way is recorded in
the report (``meta.qdq_matching``).  The quantizers' own tensors - INT8 values, dequantized weights,
a graph output's pre-quantization value - have no FP32 counterpart and are left out of the comparison.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Collection, Dict, List, Optional, Set

from trtdebug.results import RunResult


@dataclass
class QdqMatch:
    """``renames``: Q/DQ model tensor -> FP32 name; ``quantized``: FP32 names now compared after their quantizer."""

    renames: Dict[str, str] = field(default_factory=dict)
    quantized: List[str] = field(default_factory=list)  # activations, in graph order
    weights: List[str] = field(default_factory=list)
    internal: Set[str] = field(default_factory=set)  # the quantizers' own tensors, not compared

    def apply(self, result: RunResult) -> RunResult:
        """``result`` (a run of the Q/DQ model) with its tensors named as in the FP32 model."""
        extra = dict(result.extra)
        extra["qdq_matched"] = len(self.renames)
        return RunResult(runner=result.runner, iterations=[ts.renamed(self.renames, self.internal) for ts in result.iterations],
                         runtimes=list(result.runtimes), extra=extra, input_digests=list(result.input_digests))

    def as_meta(self) -> Dict[str, object]:
        return {"matched": dict(self.renames), "activations": list(self.quantized), "weights": list(self.weights),
                "not_compared": sorted(self.internal)}

    def note(self, model: str) -> str:
        return (f"Q/DQ: {len(self.quantized)} activation(s) and {len(self.weights)} weight(s) of {model} compared in "
                "FP32 names after their quantizer (the DequantizeLinear outputs the next layers read); "
                f"the report's meta.qdq_matching lists them; {len(self.internal)} tensor(s) of the quantizers themselves "
                "(INT8 values, dequantized weights) are not compared")


def match_qdq(model, reference_names: Collection[str]) -> Optional[QdqMatch]:
    """How to name ``model``'s tensors (a Q/DQ ModelProto) as in a reference holding ``reference_names``.

    None when the model has no quantizers, or when the reference already has the DQ outputs' names
    (it is a run of a Q/DQ model too, and exact names are right).
    """
    from trtdebug.model.qdq import ACTIVATION, find_quantizers, fp32_name

    quantizers = find_quantizers(model).quantizers
    known = set(reference_names)
    if not quantizers or all(q.output in known for q in quantizers):
        return None
    match, taken = QdqMatch(), set()
    for q in quantizers:
        target = fp32_name(q, known)
        if target not in known or target in taken:  # not in the reference, or a second DQ of one value
            continue
        taken.add(target)
        if q.tensor not in known:  # the pre-quantization value of a graph output, or a weight's INT8 values
            match.internal.add(q.tensor)
        if target != q.output:  # a graph output's DQ already has the FP32 name
            match.renames[q.output] = target
        (match.quantized if q.kind == ACTIVATION else match.weights).append(target)
    for q in quantizers:  # INT8 values, and DQ outputs that stand for no reference tensor (unmatched weights)
        match.internal.add(q.quantized)
        if q.output not in match.renames and q.output not in known:
            match.internal.add(q.output)
    return match if match.renames else None
