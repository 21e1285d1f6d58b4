"""Messages reach the user: a trial's warnings travel in its results, are recorded on its MLflow
run (``tuner.warnings``) and printed by the driver, with no worker stderr in between."""

from __future__ import annotations

import types

import pytest
import torch
from ray import tune

import data
from tests.tuner.test_recorder import SPACE, new_trial, result
from tuner.commands.cli import build_parser
from tuner.search.progress import TrialLines
from tuner.search.recorder import TrialRecorder
from tuner.tracking.experiment import Experiment
from tuner.tracking.tags import SearchTags, Tag
from tuner.trainables import Settings, deep

CONFIG = {"model": {"name": "simple_cnn", "width": 8, "depth": 1}, "epochs": 2}


def test_an_unreadable_checkpoint_is_reported_in_the_next_result(tmp_path, monkeypatch):
    splits = data.load("digits", max_train=200)
    settings = Settings(max_epochs=2, seed=0, metric="val_acc", mode="max")
    trial = deep.TrainingRun(CONFIG, splits, settings)
    trial.train_epoch()
    torch.save(trial.state(), tmp_path / deep.CHECKPOINT_FILE)
    whole = (tmp_path / deep.CHECKPOINT_FILE).read_bytes()
    (tmp_path / deep.CHECKPOINT_FILE).write_bytes(whole[: len(whole) // 2])

    # _train as a Tune worker runs it: its checkpoint to resume from, and what it reports.
    reported: list[dict] = []
    monkeypatch.setattr(tune, "get_checkpoint", lambda: tune.Checkpoint.from_directory(tmp_path))
    monkeypatch.setattr(tune, "report", lambda metrics, checkpoint=None: reported.append(metrics))
    node = types.SimpleNamespace(get_node_id=lambda: "node-a")
    monkeypatch.setattr(deep.ray, "get_runtime_context", lambda: node)
    with pytest.warns(UserWarning, match="can't be read"):
        deep._train(CONFIG, splits, settings)

    assert len(reported) == 2  # trained from scratch: both epochs
    (warning,) = reported[0]["warnings"]
    assert warning.startswith("checkpoint ") and "training from scratch" in warning
    assert "warnings" not in reported[1]  # reported once


def test_warnings_are_tagged_appended_and_printed(tmp_path, capsys):
    experiment = Experiment(f"sqlite:///{tmp_path / 'mlflow.db'}", "warn")
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: warn\n")
    experiment.start(spec, SearchTags())
    args = (experiment.tracking_uri, experiment.experiment_id, experiment.parent_id)
    lines = TrialLines("val_acc", "max", SPACE)
    trial = new_trial("t1", 8)

    def report(recorder: TrialRecorder, step: int, warnings: list[str]) -> None:
        for callback in (recorder, lines):
            callback.on_trial_result(
                iteration=step,
                trials=[trial],
                trial=trial,
                result={**result(step, 0.5), "warnings": warnings},
            )

    recorder = TrialRecorder(*args, "val_acc", "max", SPACE)
    recorder.setup()
    recorder.on_trial_start(iteration=0, trials=[trial], trial=trial)
    report(recorder, 1, ["first"])
    report(recorder, 2, [])
    recorder.on_experiment_end(trials=[trial])
    # A resumed search: a new recorder, rebuilt from MLflow, appends to the tag.
    resumed = TrialRecorder(*args, "val_acc", "max", SPACE)
    resumed.setup()
    report(resumed, 3, ["second", "third"])
    resumed.on_experiment_end(trials=[trial])

    (run,) = experiment.children()
    assert run.data.tags[Tag.WARNINGS] == "first\nsecond\nthird"
    printed = capsys.readouterr().out.splitlines()
    assert printed == [f"trial t1 warning: {text}" for text in ("first", "second", "third")]


def test_reading_commands_say_where_the_tracking_uri_comes_from():
    subcommands = build_parser()._subparsers._group_actions[0].choices
    best = " ".join(subcommands["best"].format_help().split())
    assert "default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db" in best
    assert "spec" not in best
    run = " ".join(subcommands["run"].format_help().split())
    assert "default: the spec's tracking.uri, else $MLFLOW_TRACKING_URI, else sqlite" in run
