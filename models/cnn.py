"""Small plain CNNs: ``simple_cnn`` (the fast default), the PyTorch MNIST example, LeNet-5."""

from __future__ import annotations

import torch
from torch import nn

from models.registry import check_dropout, check_positive, register


class SimpleCNN(nn.Module):
    """``depth`` blocks of conv3x3-BN-ReLU, channels ``width * 2**i``, then GAP, dropout, linear.

    A 2x2 max-pool follows a block while the feature map is still >= 4 pixels wide, so an 8x8
    digit ends at 2x2 after two blocks and a 32x32 image keeps shrinking for deeper nets.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        image_size: int,
        width: int,
        depth: int,
        dropout: float,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, size = in_channels, image_size
        for i in range(depth):
            out = width * 2**i
            layers += [
                nn.Conv2d(channels, out, 3, padding=1, bias=False),  # BN supplies the bias
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
            ]
            if size >= 4:
                layers.append(nn.MaxPool2d(2))
                size //= 2
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x)).flatten(1)
        return self.fc(self.dropout(x))


@register("simple_cnn")
def simple_cnn(
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    width: int = 32,
    depth: int = 2,
    dropout: float = 0.1,
) -> nn.Module:
    """Fast default for 8x8 digits: ``depth`` conv blocks starting at ``width`` channels."""
    return SimpleCNN(
        num_classes,
        in_channels,
        image_size,
        check_positive("width", width),
        check_positive("depth", depth),
        check_dropout(dropout),
    )
