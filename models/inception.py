"""GoogLeNet-style Inception network for small images (kuangliu/pytorch-cifar layout)."""

from __future__ import annotations

import torch
from torch import nn

from models.layers import conv_bn_relu
from models.registry import register

# (in, 1x1, 3x3 reduce, 3x3, double-3x3 reduce, double-3x3, pool proj) per module, as in
# Szegedy et al. 2014, Table 1; the "5x5" branch is two 3x3 convs (same receptive field).
INCEPTION_3 = [(192, 64, 96, 128, 16, 32, 32), (256, 128, 128, 192, 32, 96, 64)]
INCEPTION_4 = [
    (480, 192, 96, 208, 16, 48, 64),
    (512, 160, 112, 224, 24, 64, 64),
    (512, 128, 128, 256, 24, 64, 64),
    (512, 112, 144, 288, 32, 64, 64),
    (528, 256, 160, 320, 32, 128, 128),
]
INCEPTION_5 = [(832, 256, 160, 320, 32, 128, 128), (832, 384, 192, 384, 48, 128, 128)]


class Inception(nn.Module):
    """Four parallel branches concatenated on channels; every conv is followed by BN + ReLU.

    The branch convs have no bias (BN's shift replaces it); only the stem conv keeps one. That
    is 7,712 parameters fewer than kuangliu's original and gives the reference 6,158,538.
    """

    def __init__(
        self, in_ch: int, n1: int, n3_reduce: int, n3: int, n5_reduce: int, n5: int, pool: int
    ) -> None:
        super().__init__()
        self.b1 = conv_bn_relu(in_ch, n1, 1)
        self.b2 = nn.Sequential(conv_bn_relu(in_ch, n3_reduce, 1), conv_bn_relu(n3_reduce, n3))
        self.b3 = nn.Sequential(
            conv_bn_relu(in_ch, n5_reduce, 1),
            conv_bn_relu(n5_reduce, n5),
            conv_bn_relu(n5, n5),
        )
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), conv_bn_relu(in_ch, pool, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


class GoogLeNet(nn.Module):
    """3x3 conv to 192 channels, inception 3a-3b, pool, 4a-4e, pool, 5a-5b, GAP, linear.

    No 7x7 stem or early pooling: a 32x32 image reaches the 3x modules at full resolution, and
    the two stride-2 pools leave 8x8 (2x2 for 8x8 digits) for the global average pool.
    """

    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.stem = conv_bn_relu(in_channels, 192, bias=True)  # kept, as in the reference count
        self.features = nn.Sequential(
            *(Inception(*cfg) for cfg in INCEPTION_3),
            nn.MaxPool2d(3, 2, 1),
            *(Inception(*cfg) for cfg in INCEPTION_4),
            nn.MaxPool2d(3, 2, 1),
            *(Inception(*cfg) for cfg in INCEPTION_5),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(self.stem(x))).flatten(1))


@register("mynet")
def mynet(*, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """GoogLeNet for 32x32 images (kuangliu/pytorch-cifar); 6,158,538 params on 3x32x32."""
    return GoogLeNet(num_classes, in_channels)
