"""Searches that learn from earlier ones: `search.warm_start` gives Optuna the finished trials of
earlier digits searches whose configs this space could sample, in a real Optuna storage beside
the MLflow store."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest

from tests.helpers import new_store, tuner_run
from tuner.commands.cli import main
from tuner.search.searchers import finished_trial, optuna_define_by_run
from tuner.spec.document import SpecError, load_spec
from tuner.spec.space import parse
from tuner.tracking.records import latest_parent, parsed_params, trials_of
from tuner.tracking.tags import StudyTags

SPACE = parse(
    {
        "model": {"name": "simple_cnn", "width": {"int": [16, 32]}},
        "optimizer": {
            "choice": {
                "sgd": {"lr": {"loguniform": [1e-2, 1e-1]}, "momentum": {"uniform": [0.5, 0.9]}},
                "adam": {"lr": {"loguniform": [1e-3, 1e-2]}},
            }
        },
        "blocks": {"choice": [[1, 1], [2, 2]]},
    }
)
SGD = {
    "model.name": "simple_cnn",
    "model.width": 20,
    "optimizer.name": "sgd",
    "optimizer.sgd.lr": 0.05,
    "optimizer.sgd.momentum": 0.6,
    "blocks": [2, 2],
}


def test_a_trial_this_space_could_sample_becomes_a_finished_optuna_trial():
    trial = finished_trial(SPACE, SGD, 0.9)
    assert trial is not None and trial.value == 0.9
    assert trial.state == optuna.trial.TrialState.COMPLETE
    # Optuna holds it under the same names and encodings as the trials it samples itself.
    sampled = {k: v for k, v in SGD.items() if k != "model.name"}  # not the constant
    assert trial.params == {**sampled, "blocks": "[2, 2]"}
    config = optuna_define_by_run(SPACE)(optuna.trial.FixedTrial(trial.params))
    assert config["optimizer"] == {"name": "sgd", "lr": 0.05, "momentum": 0.6}


@pytest.mark.parametrize(
    "change",
    [
        {"model.width": 64},  # outside the int range
        {"optimizer.sgd.lr": 0.5},  # outside the log range
        {"optimizer.name": "rmsprop"},  # not a branch of this space
        {"blocks": [3, 3]},  # not one of the choices
        {"model.name": "resnet"},  # another constant
        {"dropout": 0.1},  # a parameter this space doesn't have
    ],
)
def test_a_trial_outside_the_space_is_refused(change):
    assert finished_trial(SPACE, {**SGD, **change}, 0.9) is None


def test_a_trial_missing_a_parameter_is_refused():
    params = {k: v for k, v in SGD.items() if k != "optimizer.sgd.momentum"}
    assert finished_trial(SPACE, params, 0.9) is None


EARLIER = """\
name: warm_earlier
data: {dataset: digits, seed: 0}
search: {algorithm: random, num_samples: 14, seed: 1}
scheduler: {type: fifo, max_epochs: 1}
resources: {cpu: 1}
space:
  model: {name: simple_cnn, width: 8, depth: 2}
  optimizer: {name: adam, lr: {loguniform: [1e-4, 3e-1]}}
  batch_size: 64
"""
# Narrower than the earlier search's: its trials above lr 0.1 can't be carried over.
LATER = """\
name: NAME
data: {dataset: digits, seed: 0}
search: {algorithm: optuna, num_samples: 4, max_concurrent: 2, seed: 0WARM}
scheduler: {type: fifo, max_epochs: 1}
resources: {cpu: 1}
space:
  model: {name: simple_cnn, width: 8, depth: 2}
  optimizer: {name: adam, lr: {loguniform: [1e-4, 1e-1]}}
  batch_size: 64
"""


def later(name: str, warm: str = "") -> str:
    return LATER.replace("NAME", name).replace("WARM", warm)


@pytest.fixture(scope="module")
def searches(ray_session, tmp_path_factory):
    store = new_store(tmp_path_factory, "warm")
    tuner_run(store, EARLIER)
    tuner_run(store, later("warm_started", ", warm_start: [warm_earlier]"))
    tuner_run(store, later("cold"))
    return store


def lrs(store, name: str) -> list[float]:
    parent = latest_parent(store.client, name)
    return [parsed_params(t.params)["optimizer.lr"] for t in trials_of(store.client, parent)]


def test_the_earlier_trials_inside_the_space_are_carried_over_and_counted(searches):
    store = searches
    earlier = lrs(store, "warm_earlier")
    inside = [lr for lr in earlier if lr <= 0.1]
    assert 10 <= len(inside) < len(earlier)  # TPE's 10 random start-up samples are covered
    parent = latest_parent(store.client, "warm_started")
    study_tags = StudyTags.of(parent)
    assert study_tags.warm_start_trials == len(inside)
    assert StudyTags.of(latest_parent(store.client, "cold")).warm_start_trials == 0
    # The study is in a real Optuna storage beside the MLflow store, as optuna-dashboard opens it.
    assert study_tags.storage == f"sqlite:///{store.tmp / 'optuna.db'}"
    study = optuna.load_study(study_name=study_tags.name, storage=study_tags.storage)
    assert study_tags.name == f"warm_started/{parent.info.run_id}"
    carried, sampled = study.trials[: len(inside)], study.trials[len(inside) :]
    assert sorted(t.params["optimizer.lr"] for t in carried) == sorted(inside)
    assert len(sampled) == 4
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in sampled)


def test_a_warm_started_search_samples_near_the_earlier_best(searches):
    store = searches
    earlier = trials_of(store.client, latest_parent(store.client, "warm_earlier"))
    best = parsed_params(earlier[0].params)["optimizer.lr"]

    def distance(name: str) -> float:  # mean distance in decades from the earlier best lr
        return float(np.mean([abs(math.log10(lr / best)) for lr in lrs(store, name)]))

    # Same seed, same space: only the earlier trials differ.
    assert distance("warm_started") < distance("cold") / 2


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ((), "search.warm_start: no experiment named 'nope'"),
        (
            ("--set", "search.warm_start=[cold]", "--set", "metric=val_loss"),
            "search.warm_start: 'cold' selected on val_acc (max), this search on val_loss (min)",
        ),
    ],
)
def test_a_warm_start_that_cant_be_used_stops_the_run_before_it_starts(
    searches, capsys, flags, message
):
    store = searches
    spec = store.tmp / "bad.yaml"
    spec.write_text(later("bad", ", warm_start: [nope]"))
    assert main(["run", str(spec), "--tracking-uri", store.uri, *flags]) == 2
    assert message in capsys.readouterr().err
    experiment = store.client.get_experiment_by_name("bad")
    assert not store.client.search_runs([experiment.experiment_id])  # no run was started


def test_warm_start_with_random_search_is_refused_at_load(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(later("r", ", warm_start: [a]").replace("optuna", "random"))
    with pytest.raises(SpecError, match=r"search\.warm_start: only search\.algorithm optuna"):
        load_spec(spec)
