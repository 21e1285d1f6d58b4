"""Each private part of Ray Tune, Optuna and MLflow that tuner relies on (tuner.internals) is
where tuner expects it in the installed versions; one that moved fails here by name."""

from __future__ import annotations

from pathlib import Path

import mlflow
import optuna
import pytest
from ray.tune.experiment import Trial
from ray.tune.search import BasicVariantGenerator, ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from tuner.core import internals


def _limited_optuna() -> ConcurrencyLimiter:
    space = {"lr": optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True)}
    searcher = OptunaSearch(space=space, metric="val_acc", mode="max", seed=0)
    return ConcurrencyLimiter(searcher, max_concurrent=2)


def test_the_searchers_running_trials_and_study():
    generator = BasicVariantGenerator()
    assert internals.generator_running(generator) == set()
    limiter = _limited_optuna()
    assert limiter.suggest("a") is not None and limiter.suggest("b") is not None
    assert internals.limiter_running(limiter) == {"a", "b"}
    assert internals.optuna_trial_numbers(limiter.searcher) == {"a": 0, "b": 1}
    study = internals.optuna_study(limiter.searcher)
    assert [trial.state.name for trial in study.trials] == ["RUNNING", "RUNNING"]


def test_a_trials_state_folders(ray_session, tmp_path):  # the staging folder is Ray's session's
    from ray.train._internal.storage import StorageContext  # what Tune gives each trial

    storage = StorageContext(storage_path=str(tmp_path), experiment_dir_name="search")
    trial = Trial("train", trial_id="t1", storage=storage, stub=True)
    folders = internals.state_folders(trial)
    assert folders.local
    assert Path(folders.experiment) == tmp_path / "search"
    assert "search" in folders.staging.parts  # the driver's copy, in Ray's session folder


def test_whether_a_distribution_holds_a_value():
    floats = optuna.distributions.FloatDistribution(0.0, 1.0)
    assert internals.distribution_holds(floats, 0.5)
    assert not internals.distribution_holds(floats, 1.5)
    choices = optuna.distributions.CategoricalDistribution(["sgd", "adam"])
    assert internals.distribution_holds(choices, "adam")
    assert not internals.distribution_holds(choices, "rmsprop")


def test_mlflows_fluent_store_uris(tmp_path, monkeypatch):
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):  # mlflow's setters export them:
        monkeypatch.setenv(name, "")  # recorded here, put back (or removed) when the test ends
        monkeypatch.delenv(name)
    before = internals.fluent_store_uris()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        assert internals.fluent_store_uris() == (uri, uri)
    finally:
        mlflow.set_tracking_uri(before[0])
        mlflow.set_registry_uri(before[1])


def test_a_part_that_moved_is_named():
    with pytest.raises(internals.MovedInternal, match=r"_Moved\._live_trials is gone"):
        internals.generator_running(object.__new__(_Moved))


class _Moved(BasicVariantGenerator):
    """A generator whose running trials moved: as a Tune release might leave it."""

    def __getattribute__(self, name: str):
        if name == "_live_trials":
            raise AttributeError(name)
        return super().__getattribute__(name)
