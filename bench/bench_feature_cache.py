"""Does the feature cache make a kNN sweep on bag-of-SIFT features cheap?

One trial on a cold cache (dense SIFT, k-means vocabulary, histograms, kNN), then a 30-trial
sweep over k / metric / weights on the same features, each trial building a fresh pipeline and
reading the features back from disk, as separate trial processes would. Target: the whole sweep
takes less than 3x the single cold trial.

Beyond the features, a warm trial pays for kNN itself: 2,000 x 10,000 distances, brute force,
in float64 with torch (``models/classical/knn.py``): euclidean and cosine a matrix product
(~0.2 s), cityblock ``torch.cdist`` (~1.9 s on 2 idle cores, about what scikit-learn's own
brute force takes). What makes the sweep cheap is that the kNN caches each query's nearest
neighbours beside the features, so trials that differ in k and weights compute the distances
once per metric. The sweep is run three times (``VARIANTS``): as tuner runs it (neighbours
cached; the cold trial has cached euclidean's already), with the kNN's cache off (what the
distances cost), and with scikit-learn's ``KNeighborsClassifier`` (what they cost before).
Times are wall-clock; the load average is printed because other jobs on the cores slow the
multi-threaded distances most.

    .venv/bin/python bench/bench_feature_cache.py            # Fashion-MNIST, 10k train / 2k val
    .venv/bin/python bench/bench_feature_cache.py --max-train 6000 --cache-dir /tmp/features
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline

import data
from models import classical
from models.classical import sift

FEATURES = {
    "type": "bag_of_sift",
    "resize": 32,  # px: 28 px Fashion-MNIST upsampled, 13 x 13 keypoints at step 2
    "step": 2,
    "patch_size": 8,
    "vocab_size": 256,
    "pyramid_levels": 0,  # 256-d histograms: kNN cost grows with the dimension
    "norm": "sqrt",
}
SWEEP = [
    {"type": "knn", "k": k, "metric": metric, "weights": weights}
    for k, metric, weights in itertools.product(
        (1, 3, 5, 7, 9), ("euclidean", "cosine", "cityblock"), ("uniform", "distance")
    )
]  # 5 x 3 x 2 = 30 trials
# How each sweep changes a trial's pipeline (built as tuner builds it) before fitting it.
VARIANTS: dict[str, Callable[[Pipeline, dict[str, Any]], object]] = {
    "neighbours cached (as tuner runs it)": lambda pipeline, knn: pipeline,
    "kNN cache off": lambda pipeline, knn: pipeline.set_params(classifier__cache_dir=None),
    "scikit-learn's kNN": lambda pipeline, knn: pipeline.set_params(
        classifier=KNeighborsClassifier(
            knn["k"], metric=knn["metric"], weights=knn["weights"], algorithm="brute"
        )
    ),
}


def trial(
    splits: data.Splits, classifier: dict[str, Any], cache_dir: str, variant: str
) -> tuple[float, float, float]:
    """One trial as the classical trainable runs it: a fresh pipeline, fit on train, score val.

    Returns (val accuracy, seconds in the features step, seconds in all): the steps are run one
    by one, as ``pipeline.fit`` and ``pipeline.score`` would, to time the features apart.
    """
    start = time.perf_counter()
    pipeline = classical.build_pipeline(FEATURES, classifier, cache_dir=cache_dir)
    VARIANTS[variant](pipeline, classifier)
    features, knn = pipeline.named_steps["features"], pipeline.named_steps["classifier"]
    train = features.fit_transform(splits.train_x.numpy())
    val = features.transform(splits.val_x.numpy())
    feature_seconds = time.perf_counter() - start
    knn.fit(train, splits.train_y.numpy())
    accuracy = float(knn.score(val, splits.val_y.numpy()))
    return accuracy, feature_seconds, time.perf_counter() - start


def sweep(splits: data.Splits, cache_dir: str, variant: str) -> tuple[float, str]:
    """Run the 30 trials; (wall-clock seconds, one line about them)."""
    start = time.perf_counter()
    results = np.array([trial(splits, knn, cache_dir, variant) for knn in SWEEP])
    seconds = time.perf_counter() - start
    scores, feature_seconds, trial_seconds = results.T
    metrics = np.array([classifier["metric"] for classifier in SWEEP])
    per_metric = ", ".join(
        f"{metric} {trial_seconds[metrics == metric].mean():.2f} s"
        for metric in dict.fromkeys(metrics)
    )
    best = SWEEP[int(np.argmax(scores))]
    return seconds, (
        f"{seconds:.1f} s ({seconds / len(SWEEP):.2f} s a trial, of which "
        f"{feature_seconds.mean():.2f} s features; by metric: {per_metric}); "
        f"best val acc {scores.max():.4f} with {best}"
    )


def load() -> str:
    """The load average over 1, 5 and 15 minutes."""
    return "load average " + ", ".join(f"{value:.1f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-train", type=int, default=12000, help="train + val images")
    parser.add_argument("--cache-dir", help="an empty directory (default: a temporary one)")
    args = parser.parse_args()
    splits = data.load("fashion_mnist", max_train=args.max_train, val_fraction=1 / 6, seed=0)
    print(f"fashion_mnist: {len(splits.train_y)} train, {len(splits.val_y)} val; {FEATURES}")
    print(f"{os.cpu_count()} CPUs, {load()}")

    calls = []  # real SIFT extractions, counted: the sweeps must do none
    real = sift.extract_dense_sift

    def counted(*args: Any, **kwargs: Any) -> np.ndarray:
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    sift.extract_dense_sift = counted

    with tempfile.TemporaryDirectory() as scratch:
        cache_dir = args.cache_dir or scratch
        first = next(iter(VARIANTS))
        accuracy, cold_features, cold = trial(splits, {"type": "knn"}, cache_dir, first)
        print(
            f"cold trial (knn k=5 euclidean): {cold:.1f} s ({cold_features:.1f} s features), "
            f"val acc {accuracy:.4f}, {len(calls)} SIFT extractions (train, val)"
        )
        calls.clear()
        ratios = []
        for variant in VARIANTS:
            seconds, report = sweep(splits, cache_dir, variant)
            print(f"warm sweep of {len(SWEEP)} trials, {variant}: {report}")
            ratios.append(f"{seconds / cold:.2f} ({variant})")
        print(f"SIFT extractions in the sweeps: {len(calls)}; {load()}")
    print(f"sweep / cold trial = {', '.join(ratios)}; target < 3 as tuner runs it")


if __name__ == "__main__":
    main()
