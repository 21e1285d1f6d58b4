"""Classical pipelines by name: features (tiny_image | bag_of_sift) → classifier (knn | linear_svm).

``build_pipeline`` returns an sklearn ``Pipeline`` with two steps, ``features`` and
``classifier``, so every parameter is addressable by name: ``features__vocab_size``,
``features__norm``, ``classifier__k``, ``classifier__metric``, ``classifier__C``: the names a
spec's space uses (``classifier.knn.k``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

from sklearn.base import BaseEstimator
from sklearn.pipeline import Pipeline
from sklearn.svm import LinearSVC

from models.classical.bag_of_sift import BagOfSift
from models.classical.knn import KNNClassifier, KnnMetric, KnnWeights, check_knn_settings
from models.classical.tiny_image import TinyImage
from models.options import POSITIVE, Range, Registry


def knn(
    k: Annotated[int, POSITIVE] = 5,
    metric: KnnMetric = "euclidean",
    p: float = 2,
    weights: KnnWeights = "uniform",
    cache_dir: str | Path | None = None,
) -> KNNClassifier:
    """k nearest neighbours by brute force, torch's distances in chunks, sklearn's votes.

    ``metric`` is one of ``knn.KnnMetric``, ``weights`` ``uniform`` or ``distance``; ``p`` is
    the Minkowski power, used only with ``metric="minkowski"``. A spec's names and their types
    are checked from this signature when it is loaded, and ``p``'s sign by building it once
    then. ``cache_dir`` (a run setting) caches the neighbours found.
    """
    check_knn_settings(metric, p, weights)
    return KNNClassifier(k=k, metric=metric, p=p, weights=weights, cache_dir=cache_dir)


def linear_svm(C: Annotated[float, Range(0, low_open=True)] = 1.0) -> LinearSVC:
    """A one-vs-rest linear SVM (liblinear); ``C`` is the inverse regularisation strength."""
    # Hellinger histograms with C ~ 1 need more than liblinear's default 1000 iterations.
    return LinearSVC(C=C, dual="auto", max_iter=5000)


# Set per run by build_pipeline's keyword arguments, not per trial from a search space.
RUN_SETTINGS = ("cache_dir", "seed")
FEATURES: Registry[Callable[..., BaseEstimator]] = Registry(
    "features",
    {"tiny_image": TinyImage, "bag_of_sift": BagOfSift},
    plural="features",
    fixed=RUN_SETTINGS,
)
CLASSIFIERS: Registry[Callable[..., BaseEstimator]] = Registry(
    "classifier", {"knn": knn, "linear_svm": linear_svm}, fixed=RUN_SETTINGS
)


def build_pipeline(
    features: Mapping[str, Any],
    classifier: Mapping[str, Any],
    *,
    cache_dir: str | Path | None = None,
    seed: int = 0,
) -> Pipeline:
    """A ``features`` → ``classifier`` Pipeline from ``{"name": name, **parameters}`` mappings.

    ``cache_dir`` (None: no cache) and ``seed`` go to the steps that take them (bag_of_sift
    both, knn the cache). Unknown names, parameters or values raise a one-line ValueError
    (``Registry.check``).
    """
    run_settings = {"cache_dir": str(cache_dir) if cache_dir else None, "seed": seed}
    steps = []
    for step, settings, known in [
        ("features", features, FEATURES),
        ("classifier", classifier, CLASSIFIERS),
    ]:
        options = dict(settings)
        if "name" not in options:
            raise ValueError(f"{step}: give its 'name'; known: {', '.join(sorted(known))}")
        name = options.pop("name")
        known.check(name, options)  # before the run settings: a step never sets those itself
        accepted = inspect.signature(known[name]).parameters
        options |= {key: value for key, value in run_settings.items() if key in accepted}
        steps.append((step, known[name](**options)))
    return Pipeline(steps)
