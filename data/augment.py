"""Batched data augmentation: tensor ops on a whole batch, on the batch's device.

No PIL and no per-image Python loop: each transform draws one random vector for the batch and
applies it with indexing or one ``grid_sample`` call, so augmenting costs about as much as a
forward pass of a small layer (see bench/bench_data_path.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

ERASE_SCALE = (0.02, 0.33)  # erased area as a fraction of the image (torchvision's defaults)
ERASE_RATIO = (0.3, 3.3)  # erased rectangle's aspect ratio


def channel_stats(x_uint8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images (N, C, H, W), in 0..1 units."""
    x = x_uint8.float() / 255
    std = x.std(dim=(0, 2, 3))
    return x.mean(dim=(0, 2, 3)), torch.where(std > 0, std, torch.ones_like(std))


def to_float(x_uint8: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 images to normalised float: (x / 255 - mean) / std, per channel."""
    return (x_uint8.float() / 255 - mean[:, None, None]) / std[:, None, None]


@dataclass(frozen=True)
class Augmentation:
    """Random transforms of a float batch (N, C, H, W); each image draws its own parameters."""

    crop_padding: int = 0  # pixels of zero padding before a random crop back to H x W
    hflip: bool = False  # mirror left-right with probability 1/2
    rotation: float = 0.0  # maximum rotation, degrees (uniform in [-rotation, rotation])
    erasing: float = 0.0  # probability of erasing a random rectangle (set to 0)

    @property
    def enabled(self) -> bool:
        return bool(self.crop_padding or self.hflip or self.rotation or self.erasing)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.crop_padding:
            x = random_crop(x, self.crop_padding, generator)
        if self.hflip:
            x = random_hflip(x, 0.5, generator)
        if self.rotation:
            x = random_rotation(x, self.rotation, generator)
        if self.erasing:
            x = random_erasing(x, self.erasing, generator)
        return x


def _uniform(
    n: int, low: float, high: float, generator: torch.Generator | None, like: torch.Tensor
) -> torch.Tensor:
    # Random numbers come from a CPU generator (seedable, device-independent), then move.
    values = torch.rand(n, generator=generator) * (high - low) + low
    return values.to(
        device=like.device, dtype=like.dtype if like.is_floating_point() else torch.float32
    )


def random_crop(
    x: torch.Tensor, padding: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Pad every side by ``padding`` pixels, then cut each image at its own random offset."""
    n, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (2, n), generator=generator).to(x.device)
    rows = offsets[0][:, None] + torch.arange(h, device=x.device)  # (N, H)
    cols = offsets[1][:, None] + torch.arange(w, device=x.device)  # (N, W)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


def random_hflip(
    x: torch.Tensor, p: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Mirror each image left-right with probability ``p``."""
    flip = (torch.rand(len(x), generator=generator) < p).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def random_rotation(
    x: torch.Tensor, degrees: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Rotate each image by its own angle in [-degrees, degrees] (bilinear, zero fill)."""
    angles = _uniform(len(x), -degrees, degrees, generator, x) * (math.pi / 180)
    cos, sin = torch.cos(angles), torch.sin(angles)
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_erasing(
    x: torch.Tensor, p: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """With probability ``p`` per image, set a random rectangle to 0 (Zhong et al., 2017)."""
    n, _, h, w = x.shape
    area = _uniform(n, *ERASE_SCALE, generator, x) * h * w
    log_ratio = _uniform(n, math.log(ERASE_RATIO[0]), math.log(ERASE_RATIO[1]), generator, x)
    ratio = torch.exp(log_ratio)
    eh = torch.sqrt(area * ratio).round().clamp(1, h)
    ew = torch.sqrt(area / ratio).round().clamp(1, w)
    top = (_uniform(n, 0, 1, generator, x) * (h - eh + 1)).floor()
    left = (_uniform(n, 0, 1, generator, x) * (w - ew + 1)).floor()
    erase = (torch.rand(n, generator=generator) < p).to(x.device)
    rows = torch.arange(h, device=x.device, dtype=eh.dtype)[None, :]
    cols = torch.arange(w, device=x.device, dtype=ew.dtype)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])  # (N, H)
    in_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])  # (N, W)
    mask = in_rows[:, :, None] & in_cols[:, None, :] & erase[:, None, None]  # (N, H, W)
    return x.masked_fill(mask[:, None], 0.0)
