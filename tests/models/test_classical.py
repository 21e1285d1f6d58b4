"""Tiny images, bags of dense SIFT words (real OpenCV), the feature cache, kNN and the SVM."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

import data
from models import classical
from models.classical import features as features_module

FASHION = pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="needs dataset-fashion-mnist"
)


@pytest.fixture(scope="module")
def digits():
    splits = data.load("digits", max_train=400, max_test=100)
    return (
        splits.train_x.numpy(),
        splits.train_y.numpy(),
        splits.val_x.numpy(),
        splits.val_y.numpy(),
    )


@pytest.fixture
def count_sift(monkeypatch):
    """Counts calls of the real dense-SIFT extractor."""
    calls = []
    real = features_module.extract_dense_sift

    def counted(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(features_module, "extract_dense_sift", counted)
    return calls


@pytest.mark.parametrize("norm", ["none", "l1", "l2", "zscore"])
def test_tiny_image_sizes_and_norms(digits, norm):
    x = digits[0][:50]
    out = classical.TinyImage(size=4, norm=norm, zero_mean=False).fit(x).transform(x)
    assert out.shape == (50, 16)
    if norm == "l1":
        assert np.allclose(np.abs(out).sum(1), 1, atol=1e-5)
    if norm == "l2":
        assert np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    if norm == "zscore":
        assert np.allclose(out.mean(1), 0, atol=1e-5) and np.allclose(out.std(1), 1, atol=1e-3)


def test_tiny_image_area_resize_averages_pixels():
    image = np.zeros((1, 1, 4, 4), np.uint8)
    image[0, 0, :2, :2] = 200  # top-left quadrant bright
    out = classical.TinyImage(size=2, norm="none", zero_mean=False).fit(image).transform(image)
    assert np.allclose(out, [[200, 0, 0, 0]])
    colour = np.repeat(image, 3, axis=1)
    assert classical.TinyImage(size=2, grayscale=False, norm="none", zero_mean=False).fit(
        colour
    ).transform(colour).shape == (1, 12)


def test_dense_sift_is_real_opencv_sift_on_a_grid(digits):
    descriptors = classical.extract_dense_sift(digits[0][:5], step=4, patch_size=8, resize=16)
    assert descriptors.shape == (5, 9, 128)  # keypoints at 4, 8, 12 on each axis of 16 px
    assert descriptors.dtype == np.uint8 and descriptors.max() > 0


@pytest.mark.parametrize(("norm", "levels"), [("l1", 0), ("l2", 1), ("sqrt", 2)])
def test_bag_of_sift_histograms_pyramid_and_norms(digits, norm, levels):
    x = digits[0][:120]
    bag = classical.BagOfSift(
        step=4,
        patch_size=8,
        resize=16,
        vocab_size=10,
        norm=norm,
        pyramid_levels=levels,
        sample_size=2000,
    )
    out = bag.fit(x).transform(x)
    assert out.shape == (120, 10 * sum(4**level for level in range(levels + 1)))
    if norm == "l1":
        assert np.allclose(out.sum(1), 1, atol=1e-5)
    if norm == "l2":
        assert np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    if norm == "sqrt":
        assert np.allclose((out**2).sum(1), 1, atol=1e-5)


def test_cache_second_fit_does_no_sift_work(digits, tmp_path, count_sift):
    x = digits[0][:100]
    params = dict(
        step=4, patch_size=8, resize=16, vocab_size=8, sample_size=1000, cache_dir=str(tmp_path)
    )
    first = classical.BagOfSift(**params).fit(x).transform(x)
    assert len(count_sift) == 1  # fit and transform share one extraction
    second = classical.BagOfSift(**params).fit(x)
    assert np.array_equal(second.transform(x), first)
    assert len(count_sift) == 1  # everything came from the cache
    assert second.cache_.hits == 2 and second.cache_.misses == 0
    classical.BagOfSift(**{**params, "step": 3}).fit(x)  # another setting: a miss
    assert len(count_sift) == 2
    assert all(not p.name.startswith("tmp") for p in tmp_path.iterdir())  # no torn leftovers


def _fill(directory: str, start: multiprocessing.Event, out: multiprocessing.Queue) -> None:
    splits = data.load("digits", max_train=300)
    bag = classical.BagOfSift(step=2, patch_size=8, resize=32, vocab_size=16, cache_dir=directory)
    start.wait()
    histograms = bag.fit(splits.train_x.numpy()).transform(splits.train_x.numpy())
    out.put((bag.cache_.misses, histograms))


def test_two_processes_filling_one_entry_compute_it_once(tmp_path):
    context = multiprocessing.get_context("spawn")
    start, out = context.Event(), context.Queue()
    workers = [context.Process(target=_fill, args=(str(tmp_path), start, out)) for _ in range(2)]
    for worker in workers:
        worker.start()
    start.set()
    results = [out.get(timeout=180) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    misses = sorted(result[0] for result in results)
    assert misses == [0, 3]  # descriptors, vocabulary, histograms: computed by one process only
    assert np.array_equal(results[0][1], results[1][1])
    assert len(list(tmp_path.glob("*.npy"))) == 3


def test_knn_through_the_pipeline_equals_sklearn_on_the_same_features(digits):
    x, y, vx, _ = digits
    pipeline = classical.build_pipeline(
        {"name": "tiny_image", "size": 8, "norm": "l2"},
        {"name": "knn", "k": 3, "metric": "cityblock", "weights": "distance"},
    ).fit(x, y)
    tiny = classical.TinyImage(size=8, norm="l2").fit(x)
    direct = KNeighborsClassifier(3, metric="cityblock", weights="distance").fit(
        tiny.transform(x), y
    )
    assert np.array_equal(pipeline.predict(vx), direct.predict(tiny.transform(vx)))
    assert (pipeline.predict(vx) == digits[3]).mean() > 0.9


def test_every_parameter_is_addressable_by_name(digits):
    x, y, vx, vy = digits
    pipeline = classical.build_pipeline({"name": "tiny_image"}, {"name": "knn", "k": 1})
    pipeline.set_params(features__size=8, classifier__n_neighbors=5)
    assert pipeline.get_params()["classifier__n_neighbors"] == 5
    assert pipeline.fit(x, y).score(vx, vy) > 0.9
    svm = classical.build_pipeline(
        {"name": "tiny_image", "size": 8}, {"name": "linear_svm", "C": 1.0}
    )
    assert svm.fit(x, y).score(vx, vy) > 0.85


@pytest.mark.parametrize(
    ("features", "classifier", "message"),
    [
        (
            {"name": "hog"},
            {"name": "knn"},
            "features: unknown name 'hog'; known: tiny_image, bag_of_sift",
        ),
        ({"name": "tiny_image", "sise": 4}, {"name": "knn"}, "features.sise: unknown parameter"),
        ({"name": "tiny_image"}, {"name": "knn", "metric": "hamming"}, "knn metric must be one of"),
        ({"name": "tiny_image"}, {"name": "forest"}, "classifier: unknown name 'forest'"),
    ],
)
def test_bad_names_and_parameters_are_one_line_errors(features, classifier, message):
    with pytest.raises(ValueError, match=message):
        classical.build_pipeline(features, classifier)


@FASHION
def test_bag_of_sift_learns_fashion_mnist_subset(tmp_path):
    splits = data.load("fashion_mnist", max_train=1500, max_test=300)
    pipeline = classical.build_pipeline(
        {
            "name": "bag_of_sift",
            "step": 4,
            "patch_size": 8,
            "resize": 32,
            "vocab_size": 64,
            "pyramid_levels": 1,
        },
        {"name": "linear_svm", "C": 1.0},
        cache_dir=tmp_path,
    ).fit(splits.train_x.numpy(), splits.train_y.numpy())
    accuracy = pipeline.score(splits.test_x.numpy(), splits.test_y.numpy())
    assert accuracy > 0.6  # chance is 0.1
