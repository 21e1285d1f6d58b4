"""VGG-16 with batch norm, sized for 32x32 images (the usual CIFAR adaptation)."""

from __future__ import annotations

from typing import Annotated

import torch
from torch import nn

from models.layers import conv_bn_relu
from models.options import DROPOUT, POSITIVE
from models.registry import register

VGG16_CONVS = [2, 2, 3, 3, 3]  # 3x3 convs per block; 13 in all, + 2 linear layers = 16
VGG16_LATE_WIDTHS = [256, 512, 512]  # channels of blocks 3-5; blocks 1-2 follow ``first_width``


class VGG(nn.Module):
    """Blocks of 3x3 conv-BN-ReLU, each followed by a 2x2 max-pool, then GAP and an MLP head.

    The head is small (512 -> 512 -> classes with dropout before each linear) instead of
    torchvision's 25088 -> 4096 -> 4096 (120M parameters for 7x7 features a 32x32 image never
    has). Pools are skipped once the feature map is 1 pixel wide, so 8x8 digits work.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        image_size: int,
        widths: list[int],
        convs: list[int],
        dropout: float,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, size = in_channels, image_size
        for n, width in zip(convs, widths, strict=True):
            for _ in range(n):
                layers.append(conv_bn_relu(channels, width))
                channels = width
            if size >= 2:
                layers.append(nn.MaxPool2d(2))
                size //= 2
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(channels, 512),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(512, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


@register("vgg16")
def vgg16(
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    first_width: Annotated[int, POSITIVE] = 64,
    dropout: Annotated[float, DROPOUT] = 0.5,
) -> nn.Module:
    """VGG-16-BN with a 512-wide MLP head; 14,986,698 parameters on 3x32x32 with 10 classes.

    ``first_width`` sets block 1 and doubles for block 2 (64 -> 64, 128 as in VGG; 96 -> 96,
    192); blocks 3-5 keep 256, 512, 512.
    """
    widths = [first_width, 2 * first_width, *VGG16_LATE_WIDTHS]
    return VGG(num_classes, in_channels, image_size, widths, VGG16_CONVS, dropout)
