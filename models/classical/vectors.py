"""Per-image helpers shared by the feature transformers: grey conversion and normalisation."""

from __future__ import annotations

import numpy as np

GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma, the weights of cv2.COLOR_RGB2GRAY
EPSILON = 1e-12  # keeps an all-zero vector at zero instead of dividing by zero


def to_grey(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) uint8, C = 1 or 3 → (N, H, W) float32 in 0..255."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"expected images (N, C, H, W) with C = 1 or 3, got shape {images.shape}")
    if images.shape[1] == 1:
        return images[:, 0].astype(np.float32)
    weights = np.asarray(GREY_WEIGHTS, np.float32)
    return np.tensordot(weights, images.astype(np.float32), axes=([0], [1]))


def normalise(vectors: np.ndarray, norm: str) -> np.ndarray:
    """Normalise each row: ``none``, ``l1``, ``l2``, ``zscore`` (mean 0, std 1) or ``sqrt``.

    ``sqrt`` is the Hellinger map for histograms: l1-normalise, then take square roots, so the
    rows have unit l2 norm and a dot product between rows is the Bhattacharyya coefficient.
    """
    vectors = vectors.astype(np.float32, copy=False)
    if norm == "none":
        return vectors
    if norm == "l1":
        return vectors / np.maximum(np.abs(vectors).sum(1, keepdims=True), EPSILON)
    if norm == "l2":
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), EPSILON)
    if norm == "zscore":
        centred = vectors - vectors.mean(1, keepdims=True)
        return centred / np.maximum(centred.std(1, keepdims=True), EPSILON)
    if norm == "sqrt":
        return np.sqrt(normalise(vectors, "l1"))
    raise ValueError(f"unknown norm {norm!r}")
