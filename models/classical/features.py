"""Image features as scikit-learn transformers: tiny images and bags of dense SIFT words.

Input is uint8 images (N, C, H, W), as the datasets in ``data`` hold them.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.cluster import MiniBatchKMeans
from sklearn.metrics import pairwise_distances_argmin

from models.classical.cache import FeatureCache, array_digest, cache_key

NORMS = ("none", "l1", "l2", "zscore")
HISTOGRAM_NORMS = ("l1", "l2", "sqrt")
GREY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma, as OpenCV's RGB2GRAY


def to_grey(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) uint8 → (N, H, W) float32 in 0..255."""
    if images.shape[1] == 1:
        return images[:, 0].astype(np.float32)
    return np.tensordot(np.asarray(GREY_WEIGHTS, np.float32), images.astype(np.float32), ([0], [1]))


def normalise(vectors: np.ndarray, norm: str) -> np.ndarray:
    """Per-row normalisation: none, l1, l2, zscore (zero mean, unit std) or sqrt (Hellinger)."""
    vectors = vectors.astype(np.float32)
    if norm == "l1":
        return vectors / np.maximum(np.abs(vectors).sum(1, keepdims=True), 1e-12)
    if norm == "l2":
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    if norm == "zscore":
        centred = vectors - vectors.mean(1, keepdims=True)
        return centred / np.maximum(centred.std(1, keepdims=True), 1e-12)
    if norm == "sqrt":  # Hellinger: square roots of the l1-normalised histogram
        return np.sqrt(normalise(vectors, "l1"))
    return vectors


class TinyImage(TransformerMixin, BaseEstimator):
    """Resize to ``size`` x ``size`` (area averaging), flatten, centre and normalise."""

    def __init__(
        self, size: int = 16, grayscale: bool = True, norm: str = "l2", zero_mean: bool = True
    ) -> None:
        self.size = size
        self.grayscale = grayscale
        self.norm = norm
        self.zero_mean = zero_mean

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> TinyImage:
        _check_choice("norm", self.norm, NORMS)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        images = torch.from_numpy(to_grey(X)[:, None] if self.grayscale else X.astype(np.float32))
        small = F.interpolate(images, size=(self.size, self.size), mode="area")
        vectors = small.flatten(1).numpy()
        if self.zero_mean:
            vectors = vectors - vectors.mean(1, keepdims=True)
        return normalise(vectors, self.norm)


def grid_keypoints(height: int, width: int, step: int, patch_size: int) -> list[cv2.KeyPoint]:
    """Keypoints every ``step`` pixels, far enough from the border for a ``patch_size`` patch."""
    half = patch_size / 2
    ys = np.arange(half, height - half + 1e-6, step)
    xs = np.arange(half, width - half + 1e-6, step)
    if len(ys) == 0 or len(xs) == 0:  # tiny image: one keypoint in the middle
        ys, xs = np.array([height / 2]), np.array([width / 2])
    return [cv2.KeyPoint(float(x), float(y), float(patch_size)) for y in ys for x in xs]


def extract_dense_sift(
    images: np.ndarray, step: int, patch_size: int, resize: int | None
) -> np.ndarray:
    """Dense SIFT descriptors (N, K, 128) as uint8 (OpenCV's values are 0..255 integers)."""
    grey = np.clip(to_grey(images), 0, 255).astype(np.uint8)
    if resize:
        grey = np.stack(
            [cv2.resize(g, (resize, resize), interpolation=cv2.INTER_LINEAR) for g in grey]
        )
    keypoints = grid_keypoints(grey.shape[1], grey.shape[2], step, patch_size)
    sift = cv2.SIFT_create()
    out = np.empty((len(grey), len(keypoints), 128), dtype=np.uint8)
    for index, image in enumerate(grey):  # OpenCV takes one image per call
        _, descriptors = sift.compute(image, keypoints)
        out[index] = np.clip(np.round(descriptors), 0, 255)
    return out


class BagOfSift(TransformerMixin, BaseEstimator):
    """Dense SIFT → k-means vocabulary → word histograms (optionally a spatial pyramid).

    Descriptors, the vocabulary and the histograms are cached under ``cache_dir`` (None: no
    cache), so a sweep over classifier settings computes them once.
    """

    def __init__(
        self,
        step: int = 4,
        patch_size: int = 8,
        resize: int | None = None,
        vocab_size: int = 200,
        sample_size: int = 20000,
        seed: int = 0,
        norm: str = "sqrt",
        pyramid_levels: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        self.step = step
        self.patch_size = patch_size
        self.resize = resize
        self.vocab_size = vocab_size
        self.sample_size = sample_size
        self.seed = seed
        self.norm = norm
        self.pyramid_levels = pyramid_levels
        self.cache_dir = cache_dir

    # -- the three cached stages --------------------------------------------------------------

    def _sift_params(self) -> dict:
        return {"step": self.step, "patch_size": self.patch_size, "resize": self.resize}

    def _descriptors(self, X: np.ndarray, digest: str) -> np.ndarray:
        key = cache_key("sift", data=digest, **self._sift_params())
        return self.cache_.get(key, lambda: extract_dense_sift(X, **self._sift_params()))

    def _vocabulary(self, X: np.ndarray) -> np.ndarray:
        digest = array_digest(X)
        key = cache_key(
            "vocab",
            data=digest,
            vocab_size=self.vocab_size,
            sample_size=self.sample_size,
            seed=self.seed,
            **self._sift_params(),
        )

        def fit_kmeans() -> np.ndarray:
            descriptors = self._descriptors(X, digest).reshape(-1, 128)
            rng = np.random.default_rng(self.seed)
            sample = descriptors[
                rng.choice(len(descriptors), min(self.sample_size, len(descriptors)), replace=False)
            ]
            kmeans = MiniBatchKMeans(n_clusters=self.vocab_size, random_state=self.seed, n_init=3)
            return kmeans.fit(sample.astype(np.float32)).cluster_centers_.astype(np.float32)

        return self.cache_.get(key, fit_kmeans)

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> BagOfSift:
        _check_choice("norm", self.norm, HISTOGRAM_NORMS)
        if self.pyramid_levels not in (0, 1, 2):
            raise ValueError(f"pyramid_levels must be 0, 1 or 2, got {self.pyramid_levels!r}")
        self.cache_ = FeatureCache(self.cache_dir)
        self.vocabulary_ = self._vocabulary(X)
        self.vocabulary_key_ = array_digest(self.vocabulary_)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        digest = array_digest(X)
        key = cache_key(
            "histograms",
            data=digest,
            vocabulary=self.vocabulary_key_,
            norm=self.norm,
            pyramid_levels=self.pyramid_levels,
            **self._sift_params(),
        )
        return self.cache_.get(key, lambda: self._histograms(X, digest))

    # -- histograms ---------------------------------------------------------------------------

    def _histograms(self, X: np.ndarray, digest: str) -> np.ndarray:
        descriptors = self._descriptors(X, digest)
        n, k, _ = descriptors.shape
        words = pairwise_distances_argmin(
            descriptors.reshape(-1, 128).astype(np.float32), self.vocabulary_
        ).reshape(n, k)
        height, width = (self.resize, self.resize) if self.resize else X.shape[-2:]
        keypoints = grid_keypoints(height, width, self.step, self.patch_size)
        positions = np.array(
            [(p.pt[0] / width, p.pt[1] / height) for p in keypoints]
        )  # x, y in 0..1
        levels = []
        top = self.pyramid_levels
        for level in range(top + 1):
            cells = 2**level
            cell = np.minimum(
                (positions[:, 1] * cells).astype(int), cells - 1
            ) * cells + np.minimum((positions[:, 0] * cells).astype(int), cells - 1)
            # Lazebnik et al. (2006): level 0 weighs 1/2^L, level l >= 1 weighs 1/2^(L-l+1).
            weight = 1 / 2**top if level == 0 else 1 / 2 ** (top - level + 1)
            width_bins = cells * cells * self.vocab_size  # one bin per (cell, word)
            bins = np.arange(n)[:, None] * width_bins + cell[None, :] * self.vocab_size + words
            counts = np.bincount(bins.ravel(), minlength=n * width_bins).reshape(n, width_bins)
            levels.append(counts.astype(np.float32) * weight)
        return normalise(np.concatenate(levels, axis=1), self.norm)


def _check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
