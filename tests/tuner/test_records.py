"""Reading a search's trials back from a real sqlite MLflow store: `tuner best` reads only the
runs that can be among the first, and ranks them exactly as reading every run does."""

from __future__ import annotations

import math

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from tuner.core.selection import final_key
from tuner.tracking.records import best_trials, trials_of
from tuner.tracking.tags import PARENT_ROLE, TRIAL_ROLE, TRUE, SearchTags, Tag, new_child_run

# Ties (the chosen best is not the lowest trial id among them), a diverged trial (nan), one that
# never reported (no value), and values below and above the ties.
VALUES = {"t0": 0.5, "t1": 0.8, "t2": 0.9, "t3": 0.8, "t4": math.nan, "t5": 0.8, "t6": None}
BEST = {"max": "t2", "min": "t5"}


@pytest.fixture(params=["max", "min"])
def search(request, tmp_path):
    mode = request.param
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = client.create_experiment("best")
    tags = {Tag.ROLE: PARENT_ROLE, **SearchTags(metric="val_acc", mode=mode).tags()}
    parent = client.create_run(experiment_id, tags=tags)
    for trial_id, value in VALUES.items():
        tags = {Tag.ROLE: TRIAL_ROLE, Tag.TRIAL_ID: trial_id}
        if trial_id == BEST[mode]:
            tags[Tag.BEST] = TRUE
        run_id = new_child_run(client, experiment_id, parent.info.run_id, trial_id, tags)
        if value is not None:
            client.log_batch(run_id, metrics=[Metric(final_key("val_acc"), value, 0, 1)])
    return client, client.get_run(parent.info.run_id)


def test_the_best_trials_are_the_first_of_every_trial_ranked(search):
    client, parent = search
    every = [t.trial_id for t in trials_of(client, parent)]
    assert len(every) == len(VALUES)
    for top in range(1, len(VALUES) + 2):
        assert [t.trial_id for t in best_trials(client, parent, top)] == every[:top], top
    # The ties rank the chosen best first, then by trial id; nan and no value last.
    if parent.data.tags[Tag.MODE] == "max":
        assert every[:4] == ["t2", "t1", "t3", "t5"]
    else:
        assert every[:4] == ["t0", "t5", "t1", "t3"]
    assert set(every[-2:]) == {"t4", "t6"}
