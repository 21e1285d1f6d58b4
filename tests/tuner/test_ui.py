"""Which MLflow UI page `tuner ui` opens, on small stores made here (no server, no Ray); the
page in a real browser is tests/test_ui_browser.py."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest
from mlflow.entities import Run, RunData, RunInfo, RunTag
from mlflow.tracking import MlflowClient

from tests.processes import SERVER_START_S, free_port, stop_group
from tuner.commands.cli import main
from tuner.reading.ui import VIEW_TAG, Server, runs_view, view_state
from tuner.tracking.tags import PARENT_ROLE, Tag


def _search(client: MlflowClient, name: str, **tags: str) -> str:
    """An experiment with one parent run tagged as a search's; its experiment id."""
    experiment = client.create_experiment(name)
    tags = {Tag.ROLE: PARENT_ROLE, Tag.METRIC: "val_acc", Tag.MODE: "max", **tags}
    client.create_run(experiment, run_name=name, tags=tags)
    return experiment


def test_the_view_sorts_on_the_search_metric_and_shows_its_parameters():
    tags = {Tag.METRIC: "val_loss", Tag.MODE: "min", Tag.SAMPLED: "lr,model.width"}
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
            f"tags.`{Tag.STATUS}`",
            "params.`lr`",
            "params.`model.width`",
            "attributes.`Models`",
        ]
    )


@pytest.mark.slow  # a new sqlite store: MLflow's migrations, 3-7 s
def test_runs_view_names_the_experiment_and_stores_its_view(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert runs_view(client, None) == "/experiments?workflowType=machine_learning"  # no search
    first = _search(client, "first", **{Tag.SAMPLED: "lr"})
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


# A stand-in for `mlflow ui`: a line on each stream, as uvicorn and MLflow's warnings write them.
NOISY_SERVER = [
    sys.executable,
    "-c",
    "import sys; print('INFO: Uvicorn running', flush=True); "
    "print('FutureWarning: deprecated', file=sys.stderr); sys.exit(3)",
]


def test_the_servers_own_lines_are_kept_not_shown(capfd):
    """Without --verbose, what the server writes stays off the terminal, kept to say why it
    failed; with it, the lines go to the terminal as they come."""
    quiet = Server(NOISY_SERVER, verbose=False)
    assert quiet.process.wait(timeout=60) == 3
    assert quiet.output() == "INFO: Uvicorn running\nFutureWarning: deprecated"
    assert capfd.readouterr() == ("", "")
    loud = Server(NOISY_SERVER, verbose=True)
    assert loud.process.wait(timeout=60) == 3
    assert loud.output() == ""
    shown = capfd.readouterr()
    assert "Uvicorn running" in shown.out and "deprecated" in shown.err


@pytest.mark.slow  # MLflow's UI server starts in 5-60 s
def test_tuner_ui_shows_its_address_only(tmp_path):
    """`tuner ui` on a store: its address is the first line on stdout, and nothing of the
    server's (MLflow 3's deprecation warnings, uvicorn's lines) reaches either stream."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _search(MlflowClient(uri), "shown")
    flags = ["--tracking-uri", uri, "--port", str(free_port())]
    ui = subprocess.Popen(
        [sys.executable, "-m", "tuner", "ui", "shown", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the uvicorn workers go with it
    )
    late = threading.Timer(SERVER_START_S, stop_group, [ui])  # a server that never answers
    late.start()
    try:
        first = ui.stdout.readline()  # "" if it stopped first
    finally:
        late.cancel()
        stop_group(ui)
    out, err = ui.communicate()
    assert first.startswith("MLflow UI for ") and "#/experiments/" in first
    assert out == "" and err == ""
