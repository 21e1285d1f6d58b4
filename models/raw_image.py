"""A trained network behind the normalisation its trainer used: what tuner exports and serves."""

from __future__ import annotations

import torch
from torch import nn


class RawImageClassifier(nn.Module):
    """A trained network behind the normalisation its trainer used; outputs probabilities.

    Input: float32 (N, C, H, W) pixel values 0..255 (uint8 images cast to float). Output:
    float32 (N, classes) softmax probabilities.
    """

    def __init__(self, network: nn.Module, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.network = network
        self.register_buffer("mean", mean.float().reshape(1, -1, 1, 1))  # 0..1 units, per channel
        self.register_buffer("std", std.float().reshape(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The same arithmetic as data.augment.to_float, so predictions match the evaluation.
        x = (x / 255 - self.mean) / self.std
        return torch.softmax(self.network(x).float(), dim=1)
