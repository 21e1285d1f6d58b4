"""airbench: hand-counted parameters, data-dependent whitening, tiny inputs, option errors."""

from __future__ import annotations

import pytest
import torch

from models import ModelError, build, count_parameters


def _airbench(in_channels: int = 3, image_size: int = 32, **options: object) -> torch.nn.Module:
    return build(
        "airbench", num_classes=10, in_channels=in_channels, image_size=image_size, **options
    )


def _structured_images(n: int, channels: int, size: int) -> torch.Tensor:
    """Smooth random images, correlated across channels and neighbouring pixels, mean 0.5."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(n, 1, size + 2, size + 2, generator=g)
    smooth = torch.nn.functional.avg_pool2d(base, 3, stride=1)  # neighbours share 2/3 of inputs
    mix = torch.linspace(1.0, 0.5, channels).view(1, channels, 1, 1)
    noise = 0.3 * torch.randn(n, channels, size, size, generator=g)  # keeps every direction alive
    return 0.5 + 2 * smooth * mix + noise


def _stem_covariance(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Covariance over all patches of the whitening conv's outputs (before the GELU)."""
    with torch.no_grad():
        out = model.whiten(images)
    flat = out.transpose(0, 1).flatten(1)  # (channels, N * H' * W')
    return torch.cov(flat)


def test_parameter_count_3x32x32() -> None:
    # Trainable only (the whitening weights and the BN scales are frozen), 10 classes:
    #   whitening bias                 24                          =        24
    #   group 1  24->64:   9*24*64 + 9*64*64 + 2*64 BN shifts      =    50,816
    #   group 2  64->256:  9*64*256 + 9*256*256 + 2*256            =   737,792
    #   group 3  256->256: 2 * 9*256*256 + 2*256                   = 1,180,160
    #   head     256*10 (no bias)                                  =     2,560
    #                                                        total = 1,971,352
    assert count_parameters(_airbench(3, 32)) == 1_971_352


def test_parameter_count_1x28x28() -> None:
    # As above with a 1-channel stem: 2 * 1 * 2*2 = 8 whitening channels, so
    #   whitening bias 8; group 1 8->64: 9*8*64 + 9*64*64 + 128 = 41,600;
    #   groups 2, 3 and head unchanged: 737,792 + 1,180,160 + 2,560.
    #   total = 8 + 41,600 + 737,792 + 1,180,160 + 2,560 = 1,962,120
    assert count_parameters(_airbench(1, 28)) == 1_962_120


def test_whiten_trainable_counts_the_stem_weights() -> None:
    frozen, trainable = _airbench(), _airbench(whiten_trainable=True)
    assert count_parameters(trainable) - count_parameters(frozen) == 24 * 3 * 2 * 2


@pytest.mark.parametrize("channels", [1, 3])
def test_data_init_whitens_the_stem(channels: int) -> None:
    torch.manual_seed(0)
    images = _structured_images(128, channels, 16)
    model = _airbench(channels, 16)
    half = 2 * 2 * channels  # the eigenvector filters; the second half are their negatives
    identity = torch.eye(half)

    before = _stem_covariance(model, images)
    assert (before[:half, :half] - identity).abs().max() > 0.5  # default init: far from white

    model.data_init(images)
    cov = _stem_covariance(model, images)
    assert (cov[:half, :half] - identity).abs().max() < 0.05
    assert torch.allclose(cov[:half, half:], -cov[:half, :half], atol=1e-4)
    with torch.no_grad():
        mean = model.whiten(images).mean((0, 2, 3))
    assert mean.abs().max() < 1e-3  # the bias centers the patches
    assert not model.whiten.weight.requires_grad  # frozen by default, as in airbench


def test_data_init_refuses_wrong_channels() -> None:
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        _airbench(3, 32).data_init(torch.randn(4, 1, 32, 32))


@pytest.mark.parametrize(("channels", "size"), [(1, 8), (1, 28), (3, 32)])
def test_small_inputs_keep_at_least_one_pixel(channels: int, size: int) -> None:
    model = _airbench(channels, size).train()
    images = _structured_images(4, channels, size)
    model.data_init(images)
    out = model(images)
    assert out.shape == (4, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("widths", []),
        ("widths", [64, 128, 256, 256, 512]),
        ("widths", [64, 0]),
        ("widths", "64"),
        ("widths", [64, True]),
        ("batchnorm_momentum", 0),
        ("batchnorm_momentum", 1.5),
        ("scale", -1.0),
        ("scale", float("nan")),
        ("whiten_trainable", "yes"),
    ],
)
def test_bad_options_are_one_line_model_errors(option: str, value: object) -> None:
    with pytest.raises(ModelError, match=f"option {option}=") as info:
        _airbench(**{option: value})
    assert "\n" not in str(info.value)


def test_widths_message_says_what_is_allowed() -> None:
    with pytest.raises(ModelError, match=r"widths=\[\] must be a list of 1-4 positive integers"):
        _airbench(widths=[])
