"""Dense SIFT with OpenCV, and bag-of-words histograms with an optional spatial pyramid."""

from __future__ import annotations

import cv2
import numpy as np
from sklearn.metrics import pairwise_distances_argmin

from models.classical.progress import progress
from models.classical.vectors import to_grey

# OpenCV's SIFT makes each of the descriptor's 4 x 4 spatial bins 1.5 * KeyPoint.size pixels
# wide (SIFT_DESCR_SCL_FCTR = 3 times the radius size / 2), so a descriptor spans 6 * size.
# ``patch_size`` here is that span, as in VLFeat's dsift: KeyPoint.size = patch_size / 6.
# (Passing patch_size as KeyPoint.size would describe a 6x larger window: on 28 px images every
# descriptor would see the whole image; measured 0.74 vs 0.81 accuracy and 4x slower.)
OPENCV_SPAN_PER_SIZE = 6.0
ASSIGN_CHUNK = 1024  # images per word-assignment batch: bounds the float32 copy of descriptors


def grid_positions(height: int, width: int, step: int, patch_size: int) -> np.ndarray:
    """(K, 2) keypoint centres (x, y) every ``step`` px, whole patches inside the image.

    An image smaller than one patch gets a single keypoint in its centre.
    """
    half = patch_size / 2
    xs = np.arange(half, width - half + 1e-6, step)
    ys = np.arange(half, height - half + 1e-6, step)
    if len(xs) == 0 or len(ys) == 0:
        xs, ys = np.array([width / 2]), np.array([height / 2])
    grid_x, grid_y = np.meshgrid(xs, ys)  # row-major: keypoints go left to right, top to bottom
    return np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)


def prepare_grey(images: np.ndarray, resize: int | None) -> np.ndarray:
    """(N, C, H, W) uint8 → (N, S, S) uint8 grey, resized to ``resize`` x ``resize`` if set."""
    grey = np.clip(np.rint(to_grey(images)), 0, 255).astype(np.uint8)
    if not resize:
        return grey
    # Area averaging when shrinking (no aliasing), bilinear when enlarging small images.
    shrinking = resize < min(grey.shape[1:])
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return np.stack([cv2.resize(g, (resize, resize), interpolation=interpolation) for g in grey])


def extract_dense_sift(
    images: np.ndarray, step: int, patch_size: int, resize: int | None
) -> np.ndarray:
    """Upright SIFT descriptors on a regular grid: (N, K, 128) uint8.

    ``resize`` (pixels, square) is applied first; keypoints are ``step`` px apart and each
    descriptor covers a ``patch_size`` px square. OpenCV's descriptor values are integers in
    0..255 stored as float32, so uint8 loses nothing and takes a quarter of the space.
    This is the module-level hook tests wrap to count extractions.
    """
    grey = prepare_grey(images, resize)
    positions = grid_positions(grey.shape[1], grey.shape[2], step, patch_size)
    size = patch_size / OPENCV_SPAN_PER_SIZE
    # angle 0: upright descriptors (dense SIFT does not estimate an orientation per point).
    keypoints = [cv2.KeyPoint(float(x), float(y), size, 0) for x, y in positions]
    sift = cv2.SIFT_create()
    out = np.empty((len(grey), len(keypoints), 128), dtype=np.uint8)
    with progress(len(grey), f"dense SIFT, {len(keypoints)} per image", "img") as advance:
        for index, image in enumerate(grey):  # OpenCV describes one image per call
            kept, descriptors = sift.compute(image, keypoints)
            if len(kept) != len(keypoints):  # OpenCV drops none on a grid inside the image
                raise RuntimeError(f"OpenCV kept {len(kept)} of {len(keypoints)} keypoints")
            out[index] = descriptors
            advance(1)
    return out


def assign_words(descriptors: np.ndarray, vocabulary: np.ndarray) -> np.ndarray:
    """(N, K, 128) descriptors → (N, K) index of the nearest word (Euclidean)."""
    n, k, dim = descriptors.shape
    words = np.empty((n, k), dtype=np.int64)
    with progress(n, f"visual words of {len(vocabulary)}", "img") as advance:
        for start in range(0, n, ASSIGN_CHUNK):
            images = descriptors[start : start + ASSIGN_CHUNK]
            flat = images.reshape(-1, dim).astype(np.float32)
            nearest = pairwise_distances_argmin(flat, vocabulary)
            words[start : start + len(images)] = nearest.reshape(-1, k)
            advance(len(images))
    return words


def pyramid_histograms(
    words: np.ndarray, positions: np.ndarray, vocab_size: int, levels: int
) -> np.ndarray:
    """Weighted word counts per pyramid cell (Lazebnik, Schmid & Ponce, 2006), concatenated.

    ``words`` (N, K); ``positions`` (K, 2) keypoint (x, y) as fractions of the image size.
    Level l splits the image into 2^l x 2^l cells; with L = ``levels``, level 0 weighs 1/2^L and
    level l >= 1 weighs 1/2^(L-l+1), so finer matches count more. Output length is
    ``vocab_size * sum(4^l for l in 0..L)``, cells of a level in row-major order.
    """
    n = len(words)
    blocks = []
    for level in range(levels + 1):
        cells = 2**level
        column, row = (np.minimum((positions * cells).astype(int), cells - 1)).T
        cell = row * cells + column  # (K,) which cell each keypoint falls in
        bins = cell[None, :] * vocab_size + words  # (N, K) bin within this level's block
        width = cells * cells * vocab_size
        flat = (np.arange(n)[:, None] * width + bins).ravel()
        counts = np.bincount(flat, minlength=n * width).reshape(n, width)
        weight = 1 / 2**levels if level == 0 else 1 / 2 ** (levels - level + 1)
        blocks.append(counts.astype(np.float32) * weight)
    return np.concatenate(blocks, axis=1)
