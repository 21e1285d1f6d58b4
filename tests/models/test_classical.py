"""Tiny images, bags of dense SIFT words (real OpenCV), the feature cache, kNN and the SVM.

Small real data: sklearn's 8x8 digits (upsampled by ``resize``), a few hundred Fashion-MNIST
images, and crops of sklearn's two colour photographs.
"""

from __future__ import annotations

import functools
import io
import multiprocessing
import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_sample_images
from sklearn.neighbors import KNeighborsClassifier
from tqdm import tqdm

from models import classical
from models.classical import knn as knn_module
from models.classical import progress, sift
from models.classical.knn import CACHED_NEIGHBOURS, KNN_METRICS, KNN_WEIGHTS, chunk_rows

# Settings that keep each registry entry quick on 8x8 digits; an entry not listed uses defaults.
QUICK = {
    "tiny_image": {"size": 8},
    "bag_of_sift": {"resize": 32, "step": 4, "vocab_size": 32, "sample_size": 3000},
}
SMALL_SIFT = {"step": 4, "patch_size": 8, "resize": 16, "vocab_size": 8, "sample_size": 1000}
BAG_FOR_KNN = {**SMALL_SIFT, "resize": 32, "vocab_size": 32}


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    import data  # here, not at the top: spawned workers import this module, and data imports torch

    splits = data.load("digits", max_train=400, max_test=100)
    return tuple(t.numpy() for t in (splits.train_x, splits.train_y, splits.val_x, splits.val_y))


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    """48 colour crops (N, 3, 64, 64) of varied content: sky, buildings, petals, leaves."""
    crops = [
        image[top : top + 64, left : left + 64]
        for image in load_sample_images().images
        for top in range(0, 384, 100)
        for left in range(0, 576, 100)
    ]
    return np.stack(crops[:48]).transpose(0, 3, 1, 2).copy()


@pytest.fixture
def sift_calls(monkeypatch) -> list[tuple[int, ...]]:
    """Shapes of the image arrays the real dense-SIFT extractor was called on."""
    calls = []
    real = sift.extract_dense_sift

    def counted(images, *args, **kwargs):
        calls.append(images.shape)
        return real(images, *args, **kwargs)

    monkeypatch.setattr(sift, "extract_dense_sift", counted)
    return calls


def check_norm(out: np.ndarray, norm: str) -> None:
    if norm == "l1":
        assert np.allclose(np.abs(out).sum(1), 1, atol=1e-5)
    elif norm in ("l2", "sqrt"):  # sqrt: Hellinger rows are unit vectors (squares sum to 1)
        assert np.allclose((out**2).sum(1), 1, atol=1e-5)
    elif norm == "zscore":
        assert np.allclose(out.mean(1), 0, atol=1e-4) and np.allclose(out.std(1), 1, atol=1e-3)


# -- tiny images ------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["none", "l1", "l2", "zscore"])
def test_tiny_image_norms(digits, norm):
    out = classical.TinyImage(size=4, norm=norm, zero_mean=False).fit_transform(digits[0][:50])
    assert out.shape == (50, 16) and out.dtype == np.float32
    check_norm(out, norm)


def test_tiny_image_area_resize_averages_pixels():
    image = np.zeros((1, 1, 4, 4), np.uint8)
    image[0, 0, :2, :2] = 200  # top-left quadrant bright
    out = classical.TinyImage(size=2, norm="none", zero_mean=False).fit_transform(image)
    assert np.allclose(out, [[200, 0, 0, 0]])
    centred = classical.TinyImage(size=2, norm="none", zero_mean=True).fit_transform(image)
    assert np.allclose(centred, [[150, -50, -50, -50]])


def test_tiny_image_on_colour_photos(photos):
    grey = classical.TinyImage(size=16).fit_transform(photos)
    colour = classical.TinyImage(size=16, grayscale=False, norm="none", zero_mean=False)
    rgb = colour.fit_transform(photos)
    assert grey.shape == (48, 256) and rgb.shape == (48, 3 * 256)
    # Channels first, like the input: the first 256 values are the red channel's tiny image.
    red = classical.TinyImage(size=16, norm="none", zero_mean=False).fit_transform(photos[:, :1])
    assert np.allclose(rgb[:, :256], red, atol=1e-3)
    assert len(np.unique(grey.round(4), axis=0)) == 48  # varied content, distinct vectors


# -- dense SIFT and bags of words -------------------------------------------------------------


def test_dense_sift_is_real_opencv_sift_on_a_grid(digits):
    descriptors = classical.extract_dense_sift(digits[0][:5], step=4, patch_size=8, resize=16)
    assert descriptors.shape == (5, 9, 128)  # keypoints at 4, 8, 12 on each axis of 16 px
    assert descriptors.dtype == np.uint8 and descriptors.max() > 0
    # Default step / patch on 28 px Fashion-MNIST: keypoints at 4, 8, ..., 24 → 6 x 6 per image.
    assert classical.extract_dense_sift(np.zeros((2, 1, 28, 28), np.uint8), 4, 8, None).shape == (
        2,
        36,
        128,
    )


def test_dense_sift_on_an_image_smaller_than_a_patch_uses_its_centre(digits):
    assert (
        classical.extract_dense_sift(digits[0][:3], step=4, patch_size=16, resize=None).shape[1]
        == 1
    )


@pytest.mark.parametrize(("norm", "levels"), [("l1", 0), ("l2", 1), ("sqrt", 2)])
def test_bag_of_sift_pyramid_length_and_norms(digits, norm, levels):
    bag = classical.BagOfSift(**{**SMALL_SIFT, "vocab_size": 10}, norm=norm, pyramid_levels=levels)
    out = bag.fit_transform(digits[0][:120])
    assert out.shape == (120, 10 * sum(4**level for level in range(levels + 1)))
    check_norm(out, norm)


def test_pyramid_weights_follow_lazebnik():
    # One image, four keypoints, one per quadrant, all word 0: level 0 holds 4 words at weight
    # 1/4, level 1 one per cell at 1/4, level 2 one per occupied cell at 1/2 (L = 2).
    words = np.zeros((1, 4), dtype=np.int64)
    positions = np.array([[0.1, 0.1], [0.9, 0.1], [0.1, 0.9], [0.9, 0.9]])
    counts = sift.pyramid_histograms(words, positions, vocab_size=2, levels=2)[0]
    assert counts.shape == (2 * 21,)
    assert counts[0] == 4 * 0.25 and counts[1] == 0
    assert np.allclose(counts[2:10:2], 0.25)  # level 1: cells 0..3, word 0
    level2 = counts[10:].reshape(16, 2)[:, 0]
    assert np.allclose(level2[[0, 3, 12, 15]], 0.5) and level2.sum() == 2.0


def test_bag_of_sift_on_colour_photos(photos, tmp_path):
    bag = classical.BagOfSift(step=8, patch_size=16, vocab_size=16, pyramid_levels=1)
    out = bag.fit_transform(photos)
    assert out.shape == (48, 16 * 5) and bag.vocabulary_.shape == (16, 128)
    check_norm(out, "l2")
    assert len(np.unique(out.round(5), axis=0)) == 48


def test_transform_before_fit_is_an_sklearn_not_fitted_error(digits):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        classical.BagOfSift().transform(digits[0][:2])


# -- progress ---------------------------------------------------------------------------------


@pytest.fixture
def bars():
    """What tqdm draws for the features' progress, into a string instead of a terminal."""
    out = io.StringIO()
    progress.use(functools.partial(tqdm, file=out, mininterval=0))
    yield out
    progress.use(None)


def test_sift_words_and_kmeans_show_their_progress(digits, bars):
    classical.BagOfSift(**SMALL_SIFT).fit_transform(digits[0][:50])
    drawn = bars.getvalue()
    # Each bar's last state: all done, with its elapsed time.
    assert "dense SIFT, 9 per image: 100%" in drawn and "50/50" in drawn
    assert "k-means, 8 words from 450 descriptors: 100%" in drawn and "1/1" in drawn
    assert "visual words of 8: 100%" in drawn


def test_no_bar_unless_stderr_is_a_terminal(digits, capsys):
    classical.BagOfSift(**SMALL_SIFT).fit_transform(digits[0][:50])  # tqdm on pytest's stderr
    assert capsys.readouterr().err == ""


# -- the cache --------------------------------------------------------------------------------


def test_second_fit_and_transform_of_the_same_data_do_no_sift_work(digits, tmp_path, sift_calls):
    x = digits[0][:100]
    first = classical.BagOfSift(**SMALL_SIFT, cache_dir=tmp_path).fit(x).transform(x)
    assert len(sift_calls) == 1  # fit and transform share one extraction through the cache
    second = classical.BagOfSift(**SMALL_SIFT, cache_dir=tmp_path).fit(x)
    assert np.array_equal(second.transform(x), first)
    assert len(sift_calls) == 1  # vocabulary and histograms both came from the cache
    assert (second.cache_.hits, second.cache_.misses) == (2, 0)
    # A histogram setting reuses the descriptors; a SIFT setting or other pixels do not.
    classical.BagOfSift(**SMALL_SIFT, norm="sqrt", cache_dir=tmp_path).fit_transform(x)
    assert len(sift_calls) == 1
    classical.BagOfSift(**{**SMALL_SIFT, "step": 3}, cache_dir=tmp_path).fit(x)
    assert len(sift_calls) == 2
    changed = x.copy()
    changed[0, 0, 0, 0] ^= 1  # one pixel: same shape, other content, another key
    classical.BagOfSift(**SMALL_SIFT, cache_dir=tmp_path).fit(changed)
    assert len(sift_calls) == 3
    assert {p.name for p in tmp_path.iterdir()} == {"sift", "vocabulary", "histograms"}
    assert not list(tmp_path.rglob("*.tmp"))


def test_without_a_cache_fit_transform_extracts_once(digits, sift_calls):
    classical.BagOfSift(**SMALL_SIFT).fit_transform(digits[0][:50])
    assert len(sift_calls) == 1


def test_a_failed_computation_stores_nothing(tmp_path):
    cache = classical.FeatureCache(tmp_path)

    def fail() -> np.ndarray:
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        cache.get("sift/abc", fail)
    assert cache.get("sift/abc", lambda: np.arange(3)).tolist() == [0, 1, 2]
    assert classical.FeatureCache(tmp_path).get("sift/abc", fail).tolist() == [0, 1, 2]
    assert sorted(p.name for p in (tmp_path / "sift").iterdir()) == ["abc.lock", "abc.npy"]


def test_cache_keys_depend_on_every_part_but_not_their_order():
    key = classical.cache_key("sift", data="d", step=4, resize=None)
    assert key == classical.cache_key("sift", resize=None, step=4, data="d")
    assert key != classical.cache_key("sift", data="d", step=4, resize=32)
    assert key.startswith("sift/")
    a = np.zeros((2, 3), np.uint8)
    assert classical.array_digest(a) != classical.array_digest(a.reshape(3, 2))
    assert classical.array_digest(a) != classical.array_digest(a.astype(np.int8))


def _fill_cache(directory: str, images: np.ndarray, counter: str, barrier, out) -> None:
    """One 'trial' process: count real SIFT extractions in a file, then fit and transform."""
    real = sift.extract_dense_sift

    def counted(*args, **kwargs):
        with open(counter, "a") as file:  # O_APPEND: one whole line per call, any process
            file.write("sift\n")
        return real(*args, **kwargs)

    sift.extract_dense_sift = counted
    bag = classical.BagOfSift(
        resize=32, vocab_size=16, sample_size=2000, pyramid_levels=1, cache_dir=directory
    )
    barrier.wait()  # both processes ask for the same entries at the same moment
    histograms = bag.fit_transform(images)
    out.put((bag.cache_.misses, histograms))


@pytest.mark.slow
def test_two_processes_filling_one_entry_compute_it_once(digits, tmp_path):
    context = multiprocessing.get_context("spawn")
    barrier, out = context.Barrier(2), context.Queue()
    counter = tmp_path / "sift_calls.txt"
    cache_dir = tmp_path / "cache"
    workers = [
        context.Process(
            target=_fill_cache, args=(str(cache_dir), digits[0][:200], str(counter), barrier, out)
        )
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    results = [out.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    assert counter.read_text().splitlines() == ["sift"]  # one extraction between the two
    # Descriptors, vocabulary, histograms: each computed by exactly one of the processes.
    assert sum(misses for misses, _ in results) == 3
    assert np.array_equal(results[0][1], results[1][1])
    assert len(list(cache_dir.rglob("*.npy"))) == 3 and not list(cache_dir.rglob("*.tmp"))


# -- pipelines --------------------------------------------------------------------------------


@pytest.mark.parametrize("feature", list(classical.FEATURES))
@pytest.mark.parametrize("classifier", list(classical.CLASSIFIERS))
def test_every_registered_pipeline_learns_digits(digits, feature, classifier, tmp_path):
    x, y, vx, vy = digits
    pipeline = classical.build_pipeline(
        {"name": feature, **QUICK.get(feature, {})}, {"name": classifier}, cache_dir=tmp_path
    )
    assert pipeline.fit(x, y).score(vx, vy) > 0.7  # chance is 0.1
    copy = clone(pipeline)  # what a search does to an estimator: parameters survive
    for name, step in pipeline.steps:
        assert copy.named_steps[name].get_params() == step.get_params()


@pytest.mark.parametrize(
    ("role", "name"),
    [("features", name) for name in classical.FEATURES]
    + [("classifier", name) for name in classical.CLASSIFIERS],
)
def test_defaults_list_what_build_pipeline_accepts(role, name):
    registry = classical.FEATURES if role == "features" else classical.CLASSIFIERS
    defaults = registry.defaults(name)
    assert defaults and "cache_dir" not in defaults and "seed" not in defaults
    spec = {"features": {"name": "tiny_image"}, "classifier": {"name": "knn"}}
    spec[role] = {"name": name, **defaults}
    classical.build_pipeline(**spec)  # every listed name, at its default, is accepted


def test_every_parameter_is_addressable_by_name(digits, tmp_path):
    x, y, vx, vy = digits
    pipeline = classical.build_pipeline(
        {"name": "bag_of_sift", "resize": 32, "vocab_size": 16},
        {"name": "knn", "k": 1},
        cache_dir=tmp_path,
        seed=3,
    )
    params = pipeline.get_params()
    assert params["features__cache_dir"] == str(tmp_path) and params["features__seed"] == 3
    assert params["classifier__cache_dir"] == str(tmp_path)  # the kNN caches its neighbours
    pipeline.set_params(features__vocab_size=32, features__norm="sqrt", classifier__k=5)
    assert pipeline.named_steps["classifier"].k == 5
    assert pipeline.fit(x, y).named_steps["features"].vocabulary_.shape == (32, 128)
    assert pipeline.score(vx, vy) > 0.7
    svm = classical.build_pipeline({"name": "tiny_image"}, {"name": "linear_svm"})  # tuner's key
    svm.set_params(features__size=8, classifier__C=0.5)
    assert svm.fit(x, y).score(vx, vy) > 0.85


KNN_SETTINGS = [
    pytest.param(metric, weights, id=f"{metric}-{weights}")
    for metric in KNN_METRICS
    for weights in KNN_WEIGHTS
]


def sklearn_knn(k: int, metric: str, weights: str) -> KNeighborsClassifier:
    return KNeighborsClassifier(k, metric=metric, p=3, weights=weights, algorithm="brute")


def check_same_as_sklearn(pipeline, images, train, labels, queries) -> None:
    """A fitted kNN pipeline against sklearn's brute force on the same features (float64).

    float64 because on float32 input sklearn rounds each coordinate difference (cityblock,
    chebyshev) or the cosine to float32, which reorders neighbours within 1e-7 of each other;
    on float64 input it computes the exact distances, as ours does. Training rows at exactly
    equal distances sklearn orders by its internal chunking, so the votes are compared where
    the k nearest are unambiguous (the k-th and (k+1)-th distances differ): most queries.
    """
    ours = pipeline.named_steps["classifier"]
    k, train, queries = ours.k, train.astype(np.float64), queries.astype(np.float64)
    theirs = sklearn_knn(k, ours.metric, ours.weights).fit(train, labels)
    their_distances = theirs.kneighbors(queries, k + 1)[0]
    our_distances = ours.kneighbors(pipeline.named_steps["features"].transform(images))[0]
    assert np.allclose(our_distances, their_distances[:, :k], rtol=1e-9, atol=1e-12)
    clear = their_distances[:, k - 1] < their_distances[:, k]
    assert clear.mean() > 0.7  # chebyshev on the digits' histograms: 79%; the rest: 100%
    assert np.array_equal(pipeline.predict(images)[clear], theirs.predict(queries)[clear])
    assert np.allclose(pipeline.predict_proba(images)[clear], theirs.predict_proba(queries)[clear])


@pytest.mark.parametrize(("metric", "weights"), KNN_SETTINGS)
def test_knn_through_the_pipeline_equals_sklearn_on_the_same_features(digits, metric, weights):
    x, y, vx, _ = digits
    knn = {"name": "knn", "k": 4, "metric": metric, "p": 3, "weights": weights}  # even k: ties
    pipeline = classical.build_pipeline({"name": "tiny_image", "size": 8}, knn).fit(x, y)
    tiny = classical.TinyImage(size=8).fit(x)
    check_same_as_sklearn(pipeline, vx, tiny.transform(x), y, tiny.transform(vx))


@pytest.fixture(scope="module")
def sift_histograms(digits) -> tuple[np.ndarray, np.ndarray]:
    """Train and val bag-of-SIFT histograms of the digits, computed without a cache."""
    bag = classical.BagOfSift(**BAG_FOR_KNN).fit(digits[0])
    return bag.transform(digits[0]), bag.transform(digits[2])


@pytest.mark.parametrize(("metric", "weights"), KNN_SETTINGS)
def test_knn_on_cached_bag_of_sift_equals_sklearn_on_the_same_histograms(
    digits, sift_histograms, tmp_path_factory, metric, weights
):
    x, y, vx, _ = digits
    knn = {"name": "knn", "k": 3, "metric": metric, "p": 3, "weights": weights}
    cache = tmp_path_factory.getbasetemp() / "knn_on_bag_of_sift"  # shared: features once
    pipeline = classical.build_pipeline(
        {"name": "bag_of_sift", **BAG_FOR_KNN}, knn, cache_dir=cache
    )
    check_same_as_sklearn(pipeline.fit(x, y), vx, sift_histograms[0], y, sift_histograms[1])


@pytest.mark.parametrize("metric", KNN_METRICS)
def test_knn_chunks_change_no_result(digits, sift_histograms, metric):
    # Histograms of 8x8 digits: many training rows tie (chebyshev above all).
    train, queries = sift_histograms
    whole = classical.KNNClassifier(5, metric=metric, p=3, weights="distance").fit(train, digits[1])
    rowwise = clone(whole).set_params(working_memory=1e-6).fit(train, digits[1])
    assert chunk_rows(len(train), 8, whole.working_memory) >= len(queries)  # float64 distances
    assert chunk_rows(len(train), 8, rowwise.working_memory) == 1
    (distances, indices), (row_distances, row_indices) = (
        whole.kneighbors(queries),
        rowwise.kneighbors(queries),
    )
    assert np.array_equal(indices, row_indices)
    assert np.allclose(distances, row_distances, rtol=1e-12)
    assert np.array_equal(whole.predict(queries), rowwise.predict(queries))
    assert np.allclose(whole.predict_proba(queries), rowwise.predict_proba(queries))


def test_knn_chunks_fit_the_working_memory():
    rows = chunk_rows(10_000, 8, working_memory=256)  # float64 distances to 10k training rows
    per_row = 10_000 * (8 + 1)  # the distances and their mask
    assert rows == 2982 and rows * per_row <= 256 * 2**20 < (rows + 1) * per_row


@pytest.mark.parametrize("metric", KNN_METRICS)
def test_knn_zero_distances_and_tied_votes_follow_sklearn(metric):
    # Two copies of the query (classes 2 and 1), then a row of class 0 at a positive distance.
    train = np.array([[1, 0], [1, 0], [3, 1], [0, 1]], np.float32)
    labels = np.array([2, 1, 0, 0])
    query = np.array([[1, 0]], np.float32)
    for weights, proba, label in [("distance", [0, 0.5, 0.5], 1), ("uniform", [1 / 3] * 3, 0)]:
        knn = classical.KNNClassifier(3, metric=metric, p=3, weights=weights).fit(train, labels)
        # Distance: only the exact matches vote; a tie goes to the lowest class either way.
        assert np.allclose(knn.predict_proba(query), [proba]) and knn.predict(query) == [label]
        theirs = sklearn_knn(3, metric, weights).fit(train, labels)
        assert np.allclose(theirs.predict_proba(query), [proba]) and theirs.predict(query) == [
            label
        ]


@pytest.mark.parametrize("metric", KNN_METRICS)
def test_knn_of_equally_distant_training_rows_takes_the_first(metric):
    # Rows 1 and 2 are the same point, of classes 1 and 0: the one nearest place goes to row 1.
    train = np.array([[0, 2], [2, 1], [2, 1], [5, 5]], np.float32)
    query = np.array([[2, 0]], np.float32)
    for labels in ([0, 1, 0, 1], [1, 0, 1, 0]):
        knn = classical.KNNClassifier(1, metric=metric, p=3).fit(train, labels)
        assert knn.kneighbors(query)[1].tolist() == [[1]]
        assert knn.predict(query).tolist() == [labels[1]]


def test_knn_neighbours_are_cached_for_every_k_up_to_the_cached_depth(
    digits, tmp_path, monkeypatch
):
    searches = []  # the k of each real search (one per chunk of queries)
    real = knn_module.nearest

    def counted(distances, k):
        searches.append(k)
        return real(distances, k)

    monkeypatch.setattr(knn_module, "nearest", counted)
    tiny = classical.TinyImage(size=8).fit(digits[0])
    train, labels, queries = tiny.transform(digits[0]), digits[1], tiny.transform(digits[2])

    def both(k: int, **settings) -> tuple[classical.KNNClassifier, classical.KNNClassifier]:
        cached = classical.KNNClassifier(k, cache_dir=tmp_path, **settings).fit(train, labels)
        return cached, clone(cached).set_params(cache_dir=None).fit(train, labels)

    cached, fresh = both(3, metric="cityblock")
    assert np.array_equal(cached.predict_proba(queries), fresh.predict_proba(queries))
    assert searches == [CACHED_NEIGHBOURS, 3]  # the cache's search goes deeper than k
    for k, weights in [(1, "uniform"), (7, "distance"), (CACHED_NEIGHBOURS, "distance")]:
        cached, fresh = both(k, metric="cityblock", weights=weights)
        searches.clear()
        (distances, indices), proba = cached.kneighbors(queries), cached.predict_proba(queries)
        assert searches == []  # read back
        assert np.array_equal(indices, fresh.kneighbors(queries)[1])
        assert np.array_equal(distances, fresh.kneighbors(queries)[0])
        assert np.array_equal(proba, fresh.predict_proba(queries))
    searches.clear()
    both(CACHED_NEIGHBOURS + 1, metric="cityblock")[0].kneighbors(queries)  # deeper
    both(3, metric="euclidean")[0].kneighbors(queries)  # another metric
    both(3, metric="cityblock")[0].kneighbors(queries[:10])  # other queries
    assert searches == [CACHED_NEIGHBOURS + 1, CACHED_NEIGHBOURS, CACHED_NEIGHBOURS]
    assert len(list((tmp_path / "neighbours").glob("*.npy"))) == 4


def test_a_fitted_knn_pipeline_pickles(digits):
    x, y, vx, _ = digits
    pipeline = classical.build_pipeline(
        {"name": "tiny_image", "size": 8}, {"name": "knn", "metric": "cityblock"}
    ).fit(x, y)
    loaded = pickle.loads(pickle.dumps(pipeline))
    assert np.array_equal(loaded.predict_proba(vx), pipeline.predict_proba(vx))
    assert loaded.named_steps["classifier"].classes_.tolist() == list(range(10))


def test_knn_refuses_more_neighbours_than_training_rows_and_other_widths(digits):
    knn = classical.KNNClassifier(3)
    with pytest.raises(ValueError, match=r"k must be in 1\.\.2"):
        knn.fit(np.zeros((2, 4), np.float32), [0, 1])
    knn.fit(np.zeros((3, 4), np.float32), [0, 1, 1])
    with pytest.raises(ValueError, match="X has 5 features; the kNN was fit on 4"):
        knn.predict(np.zeros((1, 5), np.float32))


@pytest.mark.parametrize(
    ("features", "classifier", "message"),
    [
        (
            {"name": "hog"},
            {"name": "knn"},
            r"^unknown features 'hog'; known features: bag_of_sift, tiny_image$",
        ),
        ({"size": 8}, {"name": "knn"}, r"^features: give its 'name'"),
        (
            {"name": "tiny_image", "sise": 4},
            {"name": "knn"},
            r"^unknown option 'sise' for features 'tiny_image'; allowed: size, ",
        ),
        (
            {"name": "bag_of_sift", "cache_dir": "x"},
            {"name": "knn"},
            "unknown option 'cache_dir' for features 'bag_of_sift'",
        ),
        (
            {"name": "tiny_image"},
            {"name": "forest"},
            r"^unknown classifier 'forest'; known classifiers: knn, linear_svm$",
        ),
        ({"name": "tiny_image"}, {"name": "knn", "n_neighbors": 3}, r"allowed: k, metric, p, "),
        (
            {"name": "tiny_image"},
            {"name": "knn", "metric": "hamming"},
            "metric='hamming' is not allowed",
        ),
        (
            {"name": "tiny_image"},
            {"name": "knn", "weights": "rank"},
            "weights='rank' is not allowed",
        ),
    ],
)
def test_bad_types_and_parameters_are_one_line_value_errors(features, classifier, message):
    with pytest.raises(ValueError, match=message) as raised:
        classical.build_pipeline(features, classifier)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("estimator", "message"),
    [
        (
            classical.TinyImage(norm="sqrt"),
            "norm='sqrt' is not allowed; must be one of 'none', 'l1'",
        ),
        (
            classical.BagOfSift(norm="zscore"),
            "norm='zscore' is not allowed; must be one of 'l1'",
        ),
        (
            classical.BagOfSift(pyramid_levels=3),
            "pyramid_levels=3 is not allowed; must be one of 0",
        ),
    ],
)
def test_bad_feature_settings_fail_at_fit(digits, estimator, message):
    with pytest.raises(ValueError, match=message):
        estimator.fit(digits[0][:10])


# -- Fashion-MNIST ----------------------------------------------------------------------------


@pytest.mark.usefixtures("fashion_mnist_root")  # Debian's files, or a skip saying how to get them
def test_both_features_learn_a_fashion_mnist_subset(tmp_path):
    import data

    splits = data.load("fashion_mnist", max_train=600, max_test=200)
    x, y = splits.train_x.numpy(), splits.train_y.numpy()
    tx, ty = splits.test_x.numpy(), splits.test_y.numpy()
    tiny = classical.build_pipeline({"name": "tiny_image", "size": 14}, {"name": "knn"})
    assert tiny.fit(x, y).score(tx, ty) > 0.6  # chance is 0.1
    bag = classical.build_pipeline(
        {"name": "bag_of_sift", "vocab_size": 64, "pyramid_levels": 1, "norm": "sqrt"},
        {"name": "linear_svm"},
        cache_dir=tmp_path,
    )
    assert bag.fit(x, y).score(tx, ty) > 0.6
    histograms = bag.named_steps["features"].transform(tx)
    assert histograms.shape == (len(tx), 64 * 5)
    check_norm(histograms, "sqrt")
