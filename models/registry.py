"""The model registry: a name in YAML maps to a factory that returns an ``nn.Module``.

Every factory takes the keyword arguments ``num_classes``, ``in_channels`` and ``image_size``
(pixels, square images) and adapts its stem, first convolution and head to them. Any further
keyword arguments are the model's *options*; their defaults come from the factory signature,
so the spec validator can check option names at load time without building a model.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

Factory = Callable[..., nn.Module]
MODELS: dict[str, Factory] = {}

# Arguments every factory takes from the dataset; not options a YAML spec may set.
DATA_ARGS = ("num_classes", "in_channels", "image_size")


class ModelError(ValueError):
    """An unknown model name, an unknown option or a bad option value (one-line message)."""


def register(name: str) -> Callable[[Factory], Factory]:
    """Decorator: make ``fn(*, num_classes, in_channels, image_size, **options)`` known by name."""

    def add(fn: Factory) -> Factory:
        if name in MODELS:
            raise ModelError(f"model {name!r} is registered twice")
        MODELS[name] = fn
        return fn

    return add


def model_options(name: str) -> dict[str, object]:
    """The options of model ``name`` with their defaults, read from the factory's signature."""
    factory = _factory(name)
    return {
        param.name: param.default
        for param in inspect.signature(factory).parameters.values()
        if param.name not in DATA_ARGS and param.kind is inspect.Parameter.KEYWORD_ONLY
    }


def build(
    name: str, *, num_classes: int, in_channels: int, image_size: int, **options: object
) -> nn.Module:
    """Build model ``name`` for images of ``in_channels`` x ``image_size`` x ``image_size``.

    Raises ``ModelError`` for an unknown name, an unknown option or a bad option value.
    """
    factory = _factory(name)
    allowed = model_options(name)
    for option in options:
        if option not in allowed:
            raise ModelError(
                f"unknown option {option!r} for model {name!r}; "
                f"allowed: {', '.join(allowed) or '(none)'}"
            )
    if num_classes < 1 or in_channels < 1 or image_size < 8:
        raise ModelError(
            f"model {name!r} needs num_classes >= 1, in_channels >= 1 and image_size >= 8 "
            f"(got {num_classes}, {in_channels}, {image_size})"
        )
    return factory(
        num_classes=num_classes, in_channels=in_channels, image_size=image_size, **options
    )


@dataclass(frozen=True)
class Range:
    """Where a number option lives, written once in its annotation (``dropout: Annotated[float,
    DROPOUT]``): the spec's checks read it at load, a factory's ``check_*`` at build."""

    low: float
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def admits(self, value: float) -> bool:
        above = self.low < value if self.low_open else self.low <= value
        below = value < self.high if self.high_open else value <= self.high
        return math.isfinite(value) and above and below

    def __str__(self) -> str:
        if math.isinf(self.high):
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"


POSITIVE = Range(1)  # counts: widths, depths, blocks
DROPOUT = Range(0, 1, high_open=True)  # a probability of dropping, never all


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters (those with ``requires_grad``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def check_choice(option: str, value: object, allowed: tuple[object, ...]) -> None:
    """Raise a one-line ``ModelError`` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ModelError(
            f"option {option}={value!r} is not allowed; choose one of "
            f"{', '.join(repr(a) for a in allowed)}"
        )


def check_positive(option: str, value: object) -> int:
    """Return ``value`` as an int, or raise ``ModelError`` unless it is a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or not POSITIVE.admits(value):
        raise ModelError(f"option {option}={value!r} must be a positive integer")
    return value


def check_dropout(value: object, option: str = "dropout") -> float:
    """Return ``value`` as a float, or raise ``ModelError`` unless it is a probability in [0, 1)."""
    return check_number(option, value, DROPOUT)


def check_number(option: str, value: object, bounds: Range) -> float:
    """Return ``value`` as a float, or raise ``ModelError`` unless ``bounds`` admit it."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not bounds.admits(value):
        raise ModelError(f"option {option}={value!r} must be a finite number {bounds}")
    return float(value)


def _factory(name: str) -> Factory:
    if name not in MODELS:
        raise ModelError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    return MODELS[name]
