"""Parts of fast training recipes (Keller Jordan's airbench) that the deep trainable offers:
a bias parameter group, an exponential moving average of the weights, test-time augmentation;
and fine-tuning's: frozen blocks, and learning rates per block (``Finetune``).

Each is a plain function or a small dataclass built from its config section, so the options a
section accepts, and their types, are the dataclass's fields or the function's keyword
arguments (``checks.option_types(Ema)``), never a second list.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from models.options import Range
from models.pretrained import blocks

# Parameters with the factor their learning rate is multiplied by, in groups.
Scaled = Sequence[tuple[Sequence[nn.Parameter], float]]

# ---------------------------------------------------------------------------------------------
# Parameter groups
# ---------------------------------------------------------------------------------------------


def optimizer_with_bias_group(
    optimizer_class: Callable[..., torch.optim.Optimizer],
    model: nn.Module,
    scaled: Scaled | None = None,
    /,  # from the code; the keyword arguments come from a config
    *,
    bias_lr_scale: float = 1.0,
    bias_weight_decay: bool = True,
    **options: Any,
) -> torch.optim.Optimizer:
    """``optimizer_class(model's parameters, **options)``, with the biases in a group of their own
    when asked: ``bias_lr_scale`` times the learning rate, and no weight decay if
    ``bias_weight_decay`` is false; and given ``scaled`` (``Finetune.scaled``: the trainable
    parameters in groups, each with a factor), a group per factor, its rate times it.

    "Biases" are every 1-D parameter: biases, and norm layers' scales and shifts (timm's rule).
    Their weight decay is divided by ``bias_lr_scale``, so that what it takes off per step (lr *
    weight_decay for SGD and AdamW) stays that of the weights: airbench scales the biases' step
    (its ``bias_scaler``, 64), not their decay. Group 0 is always the weights (of the first of
    ``scaled``); the biases' groups come after all the weights'.
    """
    split = not (bias_lr_scale == 1 and bias_weight_decay)
    if scaled is None and not split:
        return optimizer_class(model.parameters(), **options)
    if scaled is None:
        scaled = [([p for p in model.parameters() if p.requires_grad], 1.0)]
    weights = [([p for p in params if p.ndim > 1 or not split], f) for params, f in scaled]
    biases = [([p for p in params if p.ndim <= 1], f) for params, f in scaled] if split else []
    groups = [(params, factor, False) for params, factor in weights if params]
    groups += [(params, factor, True) for params, factor in biases if params]
    optimizer = optimizer_class([{"params": params} for params, _, _ in groups], **options)
    # Scaled after construction, from the group's own values: the optimizer's defaults (AdamW's
    # weight decay is 0.01) are filled in by then.
    for group, (_, factor, bias) in zip(optimizer.param_groups, groups, strict=True):
        group["lr"] *= factor * (bias_lr_scale if bias else 1)
        if bias:
            decay = group["weight_decay"] / bias_lr_scale if bias_weight_decay else 0.0
            group["weight_decay"] = decay
    return optimizer


# ---------------------------------------------------------------------------------------------
# Fine-tuning
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finetune:
    """``finetune: {freeze, head_lr_scale, layer_decay}``: how a pretrained network
    (``model.pretrained_file``, or a timm model's ``pretrained``) is trained on.

    The network's blocks are its stem and stages, in forward order, then its head
    (``models.pretrained.blocks``). ``freeze``: the first N blocks are not trained (their
    BatchNorm statistics still follow the new data); ``"backbone"``: all but the head.
    ``head_lr_scale``: the head's learning rate times this (a new head often learns faster than
    the backbone should). ``layer_decay``: each block's rate times this once per block between
    it and the head (BEiT's layer-wise decay: the stem changes least).
    """

    freeze: Annotated[int, Range(0)] | Literal["backbone"] = 0  # blocks, from the stem
    head_lr_scale: Annotated[float, Range(0, low_open=True)] = 1.0
    layer_decay: Annotated[float, Range(0, 1, low_open=True)] = 1.0  # 1: the same rate

    @property
    def enabled(self) -> bool:
        return self != Finetune()

    def frozen(self, model: nn.Module) -> nn.Module:
        """``model`` with its first ``freeze`` blocks' parameters not trained."""
        body = blocks(model)[:-1]
        count = len(body) if self.freeze == "backbone" else int(self.freeze)
        if count > len(body):
            raise ValueError(
                f"finetune.freeze={count} is more than the {len(body)} blocks before the "
                "model's head; use 'backbone' to train the head only"
            )
        for block in body[:count]:
            for _, parameter in block:
                parameter.requires_grad_(False)
        return model

    def scaled(self, model: nn.Module) -> Scaled | None:
        """The trainable parameters in groups with their factors, the block before the head's
        first (factor 1, the base rate; the head's is ``head_lr_scale``); None when every
        factor is 1."""
        if self.head_lr_scale == 1 and self.layer_decay == 1:
            return None
        *body, head = blocks(model)
        factors = [self.layer_decay ** (len(body) - 1 - i) for i in range(len(body))]
        grouped = [([p for _, p in block], f) for block, f in zip(body, factors, strict=True)]
        grouped = [*reversed(grouped), ([p for _, p in head], self.head_lr_scale)]
        return [(ps, f) for params, f in grouped if (ps := [p for p in params if p.requires_grad])]


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
