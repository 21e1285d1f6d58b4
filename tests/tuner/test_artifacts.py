"""Artifacts of a finished search (plots, tables) and its exported best model, on real runs."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import matplotlib.pyplot as plt
import mlflow
import numpy as np
import optuna
import pytest
from mlflow.entities import Metric, Param, Run
from mlflow.tracking import MlflowClient
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from data import Splits
from tests.helpers import best_checkpoint_evaluation
from tuner.commands.cli import main
from tuner.core.errors import UsageError
from tuner.publishing import export
from tuner.publishing.artifacts import log_search_artifacts, study_of
from tuner.search.inputs import load_data
from tuner.spec.document import load_spec
from tuner.tracking.records import TrialRecord, latest_parent, trials_of
from tuner.tracking.tags import PARENT_ROLE, TRIAL_ROLE, Status, Tag
from tuner.trainables.metrics import Evaluation

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLOTS = {
    "confusion_matrix",
    "learning_curves",
    "anytime",
    "optuna_history",
    "optuna_importances",
    "optuna_parallel_coordinate",
    "optuna_slice",
}


@dataclass
class Logged:
    """A finished search with its artifacts and best model logged, and what they came from."""

    uri: str
    client: MlflowClient
    parent: Run
    evaluation: Evaluation
    splits: Splits
    tmp: Path


@pytest.fixture(scope="module")
def logged(digits_search) -> Logged:
    """The shared digits search, and the best trial's test evaluation rebuilt from Ray's
    storage, to check the artifacts against."""
    spec_path = digits_search.tmp / "digits_search.yaml"
    spec = load_spec(spec_path)
    splits = load_data(spec)
    evaluation = best_checkpoint_evaluation(digits_search, spec_path)
    client = MlflowClient(digits_search.uri)
    parent = latest_parent(client, spec.experiment)
    return Logged(digits_search.uri, client, parent, evaluation, splits, digits_search.tmp)


def _artifact_bytes(logged: Logged, path: str) -> bytes:
    local = logged.client.download_artifacts(logged.parent.info.run_id, path, str(logged.tmp))
    return Path(local).read_bytes()


# ---------------------------------------------------------------------------------------------
# Plots and tables
# ---------------------------------------------------------------------------------------------


def test_every_plot_is_a_png_on_the_parent_run(logged):
    listed = logged.client.list_artifacts(logged.parent.info.run_id, "plots")
    assert {Path(a.path).stem for a in listed} == PLOTS
    for artifact in listed:
        assert artifact.path.endswith(".png")
        assert _artifact_bytes(logged, artifact.path).startswith(PNG_MAGIC), artifact.path
        assert artifact.file_size > 10_000  # a drawn figure, not an empty canvas


def test_confusion_matrix_counts_the_test_split(logged):
    matrix = json.loads(_artifact_bytes(logged, "results/confusion_matrix.json"))
    counts = np.array(matrix["matrix"])
    assert matrix["classes"] == list(logged.splits.classes)
    assert counts.shape == (10, 10)
    assert counts.sum() == matrix["total"] == len(logged.splits.test_y)
    # Rows are true classes: each row holds that class's test images.
    np.testing.assert_array_equal(counts.sum(axis=1), np.bincount(logged.splits.test_y.numpy()))
    # The diagonal is the accuracy the run logged for the same (best) checkpoint.
    accuracy = np.trace(counts) / counts.sum()
    assert accuracy == pytest.approx(logged.parent.data.metrics["test_acc"])


def test_trials_csv_has_one_row_per_trial(logged):
    rows = list(csv.DictReader(io.StringIO(_artifact_bytes(logged, "results/trials.csv").decode())))
    trials = trials_of(logged.client, logged.parent)
    assert len(rows) == len(trials) == 3
    by_id = {row["trial_id"]: row for row in rows}
    for trial in trials:
        row = by_id[trial.trial_id]
        assert row["status"] == trial.status
        assert row["best"] == str(trial.best).lower()
        assert float(row["final_val_acc"]) == pytest.approx(trial.value)
        assert int(row["epochs"]) == trial.epochs
        assert row["run_id"] == trial.run_id
        for key, value in trial.params.items():
            assert row[key] == value
        # Conditional branches: momentum is blank where the optimizer has none.
        assert (row["optimizer.sgd.momentum"] != "") == (row["optimizer.name"] == "sgd")
    assert sum(row["best"] == "true" for row in rows) == 1


def test_study_is_rebuilt_from_the_child_runs(logged):
    trials = trials_of(logged.client, logged.parent)
    study = study_of(logged.client, logged.parent, trials)
    assert len(study.trials) == 3
    assert study.direction.name == "MAXIMIZE"
    assert study.best_value == pytest.approx(logged.parent.data.metrics["best_val_acc"])
    sampled = set(logged.parent.data.tags[Tag.SAMPLED].split(","))
    for trial in study.trials:
        assert set(trial.params) <= sampled  # constants (model.name, depth) left out
        branch = trial.params["optimizer.name"]
        assert ("optimizer.sgd.momentum" in trial.params) == (branch == "sgd")
        assert 16 <= trial.params["model.width"] <= 32
    assert "model.name" not in study.trials[0].params


def test_the_study_keeps_two_branches_ranges_apart(tmp_path):
    """sgd's lr and adam's lr are two parameters of the rebuilt study, each with the range its
    own trials span, as they were two parameters to the sampler."""
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("branches")
    sampled = "optimizer.name,optimizer.sgd.lr,optimizer.adam.lr"
    tags = {Tag.ROLE: PARENT_ROLE, Tag.METRIC: "val_acc", Tag.SAMPLED: sampled}
    parent = client.create_run(experiment, run_name="branches", tags=tags)
    for index, (branch, lr) in enumerate([("sgd", 0.05), ("sgd", 0.1), ("adam", 1e-3)]):
        params = {"optimizer.name": branch, f"optimizer.{branch}.lr": str(lr)}
        _trial_run(client, experiment, parent, index, params)
    _, distributions = _plots_study(client, parent)
    sgd, adam = distributions["optimizer.sgd.lr"], distributions["optimizer.adam.lr"]
    assert (sgd.low, sgd.high, adam.low, adam.high) == (0.05, 0.1, 1e-3, 1e-3)
    assert sorted(distributions["optimizer.name"].choices) == ["adam", "sgd"]


RECORDED_SPEC = """\
name: recorded
space:
  lr: {loguniform: [1e-4, 1e-1]}
  width: {int: [8, 64]}
  batch_size: {choice: [32, 64, 128]}
  optimizer:
    choice:
      sgd: {momentum: {uniform: [0.5, 0.99]}}
      adam: {}
  depth: 3
"""


def test_the_study_has_the_distributions_of_the_recorded_space(tmp_path):
    """The study's distributions are the spec's, read from the parent's spec artifact with its
    overrides: lr is log-uniform though its values span 2x (no ratio decides), width an int
    over the whole range, batch_size categorical although its values are numbers."""
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("recorded", artifact_location=str(tmp_path / "art"))
    tags = {
        Tag.ROLE: PARENT_ROLE,
        Tag.METRIC: "val_acc",
        Tag.MODE: "max",
        Tag.SAMPLED: "lr,width,batch_size,optimizer.name,optimizer.sgd.momentum",
        Tag.OVERRIDES: json.dumps(["space.width={int: [4, 64]}"]),
    }
    parent = client.create_run(experiment, run_name="recorded", tags=tags)
    spec = tmp_path / "recorded.yaml"
    spec.write_text(RECORDED_SPEC)
    client.log_artifact(parent.info.run_id, str(spec), artifact_path="spec")
    configs = [  # lr from 0.01 to 0.02: the 20x rule would have drawn it on a linear axis
        {"lr": "0.01", "width": "16", "batch_size": "64", "optimizer.name": "sgd"},
        {"lr": "0.02", "width": "32", "batch_size": "32", "optimizer.name": "adam"},
    ]
    configs[0]["optimizer.sgd.momentum"] = "0.9"
    for index, params in enumerate(configs):
        _trial_run(client, experiment, parent, index, {**params, "depth": "3"})
    study, distributions = _plots_study(client, parent)
    assert set(distributions) == set(tags[Tag.SAMPLED].split(","))  # not the constant
    assert distributions["lr"] == FloatDistribution(1e-4, 1e-1, log=True)
    assert distributions["width"] == IntDistribution(4, 64)  # the override's range
    assert distributions["batch_size"] == CategoricalDistribution([32, 64, 128])
    assert distributions["optimizer.name"] == CategoricalDistribution(["sgd", "adam"])
    assert distributions["optimizer.sgd.momentum"] == FloatDistribution(0.5, 0.99)
    assert {trial.params["lr"] for trial in study.trials} == {0.01, 0.02}
    # Drawn from that study, lr's slice has a log axis.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's matplotlib plots are "experimental"
        axes = optuna.visualization.matplotlib.plot_slice(study, params=["lr"])
    assert axes.get_xscale() == "log"
    plt.close(axes.figure)


def test_a_plot_that_cant_be_drawn_is_skipped_with_a_warning(tmp_path):
    """One trial of one epoch: no importances, no learning curves; the rest is still logged."""
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("tiny", artifact_location=str(tmp_path / "artifacts"))
    tags = {Tag.ROLE: PARENT_ROLE, Tag.METRIC: "val_acc", Tag.MODE: "max"}
    parent = client.create_run(experiment, run_name="tiny", tags={**tags, Tag.SAMPLED: "lr"})
    child = client.create_run(
        experiment,
        tags={
            "mlflow.parentRunId": parent.info.run_id,
            Tag.ROLE: TRIAL_ROLE,
            Tag.TRIAL_ID: "t0",
            Tag.STATUS: Status.COMPLETED,
        },
    )
    client.log_batch(
        child.info.run_id,
        metrics=[Metric("val_acc", 0.5, 0, 1), Metric("best_val_acc", 0.5, 0, 1)],
        params=[Param("lr", "0.1")],
    )
    # Class "c" is never predicted nor present: its row and column are still drawn, all zero.
    evaluation = Evaluation(np.array([0, 1, 1]), np.array([0, 0, 1]), ("a", "b", "c"), None)
    with pytest.warns(UserWarning) as caught:
        log_search_artifacts(client, parent.info.run_id, evaluation)
    skipped = " ".join(str(w.message) for w in caught)
    assert "learning curves" in skipped and "optuna_importances" in skipped
    plots = {Path(a.path).stem for a in client.list_artifacts(parent.info.run_id, "plots")}
    assert {"confusion_matrix", "optuna_history"} <= plots
    assert not {"learning_curves", "optuna_importances"} & plots
    assert plt.get_fignums() == []  # every figure closed, drawn or not
    local = client.download_artifacts(parent.info.run_id, "results", str(tmp_path))
    matrix = json.loads((Path(local) / "confusion_matrix.json").read_text())
    assert matrix["matrix"] == [[1, 0, 0], [1, 1, 0], [0, 0, 0]]
    # Even a run that doesn't exist only warns: artifacts never fail a finished search.
    with pytest.warns(UserWarning, match="skipped the"):
        log_search_artifacts(client, "0" * 32, evaluation)


def _ten_parameter_study(trials: int = 30):
    """An Optuna study of ten parameters in which only ``p7`` (then a little ``p3``) matters."""
    import optuna
    from optuna.distributions import FloatDistribution

    rng = np.random.default_rng(0)
    distributions = {f"p{i}": FloatDistribution(0.0, 1.0) for i in range(10)}
    study = optuna.create_study(direction="maximize")
    for _ in range(trials):
        params = {name: float(rng.uniform()) for name in distributions}
        value = params["p7"] + 0.1 * params["p3"]
        trial = optuna.trial.create_trial(params=params, distributions=distributions, value=value)
        study.add_trial(trial)
    return study


@pytest.mark.parametrize("name", ["optuna_slice", "optuna_parallel_coordinate"])
def test_many_parameter_plots_show_the_most_important_few_at_page_width(name):
    """Ten parameters: the slice plot and parallel coordinates draw only the most important
    few, most important first, in a figure no wider than the report's page."""
    from tuner.publishing.artifacts import DPI, FIGURE_WIDTH, MOST_IMPORTANT, optuna_figure

    shown = MOST_IMPORTANT[name][0]
    figure = optuna_figure(_ten_parameter_study(), name, "best val_acc")
    try:
        width, height = figure.get_size_inches()
        assert width * DPI <= 1220  # the report's page: 1200 px, less padding, plus borders
        assert width == FIGURE_WIDTH and height < width
        if name == "optuna_slice":  # one panel per parameter, and the colour bar
            labels = [ax.get_xlabel() for ax in figure.axes if ax.get_xlabel()]
        else:  # one axis per parameter after the objective's, named along the x axis
            labels = [t.get_text() for t in figure.axes[0].get_xticklabels()][1:]
        assert len(labels) == shown < 10
        assert labels[:2] == ["1 p7", "2 p3"]  # the one that matters first
        assert f"the {shown} most important of 10 parameters" in figure.get_suptitle()
    finally:
        plt.close(figure)


def _lines(figure) -> list:
    from matplotlib.collections import LineCollection

    return [c for c in figure.axes[0].collections if isinstance(c, LineCollection)]


def test_parallel_coordinates_of_a_thousand_trials_colour_only_the_best_few():
    """1,000 lines are one tangle: the best TOP_LINES are drawn in colour, on top, over a faint
    grey density of the rest; the colour bar spans the best few's values. A small search
    keeps Optuna's own plot."""
    from tuner.publishing.artifacts import FAINT, TOP_LINES, optuna_figure

    study = _ten_parameter_study(1000)
    order = [f"p{i}" for i in (7, 3, 0, 1, 2, 4, 5, 6, 8, 9)]  # ranked: no fANOVA to wait for
    figure = optuna_figure(study, "optuna_parallel_coordinate", "best val_acc", order=order)
    try:
        everyone, best = _lines(figure)
        assert len(everyone.get_segments()) == 1000 and everyone.get_array() is None
        assert everyone.get_colors().tolist() == [pytest.approx((*FAINT, 0.06))]  # all alike
        values = sorted(t.value for t in study.trials)
        top = sorted(segment[0, 1] for segment in best.get_segments())  # the objective axis
        assert top == pytest.approx(values[-TOP_LINES:])
        assert best.get_zorder() > everyone.get_zorder()
        assert (best.norm.vmin, best.norm.vmax) == pytest.approx((values[-TOP_LINES], values[-1]))
        assert best.colorbar is not None and "the best 20" in best.colorbar.ax.get_ylabel()
        assert f"the {TOP_LINES} best of 1,000 trials in colour" in figure.get_suptitle()
    finally:
        plt.close(figure)
    figure = optuna_figure(_ten_parameter_study(TOP_LINES), "optuna_parallel_coordinate", "v")
    try:
        (lines,) = _lines(figure)
        assert lines.get_array() is not None  # Optuna's colour map, every line
        assert "in colour" not in figure.get_suptitle()
    finally:
        plt.close(figure)


@pytest.mark.parametrize("name", ["optuna_history", "optuna_slice"])
def test_scatter_plots_of_a_thousand_trials_use_small_translucent_dots(name):
    from matplotlib.collections import PathCollection

    from tuner.publishing.artifacts import DOT_AREA, optuna_figure

    order = [f"p{i}" for i in range(10)]
    for trials, small in ((1000, True), (30, False)):
        figure = optuna_figure(_ten_parameter_study(trials), name, "best val_acc", order=order)
        try:
            drawn = [c for ax in figure.axes for c in ax.collections]
            dots = [c for c in drawn if isinstance(c, PathCollection)]
            assert dots
            for c in dots:
                if small:  # 20,000 / 1,000 points^2, within DOT_AREA, no edges
                    assert list(c.get_sizes()) == [20.0] and DOT_AREA[0] <= 20.0 <= DOT_AREA[1]
                    assert c.get_alpha() == 0.6 and list(c.get_linewidths()) == [0]
                else:  # a small search: Optuna's own dots
                    assert c.get_alpha() != 0.6 and max(c.get_sizes()) > DOT_AREA[1] / 2
        finally:
            plt.close(figure)


def test_a_pareto_search_of_a_thousand_trials_keeps_its_front_readable(tmp_path, monkeypatch):
    """The Pareto plot of 1,000 trials: small grey dots, the best trial's star as large as
    ever; the trials CSV marks each front member, for a front too long to list."""
    from tuner.publishing import artifacts

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("big", artifact_location=str(tmp_path / "artifacts"))
    tags = {Tag.ROLE: PARENT_ROLE, Tag.METRIC: "val_acc", Tag.MODE: "max"}
    tags[Tag.OBJECTIVES] = "val_acc:max,model_params:min"
    parent = client.get_run(client.create_run(experiment, tags=tags).info.run_id)
    rng = np.random.default_rng(0)
    values, costs = rng.uniform(size=1000), rng.uniform(1e3, 1e6, 1000)
    trials = [
        TrialRecord(
            f"t{i:04d}",
            f"r{i}",
            Status.COMPLETED,
            float(values[i]),
            3,
            {"lr": "0.1"},
            i == 0,
            {"model_params": float(costs[i])},
            pareto=i < 30,
        )
        for i in range(1000)
    ]
    drawn: list = []
    monkeypatch.setattr(
        artifacts, "_save", lambda client, run_id, figure, name: drawn.append(figure)
    )
    artifacts._log_pareto(client, parent, trials)
    try:
        (axes,) = drawn[0].axes
        dots, star = axes.collections
        assert len(dots.get_offsets()) == 1000 and list(dots.get_sizes()) == [20.0]
        assert list(star.get_sizes()) == [180.0]
    finally:
        plt.close(drawn[0])
    artifacts._log_trials_csv(client, parent.info.run_id, parent, trials)
    local = client.download_artifacts(parent.info.run_id, "results/trials.csv", str(tmp_path))
    rows = list(csv.DictReader(io.StringIO(Path(local).read_text())))
    assert len(rows) == 1000 and sum(row["pareto"] == "true" for row in rows) == 30


# ---------------------------------------------------------------------------------------------
# The exported model
# ---------------------------------------------------------------------------------------------


def test_best_model_is_registered_and_loads_with_pyfunc(logged, monkeypatch):
    versions = logged.client.search_model_versions("name = 'digits_search'")
    assert len(versions) == 1
    assert versions[0].run_id == logged.parent.info.run_id
    # Logging it left mlflow's globals as they were: plain mlflow, pointed by the environment.
    assert logged.uri not in {os.environ.get("MLFLOW_TRACKING_URI"), mlflow.get_tracking_uri()}
    monkeypatch.setenv("MLFLOW_TRACKING_URI", logged.uri)
    model = mlflow.pyfunc.load_model("models:/digits_search/latest")
    assert model.metadata.metadata["classes"] == list(logged.splits.classes)
    (images_in,) = model.metadata.get_input_schema().inputs
    assert (images_in.type, tuple(images_in.shape)) == (np.dtype("uint8"), (-1, 1, 8, 8))
    answer = model.predict(logged.splits.test_x[:16].numpy())  # any batch size, uint8
    probabilities = np.stack(answer["probabilities"])
    assert probabilities.shape == (16, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    predicted = logged.evaluation.y_pred[:16]
    np.testing.assert_array_equal(probabilities.argmax(1), predicted)
    assert list(answer["label"]) == [logged.splits.classes[i] for i in predicted]
    np.testing.assert_allclose(answer["probability"], probabilities.max(1))
    # Logging the model left the parent run as the search ended it.
    parent = logged.client.get_run(logged.parent.info.run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags[Tag.STATUS] == Status.COMPLETED
    classes_json = _artifact_bytes(logged, "model/classes.json")
    assert json.loads(classes_json) == list(logged.splits.classes)


def test_predict_agrees_with_the_test_evaluation(logged, capsys):
    paths = []
    for i in range(8):  # the first test images, written losslessly at their own size
        path = logged.tmp / f"test_{i}.png"
        assert cv2.imwrite(str(path), logged.splits.test_x[i, 0].numpy())
        paths.append(path)
    assert main(["predict", "digits_search", *map(str, paths), "--tracking-uri", logged.uri]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    rows = [(path, name, float(probability)) for path, name, probability in rows]
    classes = logged.splits.classes
    assert [name for _, name, _ in rows] == [classes[i] for i in logged.evaluation.y_pred[:8]]
    assert [path for path, _, _ in rows] == [str(p) for p in paths]
    assert all(0.1 <= probability <= 1.0 for _, _, probability in rows)


def test_predict_converts_channels_and_size(logged):
    """A colour JPEG of another size is made grey and 8x8, like the training images."""
    digit = logged.splits.test_x[0, 0].numpy()
    big = cv2.resize(digit, (40, 40), interpolation=cv2.INTER_NEAREST)
    path = logged.tmp / "colour.jpg"
    assert cv2.imwrite(str(path), cv2.cvtColor(big, cv2.COLOR_GRAY2BGR))
    assert export.read_image(path, 1, 8, 8).shape == (1, 8, 8)
    assert export.read_image(path, 3, 32, 32).shape == (3, 32, 32)
    ((_, name, probability),) = export.predict(logged.uri, "digits_search", [path])
    assert name in logged.splits.classes
    assert 0.0 < probability <= 1.0 and math.isfinite(probability)


def test_predict_says_what_is_wrong(logged):
    junk = logged.tmp / "junk.png"
    junk.write_bytes(b"not an image")
    with pytest.raises(UsageError, match=r"junk\.png"):
        export.predict(logged.uri, "digits_search", [junk])
    with pytest.raises(UsageError, match="no registered model 'nope'"):
        export.predict(logged.uri, "nope", [junk])


def test_sklearn_pipelines_export_too(logged):
    """A classical pipeline is logged with mlflow.sklearn and predicts through the same path."""
    from models.classical import build_pipeline

    splits = logged.splits
    pipeline = build_pipeline({"name": "tiny_image", "size": 8}, {"name": "knn", "k": 3})
    pipeline.fit(splits.train_x.numpy(), splits.train_y.numpy())
    # Its own experiment: the search's experiment must keep only the search's runs.
    experiment = logged.client.create_experiment("digits_knn_export")
    run = logged.client.create_run(experiment, run_name="knn")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        version = export.log_best_model(
            logged.uri,
            run.info.run_id,
            pipeline,
            splits.test_x[:4].numpy(),
            classes=splits.classes,
            registered_name="digits_knn_export",
        )
    assert str(version.version) == "1"
    path = logged.tmp / "test_0.png"
    cv2.imwrite(str(path), splits.test_x[0, 0].numpy())
    ((_, name, probability),) = export.predict(logged.uri, "digits_knn_export", [path])
    assert name == splits.classes[int(pipeline.predict(splits.test_x[:1].numpy())[0])]
    assert 0.0 < probability <= 1.0


def _trial_run(
    client: MlflowClient, experiment: str, parent: Run, index: int, params: dict[str, str]
) -> None:
    """Trial ``t<index>`` of ``parent`` with ``params``, its value 0.5 + index / 10."""
    tags = {"mlflow.parentRunId": parent.info.run_id, Tag.ROLE: TRIAL_ROLE}
    child = client.create_run(experiment, tags={**tags, Tag.TRIAL_ID: f"t{index}"})
    metrics = [Metric("best_val_acc", 0.5 + index / 10, 0, 1)]
    logged = [Param(key, value) for key, value in params.items()]
    client.log_batch(child.info.run_id, metrics=metrics, params=logged)


def _plots_study(client: MlflowClient, parent: Run) -> tuple[optuna.Study, dict[str, Any]]:
    """The plots' study of ``parent``'s trials, and every parameter's distribution in it."""
    parent = client.get_run(parent.info.run_id)
    study = study_of(client, parent, trials_of(client, parent))
    distributions: dict[str, Any] = {}
    for trial in study.trials:
        distributions.update(trial.distributions)
    return study, distributions
