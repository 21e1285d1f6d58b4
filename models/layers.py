"""Building blocks shared by several model families."""

from __future__ import annotations

from torch import nn


def conv_bn_relu(
    in_channels: int, out_channels: int, kernel: int = 3, *, stride: int = 1, bias: bool = False
) -> nn.Sequential:
    """A ``kernel`` x ``kernel`` "same" convolution, BatchNorm, ReLU.

    ``bias`` defaults to False because the BatchNorm shift makes a conv bias redundant; some
    reference layouts keep it, and their parameter counts include it.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=bias),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )
