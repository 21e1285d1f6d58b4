"""``airbench``: the net of Keller Jordan's airbench (CIFAR-10 to 94% in seconds), reimplemented.

A 2x2 "whitening" convolution set from the training data's patch statistics, three ConvGroups
(conv3x3, max-pool 2, BN, GELU, conv3x3, BN, GELU), a global max-pool, a bias-free linear head
and a fixed logit temperature. As in airbench the whitening weights are frozen by default, the
BatchNorm scales are fixed at 1 (only their shifts learn) and each 3x3 conv starts as an
identity on its first input channels. The rest of the recipe (optimizer, schedule, TTA) is the
trainer's business, not the model's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
from torch import nn

from models.options import POSITIVE, Range
from models.registry import ModelError, register

WHITEN_KERNEL = 2  # pixels; 2x2 patches: 4 * C dimensions, cheap to whiten exactly
WHITEN_EPS = 5e-4  # added to each patch-covariance eigenvalue (normalized pixels squared)
MOMENTUM = Range(0, 1, low_open=True)  # PyTorch's batchnorm momentum: the new batch's weight
SCALE = Range(0, low_open=True)  # the logits' multiplier

# ---------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    """A bias-free "same" 3x3 conv whose first ``in_channels`` filters start as the identity.

    The remaining filters keep PyTorch's default init; a net of such convs starts close to
    passing its input through, which is what lets airbench train at a high rate from step one.
    """
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[:in_channels])
    return conv


def batchnorm(channels: int, momentum: float) -> nn.BatchNorm2d:
    """BatchNorm with its scale fixed at 1 (not trained, as in airbench); the shift learns."""
    norm = nn.BatchNorm2d(channels, momentum=momentum)
    norm.weight.requires_grad_(False)
    return norm


class ConvGroup(nn.Module):
    """conv3x3, max-pool 2 (skipped by the caller's ``pool=False``), BN, GELU, conv3x3, BN, GELU."""

    def __init__(self, in_channels: int, out_channels: int, momentum: float, pool: bool) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels)
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()
        self.norm1 = batchnorm(out_channels, momentum)
        self.conv2 = conv3x3(out_channels, out_channels)
        self.norm2 = batchnorm(out_channels, momentum)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))


# ---------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------


class AirbenchNet(nn.Module):
    """Whitening 2x2 conv + GELU, one ConvGroup per width, global max-pool, linear, times ``scale``.

    Call ``data_init(images)`` once on a few thousand normalized training images before training
    to set the whitening conv; without it the stem is an ordinary randomly initialised conv.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        image_size: int,
        widths: list[int],
        batchnorm_momentum: float,
        scale: float,
        whiten_trainable: bool,
    ) -> None:
        super().__init__()
        # Each eigenvector of the patch covariance and its negative: after the GELU the pair
        # keeps both signs of the component, so the stem loses nothing (2 * C * 2 * 2 channels).
        whiten_width = 2 * in_channels * WHITEN_KERNEL**2
        # Bias on: airbench trains the whitening bias (only early on); data_init centers with it.
        self.whiten = nn.Conv2d(in_channels, whiten_width, WHITEN_KERNEL, bias=True)
        self.whiten.weight.requires_grad_(whiten_trainable)
        self.act = nn.GELU()
        groups, channels, size = [], whiten_width, image_size - WHITEN_KERNEL + 1
        for width in widths:
            # Pool only while the map is >= 2 pixels: a 2x2 pool of a 1x1 map would be empty.
            # Skipping it (rather than ceil_mode) keeps airbench's exact sizes on 32x32
            # (31 -> 15 -> 7 -> 3) and lets 8x8 digits run 7 -> 3 -> 1 -> 1.
            groups.append(ConvGroup(channels, width, batchnorm_momentum, pool=size >= 2))
            channels, size = width, size // 2 if size >= 2 else size
        self.groups = nn.Sequential(*groups)
        self.pool = nn.AdaptiveMaxPool2d(1)  # airbench's MaxPool2d(3) on its final 3x3 map
        self.head = nn.Linear(channels, num_classes, bias=False)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.groups(self.act(self.whiten(x)))
        return self.head(self.pool(x).flatten(1)) * self.scale

    @torch.no_grad()
    def data_init(self, images: torch.Tensor, eps: float = WHITEN_EPS) -> None:
        """Set the whitening conv from the 2x2 patches of ``images`` (N, C, H, W), normalized.

        With patch mean ``m``, covariance ``V diag(l) V^T``, the filters are ``v_i / sqrt(l_i +
        eps)`` and their negatives (largest variance first) and the bias is ``-W m``, so the
        stem's pre-activation outputs over these patches have zero mean and covariance about
        ``[[I, -I], [-I, I]]``. ``eps`` damps components with less variance than about ``eps``
        (pixel noise) instead of blowing them up. A few thousand images are plenty.
        """
        weight = self.whiten.weight
        if images.ndim != 4 or images.shape[1] != weight.shape[1]:
            raise ValueError(
                f"data_init needs images of shape (N, {weight.shape[1]}, H, W); "
                f"got {tuple(images.shape)}"
            )
        x = images.to(device=weight.device, dtype=torch.float32)
        # (N * L, C * 2 * 2), flattened in the same (channel, row, column) order as the weights.
        patches = nn.functional.unfold(x, WHITEN_KERNEL).transpose(1, 2).flatten(0, 1)
        mean = patches.mean(0)
        centered = patches - mean
        cov = (centered.T @ centered).double() / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(cov)  # ascending
        eigenvalues, eigenvectors = eigenvalues.flip(0), eigenvectors.flip(1)
        filters = (eigenvectors / torch.sqrt(eigenvalues.clamp(min=0) + eps)).T.float()
        filters = torch.cat([filters, -filters])  # (2 * C * 4, C * 4)
        weight.copy_(filters.view_as(weight))
        self.whiten.bias.copy_(-(filters @ mean))


# ---------------------------------------------------------------------------------------------
# Option checks and the registered factory
# ---------------------------------------------------------------------------------------------


def check_widths(widths: Sequence[int]) -> list[int]:
    """``widths`` as a list of 1-4 ints (channels per ConvGroup); their type is checked with the
    other options' (``models.build``), their count only here."""
    if not 1 <= len(widths) <= 4:
        raise ModelError(f"option widths={widths!r} must be a list of 1-4 positive integers")
    return list(widths)


@register("airbench")
def airbench(
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    widths: Sequence[Annotated[int, POSITIVE]] = (64, 256, 256),
    batchnorm_momentum: Annotated[float, MOMENTUM] = 0.4,
    scale: Annotated[float, SCALE] = 1 / 9,
    whiten_trainable: bool = False,
) -> nn.Module:
    """airbench94's net: 1,971,352 trainable parameters on 3x32x32 with 10 classes.

    ``widths``: channels of each ConvGroup (1-4 groups; each halves the map). ``batchnorm_
    momentum``: PyTorch's convention, the weight of the new batch in the running statistics
    (airbench writes the same 0.4 as 0.6, the weight of the old). ``scale``: logits are
    multiplied by it (a temperature; airbench's 1/9). ``whiten_trainable``: let the whitening
    conv's weights learn after ``data_init`` (airbench keeps them frozen).

    The trainer should call ``model.data_init(x)`` on a few thousand normalized training images
    before training (see ``AirbenchNet.data_init``).
    """
    return AirbenchNet(
        num_classes,
        in_channels,
        image_size,
        check_widths(widths),
        batchnorm_momentum,
        scale,
        whiten_trainable,
    )
