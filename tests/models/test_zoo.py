"""Every registered model: forward + backward on tiny batches, exact parameter counts, errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
        if not param.requires_grad:  # frozen on purpose (airbench's whitening conv, BN scales)
            continue
        assert param.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(param.grad).all(), f"{name}: non-finite gradient in {pname}"


# Exact trainable-parameter counts with 10 classes on each model's target input (see above).
PARAMETER_COUNTS = {
    ("mnist_cnn", ()): 21_840,  # the PyTorch MNIST example on 1x28x28
    ("lenet5", ()): 61_706,
    ("resnet18", (("stem", "small"),)): 11_173_962,
    ("resnet50", (("stem", "imagenet"),)): 23_528_522,
    ("resnet50_cifar", ()): 23_520_842,  # = torchvision resnet50 with the small stem
    ("mynet", ()): 6_158_538,
    ("vgg16", ()): 14_986_698,
    ("custom_resnet", ()): 4_770_986,
}


def _count(name: str, **options: object) -> int:
    channels, size = TARGET_INPUT.get(name, (3, 32))
    model = build(name, num_classes=10, in_channels=channels, image_size=size, **options)
    return count_parameters(model)


@pytest.mark.parametrize(
    ("name", "options", "expected"), [(*k, v) for k, v in PARAMETER_COUNTS.items()]
)
def test_parameter_count(name: str, options: tuple, expected: int) -> None:
    assert _count(name, **dict(options)) == expected


def test_resnet50_cifar_matches_torchvision_with_small_stem() -> None:
    count = _count("resnet50_cifar")
    assert count == _count("resnet50", stem="small")
    assert 23_400_000 <= count <= 23_600_000


def test_custom_resnet_default_is_under_5m() -> None:
    assert _count("custom_resnet") < 5_000_000
    assert _count("custom_resnet", blocks=[2, 2, 2, 2], width=16) < _count("custom_resnet")


def test_resnet_auto_stem_depends_on_image_size() -> None:
    small = build("resnet18", num_classes=10, in_channels=1, image_size=32)
    large = build("resnet18", num_classes=10, in_channels=1, image_size=64)
    assert small.conv1.kernel_size == (3, 3) and isinstance(small.maxpool, torch.nn.Identity)
    assert large.conv1.kernel_size == (7, 7) and isinstance(large.maxpool, torch.nn.MaxPool2d)
    assert small.conv1.in_channels == 1


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


def test_too_small_images_are_refused() -> None:
    with pytest.raises(ModelError, match="image_size >= 8"):
        build("simple_cnn", num_classes=10, in_channels=1, image_size=7)


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


def test_bad_stem_says_what_is_allowed() -> None:
    with pytest.raises(ModelError, match=r"stem='foo'.*'auto', 'small', 'imagenet'"):
        build("resnet18", num_classes=10, in_channels=3, image_size=32, stem="foo")


@pytest.mark.parametrize("value", ["imagenet", "IMAGENET1K_V1", "missing.pth"])
def test_pretrained_never_downloads(value: object) -> None:
    with pytest.raises(ModelError, match=r"no hub downloads.*local \.pth"):
        build("resnet18", num_classes=10, in_channels=3, image_size=32, pretrained=value)


def test_pretrained_is_a_path_not_a_switch() -> None:
    with pytest.raises(
        ModelError, match=r"pretrained=True is not allowed; must be a string or null"
    ):
        build("resnet18", num_classes=10, in_channels=3, image_size=32, pretrained=True)


def test_pretrained_loads_local_state_dict(tmp_path: Path) -> None:
    source = build("resnet18", num_classes=10, in_channels=3, image_size=32)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    same = build("resnet18", num_classes=10, in_channels=3, image_size=32, pretrained=str(path))
    assert torch.equal(same.layer1[0].conv1.weight, source.layer1[0].conv1.weight)
    assert torch.equal(same.fc.weight, source.fc.weight)
    # Another head size: the body loads, the fc (other shape) stays freshly initialised.
    other = build("resnet18", num_classes=3, in_channels=3, image_size=32, pretrained=str(path))
    assert torch.equal(other.layer4[1].conv2.weight, source.layer4[1].conv2.weight)
    assert other.fc.out_features == 3


def test_pretrained_for_another_architecture_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cnn.pth"
    torch.save(build("simple_cnn", num_classes=10, in_channels=3, image_size=32).state_dict(), path)
    with pytest.raises(ModelError, match="not for this model"):
        build("resnet18", num_classes=10, in_channels=3, image_size=32, pretrained=str(path))


@pytest.mark.slow
def test_models_never_import_ray_or_mlflow() -> None:
    code = "import sys, models; print(sorted({'ray', 'mlflow'} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
