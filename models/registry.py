"""The model registry: a name in YAML maps to a factory that returns an ``nn.Module``.

Every factory takes the keyword arguments ``num_classes``, ``in_channels`` and ``image_size``
(pixels, square images) and adapts its stem, first convolution and head to them. Any further
keyword arguments are the model's *options*; their defaults and types come from the factory
signature (``models.options.Registry``), so the spec validator checks them at load time without
building a model, and ``build`` checks them the same way.

Two ways to start from trained weights: every zoo model takes ``pretrained_file`` (a weights
file whose tensors that match by name and shape are loaded, its head excepted:
``models.pretrained``), and timm's models are names too, ``timm/<architecture>`` with their own
options (``models.timm_models``: timm is imported only for such a name).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from torch import nn

from models import timm_models
from models.options import OptionError, Registry, option_types
from models.pretrained import WeightsError, load_matching

Factory = Callable[..., nn.Module]

# Arguments every factory takes from the dataset; not options a YAML spec may set.
DATA_ARGS = ("num_classes", "in_channels", "image_size")


class ModelError(OptionError):
    """An unknown model name, an unknown option or a bad option value (one-line message)."""


def start_from(model: nn.Module, /, *, pretrained_file: str | None = None) -> nn.Module:
    """``model`` with the tensors of ``pretrained_file`` that match its own loaded, its head
    excepted (``models.pretrained.load_matching``); as it is when unset. Every zoo model's
    ``pretrained_file`` option is this function's."""
    if pretrained_file is not None:
        loaded = load_matching(model, pretrained_file)
        total = len(model.state_dict())
        LOG.info("pretrained_file %s: loaded %d of %d tensors", pretrained_file, loaded, total)
    return model


class ModelRegistry(Registry[Factory]):
    """The zoo's models by name, each with ``start_from``'s option too, and timm's as
    ``timm/<architecture>`` (an unknown one answers with timm's closest names)."""

    def __missing__(self, name: str) -> Factory:
        if isinstance(name, str) and name.startswith(timm_models.PREFIX):
            try:
                return timm_models.factory(name)
            except timm_models.TimmError as error:
                raise ModelError(str(error)) from None
        return super().__missing__(name)

    def __contains__(self, name: object) -> bool:
        return super().__contains__(name) or (
            isinstance(name, str)
            and name.startswith(timm_models.PREFIX)
            and timm_models.known(name)
        )

    def unknown(self, name: object) -> str:
        if isinstance(name, str) and name.startswith(timm_models.PREFIX):
            return timm_models.unknown(name)
        return super().unknown(name)

    def defaults(self, name: str) -> dict[str, Any]:
        return {**super().defaults(name), **({} if is_timm(name) else {"pretrained_file": None})}

    def option_types(self, name: str) -> dict[str, Any]:
        own = super().option_types(name)
        return own if is_timm(name) else {**own, **option_types(start_from)}


def is_timm(name: str) -> bool:
    """Whether ``name`` is one of timm's models (``timm/<architecture>``)."""
    return name.startswith(timm_models.PREFIX)


LOG = logging.getLogger(__name__)
MODELS: ModelRegistry = ModelRegistry("model", error=ModelError, fixed=DATA_ARGS)
# Decorator: make ``fn(*, num_classes, in_channels, image_size, **options)`` known by name.
register = MODELS.register


def model_options(name: str) -> dict[str, object]:
    """The options of model ``name`` with their defaults, read from the factory's signature."""
    return MODELS.defaults(name)


def build(
    name: str, *, num_classes: int, in_channels: int, image_size: int, **options: object
) -> nn.Module:
    """Build model ``name`` for images of ``in_channels`` x ``image_size`` x ``image_size``.

    Raises ``ModelError`` for an unknown name, an unknown option, a bad option value or a
    weights file that can't be loaded.
    """
    MODELS.check(name, options)
    if num_classes < 1 or in_channels < 1 or image_size < 8:
        raise ModelError(
            f"model {name!r} needs num_classes >= 1, in_channels >= 1 and image_size >= 8 "
            f"(got {num_classes}, {in_channels}, {image_size})"
        )
    pretrained_file = None if is_timm(name) else options.pop("pretrained_file", None)
    try:
        model = MODELS[name](
            num_classes=num_classes, in_channels=in_channels, image_size=image_size, **options
        )
        return start_from(model, pretrained_file=pretrained_file)  # type: ignore[arg-type]
    except (timm_models.TimmError, WeightsError) as error:  # one error type for a bad model
        raise ModelError(str(error)) from None


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters (those with ``requires_grad``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
