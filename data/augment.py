"""Batched data augmentation: tensor ops on a whole batch, on the batch's device.

No PIL and no per-image Python loop: each transform draws one random vector for the batch and
applies it with index arithmetic, a mask, or one ``grid_sample`` call. On one CPU core a batch
of 256 CIFAR-sized images takes ~6 ms, about 10x less CPU time than torchvision's per-image
PIL transforms (bench/bench_data_path.py); on a GPU it is a few kernel launches.

Transforms run on *normalised* float images, so "zero" fill (padding, rotation corners,
erased rectangles) is the dataset's mean colour, as with torchvision's RandomErasing after
Normalize. Random numbers come from ``generator`` when given (a seeded CPU generator gives the
same augmentation on CPU and GPU), else from the default generator of the batch's device.

Translation, as airbench does it, is ``crop_padding`` with ``padding_mode: reflect``.

Photos train at a chosen resolution: ``crop_scale`` (torchvision's RandomResizedCrop) cuts a
random box of each image and resizes it to that side, and evaluation sees the centre crop
(``centre_crop``, timm's ``crop_pct``) at the same side: never a random view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, get_args

import torch
import torch.nn.functional as F

from data import pages

ERASE_SCALE = (0.02, 0.33)  # erased area as a fraction of the image (torchvision's defaults)
ERASE_RATIO = (0.3, 3.3)  # erased rectangle's height / width (torchvision's defaults)
ERASE_ATTEMPTS = 10  # torchvision's RandomErasing tries 10 rectangles, then leaves the image be
CROP_RATIO = (3 / 4, 4 / 3)  # a resized crop's width / height (torchvision's default range)
CROP_ATTEMPTS = 10  # RandomResizedCrop's boxes drawn per image before its fallback (the centre)
CROP_PCT = 0.875  # evaluation's centre crop after random resized crops: 87.5% of the short side
STATS_CHUNK_BYTES = 64 * 2**20  # float64 per step of channel_stats (2,730 images at 32 px)
# The most uint8 image bytes channel_stats reads (an evenly spaced sample of a larger split):
# CIFAR-10's whole training set is 150 MB, while a 15 GB cache would take a minute to convert.
STATS_BYTES = 2**30
PaddingMode = Literal["zeros", "reflect"]
PADDING_MODES = get_args(PaddingMode)
Hflip = Literal[False, True, "alternate"]
HFLIPS = get_args(Hflip)


# ---------------------------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------------------------


def channel_stats(x_uint8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of uint8 images (N, C, H, W), in 0..1 units (float32, (C,)).

    Read in chunks (no float copy of the images), from every k-th image where the images
    are more than STATS_BYTES. A channel with no variation gets std 1, so normalising never
    divides by zero.
    """
    per_image = max(1, x_uint8[:1].numel())
    x_uint8 = x_uint8[:: max(1, math.ceil(len(x_uint8) * per_image / STATS_BYTES))]
    total = torch.zeros(x_uint8.shape[1], dtype=torch.float64, device=x_uint8.device)
    squares = torch.zeros_like(total)
    # Chunks, not images: a handful of steps for small images, bounded memory for large ones.
    for part in x_uint8.split(max(1, STATS_CHUNK_BYTES // (8 * per_image))):
        chunk = part.to(torch.float64) / 255
        total += chunk.sum(dim=(0, 2, 3))
        squares += chunk.square().sum(dim=(0, 2, 3))
        pages.forget(part)  # read: a shared split's pages aren't kept (data.pages)
    count = x_uint8.numel() / x_uint8.shape[1]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt()
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    return mean.float(), std.float()


def to_float(
    x_uint8: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    *,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """uint8 images (N, C, H, W) to normalised float ``(x / 255 - mean) / std``, per channel."""
    scale = (1 / (255 * std)).to(device=x_uint8.device, dtype=dtype)[:, None, None]
    shift = (-mean / std).to(device=x_uint8.device, dtype=dtype)[:, None, None]
    # One new tensor, then in place: each temporary of a big batch costs an allocation and
    # page faults, which took longer than the arithmetic (4 ms -> 1 ms per 256 CIFAR images).
    return x_uint8.to(dtype).mul_(scale).add_(shift)


# ---------------------------------------------------------------------------------------------
# The augmentation a trial asks for
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Augmentation:
    """Random transforms of a float batch (N, C, H, W); each image draws its own parameters.

    Applied in torchvision's usual order: crops (resized, then padded), flip, rotation, erasing.
    """

    # A random resized crop (torchvision's RandomResizedCrop) when set: each image cut to a box
    # of this fraction of its area, uniform in [s, 1] for a number s (the knob to search:
    # ``crop_scale: {uniform: [0.08, 0.5]}``) or in [lo, hi] for a list; torchvision's default
    # is [0.08, 1]. The box is resized to the training resolution (``size``).
    crop_scale: float | tuple[float, float] | None = None
    # The box's width / height, log-uniform in [1 / r, r] for a number r, or in [lo, hi].
    crop_ratio: float | tuple[float, float] = CROP_RATIO
    crop_padding: int = 0  # pixels padded on each side before a random crop back to H x W
    # Mirror left-right: True, each image with probability ``hflip_p``; "alternate", each image
    # in every other epoch (see alternating_flips; needs the images' indices and the epoch).
    hflip: Hflip = False
    rotation: float = 0.0  # maximum rotation, degrees (uniform in [-rotation, rotation])
    erasing: float = 0.0  # probability per image of erasing one random rectangle (set to 0)
    padding_mode: PaddingMode = "zeros"  # crop padding; "reflect" is airbench's choice
    hflip_p: float = 0.5  # probability of a flip when hflip is on

    def __post_init__(self) -> None:
        if self.crop_padding < 0 or self.rotation < 0:
            raise ValueError("crop_padding and rotation must be >= 0")
        if not (0 <= self.erasing <= 1 and 0 <= self.hflip_p <= 1):
            raise ValueError("erasing and hflip_p are probabilities: between 0 and 1")
        if self.padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}")
        if self.hflip not in HFLIPS:
            raise ValueError(f"hflip must be true, false or alternate, got {self.hflip!r}")
        if self.crop_scale is not None:
            low, high = self.scale_range
            if not 0 < low <= high <= 1:
                raise ValueError(f"crop_scale must be in (0, 1], lo <= hi; got {self.crop_scale}")
        low, high = self.ratio_range
        if not 0 < low <= high < math.inf:
            raise ValueError(f"crop_ratio must be > 0 (and lo <= hi), got {self.crop_ratio}")

    @property
    def scale_range(self) -> tuple[float, float]:
        """``crop_scale`` as (lo, hi): a number s is [s, 1]."""
        scale = 1.0 if self.crop_scale is None else self.crop_scale
        if isinstance(scale, int | float):
            return float(scale), 1.0
        low, high = scale
        return float(low), float(high)

    @property
    def ratio_range(self) -> tuple[float, float]:
        """``crop_ratio`` as (lo, hi): a number r is [1 / r, r] (or [r, 1 / r] below 1)."""
        ratio = self.crop_ratio
        if isinstance(ratio, int | float):
            r = float(ratio)
            return (min(r, 1 / r), max(r, 1 / r)) if r > 0 else (r, r)
        low, high = ratio
        return float(low), float(high)

    @property
    def enabled(self) -> bool:
        """Whether any transform is on (a disabled one returns its input unchanged)."""
        crops = self.crop_scale is not None or self.crop_padding
        return bool(crops or self.hflip or self.rotation or self.erasing)

    def __call__(
        self,
        x: torch.Tensor,
        generator: torch.Generator | None = None,
        *,
        index: torch.Tensor | None = None,
        epoch: int = 0,
        size: int | None = None,
    ) -> torch.Tensor:
        """A new augmented batch, same dtype and device as ``x`` (a float tensor), and its
        shape unless ``size`` is given: then images ``size`` x ``size``, random resized crops
        with ``crop_scale``, else each image's centre square resized (``centre_crop``).

        ``index`` (each image's position in the training set) and ``epoch`` are read by
        ``hflip: alternate`` only.
        """
        if not x.is_floating_point():
            raise TypeError(f"Augmentation needs float images (see to_float), got {x.dtype}")
        original = x
        out_size = (size, size) if size else (x.shape[-2], x.shape[-1])
        boxes = None
        if self.crop_scale is not None:
            scale, ratio = self.scale_range, self.ratio_range
            boxes = resized_crop_boxes(len(x), x.shape[-2:], scale, ratio, generator, like=x)
        elif size:
            x = centre_crop(x, size)  # the identity when x is already size x size
        if self.crop_padding:
            x, boxes = x if boxes is None else resized_crop(x, boxes, out_size), None
            x = random_crop(x, self.crop_padding, generator, padding_mode=self.padding_mode)
        flip = self._flips(x, generator, index, epoch)
        if boxes is not None:  # the flip rides along in the crop's sampling grid: no extra pass
            x, flip = resized_crop(x, boxes, out_size, mirror=flip), None
        if self.rotation:
            # The flip rides along in the rotation's sampling grid: one pass instead of two.
            degrees = (_rand((len(x),), generator, x) * 2 - 1) * self.rotation
            x = rotate(x, degrees, mirror=flip)
        elif flip is not None:
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        if self.erasing:
            # In place when an earlier transform already made a new tensor (saves a copy).
            x = random_erasing(x, self.erasing, generator, inplace=x is not original)
        return x

    def _flips(
        self,
        x: torch.Tensor,
        generator: torch.Generator | None,
        index: torch.Tensor | None,
        epoch: int,
    ) -> torch.Tensor | None:
        """Which images of the batch to mirror (bool (N,)), or None for no flips at all."""
        if self.hflip == "alternate":
            if index is None:
                raise ValueError("hflip: alternate needs the images' indices in the training set")
            return alternating_flips(index.to(x.device), epoch)
        if self.hflip:
            return _rand((len(x),), generator, x) < self.hflip_p
        return None


# ---------------------------------------------------------------------------------------------
# The transforms, each vectorised over the batch
# ---------------------------------------------------------------------------------------------


def _rand(
    shape: tuple[int, ...], generator: torch.Generator | None, like: torch.Tensor
) -> torch.Tensor:
    """Uniform [0, 1) float64 numbers from ``generator`` (else ``like``'s device's default
    generator), returned on ``like``'s device."""
    device = generator.device if generator is not None else like.device
    values = torch.rand(shape, generator=generator, device=device, dtype=torch.float64)
    return values.to(device=like.device)


def random_crop(
    x: torch.Tensor,
    padding: int,
    generator: torch.Generator | None = None,
    *,
    padding_mode: PaddingMode = "zeros",
) -> torch.Tensor:
    """Pad every side by ``padding`` pixels, then cut each image at its own random offset."""
    if padding == 0:
        return x
    n, _, h, w = x.shape
    mode = "constant" if padding_mode == "zeros" else padding_mode
    padded = F.pad(x, (padding, padding, padding, padding), mode=mode)
    # Every H x W window of each padded image, as a view (N, C, 2p+1, 2p+1, H, W): no copy.
    windows = padded.unfold(2, h, 1).unfold(3, w, 1)
    # One (row, column) offset per image, uniform in 0..2*padding; indexing copies one window
    # per image (~5x faster than gathering rows then columns).
    offsets = (_rand((2, n), generator, x) * (2 * padding + 1)).long()
    return windows[torch.arange(n, device=x.device), :, offsets[0], offsets[1]]


def random_resized_crop(
    x: torch.Tensor,
    size: tuple[int, int],
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = CROP_RATIO,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """torchvision's RandomResizedCrop for a batch: each image's own random box
    (``resized_crop_boxes``) resized to ``size`` (height, width), in one ``grid_sample``.

    Bilinear without antialiasing (one kernel for the batch): a box more than twice the
    output's side skips pixels, so keep the stored images near the resolution trained at (a
    cache of 160 px for 128 px training, say), not far above it.
    """
    boxes = resized_crop_boxes(len(x), x.shape[-2:], scale, ratio, generator, like=x)
    return resized_crop(x, boxes, size)


def resized_crop(
    x: torch.Tensor,
    boxes: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    size: tuple[int, int],
    *,
    mirror: torch.Tensor | None = None,
) -> torch.Tensor:
    """Image i's box ``boxes[:][i]`` (top, left, height, width; pixels) resized to ``size``
    (height, width), bilinear, in one ``grid_sample``; where the bool ``mirror[i]`` is set,
    mirrored left-right too (at no extra cost: a flip after the crop is another pass)."""
    n, _, h, w = x.shape
    top, left, height, width = boxes
    out_h, out_w = size
    # Output pixel j's centre, (j + 0.5) / out_w of the way across its box, read at that point
    # of the input, in grid_sample's units: -1 and 1 are the input's outer edges. A mirrored
    # image's pixel j reads the box from its right edge.
    steps_x = (torch.arange(out_w, device=x.device, dtype=x.dtype) + 0.5) / out_w
    steps_y = (torch.arange(out_h, device=x.device, dtype=x.dtype) + 0.5) / out_h
    across = steps_x.expand(n, out_w)
    if mirror is not None:
        across = torch.where(mirror.to(x.device)[:, None], 1 - across, across)
    grid_x = (left[:, None] + across * width[:, None]) * (2 / w) - 1  # (N, out_w)
    grid_y = (top[:, None] + steps_y * height[:, None]) * (2 / h) - 1  # (N, out_h)
    grid = torch.stack(
        [grid_x[:, None, :].expand(n, out_h, out_w), grid_y[:, :, None].expand(n, out_h, out_w)],
        dim=-1,
    )
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def resized_crop_boxes(
    n: int,
    image: tuple[int, int],
    scale: tuple[float, float],
    ratio: tuple[float, float],
    generator: torch.Generator | None = None,
    *,
    like: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` boxes (top, left, height, width; whole pixels) in an image of ``image`` (height,
    width), as torchvision's RandomResizedCrop draws them: area a fraction of the image uniform
    in ``scale``, width / height log-uniform in ``ratio``, each rounded; of CROP_ATTEMPTS draws
    per image the first that fits, placed uniformly; where none fits, the centre box of the
    largest area whose ratio is in ``ratio``. On ``like``'s device and in its float dtype."""
    h, w = image
    like = like if like is not None else torch.empty(0)
    draws = _rand((4, n, CROP_ATTEMPTS), generator, like)
    widths, heights = _box_sides(draws, h * w, scale, ratio)  # width / height in ``ratio``
    fits = (widths > 0) & (widths <= w) & (heights > 0) & (heights <= h)
    first = fits.float().argmax(dim=1, keepdim=True)  # first attempt that fits (0 if none)
    box_h, box_w = heights.gather(1, first)[:, 0], widths.gather(1, first)[:, 0]
    # torchvision's fallback: the whole image, narrowed to the nearest ratio in range.
    fallback_w = min(w, round(h * ratio[1])) if w / h > ratio[1] else w
    fallback_h = min(h, round(w / ratio[0])) if w / h < ratio[0] else h
    found = fits.any(dim=1)
    box_h = torch.where(found, box_h, torch.full_like(box_h, fallback_h))
    box_w = torch.where(found, box_w, torch.full_like(box_w, fallback_w))
    top = torch.where(found, (draws[2, :, 0] * (h - box_h + 1)).floor(), ((h - box_h) // 2))
    left = torch.where(found, (draws[3, :, 0] * (w - box_w + 1)).floor(), ((w - box_w) // 2))
    dtype = like.dtype if like.is_floating_point() else torch.float32
    return tuple(t.to(dtype) for t in (top, left, box_h, box_w))  # type: ignore[return-value]


def centre_crop(x: torch.Tensor, size: int, crop_pct: float = 1.0) -> torch.Tensor:
    """Each image's centre square, ``crop_pct`` of its short side, resized to ``size`` x
    ``size`` (bilinear, antialiased): timm's evaluation view (resize the short side to
    ``size / crop_pct``, then cut the centre), the same for every image. ``x`` itself when it
    is already that square."""
    h, w = x.shape[-2:]
    side = max(1, round(min(h, w) * crop_pct))
    top, left = (h - side) // 2, (w - side) // 2
    x = x[..., top : top + side, left : left + side]
    if side == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


class CentreCrop(torch.nn.Module):
    """``centre_crop`` as a module: what evaluation applies, and an exported model with it."""

    def __init__(self, size: int, crop_pct: float = 1.0) -> None:
        super().__init__()
        self.size, self.crop_pct = size, crop_pct

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return centre_crop(x, self.size, self.crop_pct)

    def is_identity(self, height: int, width: int) -> bool:
        """Whether images of ``height`` x ``width`` pass unchanged."""
        return height == width == self.size and round(height * self.crop_pct) == height


def random_hflip(
    x: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Mirror each image left-right with probability ``p``."""
    flip = _rand((len(x),), generator, x) < p
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


def alternating_flips(index: torch.Tensor, epoch: int) -> torch.Tensor:
    """airbench's flips: image ``index`` (its position in the training set) is mirrored in the
    epochs where ``index + epoch`` is odd, so every pair of epochs shows it both ways, and each
    epoch mirrors half the images (a random half: the training split is shuffled). Random flips
    would show some images one way only for several epochs."""
    return (index + epoch) % 2 == 1


def random_rotation(
    x: torch.Tensor, degrees: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Rotate each image about its centre by its own angle, uniform in [-degrees, degrees]."""
    if degrees == 0:
        return x
    return rotate(x, (_rand((len(x),), generator, x) * 2 - 1) * degrees)


def rotate(
    x: torch.Tensor, degrees: torch.Tensor, *, mirror: torch.Tensor | None = None
) -> torch.Tensor:
    """Rotate image i by ``degrees[i]`` counter-clockwise about its centre, in one grid_sample.

    Bilinear, zero fill outside the image: the same pixels as torchvision's
    ``transforms.functional.rotate(image, angle, BILINEAR)``. Where the bool ``mirror[i]`` is
    set, image i is flipped left-right first (at no extra cost).
    """
    _, _, h, w = x.shape
    angles = torch.deg2rad(degrees.to(device=x.device, dtype=x.dtype))
    cos, sin = torch.cos(angles), torch.sin(angles)
    # grid_sample reads output pixel (i, j) from the input at grid[n, i, j] = (x, y), both
    # scaled to [-1, 1] across the image; pixel centres sit at (2k + 1) / size - 1.
    xs = (torch.arange(w, device=x.device, dtype=x.dtype) * 2 + 1) / w - 1
    ys = (torch.arange(h, device=x.device, dtype=x.dtype) * 2 + 1) / h - 1
    # (x, y) -> (cos x - sin y, sin x + cos y) in pixels, rescaled per axis (the h / w factors
    # keep non-square images rigid); positive angles turn counter-clockwise on screen (y grows
    # downwards), as in torchvision. Reading a mirrored image at x is reading the image at -x,
    # so a flip just negates the x row. The grid is an x part plus a y part, by broadcasting:
    # F.affine_grid's batched matmul is ~3x slower on CPU for small images.
    sign = 1 - 2 * mirror.to(x.dtype) if mirror is not None else torch.ones_like(cos)
    per_x = torch.stack([sign * cos, sin * w / h], -1)  # (N, 2): d(grid) / d(x)
    per_y = torch.stack([-sign * sin * h / w, cos], -1)  # (N, 2): d(grid) / d(y)
    along_x = per_x[:, None, None, :] * xs[:, None]  # (N, 1, W, 2)
    along_y = per_y[:, None, None, :] * ys[:, None, None]  # (N, H, 1, 2)
    grid = along_x + along_y  # (N, H, W, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_erasing(
    x: torch.Tensor, p: float, generator: torch.Generator | None = None, *, inplace: bool = False
) -> torch.Tensor:
    """With probability ``p`` per image, set one random rectangle to 0 (Zhong et al., 2017).

    Like torchvision's RandomErasing: area a fraction ``ERASE_SCALE`` of the image, aspect ratio
    log-uniform in ``ERASE_RATIO``; of ``ERASE_ATTEMPTS`` draws per image the first that fits is
    used, and an image where none fits is left alone.
    """
    n, _, h, w = x.shape
    draws = _rand((4, n, ERASE_ATTEMPTS), generator, x)
    heights, widths = _box_sides(draws, h * w, ERASE_SCALE, ERASE_RATIO)  # height / width
    fits = (heights < h) & (widths < w)
    first = fits.float().argmax(dim=1, keepdim=True)  # first attempt that fits (0 if none)
    eh, ew = heights.gather(1, first)[:, 0], widths.gather(1, first)[:, 0]
    top = (draws[2, :, 0] * (h - eh + 1)).floor()
    left = (draws[3, :, 0] * (w - ew + 1)).floor()
    erase = (_rand((n,), generator, x) < p) & fits.any(dim=1)
    rows = torch.arange(h, device=x.device)[None, :]
    cols = torch.arange(w, device=x.device)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None]) & erase[:, None]  # (N, H)
    in_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])  # (N, W)
    mask = (in_rows[:, :, None] & in_cols[:, None, :])[:, None]  # (N, 1, H, W)
    return x.masked_fill_(mask, 0.0) if inplace else x.masked_fill(mask, 0.0)


def _box_sides(
    draws: torch.Tensor, image_area: int, scale: tuple[float, float], ratio: tuple[float, float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision's rectangles (RandomResizedCrop's, RandomErasing's) from uniform ``draws``
    (4, N, attempts): area a fraction of ``image_area`` uniform in ``scale``, sides' ratio
    log-uniform in ``ratio``; the long-by-ratio side, then the other, rounded to pixels."""
    area = (scale[0] + draws[0] * (scale[1] - scale[0])) * image_area
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_low + draws[1] * (log_high - log_low))
    return torch.sqrt(area * aspect).round(), torch.sqrt(area / aspect).round()
