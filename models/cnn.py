"""Small plain CNNs: ``simple_cnn`` (the fast default), the PyTorch MNIST example, LeNet-5."""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from torch import nn

from models.layers import conv_bn_relu
from models.options import DROPOUT, POSITIVE
from models.registry import register

Activation = Literal["tanh", "relu"]  # LeNet-5's


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
            layers.append(conv_bn_relu(channels, out))
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
    width: Annotated[int, POSITIVE] = 32,
    depth: Annotated[int, POSITIVE] = 2,
    dropout: Annotated[float, DROPOUT] = 0.1,
) -> nn.Module:
    """Fast default for 8x8 digits: ``depth`` conv blocks starting at ``width`` channels."""
    return SimpleCNN(
        num_classes,
        in_channels,
        image_size,
        width,
        depth,
        dropout,
    )


class MnistCNN(nn.Module):
    """The PyTorch MNIST example net (github.com/pytorch/examples, ``mnist/main.py``, 2017).

    Returns raw logits instead of the example's ``log_softmax`` because the trainer applies
    cross-entropy itself (the loss would be the same: log_softmax is idempotent). Below 16
    pixels the two 5x5 convs are padded "same" so an 8x8 digit still has 2x2 left to flatten.
    """

    def __init__(self, num_classes: int, in_channels: int, image_size: int, dropout: float):
        super().__init__()
        pad = 2 if image_size < 16 else 0
        self.conv1 = nn.Conv2d(in_channels, 10, 5, padding=pad)
        self.conv2 = nn.Conv2d(10, 20, 5, padding=pad)
        self.conv2_drop = nn.Dropout2d(dropout)
        size = ((image_size + 2 * pad - 4) // 2 + 2 * pad - 4) // 2  # after conv, pool, conv, pool
        self.fc1 = nn.Linear(20 * size * size, 50)  # 320 inputs on 28x28
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(50, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(nn.functional.max_pool2d(self.conv1(x), 2))
        x = torch.relu(nn.functional.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
        x = self.dropout(torch.relu(self.fc1(x.flatten(1))))
        return self.fc2(x)


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al. 1998) with the usual 28x28 adaptation: conv1 padded to keep 28x28.

    The second subsampling is an adaptive average pool to 5x5, which on 28x28 input is exactly
    the classic 2x2 average pool (10x10 -> 5x5) and lets any image size >= 8 reach the 400-wide
    fully connected layers. Below 10 pixels after the first pool, conv2 is padded "same".
    """

    def __init__(
        self, num_classes: int, in_channels: int, image_size: int, activation: Activation
    ) -> None:
        super().__init__()
        act = nn.Tanh if activation == "tanh" else nn.ReLU
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2),
            act(),
            nn.AvgPool2d(2),
            nn.Conv2d(6, 16, 5, padding=0 if image_size // 2 >= 10 else 2),
            act(),
            nn.AdaptiveAvgPool2d(5),
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * 5 * 5, 120), act(), nn.Linear(120, 84), act(), nn.Linear(84, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


@register("mnist_cnn")
def mnist_cnn(
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    dropout: Annotated[float, DROPOUT] = 0.5,
) -> nn.Module:
    """The PyTorch MNIST example: 21,840 parameters on 1x28x28 with 10 classes; raw logits."""
    return MnistCNN(num_classes, in_channels, image_size, dropout)


@register("lenet5")
def lenet5(
    *, num_classes: int, in_channels: int, image_size: int, activation: Activation = "tanh"
) -> nn.Module:
    """Classic LeNet-5 (``activation`` 'tanh' as in the paper, or 'relu'); 61,706 on 1x28x28."""
    return LeNet5(num_classes, in_channels, image_size, activation)
