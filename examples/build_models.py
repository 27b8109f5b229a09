"""Write the example models to a directory.

    python examples/build_models.py --out out

conv_net.onnx      image classifier: conv / batch-norm / ReLU / max-pool x3, global pool, Gemm, Softmax
                   (dynamic batch N, input image [N,3,32,32])
transformer.onnx   one pre-norm encoder block: layer norm, 4-head attention, softmax, GELU MLP
                   (dynamic batch B and sequence S, input x [B,S,64])
encoder12.onnx     twelve such blocks (~400 tensors), for timing every-layer comparisons
"""
from __future__ import annotations

import argparse
from pathlib import Path

from trtdebug import zoo
from trtdebug.model import save_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("out"), help="directory to write the models to")
    args = parser.parse_args()
    models = {
        "conv_net.onnx": zoo.conv_net(),
        "transformer.onnx": zoo.transformer(),
        "encoder12.onnx": zoo.transformer(blocks=12),
    }
    for name, model in models.items():
        path = save_model(model, args.out / name)
        print(f"wrote {path} ({len(model.graph.node)} nodes)")


if __name__ == "__main__":
    main()
