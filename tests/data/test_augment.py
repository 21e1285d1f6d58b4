"""Batched augmentation: each transform does what it says, per image, reproducibly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from data.augment import (
    ERASE_SCALE,
    Augmentation,
    channel_stats,
    random_crop,
    random_erasing,
    random_hflip,
    random_rotation,
    rotate,
    to_float,
)

FULL = Augmentation(crop_padding=4, hflip=True, rotation=10, erasing=0.25)


def _seed(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def images(fashion) -> torch.Tensor:
    """64 real Fashion-MNIST images as normalised float (N, 1, 28, 28)."""
    x = torch.from_numpy(fashion[0][:64])
    return to_float(x, *channel_stats(x))


def _batch(n: int = 16, dtype: torch.dtype = torch.float32, h: int = 12, w: int = 12):
    return torch.rand(n, 3, h, w, generator=_seed(0), dtype=dtype) + 0.5  # no zeros


@pytest.mark.parametrize("shape", [(16, 3, 32, 32), (5, 1, 28, 28), (4, 3, 10, 17)])
def test_shape_dtype_and_device_are_kept(shape):
    x = torch.randn(shape, generator=_seed(0))
    out = FULL(x, _seed(1))
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert not torch.equal(out, x)


def test_zero_strength_transforms_are_identities():
    x = _batch()
    assert torch.equal(random_crop(x, 0), x)
    assert torch.equal(random_rotation(x, 0.0), x)
    assert torch.allclose(rotate(x, torch.zeros(len(x))), x, atol=1e-6)
    assert torch.equal(random_hflip(x, 0.0), x)
    assert torch.equal(random_erasing(x, 0.0), x)
    assert not Augmentation().enabled and FULL.enabled
    assert torch.equal(Augmentation()(x), x)


def test_hflip_with_certainty_mirrors_every_image_and_half_on_average(images):
    assert torch.equal(Augmentation(hflip=True, hflip_p=1.0)(images), torch.flip(images, (-1,)))
    x = _batch(n=2000, h=2, w=2)
    flipped = (random_hflip(x, 0.5, _seed(7)) != x).flatten(1).any(1).float().mean()
    assert 0.45 < flipped < 0.55


def _mirrored(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Which images of ``out`` are ``x``'s mirrored (bool (N,)); the others must be unchanged."""
    mirrored = (out == x.flip(-1)).flatten(1).all(1)
    assert ((out == x).flatten(1).all(1) | mirrored).all()
    return mirrored


def test_alternate_flips_mirror_each_image_in_every_other_epoch():
    x = _batch(n=64)  # random pixels: no image is its own mirror image
    alternate = Augmentation(hflip="alternate")
    index = torch.randperm(1000, generator=_seed(0))[:64]  # a shuffled batch of a training set
    epochs = [_mirrored(alternate(x, index=index, epoch=epoch), x) for epoch in range(4)]
    assert 20 < int(epochs[0].sum()) < 44  # about half the images each epoch
    assert torch.equal(epochs[1], ~epochs[0])  # each image one way in one epoch, the other next
    assert torch.equal(epochs[2], epochs[0]) and torch.equal(epochs[3], epochs[1])
    # An image's flip depends on the image (its index) and the epoch, not on its batch.
    order = torch.randperm(64, generator=_seed(1))
    shuffled = _mirrored(alternate(x[order], index=index[order], epoch=0), x[order])
    assert torch.equal(shuffled, epochs[0][order])


def test_alternate_flips_draw_no_random_numbers_and_need_the_indices():
    x, index = _batch(n=32), torch.arange(32)
    crop = random_crop(x, 2, _seed(4), padding_mode="reflect")
    out = Augmentation(crop_padding=2, padding_mode="reflect", hflip="alternate")(
        x, _seed(4), index=index, epoch=1
    )
    assert torch.equal(_mirrored(out, crop), index % 2 == 0)  # the same crops, then the flips
    with pytest.raises(ValueError, match="indices"):
        Augmentation(hflip="alternate")(x)


@pytest.mark.parametrize("mode", ["zeros", "reflect"])
def test_crops_are_shifted_windows_of_the_padded_image(images, mode):
    out = random_crop(images, 2, _seed(1), padding_mode=mode)
    padded = F.pad(images, (2, 2, 2, 2), mode="constant" if mode == "zeros" else mode)
    offsets = set()
    for image, window in zip(padded, out, strict=True):
        matches = [
            (r, c)
            for r in range(5)
            for c in range(5)
            if torch.equal(image[:, r : r + 28, c : c + 28], window)
        ]
        assert matches, "a crop is not a window of its padded image"
        offsets.add(matches[0])
    assert len(offsets) > 10  # each image draws its own offset, all 25 possible


def test_rotate_matches_torchvision_and_quarter_turns_are_exact():
    x = torch.rand(3, 2, 9, 14, generator=_seed(2), dtype=torch.float64)
    angles = torch.tensor([30.0, -12.5, 90.0])
    expected = torch.stack(
        [
            TF.rotate(im, float(a), InterpolationMode.BILINEAR)
            for im, a in zip(x, angles, strict=True)
        ]
    )
    assert torch.allclose(rotate(x, angles), expected, atol=1e-9)
    square = x[..., :9]
    turned = rotate(square, torch.full((3,), 90.0))
    assert torch.allclose(turned, torch.rot90(square, 1, (2, 3)), atol=1e-9)


def test_the_pipeline_equals_the_transforms_one_after_another(images):
    # Augmentation folds the flip into the rotation's grid and erases in place; same result.
    g = _seed(11)
    x = random_crop(images, 4, g)
    x = random_rotation(random_hflip(x, 0.5, g), 10.0, g)
    expected = random_erasing(x, 0.25, g)
    assert torch.allclose(FULL(images, _seed(11)), expected, atol=1e-5)
    assert torch.allclose(
        Augmentation(hflip=True)(images, _seed(3)), random_hflip(images, 0.5, _seed(3))
    )


def test_random_rotation_draws_an_angle_per_image_and_keeps_the_centre():
    x = torch.ones(32, 1, 15, 15)
    out = random_rotation(x, 45.0, _seed(5))
    assert torch.allclose(out[:, 0, 7, 7], torch.ones(32))  # the centre doesn't move
    assert (out[:, 0, 0, 0] < 0.5).float().mean() > 0.5  # most turned enough to empty a corner
    assert len({bytes(image.numpy()) for image in out}) == 32  # each image its own angle


def test_erasing_zeroes_one_rectangle_of_torchvisions_size_per_erased_image():
    x = _batch(n=400, h=32, w=32)
    out = random_erasing(x, 0.5, _seed(2))
    erased = 0
    for image in out:
        rows, cols = torch.nonzero(image[0] == 0, as_tuple=True)
        if len(rows) == 0:
            continue
        erased += 1
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert len(rows) == height * width  # a full rectangle...
        assert (image[:, image[0] == 0] == 0).all()  # ... in every channel
        assert ERASE_SCALE[0] * 0.7 <= len(rows) / 32**2 <= ERASE_SCALE[1] * 1.3  # (rounding)
    assert 160 < erased < 240  # p = 0.5


def test_same_seed_same_output_and_float64_works():
    x = _batch(dtype=torch.float64)
    a = FULL(x, _seed(3))
    b = FULL(x, _seed(3))
    assert a.dtype == torch.float64 and torch.equal(a, b)
    assert not torch.equal(a, FULL(x, _seed(4)))


def test_bad_settings_and_uint8_input_are_refused():
    for bad in (
        {"crop_padding": -1},
        {"erasing": 1.5},
        {"padding_mode": "wrap"},
        {"hflip": "alternating"},
    ):
        with pytest.raises(ValueError):
            Augmentation(**bad)
    with pytest.raises(TypeError, match="to_float"):
        FULL(torch.zeros(2, 3, 8, 8, dtype=torch.uint8))


def test_normalisation_uses_the_per_channel_statistics(fashion):
    x = torch.from_numpy(fashion[0]).repeat(1, 3, 1, 1)
    x[:, 1] = 255 - x[:, 1]
    x[:, 2] = 7  # a constant channel: std 1, not a division by zero
    mean, std = channel_stats(x)
    as_float = x.double() / 255
    assert torch.allclose(mean[:2], as_float.mean(dim=(0, 2, 3))[:2].float(), atol=1e-6)
    assert torch.allclose(std[:2], as_float.std(dim=(0, 2, 3))[:2].float(), atol=1e-4)
    assert std[2] == 1
    normalised = to_float(x, mean, std)
    assert normalised.dtype == torch.float32
    assert torch.allclose(normalised.mean(dim=(0, 2, 3))[:2], torch.zeros(2), atol=1e-4)
    assert torch.allclose(normalised.std(dim=(0, 2, 3))[:2], torch.ones(2), atol=1e-3)
    assert to_float(x[:2], mean, std, dtype=torch.float64).dtype == torch.float64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_a_cpu_generator_gives_the_same_augmentation_on_the_gpu():
    x = _batch(n=64, h=32, w=32)
    on_gpu = FULL(x.cuda(), _seed(9)).cpu()
    assert torch.allclose(on_gpu, FULL(x, _seed(9)), atol=1e-5)
    assert FULL(x.cuda()).device.type == "cuda"  # the device's own generator when none given
