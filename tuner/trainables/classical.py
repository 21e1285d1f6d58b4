"""The classical trainable: features (tiny image / bag of SIFT) + kNN or a linear SVM.

A trial's config:

    features:   {name: tiny_image, size, grayscale, norm, zero_mean}
                {name: bag_of_sift, step, patch_size, resize, vocab_size, sample_size, norm,
                 pyramid_levels}
    classifier: {name: knn, k, metric, p, weights} | {name: linear_svm, C}

A trial fits on the train split and reports once. SIFT descriptors, vocabularies and histograms
are cached on the node (``cache_dir`` in the spec), so a sweep over k / metric / weights computes
them once for all its trials.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypedDict, get_type_hints

import numpy as np
import ray
from ray import tune
from sklearn.metrics import precision_recall_fscore_support
from sklearn.pipeline import Pipeline

from data import DataSource, Splits
from models.classical import CLASSIFIERS, FEATURES, build_pipeline, progress
from tuner.spec import space as space_lang
from tuner.trainables import Settings, Validated
from tuner.trainables.checks import check_keys, check_metric, check_named, check_objectives
from tuner.trainables.metrics import Evaluation
from tuner.trainables.node_data import splits_on_node
from tuner.trainables.size import MB, ModelSize, report_rejected, violation
from tuner.trainables.trial_report import SIZE, TrialReport

if TYPE_CHECKING:
    from ray.tune import Result

METRICS = ("val_acc", "val_f1")


class TrialConfig(TypedDict, total=False):
    """A trial's config: the keys a classical spec's space may set (see the module docstring)."""

    features: Mapping[str, Any]
    classifier: Mapping[str, Any]


def check_space(tree: space_lang.Group, *, metric: str, objectives: Sequence[str] = ()) -> None:
    """Refuse unknown settings, features, classifiers, parameters and values of the wrong type
    (read from the estimators' signatures) before Ray starts."""
    check_metric(metric, METRICS)
    check_objectives(objectives, SIZE)  # no latency: features take seconds, not a forward pass
    check_keys(tree, "", get_type_hints(TrialConfig))
    check_named(tree, "features", FEATURES)
    # The factory's own checks (kNN's p) run at load, once per value.
    check_named(tree, "classifier", CLASSIFIERS, builds=True)


def fit(config: Mapping[str, Any], splits: Splits, settings: Settings) -> Pipeline:
    """The trial's pipeline, fitted on the train split (features come from the cache if there)."""
    pipeline = build_pipeline(
        config.get("features") or {"name": "tiny_image"},
        config.get("classifier") or {"name": "knn"},
        cache_dir=settings.cache_dir,
        seed=settings.seed,
    )
    return pipeline.fit(splits.train_x.numpy(), splits.train_y.numpy())


def size_before_fit(config: Mapping[str, Any], splits: Splits) -> ModelSize:
    """``size_of(fit(config, splits))``, from the config and the data's shapes alone.

    It counts the arrays the fitted steps keep, as ``size_of`` does: a bag of SIFT's vocabulary
    (vocab_size x 128 float32); a kNN's training features (float32), their labels' indices and
    the classes; a linear SVM's weights and intercepts (float64; one row for two classes) and
    the classes. Tiny images learn nothing.
    """
    features = dict(config.get("features") or {"name": "tiny_image"})
    classifier = dict(config.get("classifier") or {"name": "knn"})
    feature = {**FEATURES.defaults(features["name"]), **features}
    labels = splits.train_y.numpy()
    n_train, n_classes = len(labels), len(np.unique(labels))
    arrays = [(n_classes, labels.dtype.itemsize)]  # (numbers, bytes each): classes_
    if features["name"] == "bag_of_sift":
        vocab_size = int(feature["vocab_size"])
        arrays.append((vocab_size * 128, 4))  # SIFT descriptors have 128 numbers
        # One histogram per spatial-pyramid cell: 4**level cells at each level.
        dim = vocab_size * sum(4**level for level in range(int(feature["pyramid_levels"]) + 1))
    else:
        channels = 1 if feature["grayscale"] else splits.in_channels
        dim = int(feature["size"]) ** 2 * channels
    if classifier["name"] == "knn":
        arrays += [(n_train * dim, 4), (n_train, np.dtype(np.intp).itemsize)]
    else:  # one-vs-rest, but a single separating hyperplane for two classes
        rows = 1 if n_classes == 2 else n_classes
        arrays += [(rows * dim, 8), (rows, 8)]
    return ModelSize(
        params=sum(count for count, _ in arrays),
        mb=sum(count * itemsize for count, itemsize in arrays) / MB,
    )


REPORTS = 1  # a pipeline is fitted and scored once: one result, whatever the epoch budget


def epochs(config: Mapping[str, Any], *, max_epochs: int) -> int:
    """A trial's results: one (``REPORTS``)."""
    return REPORTS


def train(config: dict[str, Any], *, splits: Splits | DataSource, settings: Settings) -> None:
    """The Ray Tune function trainable: fit, score on the validation split, report once."""
    splits = splits_on_node(splits)
    if settings.progress_bars:  # SIFT and vocabulary bars, drawn by the driver
        from ray.experimental import tqdm_ray

        progress.use(tqdm_ray.tqdm)
    # Checked before fitting: a config over the constraints computes no features at all.
    size = size_before_fit(config, splits)
    if reason := violation(size, settings):
        report_rejected(reason, settings, size.metrics)
        return
    metrics = {**_scored(fit(config, splits, settings), splits), **size.metrics}
    node_id = ray.get_runtime_context().get_node_id()
    tune.report(TrialReport(metrics, epochs=REPORTS, node_id=node_id).result())


def _scored(pipeline: Pipeline, splits: Splits) -> dict[str, float]:
    """A fitted pipeline's accuracy and macro precision / recall / F1 on the validation split."""
    predicted = pipeline.predict(splits.val_x.numpy())
    truth = splits.val_y.numpy()
    precision, recall, f1, _ = precision_recall_fscore_support(
        truth, predicted, average="macro", zero_division=0
    )
    return {
        "val_acc": float((predicted == truth).mean()),
        "val_precision": float(precision),
        "val_recall": float(recall),
        "val_f1": float(f1),
    }


def evaluate_test(result: Result, *, splits: Splits, settings: Settings) -> Evaluation:
    """Refit the best config (its features are cached) and classify the test split once."""
    return _test(fit(result.config, splits, settings), splits)


def retrain_and_test(
    config: Mapping[str, Any], *, splits: Splits, settings: Settings
) -> Evaluation:
    """``final.retrain``: the config fitted on train+val, then tested once."""
    return _test(fit(config, splits.with_val_in_train(), settings), splits)


def validate(config: Mapping[str, Any], *, splits: Splits, settings: Settings) -> Validated:
    """``final.repeats``: the config fitted again with ``settings.seed`` (a bag of SIFT's
    vocabulary is the part a seed changes) and scored on the validation split."""
    pipeline = fit(config, splits, settings)
    return Validated(_scored(pipeline, splits)[settings.metric], pipeline)


def test_validated(
    config: Mapping[str, Any], validated: Validated, *, splits: Splits, settings: Settings
) -> Evaluation:
    """The pipeline ``validate`` fitted, classifying the test split once."""
    return _test(validated.model, splits)


def _test(pipeline: Pipeline, splits: Splits) -> Evaluation:
    predicted = pipeline.predict(splits.test_x.numpy())
    return Evaluation(splits.test_y.numpy(), predicted, splits.classes, pipeline)
