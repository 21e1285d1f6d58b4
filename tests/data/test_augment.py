"""Batched augmentation: each transform does what it says, per image, reproducibly."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from data import augment
from data.augment import (
    CROP_RATIO,
    ERASE_SCALE,
    Augmentation,
    CentreCrop,
    centre_crop,
    channel_stats,
    random_crop,
    random_erasing,
    random_hflip,
    random_resized_crop,
    random_rotation,
    resized_crop_boxes,
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
        {"crop_scale": 0.0},
        {"crop_scale": 1.5},
        {"crop_scale": [0.6, 0.3]},
        {"crop_ratio": -1.0},
        {"crop_ratio": [2.0, 1.0]},
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


def test_channel_stats_read_chunks_and_an_even_sample_of_a_large_split(fashion, monkeypatch):
    x = torch.from_numpy(fashion[0])  # 1,000 images of 784 bytes
    mean, std = channel_stats(x)
    monkeypatch.setattr(augment, "STATS_CHUNK_BYTES", 8 * 784 * 7)  # 7 images a step
    assert torch.allclose(torch.stack(channel_stats(x)), torch.stack((mean, std)), atol=1e-6)
    monkeypatch.setattr(augment, "STATS_BYTES", 784 * 250)  # room for 250: every 4th image
    sampled = channel_stats(x)
    assert torch.equal(torch.stack(sampled), torch.stack(channel_stats(x[::4])))
    assert not torch.equal(sampled[0], mean)
    assert torch.allclose(torch.stack(sampled), torch.stack((mean, std)), rtol=0.05)  # 250 of 1000


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_a_cpu_generator_gives_the_same_augmentation_on_the_gpu():
    x = _batch(n=64, h=32, w=32)
    on_gpu = FULL(x.cuda(), _seed(9)).cpu()
    assert torch.allclose(on_gpu, FULL(x, _seed(9)), atol=1e-5)
    assert FULL(x.cuda()).device.type == "cuda"  # the device's own generator when none given


# ---------------------------------------------------------------------------------------------
# Random resized crops, and the centre crop evaluation sees
# ---------------------------------------------------------------------------------------------


def test_random_resized_crops_have_the_asked_size_and_repeat_with_the_seed(images):
    out = random_resized_crop(images, (20, 24), generator=_seed(0))
    assert out.shape == (64, 1, 20, 24) and out.dtype == images.dtype
    # Bilinear: each output pixel lies between its own image's darkest and brightest.
    low, high = images.amin(dim=(1, 2, 3)), images.amax(dim=(1, 2, 3))
    assert (out.amin(dim=(1, 2, 3)) >= low - 1e-5).all()
    assert (out.amax(dim=(1, 2, 3)) <= high + 1e-5).all()
    assert torch.equal(out, random_resized_crop(images, (20, 24), generator=_seed(0)))
    assert not torch.equal(out, random_resized_crop(images, (20, 24), generator=_seed(1)))


def test_each_crop_is_torchvisions_resized_crop_of_its_own_box(images):
    scale, ratio = (0.3, 1.0), CROP_RATIO
    out = random_resized_crop(images, (12, 12), scale, ratio, _seed(3))
    boxes = resized_crop_boxes(64, (28, 28), scale, ratio, _seed(3), like=images)
    for image, crop, *box in zip(images, out, *boxes, strict=True):
        top, left, height, width = (int(v) for v in box)
        # Boxes of 13 px and more, output 12: torchvision reads inside the box as we do.
        expected = TF.resized_crop(image, top, left, height, width, [12, 12], antialias=False)
        assert torch.allclose(crop, expected, atol=1e-5)
    assert len({tuple(int(b[i]) for b in boxes) for i in range(64)}) > 50  # a box each


def test_crop_boxes_draw_area_and_aspect_uniformly_in_their_ranges():
    top, left, height, width = resized_crop_boxes(4000, (96, 96), (0.25, 0.5), CROP_RATIO, _seed(2))
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + height <= 96).all() and (left + width <= 96).all()
    area, log_aspect = height * width / 96**2, torch.log(width / height)
    # Whole pixels move the area by up to ~2 px per side (2 / 40 of the smallest boxes' side).
    assert 0.25 * 0.95 <= area.min() < 0.26 and 0.49 < area.max() <= 0.5 * 1.05
    assert abs(float(area.mean()) - 0.375) < 0.005  # uniform in [0.25, 0.5]
    bound = math.log(4 / 3)
    assert (log_aspect.abs() <= bound + 0.05).all() and log_aspect.abs().max() > bound - 0.05
    assert abs(float(log_aspect.mean())) < 0.01  # log-uniform, symmetric about 1
    assert abs(float(log_aspect.std()) - 2 * bound / math.sqrt(12)) < 0.01
    # Placed uniformly: the boxes' centres spread over the free room, both ends reached.
    assert top.min() == 0 and (top + height).max() == 96


def test_crop_boxes_follow_torchvisions_draws_and_fallback():
    # A wide image (8 x 64): many draws don't fit, so the fallback (the centre box) counts.
    image, count = torch.zeros(1, 8, 64), 3000
    torch.manual_seed(0)
    theirs = torch.tensor(
        [T.RandomResizedCrop.get_params(image, [0.08, 1.0], list(CROP_RATIO)) for _ in range(count)]
    ).double()
    boxes = resized_crop_boxes(count, (8, 64), (0.08, 1.0), CROP_RATIO, _seed(0))
    ours = torch.stack(boxes, 1)  # rows (top, left, height, width), as torchvision's
    fallback = torch.tensor([0.0, 26.0, 8.0, 11.0])  # 8 high, 8 * 4/3 wide, centred
    assert (ours == fallback).all(1).float().mean() == pytest.approx(
        float((theirs == fallback).all(1).float().mean()), abs=0.04
    )
    area = [b[:, 2] * b[:, 3] / (8 * 64) for b in (theirs, ours)]
    assert float(area[1].mean()) == pytest.approx(float(area[0].mean()), abs=0.01)
    centre = [b[:, 1] + b[:, 3] / 2 for b in (theirs, ours)]
    assert float(centre[1].mean()) == pytest.approx(float(centre[0].mean()), abs=1.0)


def test_the_centre_crop_is_the_same_every_time_and_torchvisions(images):
    out = centre_crop(images, 16, 0.875)  # the centre 24 x 24 of 28 (87.5%), resized to 16
    assert out.shape == (64, 1, 16, 16)
    assert torch.allclose(out, TF.resized_crop(images, 2, 2, 24, 24, [16, 16]), atol=1e-5)
    assert torch.equal(out, centre_crop(images, 16, 0.875))
    assert torch.equal(out, CentreCrop(16, 0.875)(images))
    same = centre_crop(images, 28)  # already 28 x 28: the images themselves, not a copy
    assert same.data_ptr() == images.data_ptr() and torch.equal(same, images)
    assert CentreCrop(28).is_identity(28, 28) and not CentreCrop(28, 0.875).is_identity(28, 28)
    wide = torch.rand(2, 3, 10, 17, generator=_seed(0))  # a wide image: its centre square
    assert torch.equal(centre_crop(wide, 10), wide[..., 3:13])


def test_resized_crops_come_first_and_the_other_transforms_follow(images):
    aug = Augmentation(crop_scale=[0.3, 0.9], crop_ratio=1.25, hflip=True, erasing=0.5)
    assert aug.scale_range == (0.3, 0.9) and aug.ratio_range == (0.8, 1.25)
    g = _seed(5)
    x = random_resized_crop(images, (20, 20), (0.3, 0.9), (0.8, 1.25), g)
    expected = random_erasing(random_hflip(x, 0.5, g), 0.5, g)
    # The flip rides in the crop's grid: the mirrored pixels are read, equal to rounding.
    assert torch.allclose(aug(images, _seed(5), size=20), expected, atol=1e-5)
    # A number is [s, 1]; with no crop_scale, a size resizes each image's centre square.
    assert Augmentation(crop_scale=0.5).scale_range == (0.5, 1.0) and aug.enabled
    assert torch.equal(Augmentation()(images, size=14), centre_crop(images, 14))
    assert Augmentation(crop_scale=0.5)(images, _seed(0)).shape == images.shape  # no size
