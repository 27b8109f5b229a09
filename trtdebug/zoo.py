"""Small but realistic models built in code, for the examples, the tests and the benchmarks.

No binary fixtures: every model here is built with ``onnx.helper`` from seeded weights, so
a test can rebuild exactly the model it needs.  Structures follow what deployment engineers
actually ship: a conv net (conv/batch-norm/ReLU/pooling/classifier) and transformer encoder
blocks (layer norm, multi-head attention, softmax, GELU) with dynamic batch and sequence.
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np

OPSET = 17


def _const(inits: list, rng: np.random.Generator, name: str, shape, scale: float = 0.1):
    """Add a seeded random float32 initializer and return its name."""
    return _init(inits, name, rng.standard_normal(shape) * scale)


def _init(inits: list, name: str, value, dtype=np.float32):
    """Add an initializer holding ``value`` (a scalar or array) and return its name."""
    from onnx import numpy_helper

    inits.append(numpy_helper.from_array(np.array(value, dtype=dtype), name))
    return name


def _model(nodes, inputs, outputs, inits, name: str):
    from onnx import helper

    graph = helper.make_graph(nodes, name, inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="trtdebug.zoo")
    model.ir_version = 8  # readable by every onnxruntime/TensorRT parser we support
    return model


def conv_net(seed: int = 0, *, channels: int = 16, classes: int = 10, batch: Optional[int] = None, size: int = 32):
    """A small image classifier: 3 conv/BN/ReLU stages with max pooling, global pool, Gemm.

    ``batch=None`` gives a dynamic batch dimension named ``N``.
    """
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    x = "image"
    c_in = 3
    for stage in range(3):
        c_out = channels * (2 ** stage)
        w = _const(inits, rng, f"stage{stage}.conv.weight", (c_out, c_in, 3, 3), scale=(2.0 / (9 * c_in)) ** 0.5)
        b = _const(inits, rng, f"stage{stage}.conv.bias", (c_out,), scale=0.01)
        conv = f"stage{stage}/conv_out"
        nodes.append(helper.make_node("Conv", [x, w, b], [conv], name=f"stage{stage}/Conv", pads=[1, 1, 1, 1]))
        scale = _init(inits, f"stage{stage}.bn.scale", 1.0 + rng.standard_normal(c_out) * 0.1)
        bias = _const(inits, rng, f"stage{stage}.bn.bias", (c_out,), scale=0.1)
        mean = _const(inits, rng, f"stage{stage}.bn.mean", (c_out,), scale=0.1)
        var = _init(inits, f"stage{stage}.bn.var", 1.0 + np.abs(rng.standard_normal(c_out)) * 0.2)
        bn = f"stage{stage}/bn_out"
        nodes.append(helper.make_node("BatchNormalization", [conv, scale, bias, mean, var], [bn], name=f"stage{stage}/BatchNormalization", epsilon=1e-5))
        relu = f"stage{stage}/relu_out"
        nodes.append(helper.make_node("Relu", [bn], [relu], name=f"stage{stage}/Relu"))
        pool = f"stage{stage}/pool_out"
        nodes.append(helper.make_node("MaxPool", [relu], [pool], name=f"stage{stage}/MaxPool", kernel_shape=[2, 2], strides=[2, 2]))
        x, c_in = pool, c_out
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap_out"], name="head/GlobalAveragePool"))
    nodes.append(helper.make_node("Flatten", ["gap_out"], ["flat"], name="head/Flatten", axis=1))
    fw = _const(inits, rng, "head.fc.weight", (classes, c_in), scale=(1.0 / c_in) ** 0.5)
    fb = _const(inits, rng, "head.fc.bias", (classes,), scale=0.01)
    nodes.append(helper.make_node("Gemm", ["flat", fw, fb], ["logits"], name="head/Gemm", transB=1))
    nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], name="head/Softmax", axis=-1))
    n = batch if batch is not None else "N"
    inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, [n, 3, size, size])]
    outputs = [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [n, classes])]
    return _model(nodes, inputs, outputs, inits, "conv_net")


def _encoder_block(nodes: list, inits: list, rng, x: str, prefix: str, hidden: int, heads: int, ffn: int) -> str:
    """Append one pre-norm encoder block reading ``x`` [B,S,H]; returns the output tensor name."""
    from onnx import helper

    def node(op, ins, name, **attrs):
        out = f"{prefix}/{name}_out"
        nodes.append(helper.make_node(op, ins, [out], name=f"{prefix}/{name}", **attrs))
        return out

    head_dim = hidden // heads
    ln1 = node("LayerNormalization", [x, _ones(inits, f"{prefix}.ln1.weight", hidden), _zeros(inits, f"{prefix}.ln1.bias", hidden)], "ln1", axis=-1, epsilon=1e-5)
    shape_bshd = _init(inits, f"{prefix}.shape_bshd", [0, 0, heads, head_dim], np.int64)
    shape_bsh = _init(inits, f"{prefix}.shape_bsh", [0, 0, hidden], np.int64)
    proj = {}
    for p in ("q", "k", "v"):
        w = _const(inits, rng, f"{prefix}.attn.{p}.weight", (hidden, hidden), scale=hidden ** -0.5)
        b = _const(inits, rng, f"{prefix}.attn.{p}.bias", (hidden,), scale=0.02)
        mm = node("MatMul", [ln1, w], f"{p}_proj")
        add = node("Add", [mm, b], f"{p}_bias")
        r = node("Reshape", [add, shape_bshd], f"{p}_reshape")
        perm = [0, 2, 3, 1] if p == "k" else [0, 2, 1, 3]
        proj[p] = node("Transpose", [r], f"{p}_transpose", perm=perm)
    scores = node("MatMul", [proj["q"], proj["k"]], "qk_matmul")
    scaled = node("Mul", [scores, _init(inits, f"{prefix}.attn.scale", head_dim ** -0.5)], "qk_scale")
    probs = node("Softmax", [scaled], "softmax", axis=-1)
    ctx = node("MatMul", [probs, proj["v"]], "attn_v")
    ctx_t = node("Transpose", [ctx], "ctx_transpose", perm=[0, 2, 1, 3])
    ctx_r = node("Reshape", [ctx_t, shape_bsh], "ctx_reshape")
    ow = _const(inits, rng, f"{prefix}.attn.out.weight", (hidden, hidden), scale=hidden ** -0.5)
    ob = _const(inits, rng, f"{prefix}.attn.out.bias", (hidden,), scale=0.02)
    out = node("Add", [node("MatMul", [ctx_r, ow], "out_proj"), ob], "out_bias")
    res1 = node("Add", [x, out], "residual1")
    ln2 = node("LayerNormalization", [res1, _ones(inits, f"{prefix}.ln2.weight", hidden), _zeros(inits, f"{prefix}.ln2.bias", hidden)], "ln2", axis=-1, epsilon=1e-5)
    w1 = _const(inits, rng, f"{prefix}.ffn.fc1.weight", (hidden, ffn), scale=hidden ** -0.5)
    b1 = _const(inits, rng, f"{prefix}.ffn.fc1.bias", (ffn,), scale=0.02)
    h = node("Add", [node("MatMul", [ln2, w1], "fc1"), b1], "fc1_bias")
    # GELU, exact form: 0.5 * x * (1 + erf(x / sqrt(2)))  (the Gelu op needs opset 20)
    div = node("Div", [h, _init(inits, f"{prefix}.gelu.sqrt2", 2 ** 0.5)], "gelu_div")
    erf = node("Erf", [div], "gelu_erf")
    one_plus = node("Add", [erf, _init(inits, f"{prefix}.gelu.one", 1.0)], "gelu_add")
    gelu = node("Mul", [node("Mul", [h, one_plus], "gelu_mul"), _init(inits, f"{prefix}.gelu.half", 0.5)], "gelu")
    w2 = _const(inits, rng, f"{prefix}.ffn.fc2.weight", (ffn, hidden), scale=ffn ** -0.5)
    b2 = _const(inits, rng, f"{prefix}.ffn.fc2.bias", (hidden,), scale=0.02)
    h2 = node("Add", [node("MatMul", [gelu, w2], "fc2"), b2], "fc2_bias")
    return node("Add", [res1, h2], "residual2")


def _ones(inits, name, n):
    return _init(inits, name, np.ones(n, np.float32))


def _zeros(inits, name, n):
    return _init(inits, name, np.zeros(n, np.float32))


def transformer(seed: int = 0, *, blocks: int = 1, hidden: int = 64, heads: int = 4, ffn: Optional[int] = None,
                batch=None, seq=None):
    """Transformer encoder blocks on ``x`` [batch, seq, hidden]; dynamic ``B``/``S`` by default."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    nodes: List = []
    inits: List = []
    x = "x"
    for i in range(blocks):
        x = _encoder_block(nodes, inits, rng, x, f"block{i}", hidden, heads, ffn or 4 * hidden)
    lnw, lnb = _ones(inits, "final_ln.weight", hidden), _zeros(inits, "final_ln.bias", hidden)
    nodes.append(helper.make_node("LayerNormalization", [x, lnw, lnb], ["y"], name="final_ln", axis=-1, epsilon=1e-5))
    b = batch if batch is not None else "B"
    s = seq if seq is not None else "S"
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [b, s, hidden])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [b, s, hidden])]
    return _model(nodes, inputs, outputs, inits, f"transformer_{blocks}x{hidden}")


MODELS = {"conv_net": conv_net, "transformer": transformer}


def paddle_conv_net(seed: int = 0, *, classes: int = 10, batch: int = 1, size: int = 32):
    """A PaddlePaddle-style mobile classifier at opset 11 (what paddle2onnx exports by default).

    Stem conv/BN/HardSwish, then two inverted-residual blocks (1x1 expand, 3x3 depthwise,
    1x1 project, each with BatchNormalization; ReLU or HardSwish; a residual Add where the
    shape allows), global average pool, Flatten and a Gemm head.  BatchNormalization below
    opset 14 is exactly what onnx.reference used to compute in training mode.
    """
    from onnx import TensorProto, helper

    rng = np.random.default_rng(seed)
    nodes: List = []
    inits: List = []

    def conv_bn(x, prefix, c_in, c_out, k, *, stride=1, group=1, act="Relu"):
        w = _const(inits, rng, f"{prefix}.conv.weight", (c_out, c_in // group, k, k), scale=(2.0 / (k * k * c_in // group)) ** 0.5)
        conv = f"{prefix}/conv_out"
        nodes.append(helper.make_node("Conv", [x, w], [conv], name=f"{prefix}/Conv", kernel_shape=[k, k],
                                      pads=[k // 2] * 4, strides=[stride, stride], group=group))
        scale = _init(inits, f"{prefix}.bn.scale", 1.0 + rng.standard_normal(c_out) * 0.1)
        bias = _const(inits, rng, f"{prefix}.bn.bias", (c_out,), scale=0.1)
        mean = _const(inits, rng, f"{prefix}.bn.mean", (c_out,), scale=0.1)
        var = _init(inits, f"{prefix}.bn.var", 1.0 + np.abs(rng.standard_normal(c_out)) * 0.2)
        bn = f"{prefix}/bn_out"
        nodes.append(helper.make_node("BatchNormalization", [conv, scale, bias, mean, var], [bn],
                                      name=f"{prefix}/BatchNormalization", epsilon=1e-5, momentum=0.9))
        if act is None:
            return bn
        out = f"{prefix}/{act.lower()}_out"
        if act == "HardSwish":  # no HardSwish op before opset 14: paddle2onnx writes x * HardSigmoid(x)
            hs = f"{prefix}/hardsigmoid_out"
            nodes.append(helper.make_node("HardSigmoid", [bn], [hs], name=f"{prefix}/HardSigmoid", alpha=1 / 6, beta=0.5))
            nodes.append(helper.make_node("Mul", [bn, hs], [out], name=f"{prefix}/HardSwish"))
        else:
            nodes.append(helper.make_node(act, [bn], [out], name=f"{prefix}/{act}"))
        return out

    x = conv_bn("image", "stem", 3, 16, 3, stride=2, act="HardSwish")
    for i, (act, expand) in enumerate((("Relu", 32), ("HardSwish", 48))):
        h = conv_bn(x, f"block{i}.expand", 16, expand, 1, act=act)
        h = conv_bn(h, f"block{i}.depthwise", expand, expand, 3, group=expand, act=act)
        h = conv_bn(h, f"block{i}.project", expand, 16, 1, act=None)
        out = f"block{i}/residual_out"
        nodes.append(helper.make_node("Add", [x, h], [out], name=f"block{i}/residual"))
        x = out
    nodes.append(helper.make_node("MaxPool", [x], ["pool_out"], name="MaxPool", kernel_shape=[2, 2], strides=[2, 2]))
    x = conv_bn("pool_out", "head.conv", 16, 64, 1, act="HardSwish")
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap_out"], name="head/GlobalAveragePool"))
    nodes.append(helper.make_node("Flatten", ["gap_out"], ["flat"], name="head/Flatten", axis=1))
    fw = _const(inits, rng, "head.fc.weight", (64, classes), scale=64 ** -0.5)
    fb = _const(inits, rng, "head.fc.bias", (classes,), scale=0.01)
    nodes.append(helper.make_node("Gemm", ["flat", fw, fb], ["logits"], name="head/Gemm"))
    nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], name="head/Softmax", axis=1))
    inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, size, size])]
    outputs = [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, classes])]
    model = _model(nodes, inputs, outputs, inits, "paddle_conv_net")
    model.opset_import[0].version = 11
    model.ir_version = 6
    return model


MODELS["paddle_conv_net"] = paddle_conv_net


def with_fp16_overflow(model, block: int = 0):
    """``model`` (a :func:`transformer`) with an FP16 overflow planted in block ``block``'s FFN input.

    The second LayerNorm's output (values ~N(0,1)) is multiplied by 3e4, multiplied by an identity
    matrix and divided by 3e4 again before the FFN: FP32 computes the identity, but every |x| > 2.2
    stores as Inf in FP16 (the MatMul keeps the big tensor from being folded into one pointwise op).
    The nodes are ``planted/up``, ``planted/eye`` and ``planted/down``: what a precision search must keep.
    """
    from onnx import helper, numpy_helper

    g = model.graph
    src, dst = f"block{block}/ln2_out", f"block{block}/fc1"
    hidden = next(int(t.dims[0]) for t in g.initializer if t.name == f"block{block}.ln2.weight")
    for n in g.node:
        if n.name == dst:
            n.input[0] = "planted/down_out"
    at = next(i for i, n in enumerate(g.node) if n.name == f"block{block}/ln2") + 1
    g.initializer.extend([numpy_helper.from_array(np.array(3e4, np.float32), "planted.scale"),
                          numpy_helper.from_array(np.eye(hidden, dtype=np.float32), "planted.eye")])
    new = [helper.make_node("Mul", [src, "planted.scale"], ["planted/up_out"], name="planted/up"),
           helper.make_node("MatMul", ["planted/up_out", "planted.eye"], ["planted/eye_out"], name="planted/eye"),
           helper.make_node("Div", ["planted/eye_out", "planted.scale"], ["planted/down_out"], name="planted/down")]
    for k, n in enumerate(new):
        g.node.insert(at + k, n)
    return model
