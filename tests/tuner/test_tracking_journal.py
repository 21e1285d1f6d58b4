"""A tracking server that goes away and stays away (issue 16): what the driver could not write
is kept, in memory and in the search's journal beside Tune's state, and written once the server
answers: by the driver itself while it runs, else by `tuner sync` (twice changes nothing), which
also logs the plots and registers the model the search could not; or by `tuner resume`, when
the driver was killed during the outage.

Real `mlflow server`s on loopback ports (conftest.mlflow_server), stopped and started again on
the same port and database. MLflow's own retries are cut to seconds here (its default is ~4
minutes of them before a write counts as failed).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from tests.helpers import own_tuner_env, paced_search, wait_for_epochs
from tests.processes import Server, kill_group
from tuner.commands.cli import EXIT_UNWRITTEN, main
from tuner.publishing.artifacts import PLOTS, RESULTS
from tuner.tracking.experiment import Experiment
from tuner.tracking.files import JOURNAL, UNPUBLISHED, SearchFiles
from tuner.tracking.records import latest_parent, trials_of
from tuner.tracking.tags import SearchTags, Status, Tag, child_runs
from tuner.tracking.writer import TrialRun, Write, Writer

pytestmark = pytest.mark.slow

QUICK_FAILURE = {  # MLflow's HTTP retries: 2, 1 s then 2 s apart (plus up to 1 s of jitter)
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}
EPOCHS = 5


def parent_with_storage(server: Server, name: str, folder: Path) -> Experiment:
    """An experiment and parent run on ``server`` whose Tune folder is ``folder``."""
    experiment = Experiment(server.url, name)
    spec = folder / "spec.yaml"
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(f"name: {name}\n")
    experiment.start(spec, SearchTags(storage=str(folder)))
    return experiment


def epoch_writes(trial: TrialRun) -> list[Write]:
    """A trial's writes as the recorder makes them: its start, EPOCHS epochs, its end."""
    start = Write(trial, params=[Param("lr", "0.1")], status="RUNNING", start_time=1000)
    epochs = [
        Write(trial, metrics=[Metric("val_acc", s / 10, 1000 + s, s)]) for s in range(1, EPOCHS + 1)
    ]
    end = Write(trial, tags=[RunTag(Tag.STATUS, Status.COMPLETED)], status="FINISHED", end_time=9)
    return [start, *epochs, end]


def the_trial_run(experiment: Experiment, trial_id: str) -> tuple[str, list[float]]:
    """The one run of ``trial_id`` (its status) and its val_acc values by step."""
    (run,) = child_runs(experiment.client, experiment.experiment_id, experiment.parent_id, trial_id)
    history = experiment.client.get_metric_history(run.info.run_id, "val_acc")
    return run.info.status, [m.value for m in sorted(history, key=lambda m: m.step)]


def sync(name: str, server: Server, capsys: pytest.CaptureFixture) -> str:
    assert main(["sync", name, "--tracking-uri", server.url]) == 0
    return capsys.readouterr().out


def test_writes_kept_while_the_server_is_down_go_out_in_order_when_it_answers(
    mlflow_server, tmp_path, monkeypatch
):
    for key, value in QUICK_FAILURE.items():
        monkeypatch.setenv(key, value)
    experiment = parent_with_storage(mlflow_server, "back", tmp_path)
    journal = tmp_path / JOURNAL
    writer = Writer(mlflow_server.url, journal)
    first, *rest = epoch_writes(experiment.trial_run("t1"))
    writer.put(first)
    assert writer.flush() == 0
    assert not journal.exists()  # written: nothing kept
    mlflow_server.stop()
    for write in rest:
        writer.put(write)
    assert writer.flush() > 0
    assert journal.is_file()
    mlflow_server.start()
    assert writer.close() == 0  # asked the server once more: it answers, all are written
    assert not journal.exists()
    assert the_trial_run(experiment, "t1") == ("FINISHED", [s / 10 for s in range(1, EPOCHS + 1)])


KILLED_DRIVER = """\
import os, sys
from pathlib import Path
from tests.tuner.test_tracking_journal import epoch_writes
from tuner.tracking.writer import TrialRun, Writer

url, experiment_id, parent_id, journal = sys.argv[1:]
writer = Writer(url, Path(journal))
for write in epoch_writes(TrialRun(experiment_id, parent_id, "t1")):
    writer.put(write)
print("kept", writer.flush(), flush=True)
os._exit(9)  # killed: the writer is never closed
"""


def test_what_a_killed_driver_kept_is_written_by_sync_once(mlflow_server, tmp_path, capsys):
    folder = tmp_path / "tune" / "killed"
    experiment = parent_with_storage(mlflow_server, "killed", folder)
    mlflow_server.stop()
    ids = [experiment.experiment_id, experiment.parent_id, str(SearchFiles(str(folder)).journal)]
    driver = subprocess.run(
        [sys.executable, "-c", KILLED_DRIVER, mlflow_server.url, *ids],
        env={**os.environ, **QUICK_FAILURE},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert driver.returncode == 9, driver.stderr
    assert driver.stdout.startswith("kept ") and driver.stdout != "kept 0\n", driver.stdout
    assert "does not answer: its writes are kept in" in driver.stderr
    journal = folder / JOURNAL
    copy = shutil.copyfile(journal, tmp_path / "journal.copy")
    mlflow_server.start()
    capsys.readouterr()
    assert f"wrote the 7 MLflow writes kept in {journal}" in sync("killed", mlflow_server, capsys)
    assert not journal.exists()
    expected = ("FINISHED", [s / 10 for s in range(1, EPOCHS + 1)])
    assert the_trial_run(experiment, "t1") == expected
    shutil.copyfile(copy, journal)  # as if the first sync had died before clearing it
    assert "wrote the 7 MLflow writes" in sync("killed", mlflow_server, capsys)
    assert the_trial_run(experiment, "t1") == expected  # one run, each epoch once
    assert "nothing to write" in sync("killed", mlflow_server, capsys)


# ---------------------------------------------------------------------------------------------
# A search whose server never comes back
# ---------------------------------------------------------------------------------------------

NAME, TRIALS = "gone", 3
SEARCH_S = 600  # on a loaded 2-core machine
SYNC_KILL_SEED = 0


@pytest.fixture(scope="module")
def unwritten(mlflow_server, tmp_path_factory) -> tuple[int, str, Path]:
    """`tuner run` in its own process, its server stopped for good once two epochs are logged;
    the rest of the epochs come after. Returns its exit code, its stderr and its folder."""
    cwd = tmp_path_factory.mktemp("gone")
    pace = paced_search(cwd, NAME, TRIALS, EPOCHS)
    pace.allow(1)
    command = [sys.executable, "-m", "tuner", "run", "gone.yaml"]
    command += ["--tracking-uri", mlflow_server.url]
    env = {**own_tuner_env(), **QUICK_FAILURE}
    stdout, stderr = cwd / "stdout.txt", cwd / "stderr.txt"  # files: no pipe fills up
    with stdout.open("w") as out, stderr.open("w") as err:
        search = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=err)
    try:
        wait_for_epochs(MlflowClient(mlflow_server.url), NAME, search, 2, stderr)
        mlflow_server.stop()
        pace.allow(EPOCHS)
        search.wait(timeout=SEARCH_S)
    finally:
        if search.poll() is None:
            search.kill()
    print(stdout.read_text(), stderr.read_text(), sep="\n")  # pytest shows it on a failure
    return search.returncode, stderr.read_text(), cwd


def test_a_search_whose_server_never_comes_back_says_where_its_writes_are(unwritten, mlflow_server):
    code, stderr, cwd = unwritten
    assert code == EXIT_UNWRITTEN, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    journal = cwd / "tuner_results" / NAME / JOURNAL
    assert last.startswith("tuner: error: the search finished, but the MLflow tracking server")
    assert f"kept in {journal}" in last
    assert "log the plots and register the model with:" in last
    assert last.endswith(f"python -m tuner sync {NAME} --tracking-uri {mlflow_server.url}")
    assert journal.is_file()
    unpublished = journal.with_name(UNPUBLISHED)
    assert unpublished.is_file()  # the plots and the model, for sync
    assert f"the plots and the model are kept in {unpublished}; `tuner sync` logs them" in stderr
    assert "does not answer: its writes are kept in" in stderr  # said by tuner, once
    assert "Retrying (Retry(" not in stderr  # not MLflow's HTTP client at every retry


def test_resume_of_a_search_that_finished_in_the_outage_points_at_sync(unwritten, mlflow_server):
    _, _, cwd = unwritten
    journal = cwd / "tuner_results" / NAME / JOURNAL
    kept = journal.read_bytes()
    mlflow_server.start()
    resumed = subprocess.run(
        [sys.executable, "-m", "tuner", "resume", NAME, "--tracking-uri", mlflow_server.url],
        cwd=cwd,
        env=own_tuner_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 2, resumed.stderr[-3000:]
    (line,) = resumed.stderr.strip().splitlines()
    assert line.startswith(f"tuner: error: '{NAME}' finished, but its last MLflow writes were")
    assert line.endswith(f"python -m tuner sync {NAME} --tracking-uri {mlflow_server.url}")
    assert journal.read_bytes() == kept  # nothing written, nothing started: that is sync's job
    assert latest_parent(MlflowClient(mlflow_server.url), NAME).info.status == "RUNNING"


def test_sync_killed_at_a_random_moment_then_run_again_writes_the_search_once(
    unwritten, mlflow_server
):
    _, _, cwd = unwritten
    journal = cwd / "tuner_results" / NAME / JOURNAL
    kept = {path: path.read_bytes() for path in (journal, journal.with_name(UNPUBLISHED))}
    if not mlflow_server.running:
        mlflow_server.start()
    # Seeded: a failure replays. Importing MLflow and torch takes seconds; the writes, the plots
    # and the registration come after, so the kill lands before, among or after them.
    delay = random.Random(SYNC_KILL_SEED).uniform(1.0, 8.0)
    sync = [sys.executable, "-m", "tuner", "sync", NAME, "--tracking-uri", mlflow_server.url]
    try:
        killed = subprocess.Popen(
            sync, cwd=cwd, env=own_tuner_env(), stdout=subprocess.DEVNULL, start_new_session=True
        )
        try:
            killed.wait(timeout=delay)
            print(f"sync ended before its kill at {delay:.1f} s")
        except subprocess.TimeoutExpired:
            kill_group(killed)
            print(f"sync killed {delay:.1f} s in")
        again = subprocess.run(
            sync, cwd=cwd, env=own_tuner_env(), capture_output=True, text=True, timeout=SEARCH_S
        )
        assert again.returncode == 0, again.stderr[-3000:]
        the_search(MlflowClient(mlflow_server.url), NAME, TRIALS)
    finally:  # the next test syncs what the search kept, from the start
        for path, data in kept.items():
            path.write_bytes(data)


def test_sync_writes_the_whole_search_once_however_often_it_runs(
    unwritten, mlflow_server, tmp_path, capsys
):
    _, _, cwd = unwritten
    journal = cwd / "tuner_results" / NAME / JOURNAL
    copy = shutil.copyfile(journal, tmp_path / "journal.copy")
    if not mlflow_server.running:  # the test before this one starts it again
        mlflow_server.start()
    capsys.readouterr()
    synced = sync(NAME, mlflow_server, capsys)
    assert f"MLflow writes kept in {journal}" in synced
    assert f"registered the best model: models:/{NAME}/1" in synced
    assert not journal.with_name(UNPUBLISHED).exists()
    client = MlflowClient(mlflow_server.url)
    written = the_search(client, NAME, TRIALS)
    shutil.copyfile(copy, journal)  # every write sent a second time
    again = sync(NAME, mlflow_server, capsys)
    assert "MLflow writes kept in" in again and "registered" not in again
    assert the_search(client, NAME, TRIALS) == written
    assert "nothing to write" in sync(NAME, mlflow_server, capsys)
    assert the_search(client, NAME, TRIALS) == written  # the model registered once


def the_search(
    client: MlflowClient, name: str, trials: int, epochs: int = EPOCHS
) -> dict[str, list[int]]:
    """Check that MLflow holds the whole search ``name``: each trial's one run, ended, with every
    epoch once; the parent's outcome, plots and tables; its model, registered once. Returns each
    trial's val_acc steps, to compare later."""
    parent = latest_parent(client, name)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags[Tag.STATUS] == Status.COMPLETED
    assert 0.0 < parent.data.metrics["test_acc"] <= 1.0
    plots = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, PLOTS)}
    assert {"confusion_matrix.png", "learning_curves.png", "anytime.png"} <= plots
    tables = {a.path for a in client.list_artifacts(parent.info.run_id, RESULTS)}
    assert f"{RESULTS}/trials.csv" in tables
    (version,) = client.search_model_versions(f"name = '{name}'")
    assert version.run_id == parent.info.run_id
    records = trials_of(client, parent)
    assert sorted(t.trial_id for t in records) == sorted({t.trial_id for t in records})
    assert len(records) == trials
    assert sum(t.best for t in records) == 1
    steps = {}
    for trial in records:
        assert trial.status == Status.COMPLETED
        assert client.get_run(trial.run_id).info.status == "FINISHED"
        history = client.get_metric_history(trial.run_id, "val_acc")
        steps[trial.trial_id] = [m.step for m in history]
        assert sorted(steps[trial.trial_id]) == list(range(1, epochs + 1)), trial.trial_id
    return steps


# ---------------------------------------------------------------------------------------------
# A driver killed while its server is down
# ---------------------------------------------------------------------------------------------

KILLED, KILLED_TRIALS = "killed_in_outage", 2
KEPT_S = 8  # the driver runs on without its server: the writes of its trials' next epoch are kept


def test_resume_after_a_driver_killed_in_an_outage_writes_the_whole_search_once(
    mlflow_server, tmp_path
):
    if not mlflow_server.running:  # a test before this one left it stopped
        mlflow_server.start()
    pace = paced_search(tmp_path, KILLED, KILLED_TRIALS, EPOCHS)
    pace.allow(1)
    env = own_tuner_env()
    store = ["--tracking-uri", mlflow_server.url]
    output = tmp_path / "run.txt"
    with output.open("w") as file:
        driver = subprocess.Popen(
            [sys.executable, "-m", "tuner", "run", f"{KILLED}.yaml", *store],
            cwd=tmp_path,
            env={**env, **QUICK_FAILURE},
            stdout=file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # killed with the Ray it starts
        )
    try:
        wait_for_epochs(MlflowClient(mlflow_server.url), KILLED, driver, 2, output)
        mlflow_server.stop()
        pace.allow(2)
        time.sleep(KEPT_S)
        assert driver.poll() is None, output.read_text()[-3000:]
    finally:
        kill_group(driver)
    assert (tmp_path / "tuner_results" / KILLED / JOURNAL).is_file()
    pace.allow(EPOCHS)
    mlflow_server.start()
    resumed = subprocess.run(
        [sys.executable, "-m", "tuner", "resume", KILLED, *store],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=SEARCH_S,
    )
    assert resumed.returncode == 0, output.read_text()[-2000:] + resumed.stderr[-3000:]
    assert "MLflow writes kept in" in resumed.stdout
    the_search(MlflowClient(mlflow_server.url), KILLED, KILLED_TRIALS, EPOCHS)
