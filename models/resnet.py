"""Residual networks: torchvision's ResNet-18/34/50 and hand-built CIFAR-style ResNets.

The torchvision models get a ``stem`` option: 'imagenet' (7x7/2 conv + 3x3/2 max-pool, for
images of 64 pixels and more) or 'small' (3x3/1 conv, no max-pool, so a 32x32 image keeps its
resolution into the first stage); 'auto' picks by ``image_size``. ``pretrained`` takes only a
local state-dict file: nothing is ever downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

import torch
from torch import nn

from models.options import POSITIVE
from models.registry import ModelError, register

Stem = Literal["auto", "small", "imagenet"]
SMALL_IMAGE = (
    64  # pixels: below this, 'auto' uses the small stem (a 7x7/2 + pool stem divides by 4)
)


def resolve_stem(stem: Stem, image_size: int) -> str:
    """Return 'small' or 'imagenet'; 'auto' means small below ``SMALL_IMAGE`` pixels."""
    if stem == "auto":
        return "small" if image_size < SMALL_IMAGE else "imagenet"
    return stem


def load_pretrained(model: nn.Module, pretrained: object) -> nn.Module:
    """Load a local state dict into ``model``; ``None`` / ``False`` leaves it randomly initialised.

    Tensors whose shape differs from the model's (a head for another ``num_classes``, a stem for
    other ``in_channels``) are skipped and stay freshly initialised; keys the model does not have
    mean the file is for another architecture and raise ``ModelError``.
    """
    if pretrained is None or pretrained is False:
        return model
    path = Path(pretrained).expanduser() if isinstance(pretrained, str | Path) else None
    if path is None or not path.is_file():
        raise ModelError(
            f"pretrained={pretrained!r} is not a local file; no hub downloads are possible here: "
            "pass the path of a local .pth state-dict file (or leave pretrained unset)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickled modules, truncated files: say which file, one line
        raise ModelError(
            f"pretrained={str(path)!r} is not a loadable state dict: {first_line(error)}"
        ) from None
    if not isinstance(state, dict):
        raise ModelError(
            f"pretrained={str(path)!r} holds a {type(state).__name__}, not a state dict"
        )
    own = model.state_dict()
    unknown = sorted(set(state) - set(own))
    if unknown:
        raise ModelError(
            f"pretrained={str(path)!r} is not for this model: unknown keys {unknown[:3]}"
        )
    model.load_state_dict({k: v for k, v in state.items() if v.shape == own[k].shape}, strict=False)
    return model


# ---------------------------------------------------------------------------------------------
# torchvision ResNets
# ---------------------------------------------------------------------------------------------


def torchvision_resnet(
    arch: str, num_classes: int, in_channels: int, image_size: int, stem: Stem, pretrained: object
) -> nn.Module:
    """torchvision ``arch`` (no weights) with its first conv, stem and fc adapted to the data."""
    # Imported here: torchvision (and the torch._dynamo it pulls in) adds ~1.5 s to every trial
    # worker's start, and most searches build no torchvision model.
    from torchvision import models as tv

    model = getattr(tv, arch)(weights=None, num_classes=num_classes)
    if resolve_stem(stem, image_size) == "small":
        model.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    else:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")  # as tv does
    return load_pretrained(model, pretrained)


# ---------------------------------------------------------------------------------------------
# Hand-built ResNets (kuangliu/pytorch-cifar layout): configurable blocks and width
# ---------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """Two 3x3 convs; ``expansion`` 1."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, planes, 3, stride, 1, bias=False),
            nn.BatchNorm2d(planes),
            nn.ReLU(inplace=True),
            nn.Conv2d(planes, planes, 3, 1, 1, bias=False),
            nn.BatchNorm2d(planes),
        )
        self.shortcut = shortcut(in_channels, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride, as in ResNet v1.5), 1x1 expand by 4."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int) -> None:
        super().__init__()
        out = planes * self.expansion
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, planes, 1, bias=False),
            nn.BatchNorm2d(planes),
            nn.ReLU(inplace=True),
            nn.Conv2d(planes, planes, 3, stride, 1, bias=False),
            nn.BatchNorm2d(planes),
            nn.ReLU(inplace=True),
            nn.Conv2d(planes, out, 1, bias=False),
            nn.BatchNorm2d(out),
        )
        self.shortcut = shortcut(in_channels, out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    """Identity, or a strided 1x1 conv + BN projection where the shape changes."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
    )


class ResNet(nn.Module):
    """3x3/1 stem conv, stages of ``blocks[i]`` blocks at ``width * 2**i`` planes, GAP, linear.

    Every stage after the first halves the resolution with a stride-2 first block.
    """

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        blocks: Sequence[int],
        num_classes: int,
        in_channels: int,
        width: int,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        stages, channels = [], width
        for i, n in enumerate(blocks):
            planes, stride = width * 2**i, 1 if i == 0 else 2
            stage = []
            for j in range(n):
                stage.append(block(channels, planes, stride if j == 0 else 1))
                channels = planes * block.expansion
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.stages(self.stem(x))).flatten(1))


def check_blocks(blocks: Sequence[int]) -> list[int]:
    """``blocks`` (per stage) as a list; their type is checked with the other options'
    (``models.build``), that there are some only here."""
    if not blocks:
        raise ModelError(f"option blocks={blocks!r} must be a non-empty list of positive integers")
    return list(blocks)


# ---------------------------------------------------------------------------------------------
# Registered factories
# ---------------------------------------------------------------------------------------------


@register("resnet18")
def resnet18(
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    stem: Stem = "auto",
    pretrained: str | None = None,
) -> nn.Module:
    """torchvision ResNet-18; 11,173,962 parameters with the small stem on 3x32x32, 10 classes."""
    return torchvision_resnet("resnet18", num_classes, in_channels, image_size, stem, pretrained)


@register("resnet34")
def resnet34(
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    stem: Stem = "auto",
    pretrained: str | None = None,
) -> nn.Module:
    """torchvision ResNet-34 (basic blocks [3, 4, 6, 3])."""
    return torchvision_resnet("resnet34", num_classes, in_channels, image_size, stem, pretrained)


@register("resnet50")
def resnet50(
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    stem: Stem = "auto",
    pretrained: str | None = None,
) -> nn.Module:
    """torchvision ResNet-50; 23,528,522 params with the ImageNet stem, 3 channels, 10 classes."""
    return torchvision_resnet("resnet50", num_classes, in_channels, image_size, stem, pretrained)


@register("resnet50_cifar")
def resnet50_cifar(
    *, num_classes: int, in_channels: int, image_size: int, pretrained: str | None = None
) -> nn.Module:
    """kuangliu/pytorch-cifar ResNet50: 3x3 stem, bottlenecks [3, 4, 6, 3]; 23,520,842 params."""
    model = ResNet(Bottleneck, [3, 4, 6, 3], num_classes, in_channels, width=64)
    return load_pretrained(model, pretrained)


@register("custom_resnet")
def custom_resnet(
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    blocks: Sequence[Annotated[int, POSITIVE]] = (1, 1, 1, 4),
    width: Annotated[int, POSITIVE] = 32,
    pretrained: str | None = None,
) -> nn.Module:
    """Basic-block ResNet with ``blocks`` per stage at ``width * 2**i`` channels.

    ``width`` defaults to 32 (stages of 32, 64, 128, 256 channels) to keep the default
    [1, 1, 1, 4] net under 5M parameters (4,770,986 on 3x32x32, 10 classes); at width 64 it
    would be 19.1M, since three extra 512-channel blocks cost 4.7M each.
    """
    model = ResNet(BasicBlock, check_blocks(blocks), num_classes, in_channels, width)
    return load_pretrained(model, pretrained)


def first_line(error: BaseException) -> str:
    """The first line of an exception message (torch's unpickling errors span many lines)."""
    return (str(error).splitlines() or [type(error).__name__])[0]
