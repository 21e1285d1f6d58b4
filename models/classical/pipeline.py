"""Classical pipelines by name: ``{name: tiny_image | bag_of_sift}`` → ``{name: knn | linear_svm}``.

Pipeline steps are named ``features`` and ``classifier``, so every parameter is addressable as
``features__vocab_size`` or ``classifier__n_neighbors``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sklearn.base import BaseEstimator
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.svm import LinearSVC

from models.classical.features import BagOfSift, TinyImage

KNN_METRICS = ("euclidean", "cityblock", "cosine", "chebyshev", "minkowski")


def knn(
    k: int = 5, metric: str = "euclidean", p: float = 2, weights: str = "uniform"
) -> KNeighborsClassifier:
    """k nearest neighbours, brute force (batched distance computations, no trees)."""
    if metric not in KNN_METRICS:
        raise ValueError(f"knn metric must be one of {', '.join(KNN_METRICS)}, got {metric!r}")
    return KNeighborsClassifier(
        n_neighbors=k, metric=metric, p=p, weights=weights, algorithm="brute", n_jobs=1
    )


def linear_svm(C: float = 1.0) -> LinearSVC:
    """A linear SVM (liblinear), one-vs-rest."""
    return LinearSVC(C=C, max_iter=5000)


FEATURES: dict[str, type[BaseEstimator]] = {"tiny_image": TinyImage, "bag_of_sift": BagOfSift}
CLASSIFIERS: dict[str, Callable[..., BaseEstimator]] = {"knn": knn, "linear_svm": linear_svm}
INTERNAL = ("cache_dir", "seed")  # set by the caller, not from a search space


def parameters(factory: Callable[..., Any]) -> dict[str, Any]:
    """A feature's or classifier's parameters with their defaults (for validating specs)."""
    return {
        name: param.default
        for name, param in inspect.signature(factory).parameters.items()
        if name not in INTERNAL
    }


def build_pipeline(
    features: Mapping[str, Any],
    classifier: Mapping[str, Any],
    *,
    cache_dir: str | Path | None = None,
    seed: int = 0,
) -> Pipeline:
    """``features`` and ``classifier`` are ``{name: ..., **parameters}`` mappings."""
    feature_name, feature_params = _split(features, FEATURES, "features")
    classifier_name, classifier_params = _split(classifier, CLASSIFIERS, "classifier")
    if feature_name == "bag_of_sift":
        feature_params = {
            **feature_params,
            "seed": seed,
            "cache_dir": str(cache_dir) if cache_dir else None,
        }
    return Pipeline(
        [
            ("features", FEATURES[feature_name](**feature_params)),
            ("classifier", CLASSIFIERS[classifier_name](**classifier_params)),
        ]
    )


def _split(
    settings: Mapping[str, Any], known: Mapping[str, Callable[..., Any]], what: str
) -> tuple[str, dict]:
    options = dict(settings)
    name = options.pop("name", None)
    if name not in known:
        raise ValueError(f"{what}: unknown name {name!r}; known: {', '.join(known)}")
    allowed = parameters(known[name])
    for option in options:
        if option not in allowed:
            raise ValueError(
                f"{what}.{option}: unknown parameter of {name}; allowed: {', '.join(allowed)}"
            )
    return name, options
