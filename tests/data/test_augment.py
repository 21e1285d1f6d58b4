"""Batched augmentation: each transform does what it says, per image, reproducibly."""

from __future__ import annotations

import torch

from data.augment import (
    Augmentation,
    channel_stats,
    random_crop,
    random_erasing,
    random_hflip,
    random_rotation,
    to_float,
)


def _batch(n: int = 16, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.rand(n, 3, 12, 12, generator=torch.Generator().manual_seed(0), dtype=dtype)


def test_zero_strength_transforms_are_identities():
    x = _batch()
    assert torch.equal(random_crop(x, 0), x)
    assert torch.allclose(random_rotation(x, 0.0), x, atol=1e-6)
    assert torch.equal(random_hflip(x, 0.0), x)
    assert torch.equal(random_erasing(x, 0.0), x)
    assert not Augmentation().enabled


def test_hflip_with_certainty_mirrors_every_image():
    x = _batch()
    assert torch.equal(random_hflip(x, 1.0), x.flip(-1))


def test_crops_are_shifted_windows_of_the_padded_image():
    x = _batch()
    out = random_crop(x, 2, torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    offsets = set()
    for image, window in zip(padded, out, strict=True):
        matches = [
            (r, c)
            for r in range(5)
            for c in range(5)
            if torch.equal(image[:, r : r + 12, c : c + 12], window)
        ]
        assert matches, "a crop is not a window of its padded image"
        offsets.add(matches[0])
    assert len(offsets) > 1  # images draw their own offsets


def test_erasing_zeroes_one_rectangle_per_erased_image():
    x = _batch() + 1.0  # no zeros before erasing
    out = random_erasing(x, 1.0, torch.Generator().manual_seed(2))
    for image in out:
        rows, cols = torch.nonzero(image[0] == 0, as_tuple=True)
        assert len(rows) > 0
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert len(rows) == h * w  # a full rectangle
        assert torch.equal(image[:, image[0] == 0], torch.zeros(3, len(rows)))


def test_rotation_keeps_the_centre_and_fills_corners_with_zero():
    x = torch.ones(32, 1, 15, 15)
    out = random_rotation(x, 45.0, torch.Generator().manual_seed(5))
    assert torch.allclose(out[:, 0, 7, 7], torch.ones(32))  # the centre doesn't move
    corners = out[:, 0, 0, 0]
    assert (corners < 0.5).float().mean() > 0.5  # most images turned enough to empty a corner
    assert len(set(out[:, 0, 0, 1].tolist())) > 4  # each image its own angle


def test_same_seed_same_output_and_float64_works():
    augment = Augmentation(crop_padding=2, hflip=True, rotation=15, erasing=0.5)
    x = _batch(dtype=torch.float64)
    a = augment(x, torch.Generator().manual_seed(3))
    b = augment(x, torch.Generator().manual_seed(3))
    assert a.dtype == torch.float64 and a.shape == x.shape
    assert torch.equal(a, b)
    assert not torch.equal(a, augment(x, torch.Generator().manual_seed(4)))


def test_normalisation_uses_the_per_channel_statistics():
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    mean, std = channel_stats(x)
    normalised = to_float(x, mean, std)
    assert torch.allclose(normalised.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(normalised.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-3)
