"""The convolutional nets' initialisation, shared by the CNN family and ResNet-18."""

from __future__ import annotations

from torch import nn


def kaiming_conv_bn(model: nn.Module) -> None:
    """He-normal convs (fan_out, ReLU gain) and identity BatchNorm, as torchvision's ResNets start."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
