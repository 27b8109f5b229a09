#!/usr/bin/env python3
"""Export a real detector with torch.onnx: torchvision's SSDlite320-MobileNetV3 (backbone, extra layers
and both heads; NMS/box decoding left out, as deployments do), random weights (nothing downloaded).

    python3 benchmarks/export_detector.py OUT.onnx     # needs torch + torchvision (the GPU machine has them)

3.4 M parameters, about the size of YOLOv8n, input [1,3,320,320]; depthwise convs, hardswish, SE
blocks and the concatenated per-level heads are what real exporters produce and where bugs hide.
"""
from __future__ import annotations

import sys

import torch
import torchvision


class Detector(torch.nn.Module):
    """SSDlite without post-processing: image -> (class logits, box regressions) for every anchor."""

    def __init__(self) -> None:
        super().__init__()
        ssd = torchvision.models.detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None,
                                                                         num_classes=91)
        self.backbone, self.head = ssd.backbone, ssd.head

    def forward(self, image):
        features = list(self.backbone(image).values())
        out = self.head(features)
        return out["cls_logits"], out["bbox_regression"]


def main() -> None:
    torch.manual_seed(0)
    model = Detector().eval()
    image = torch.rand(1, 3, 320, 320)
    kwargs = dict(input_names=["image"], output_names=["cls_logits", "bbox_regression"], opset_version=17)
    try:
        torch.onnx.export(model, (image,), sys.argv[1], dynamo=False, **kwargs)
    except TypeError:  # torch without the dynamo switch
        torch.onnx.export(model, (image,), sys.argv[1], **kwargs)
    print(f"exported {sys.argv[1]}")


if __name__ == "__main__":
    main()
