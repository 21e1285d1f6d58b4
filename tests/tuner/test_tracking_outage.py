"""A tracking server that goes away for 30 s in the middle of a search (issue 16).

A real `mlflow server` on a loopback port; `tuner run` in its own process logs a paced search
to it (its trials train an epoch only when the test allows it): once trials have logged epochs
the test kills the server's whole process group, lets the trials train more epochs, waits 30 s
and starts the server again on the same port and database; the rest of the epochs come after.
The search goes on and, at the end, MLflow holds all of it: one child run per trial with every
epoch once, statuses, the best trial, test_acc and the registered model.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from tests.helpers import own_tuner_env, paced_search, wait_for_epochs
from tests.processes import Server
from tuner.tracking.records import latest_parent, trials_of
from tuner.tracking.tags import Status, Tag

pytestmark = pytest.mark.slow

OUTAGE_S = 30
SEARCH_S = 600  # the whole search, outage included, on a loaded 2-core machine
TRIALS, EPOCHS = 4, 6


@pytest.fixture(scope="module")
def searched(mlflow_server, tmp_path_factory) -> tuple[Server, str]:
    """The search, run by `tuner run` in its own process, with the server down for OUTAGE_S
    seconds once some epochs are logged: epochs come before, during and after the outage.
    Returns the server and what the search printed."""
    server = mlflow_server
    cwd = tmp_path_factory.mktemp("outage_client")
    pace = paced_search(cwd, "outage", TRIALS, EPOCHS)
    pace.allow(2)
    command = [sys.executable, "-m", "tuner", "run", "outage.yaml", "--tracking-uri", server.url]
    output = cwd / "output.txt"  # a file, not a pipe: nothing blocks on a full pipe meanwhile
    with output.open("w") as file:
        search = subprocess.Popen(
            command, cwd=cwd, env=own_tuner_env(), stdout=file, stderr=subprocess.STDOUT
        )
    try:
        wait_for_epochs(MlflowClient(server.url), "outage", search, 2, output)
        server.stop()
        down = time.monotonic()
        pace.allow(EPOCHS - 1)  # the first trials' epochs but their last: kept, not lost
        time.sleep(OUTAGE_S)
        assert search.poll() is None, output.read_text()[-3000:]
        server.start()
        pace.allow(EPOCHS)
        print(f"server down {time.monotonic() - down:.0f} s")
        search.wait(timeout=SEARCH_S)
    finally:
        if search.poll() is None:
            search.kill()
    printed = output.read_text()
    assert search.returncode == 0, printed[-3000:]
    return server, printed


def test_every_trial_has_one_run_with_every_epoch_once(searched):
    server, _ = searched
    client = MlflowClient(server.url)
    parent = latest_parent(client, "outage")
    trials = trials_of(client, parent)
    assert len(trials) == TRIALS
    assert len({t.trial_id for t in trials}) == TRIALS
    for trial in trials:
        history = client.get_metric_history(trial.run_id, "val_acc")
        assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1)), trial.trial_id
        assert trial.status == Status.COMPLETED
        assert client.get_run(trial.run_id).info.status == "FINISHED"


def test_the_search_ended_as_if_nothing_happened(searched):
    server, printed = searched
    client = MlflowClient(server.url)
    parent = latest_parent(client, "outage")
    assert parent.info.status == "FINISHED"
    assert parent.data.tags[Tag.STATUS] == Status.COMPLETED
    assert 0.0 < parent.data.metrics["test_acc"] <= 1.0
    best = [t for t in trials_of(client, parent) if t.best]
    assert len(best) == 1
    (version,) = client.search_model_versions("name = 'outage'")
    assert version.run_id == parent.info.run_id
    assert "models:/outage/1" in printed
