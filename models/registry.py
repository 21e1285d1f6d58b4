"""The model registry: a name in YAML maps to a factory that returns an ``nn.Module``.

Every factory takes the keyword arguments ``num_classes``, ``in_channels`` and ``image_size``
(pixels, square images) and adapts its stem, first convolution and head to them. Any further
keyword arguments are the model's *options*; their defaults and types come from the factory
signature (``models.options.Registry``), so the spec validator checks them at load time without
building a model, and ``build`` checks them the same way.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from models.options import OptionError, Registry

Factory = Callable[..., nn.Module]

# Arguments every factory takes from the dataset; not options a YAML spec may set.
DATA_ARGS = ("num_classes", "in_channels", "image_size")


class ModelError(OptionError):
    """An unknown model name, an unknown option or a bad option value (one-line message)."""


MODELS: Registry[Factory] = Registry("model", error=ModelError, fixed=DATA_ARGS)
# Decorator: make ``fn(*, num_classes, in_channels, image_size, **options)`` known by name.
register = MODELS.register


def model_options(name: str) -> dict[str, object]:
    """The options of model ``name`` with their defaults, read from the factory's signature."""
    return MODELS.defaults(name)


def build(
    name: str, *, num_classes: int, in_channels: int, image_size: int, **options: object
) -> nn.Module:
    """Build model ``name`` for images of ``in_channels`` x ``image_size`` x ``image_size``.

    Raises ``ModelError`` for an unknown name, an unknown option or a bad option value.
    """
    MODELS.check(name, options)
    if num_classes < 1 or in_channels < 1 or image_size < 8:
        raise ModelError(
            f"model {name!r} needs num_classes >= 1, in_channels >= 1 and image_size >= 8 "
            f"(got {num_classes}, {in_channels}, {image_size})"
        )
    return MODELS[name](
        num_classes=num_classes, in_channels=in_channels, image_size=image_size, **options
    )


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters (those with ``requires_grad``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
