"""Bags of dense SIFT words: descriptors → k-means vocabulary → (pyramid) word histograms."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

import cv2
import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.cluster import MiniBatchKMeans
from sklearn.utils.validation import check_is_fitted

from models.classical import sift
from models.classical.cache import FeatureCache, array_digest, cache_key
from models.classical.progress import progress
from models.classical.vectors import normalise
from models.options import POSITIVE, check_arguments

HistogramNorm = Literal["l1", "l2", "sqrt"]
PyramidLevels = Literal[0, 1, 2]


class BagOfSift(TransformerMixin, BaseEstimator):
    """Dense SIFT words counted per image (optionally per spatial-pyramid cell).

    Parameters
    ----------
    step : pixels between keypoints of the dense grid (after ``resize``).
    patch_size : side in pixels of the square each descriptor describes (after ``resize``).
    resize : resize images to ``resize`` x ``resize`` px first (None: keep their size).
        SIFT on 28 px images works; 32 px gives a few more keypoints at step 4.
    vocab_size : number of visual words (k-means clusters).
    sample_size : descriptors sampled (seeded) from the training set to fit k-means.
    seed : seeds the sample and MiniBatchKMeans.
    norm : histogram normalisation: ``l1``, ``l2`` or ``sqrt`` (Hellinger: l1, then sqrt).
    pyramid_levels : 0 (a plain bag of words), 1 or 2 (Lazebnik et al. 2006 spatial pyramid);
        output length is ``vocab_size * sum(4**l for l in range(pyramid_levels + 1))``.
    cache_dir : where descriptors, vocabularies and histograms are cached (None: no cache).
        Read at each call: after ``set_params(cache_dir=None)`` nothing is written anywhere,
        which is how a pipeline is exported (``tuner/export.py``).

    Learned: ``vocabulary_`` (vocab_size, 128) float32. ``cache_`` counts hits and misses
    since the last ``fit``; it is not pickled, so a loaded estimator keeps no path of the
    machine that fitted it. Without a cache, ``fit_transform`` extracts descriptors once;
    ``fit`` then ``transform`` on the same images extracts them twice.
    """

    def __init__(
        self,
        step: Annotated[int, POSITIVE] = 4,
        patch_size: Annotated[int, POSITIVE] = 8,
        resize: Annotated[int, POSITIVE] | None = None,
        vocab_size: Annotated[int, POSITIVE] = 200,
        sample_size: Annotated[int, POSITIVE] = 20000,
        seed: int = 0,
        norm: HistogramNorm = "l2",
        pyramid_levels: PyramidLevels = 0,
        cache_dir: str | Path | None = None,
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

    # -- the estimator API --------------------------------------------------------------------

    def fit(self, X: np.ndarray, y: np.ndarray | None = None) -> BagOfSift:
        """Build (or read from the cache) the vocabulary of ``X``'s descriptors."""
        digest = array_digest(X)
        self._fit(digest, self._lazy_descriptors(X, digest))
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """(N, C, H, W) uint8 → (N, vocab_size * cells) float32 normalised histograms."""
        check_is_fitted(self, "vocabulary_")
        self._follow_cache_dir()
        digest = array_digest(X)
        return self._histograms(X, digest, self._lazy_descriptors(X, digest))

    def fit_transform(self, X: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
        """``fit(X).transform(X)``, hashing and describing ``X`` once."""
        digest = array_digest(X)
        descriptors = self._lazy_descriptors(X, digest)
        self._fit(digest, descriptors)
        return self._histograms(X, digest, descriptors)

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.pop("cache_", None)  # a directory of the machine that fitted it, and counters
        return state

    def _follow_cache_dir(self) -> None:
        """Keep ``cache_`` (and its counts) while it is ``cache_dir``'s; else start a new one."""
        cache = FeatureCache(self.cache_dir)
        if getattr(self, "cache_", None) is None or self.cache_.directory != cache.directory:
            self.cache_ = cache

    # -- the three cached stages --------------------------------------------------------------

    def _sift_params(self) -> dict:
        return {"step": self.step, "patch_size": self.patch_size, "resize": self.resize}

    def _lazy_descriptors(self, X: np.ndarray, digest: str) -> Callable[[], np.ndarray]:
        """Descriptors of ``X``, fetched or extracted only if a later stage misses its cache."""
        key = cache_key("sift", data=digest, opencv=cv2.__version__, **self._sift_params())

        @cache
        def descriptors() -> np.ndarray:
            # Looked up on the module at call time, so tests can wrap it to count extractions.
            return self.cache_.get(key, lambda: sift.extract_dense_sift(X, **self._sift_params()))

        return descriptors

    def _fit(self, digest: str, descriptors: Callable[[], np.ndarray]) -> None:
        check_arguments(BagOfSift, self.get_params())
        self.cache_ = FeatureCache(self.cache_dir)
        key = cache_key(
            "vocabulary",
            data=digest,
            opencv=cv2.__version__,
            vocab_size=self.vocab_size,
            sample_size=self.sample_size,
            seed=self.seed,
            **self._sift_params(),
        )
        self.vocabulary_ = self.cache_.get(key, lambda: self._kmeans(descriptors()))

    def _kmeans(self, descriptors: np.ndarray) -> np.ndarray:
        flat = descriptors.reshape(-1, descriptors.shape[-1])
        rng = np.random.default_rng(self.seed)
        sample = flat[rng.choice(len(flat), min(self.sample_size, len(flat)), replace=False)]
        kmeans = MiniBatchKMeans(n_clusters=self.vocab_size, random_state=self.seed)
        # One step: MiniBatchKMeans.fit reports nothing as it goes; the bar times it.
        desc = f"k-means, {self.vocab_size} words from {len(sample)} descriptors"
        with progress(1, desc, "fit") as advance:
            kmeans.fit(sample.astype(np.float32))
            advance(1)
        return kmeans.cluster_centers_.astype(np.float32)

    def _histograms(
        self, X: np.ndarray, digest: str, descriptors: Callable[[], np.ndarray]
    ) -> np.ndarray:
        key = cache_key(
            "histograms",
            data=digest,
            vocabulary=array_digest(self.vocabulary_),
            norm=self.norm,
            pyramid_levels=self.pyramid_levels,
            **self._sift_params(),
        )

        def compute() -> np.ndarray:
            words = sift.assign_words(descriptors(), self.vocabulary_)
            side = (self.resize, self.resize) if self.resize else X.shape[-2:]
            positions = sift.grid_positions(*side, self.step, self.patch_size)
            positions = positions / np.array(side[::-1], dtype=np.float64)  # (x, y) in 0..1
            counts = sift.pyramid_histograms(words, positions, self.vocab_size, self.pyramid_levels)
            return normalise(counts, self.norm)

        return self.cache_.get(key, compute)
