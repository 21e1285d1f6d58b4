"""Parts of fast training recipes (Keller Jordan's airbench) that the deep trainable offers:
a bias parameter group, an exponential moving average of the weights, test-time augmentation.

Each is a plain function or a small dataclass built from its config section, so the options a
section accepts, and their types, are the dataclass's fields or the function's keyword
arguments (``checks.option_types(Ema)``), never a second list.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

# ---------------------------------------------------------------------------------------------
# Parameter groups
# ---------------------------------------------------------------------------------------------


def optimizer_with_bias_group(
    optimizer_class: Callable[..., torch.optim.Optimizer],
    model: nn.Module,
    /,  # from the code; the keyword arguments come from a config
    *,
    bias_lr_scale: float = 1.0,
    bias_weight_decay: bool = True,
    **options: Any,
) -> torch.optim.Optimizer:
    """``optimizer_class(model's parameters, **options)``, with the biases in a group of their own
    when asked: ``bias_lr_scale`` times the learning rate, and no weight decay if
    ``bias_weight_decay`` is false.

    "Biases" are every 1-D parameter: biases, and norm layers' scales and shifts (timm's rule).
    Their weight decay is divided by ``bias_lr_scale``, so that what it takes off per step (lr *
    weight_decay for SGD and AdamW) stays that of the weights: airbench scales the biases' step
    (its ``bias_scaler``, 64), not their decay. Group 0 is always the weights.
    """
    if bias_lr_scale == 1 and bias_weight_decay:
        return optimizer_class(model.parameters(), **options)
    trainable = [p for p in model.parameters() if p.requires_grad]
    weights = [p for p in trainable if p.ndim > 1]
    biases = [p for p in trainable if p.ndim <= 1]
    optimizer = optimizer_class([{"params": weights}, {"params": biases}], **options)
    # Scaled after construction, from the group's own values: the optimizer's defaults (AdamW's
    # weight decay is 0.01) are filled in by then.
    group = optimizer.param_groups[1]
    group["lr"] *= bias_lr_scale
    group["weight_decay"] = group["weight_decay"] / bias_lr_scale if bias_weight_decay else 0.0
    return optimizer


# ---------------------------------------------------------------------------------------------
# Weight averaging
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ema:
    """``ema: {decay, every}``: validation and test use an exponential moving average of the
    weights (and of the BatchNorm statistics), updated every ``every`` optimizer steps by
    ``average = decay * average + (1 - decay) * weights``.

    The average's memory is about ``every / (1 - decay)`` steps: with 1024-image batches on
    CIFAR-10 (44 steps per epoch), ``{decay: 0.9, every: 5}`` averages the last ~50 steps.
    """

    decay: float = 0.0  # per update; 0: no average (val and test see the trained weights)
    every: int = 1  # optimizer steps between updates

    def __post_init__(self) -> None:
        if not 0 <= self.decay < 1 or self.every < 1:
            raise ValueError(f"ema needs 0 <= decay < 1 and every >= 1, got {self}")

    def average(self, model: nn.Module) -> AveragedModel | None:
        """A copy of ``model`` to average into (torch's AveragedModel), or None when off."""
        if not self.decay:
            return None
        return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(self.decay), use_buffers=True)


# ---------------------------------------------------------------------------------------------
# Test-time augmentation
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tta:
    """``tta: {flip, translate}``: logits averaged over views of each image (airbench's TTA).

    ``flip``: each view and its mirror image, averaged. ``translate`` (pixels): also the views
    shifted by ``translate`` pixels up-left and down-right (reflect padding); the unshifted
    view weighs as much as the two shifted ones together, as in airbench. Up to 6 forward
    passes per image.
    """

    flip: bool = False
    translate: int = 0  # pixels

    def __post_init__(self) -> None:
        if self.translate < 0:
            raise ValueError(f"tta.translate must be >= 0 pixels, got {self.translate}")

    @property
    def enabled(self) -> bool:
        return bool(self.flip or self.translate)

    def __call__(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """float32 logits of ``model`` for the batch ``x`` (N, C, H, W), averaged over views."""
        logits = self._mirrored(model, x)
        if self.translate:
            t, (h, w) = self.translate, x.shape[-2:]
            padded = F.pad(x, (t, t, t, t), mode="reflect")
            shifted = [padded[..., :h, :w], padded[..., 2 * t :, 2 * t :]]
            logits = logits / 2 + sum(self._mirrored(model, view) for view in shifted) / 4
        return logits

    def _mirrored(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        logits = model(x).float()
        if self.flip:
            logits = (logits + model(x.flip(-1)).float()) / 2
        return logits


class WithTta(nn.Module):
    """``network`` with its logits averaged over ``tta``'s views: an exported model then
    predicts what the test split measured."""

    def __init__(self, network: nn.Module, tta: Tta) -> None:
        super().__init__()
        self.network = network
        self.tta = tta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.tta(self.network, x)
