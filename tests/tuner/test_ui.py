"""Which MLflow UI page `tuner ui` opens, on small stores made here (no server, no Ray); the
page in a real browser is tests/test_ui_browser.py."""

from __future__ import annotations

import json

import pytest
from mlflow.entities import Run, RunData, RunInfo, RunTag
from mlflow.tracking import MlflowClient

from tuner.commands.cli import main
from tuner.reading.ui import VIEW_TAG, runs_view, view_state


def _search(client: MlflowClient, name: str, **tags: str) -> str:
    """An experiment with one parent run tagged as a search's; its experiment id."""
    experiment = client.create_experiment(name)
    tags = {"tuner.role": "parent", "tuner.metric": "val_acc", "tuner.mode": "max", **tags}
    client.create_run(experiment, run_name=name, tags=tags)
    return experiment


def test_the_view_sorts_on_the_search_metric_and_shows_its_parameters():
    tags = {"tuner.metric": "val_loss", "tuner.mode": "min", "tuner.sampled": "lr,model.width"}
    info = RunInfo("r", "0", "user", "FINISHED", 0, None, "active")
    parent = Run(info, RunData(tags=[RunTag(key, value) for key, value in tags.items()]))
    state = view_state(parent)
    assert state["orderByKey"] == "metrics.`final_val_loss`" and state["orderByAsc"] is True
    assert (
        state["selectedColumns"]
        == state["columnOrder"]
        == [
            "metrics.`final_val_loss`",
            "metrics.`best_val_loss`",
            "metrics.`val_loss`",
            "metrics.`val_acc`",
            "metrics.`test_acc`",
            "tags.`tuner.status`",
            "params.`lr`",
            "params.`model.width`",
            "attributes.`Models`",
        ]
    )


@pytest.mark.slow  # a new sqlite store: MLflow's migrations, 3-7 s
def test_runs_view_names_the_experiment_and_stores_its_view(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert runs_view(client, None) == "/experiments?workflowType=machine_learning"  # no search
    first = _search(client, "first", **{"tuner.sampled": "lr"})
    latest = _search(client, "latest")
    route = runs_view(client, "first")
    assert route == (
        f"/experiments/{first}/runs?workflowType=machine_learning&viewStateShareKey=tuner"
    )
    stored = json.loads(client.get_experiment(first).tags[VIEW_TAG])
    assert stored["orderByKey"] == "metrics.`final_val_acc`" and stored["orderByAsc"] is False
    assert "params.`lr`" in stored["selectedColumns"]
    assert runs_view(client, None).startswith(f"/experiments/{latest}/runs?")  # newest search


@pytest.mark.slow  # a new sqlite store: MLflow's migrations, 3-7 s
def test_ui_of_an_unknown_experiment_fails_before_starting_a_server(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _search(MlflowClient(uri), "known")
    assert main(["ui", "nope", "--tracking-uri", uri]) == 2
    captured = capsys.readouterr()
    assert "no experiment named 'nope'" in captured.err and "known" in captured.err
    assert captured.out == ""  # no address: nothing was started
