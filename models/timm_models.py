"""timm's image models by name: ``model: {name: "timm/convnext_atto", pretrained: true}``.

timm (``pip install -e '.[timm]'``) is optional: only a ``timm/...`` name imports it. A name is
checked against ``timm.list_models()`` when it is looked up (``models.registry.MODELS``), so an
unknown one fails at load with timm's closest names. The network comes from
``timm.create_model`` with its head made for the dataset's classes and its first convolution
for the dataset's channels (``num_classes``, ``in_chans``: timm drops the pretrained head and
adapts the stem's weights). Weights come from timm's cache or the Hugging Face hub
(``pretrained: true``, needs a network the first time), or from ``pretrained_file`` (offline:
timm's loader reads a ``.safetensors`` file, or a torch file with ``weights_only=True``).

The model's pretrained config gives what its weights expect: its input size (images of
another size are resized inside the network, so the exported model takes the dataset's
images as they are) and the mean and std the trainer normalises with (``input_stats``).
"""

from __future__ import annotations

import difflib
import functools
from pathlib import Path
from types import ModuleType
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from models.options import DROPOUT, OptionError, Range

PREFIX = "timm/"  # a model name with it is timm's
INSTALL = "pip install -e '.[timm]'"


class TimmError(OptionError):
    """timm missing, or a name timm doesn't know (one line)."""


def timm_model(
    architecture: str,
    /,  # from the name; the keyword arguments come from the data and the spec
    *,
    num_classes: int,
    in_channels: int,
    image_size: int,
    pretrained: bool = False,
    pretrained_file: str | None = None,
    drop_rate: Annotated[float, DROPOUT] = 0.0,
    drop_path_rate: Annotated[float, DROPOUT] | None = None,  # None: the model's default
    input_size: Annotated[int, Range(8)] | None = None,  # pixels; None: the pretrained config's
) -> nn.Module:
    """timm's ``architecture`` for ``num_classes`` classes of ``in_channels``-channel images,
    with pretrained weights (``pretrained``, or offline ``pretrained_file``); images of
    ``image_size`` pixels are resized to ``input_size`` inside the network when they differ."""
    timm = require_timm()
    if pretrained_file and not Path(pretrained_file).expanduser().is_file():
        raise TimmError(f"pretrained_file={pretrained_file!r} is not a file")
    overlay = {"file": str(Path(pretrained_file).expanduser())} if pretrained_file else None
    try:
        model = timm.create_model(
            architecture,
            pretrained=pretrained or overlay is not None,
            pretrained_cfg_overlay=overlay,
            num_classes=num_classes,
            in_chans=in_channels,
            drop_rate=drop_rate,
            drop_path_rate=drop_path_rate,  # timm leaves a None out
        )
    except (RuntimeError, OSError, ValueError, KeyError) as error:  # no network, a bad file
        where = f"pretrained_file={pretrained_file!r}" if overlay else "timm's cache or hub"
        raise TimmError(
            f"timm model {architecture!r}: can't load weights from {where}: {_first_line(error)}"
            + ("" if overlay else "; offline, set pretrained_file to a local weights file")
        ) from None
    size = input_size or int(model.pretrained_cfg.get("input_size", (3, image_size))[-1])
    if size != image_size:
        model.register_forward_pre_hook(Resize(size))
    return model


class Resize:
    """A forward pre-hook: the network's input resized to ``size`` x ``size`` pixels (bilinear,
    antialiased when shrinking), where the pretrained weights expect it."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor]:
        (x,) = inputs
        shrink = x.shape[-1] > self.size
        return (F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=shrink),)


def input_stats(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The per-channel mean and std (0..1 units) a timm model's weights were trained with, for
    its input channels (the mean of the three for a grey model); None for other models, which
    normalise with the dataset's own statistics."""
    config = getattr(model, "pretrained_cfg", None)
    if not config or "mean" not in config:
        return None
    mean, std = torch.tensor(config["mean"]), torch.tensor(config["std"])
    channels = _in_channels(model)
    if channels != len(mean):
        mean, std = mean.mean().repeat(channels), std.mean().repeat(channels)
    return mean, std


def known(name: str) -> bool:
    """Whether ``name`` (``timm/<architecture>``) is a model timm has (timm installed)."""
    try:
        return require_timm().is_model(name.removeprefix(PREFIX))
    except TimmError:
        return False


def factory(name: str) -> functools.partial[nn.Module]:
    """The factory of ``name`` (``timm/<architecture>``): ``timm_model`` for that architecture.

    Raises ``TimmError`` when timm is missing or doesn't know the architecture.
    """
    if not known(name):
        raise TimmError(unknown(name))
    return functools.partial(timm_model, name.removeprefix(PREFIX))


def unknown(name: str) -> str:
    """The one message for a ``timm/...`` name that can't be built: timm missing, or the
    closest names timm has."""
    try:
        timm = require_timm()
    except TimmError as error:
        return f"model {name!r}: {error}"
    architecture = name.removeprefix(PREFIX)
    close = difflib.get_close_matches(architecture, timm.list_models(), n=5, cutoff=0.5)
    hint = f"closest: {', '.join(PREFIX + c for c in close)}" if close else "see timm.list_models()"
    return f"unknown timm model {name!r}; {hint}"


@functools.cache
def require_timm() -> ModuleType:
    """timm, imported (seconds: only a ``timm/...`` model pays it); TimmError if missing."""
    try:
        import timm
    except ImportError:
        raise TimmError(f"timm is not installed: {INSTALL}") from None
    return timm


def _in_channels(model: nn.Module) -> int:
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)), None)
    return int(getattr(first, "in_channels", getattr(first, "in_features", 3)))


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [type(error).__name__])[0]
