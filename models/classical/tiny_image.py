"""Tiny images: the whole image, shrunk and flattened, as a feature vector (Torralba et al.)."""

from __future__ import annotations

from typing import Annotated, Literal

import cv2
import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from models.classical.vectors import normalise, to_grey
from models.options import POSITIVE, check_arguments

TinyNorm = Literal["none", "l1", "l2", "zscore"]


class TinyImage(TransformerMixin, BaseEstimator):
    """Resize to ``size`` x ``size`` px (area averaging), flatten, centre, normalise.

    Parameters
    ----------
    size : side of the tiny image in pixels.
    grayscale : convert colour images to grey first (C = 3 → 1); grey input stays grey.
    norm : per-vector normalisation, one of ``none``, ``l1``, ``l2``, ``zscore``.
    zero_mean : subtract each vector's mean before normalising (removes overall brightness).

    Input (N, C, H, W) uint8; output (N, size * size * C') float32, channels first.
    Stateless: ``fit`` only checks the parameters.
    """

    def __init__(
        self,
        size: Annotated[int, POSITIVE] = 16,
        grayscale: bool = True,
        norm: TinyNorm = "l2",
        zero_mean: bool = True,
    ) -> None:
        self.size = size
        self.grayscale = grayscale
        self.norm = norm
        self.zero_mean = zero_mean

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> TinyImage:
        """Check the parameters; nothing is learned."""
        check_arguments(TinyImage, self.get_params())
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """(N, C, H, W) uint8 → (N, D) float32 tiny-image vectors."""
        if self.grayscale:
            images = to_grey(X)[..., None]  # (N, H, W, 1)
        else:
            images = X.transpose(0, 2, 3, 1).astype(np.float32)  # OpenCV wants channels last
        side = int(self.size)
        small = np.stack(
            [cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA) for image in images]
        ).reshape(len(images), side, side, -1)  # cv2 drops a single channel axis: put it back
        vectors = small.transpose(0, 3, 1, 2).reshape(len(images), -1)
        if self.zero_mean:
            vectors = vectors - vectors.mean(1, keepdims=True)
        return normalise(vectors, self.norm)
