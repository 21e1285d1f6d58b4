"""Does the feature cache make a kNN sweep on bag-of-SIFT features cheap?

One trial on a cold cache (dense SIFT, k-means vocabulary, histograms, kNN), then a 30-trial
sweep over k / metric / weights on the same features, each trial building a fresh pipeline and
reading the features back from disk, as separate trial processes would. Target: the whole sweep
takes less than 3x the single cold trial. Warm trials still pay for kNN itself (brute force,
N_train x N_val distances; sklearn's cityblock is a plain loop, ~10x slower than the BLAS-backed
euclidean and cosine), so the script also prints the features' share of each warm trial.

    .venv/bin/python bench/bench_feature_cache.py            # Fashion-MNIST, 10k train / 2k val
    .venv/bin/python bench/bench_feature_cache.py --max-train 6000 --cache-dir /tmp/features
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from typing import Any

import numpy as np

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


def trial(splits: data.Splits, classifier: dict[str, Any], cache_dir: str) -> tuple[float, float]:
    """One trial as the classical trainable runs it: a fresh pipeline, fit on train, score val.

    Returns (val accuracy, seconds spent in the features step): the steps are run one by one,
    as ``pipeline.fit`` and ``pipeline.score`` would, to time the features apart from kNN.
    """
    pipeline = classical.build_pipeline(FEATURES, classifier, cache_dir=cache_dir)
    features, knn = pipeline.named_steps["features"], pipeline.named_steps["classifier"]
    start = time.perf_counter()
    train = features.fit_transform(splits.train_x.numpy())
    val = features.transform(splits.val_x.numpy())
    feature_seconds = time.perf_counter() - start
    knn.fit(train, splits.train_y.numpy())
    return float(knn.score(val, splits.val_y.numpy())), feature_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-train", type=int, default=12000, help="train + val images")
    parser.add_argument("--cache-dir", help="an empty directory (default: a temporary one)")
    args = parser.parse_args()
    splits = data.load("fashion_mnist", max_train=args.max_train, val_fraction=1 / 6, seed=0)
    print(f"fashion_mnist: {len(splits.train_y)} train, {len(splits.val_y)} val; {FEATURES}")

    calls = []  # real SIFT extractions, counted: the sweep must do none
    real = sift.extract_dense_sift

    def counted(*args: Any, **kwargs: Any) -> np.ndarray:
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    sift.extract_dense_sift = counted

    with tempfile.TemporaryDirectory() as scratch:
        cache_dir = args.cache_dir or scratch
        start = time.perf_counter()
        accuracy, cold_features = trial(splits, {"type": "knn"}, cache_dir)
        cold = time.perf_counter() - start
        print(
            f"cold trial (knn k=5 euclidean): {cold:.1f} s ({cold_features:.1f} s features), "
            f"val acc {accuracy:.4f}, {len(calls)} SIFT extractions (train, val)"
        )

        calls.clear()
        start = time.perf_counter()
        results = np.array([trial(splits, classifier, cache_dir) for classifier in SWEEP])
        scores, feature_seconds = results[:, 0], results[:, 1]
        sweep = time.perf_counter() - start
        best = SWEEP[int(np.argmax(scores))]
        print(
            f"warm sweep of {len(SWEEP)} trials: {sweep:.1f} s ({sweep / len(SWEEP):.2f} s per "
            f"trial, of which {np.mean(feature_seconds):.2f} s features read from the cache), "
            f"{len(calls)} SIFT extractions; best val acc {max(scores):.4f} with {best}"
        )
    print(f"sweep / cold trial = {sweep / cold:.2f} (target < 3)")
    # What the cache controls: features in all warm trials together vs. once, cold.
    print(
        f"warm feature time, all trials / cold feature time = "
        f"{feature_seconds.sum() / cold_features:.3f}; the rest of the sweep is kNN itself"
    )


if __name__ == "__main__":
    main()
