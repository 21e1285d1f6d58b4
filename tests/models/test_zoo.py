"""Every registered model: forward + backward on tiny batches, exact parameter counts, errors."""

from __future__ import annotations

import pytest
import torch

import models
from models import MODELS, ModelError, build, count_parameters, model_options

# The input each model is meant for (channels, pixels); unlisted models use 3x32x32.
TARGET_INPUT = {"simple_cnn": (1, 8), "mnist_cnn": (1, 28), "lenet5": (1, 28)}


def _forward_backward(name: str, in_channels: int, image_size: int, num_classes: int = 10) -> None:
    torch.manual_seed(0)
    model = build(name, num_classes=num_classes, in_channels=in_channels, image_size=image_size)
    model.train()
    x = torch.randn(2, in_channels, image_size, image_size)  # batch 2: BN needs > 1 per channel
    out = model(x)
    assert out.shape == (2, num_classes)
    out.float().logsumexp(1).sum().backward()
    for pname, param in model.named_parameters():
        assert param.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(param.grad).all(), f"{name}: non-finite gradient in {pname}"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_backward_on_target_input(name: str) -> None:
    _forward_backward(name, *TARGET_INPUT.get(name, (3, 32)))


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_backward_on_8x8_digits(name: str) -> None:
    _forward_backward(name, in_channels=1, image_size=8)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_options_match_build(name: str) -> None:
    options = model_options(name)
    assert not set(options) & {"num_classes", "in_channels", "image_size"}
    model = build(name, num_classes=3, in_channels=3, image_size=32, **options)
    assert count_parameters(model) > 0


def test_simple_cnn_depth_and_width() -> None:
    model = build("simple_cnn", num_classes=10, in_channels=1, image_size=8, width=8, depth=4)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    assert model.fc.in_features == 8 * 2**3


def test_unknown_name_lists_known_models() -> None:
    with pytest.raises(ModelError, match=r"unknown model 'nope'; known models: .*simple_cnn"):
        build("nope", num_classes=10, in_channels=1, image_size=8)


def test_unknown_option_names_option_and_allowed() -> None:
    with pytest.raises(
        ModelError, match=r"unknown option 'colour'.*allowed: width, depth, dropout"
    ):
        build("simple_cnn", num_classes=10, in_channels=1, image_size=8, colour="red")


def test_bad_option_value_is_one_line() -> None:
    with pytest.raises(ModelError, match="width=0") as info:
        build("simple_cnn", num_classes=10, in_channels=1, image_size=8, width=0)
    assert "\n" not in str(info.value)


def test_public_api() -> None:
    assert set(models.__all__) >= {
        "MODELS",
        "ModelError",
        "build",
        "count_parameters",
        "model_options",
        "register",
    }
    assert issubclass(ModelError, ValueError)
